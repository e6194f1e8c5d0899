"""Sound elementwise linear relaxations of activations on a pre-activation interval [l, u].

For every unit, `Relaxation` holds two lines with `lower_slope z + lower_bias <= sigma(z) <= upper_slope z +
upper_bias` for all z in [l, u]. Any slope can be asked for (CROWN's defaults, or alpha-CROWN's optimized
slopes): the intercept is then computed as the exact extremum of sigma(z) - k z over [l, u], which is
attained at an end point or at the critical point where sigma'(z) = k (closed forms below), so every line
is valid by construction, not by sampling. Intercepts are widened by a few units in the last place of the
dtype, so the lines hold for sigma evaluated in that dtype's arithmetic as well. Compute in float64 for
certificates (the bounds module does).

Activations: relu, sigmoid, tanh, softplus with slope alpha ((1/alpha) log(1 + e^{alpha z})), identity.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class Relaxation(NamedTuple):
    """Elementwise lines valid on [l, u]: lower_slope z + lower_bias <= sigma(z) <= upper_slope z + upper_bias."""
    lower_slope: jax.Array
    lower_bias: jax.Array
    upper_slope: jax.Array
    upper_bias: jax.Array


class ActivationBounds(NamedTuple):
    """What bound propagation needs of an activation.

    fn: sigma, elementwise. grad: sigma'. critical(k, l, u): `[..., c]` points of [l, u] that include every
    local extremum of sigma(z) - k z inside (l, u). slope_range(l, u): (min, max) of sigma' on [l, u], the
    box alpha-CROWN's slopes are projected onto. monotone: sigma is non-decreasing (IBP is [sigma(l), sigma(u)]).
    """
    fn: Callable
    grad: Callable
    critical: Callable
    slope_range: Callable
    monotone: bool = True


def _clip(z, l, u):
    return jnp.clip(z, l, u)


def _ulp_pad(*vals):
    eps = jnp.finfo(jnp.result_type(*vals)).eps
    return 8 * eps * (1.0 + sum(jnp.abs(v) for v in vals))


# --------------------------------------------------------------------------------------- activations

def _bell_critical(inv_grad):
    """Critical points for sigma with an even derivative peaked at 0 and decreasing in |z| (sigmoid, tanh)."""
    def critical(k, l, u):
        z = inv_grad(k)
        return jnp.stack([_clip(z, l, u), _clip(-z, l, u)], -1)
    return critical


def _bell_range(grad):
    def slope_range(l, u):
        at_zero = (l <= 0) & (u >= 0)
        hi = jnp.where(at_zero, grad(jnp.zeros_like(l)), grad(jnp.where(jnp.abs(l) < jnp.abs(u), l, u)))
        lo = jnp.minimum(grad(l), grad(u))
        return lo, hi
    return slope_range


def _sigmoid_grad(z):
    s = jax.nn.sigmoid(z)
    return s * (1 - s)


def _sigmoid_inv_grad(k):
    """z >= 0 with sigmoid'(z) = k, for k in (0, 1/4]; +inf for k <= 0, 0 for k >= 1/4."""
    kk = jnp.clip(k, 1e-300, 0.25)
    s = 0.5 * (1 + jnp.sqrt(jnp.maximum(1 - 4 * kk, 0.0)))
    z = jnp.log(s) - jnp.log1p(-s)
    return jnp.where(k <= 0, jnp.inf, jnp.where(k >= 0.25, 0.0, z))


def _tanh_grad(z):
    return 1 - jnp.tanh(z) ** 2


def _tanh_inv_grad(k):
    kk = jnp.clip(k, 1e-300, 1.0)
    z = jnp.arctanh(jnp.sqrt(jnp.maximum(1 - kk, 0.0)))
    return jnp.where(k <= 0, jnp.inf, jnp.where(k >= 1, 0.0, z))


def softplus(alpha: float = 1.0) -> ActivationBounds:
    """(1/alpha) log(1 + exp(alpha z)): convex, sigma' = sigmoid(alpha z) increasing."""
    def fn(z):
        return jax.nn.softplus(alpha * z) / alpha

    def grad(z):
        return jax.nn.sigmoid(alpha * z)

    def critical(k, l, u):
        kk = jnp.clip(k, 1e-300, 1 - 1e-16)
        z = (jnp.log(kk) - jnp.log1p(-kk)) / alpha
        z = jnp.where(k <= 0, -jnp.inf, jnp.where(k >= 1, jnp.inf, z))
        return _clip(z, l, u)[..., None]
    return ActivationBounds(fn, grad, critical, lambda l, u: (grad(l), grad(u)))


def relu() -> ActivationBounds:
    def critical(k, l, u):
        return _clip(jnp.zeros_like(l), l, u)[..., None]
    grad = lambda z: (z > 0).astype(z.dtype)  # noqa: E731
    return ActivationBounds(jax.nn.relu, grad, critical, lambda l, u: (grad(l), grad(u)))


def sigmoid() -> ActivationBounds:
    return ActivationBounds(jax.nn.sigmoid, _sigmoid_grad, _bell_critical(_sigmoid_inv_grad), _bell_range(_sigmoid_grad))


def tanh() -> ActivationBounds:
    return ActivationBounds(jnp.tanh, _tanh_grad, _bell_critical(_tanh_inv_grad), _bell_range(_tanh_grad))


def identity() -> ActivationBounds:
    one = lambda z: jnp.ones_like(z)  # noqa: E731
    return ActivationBounds(lambda z: z, one, lambda k, l, u: l[..., None], lambda l, u: (one(l), one(u)))


def get(name: str, *, alpha: float = 1.0) -> ActivationBounds:
    """By name: relu, sigmoid, tanh, softplus (slope alpha), identity."""
    table = {"relu": relu, "sigmoid": sigmoid, "tanh": tanh, "identity": identity}
    if name == "softplus":
        return softplus(alpha)
    if name not in table:
        raise ValueError(f"no linear relaxation for activation {name!r}; known: relu, sigmoid, tanh, softplus, identity")
    return table[name]()


# ------------------------------------------------------------------------------------------- lines

def intercepts(act: ActivationBounds, k_lower, k_upper, l, u):
    """The tightest valid intercepts for the given slopes on [l, u]: (lower_bias, upper_bias)."""
    def extremes(k):
        pts = jnp.concatenate([l[..., None], u[..., None], act.critical(k, l, u)], -1)
        g = act.fn(pts) - k[..., None] * pts
        g = jnp.where(jnp.isfinite(pts), g, jnp.nan)
        pad = _ulp_pad(act.fn(pts), k[..., None] * pts).max(-1)
        return jnp.nanmin(g, -1) - pad, jnp.nanmax(g, -1) + pad
    lo_b, _ = extremes(k_lower)
    _, up_b = extremes(k_upper)
    return lo_b, up_b


def interval(act: ActivationBounds, l, u):
    """IBP through sigma: elementwise [min, max] of sigma over [l, u], padded outward by a few ulps."""
    if act.monotone:
        fl, fu = act.fn(l), act.fn(u)
        return fl - _ulp_pad(fl), fu + _ulp_pad(fu)
    raise NotImplementedError("interval bounds need a monotone activation")


def default_slopes(act: ActivationBounds, l, u, *, n_candidates: int = 5):
    """CROWN-style slopes: for each of the lower and the upper line, among the chord, the tangents at l, u
    and the midpoint, the slope whose (exactly shifted) line is tightest on average over [l, u]."""
    width = u - l
    flat = width <= 1e-12 * (1 + jnp.abs(l))
    chord = jnp.where(flat, act.grad(l), (act.fn(u) - act.fn(l)) / jnp.where(flat, 1.0, width))
    cands = jnp.stack([chord, act.grad(l), act.grad(u), act.grad(0.5 * (l + u)),
                       0.5 * (chord + act.grad(0.5 * (l + u)))][:n_candidates], -1)
    mid = 0.5 * (l + u)[..., None]
    L = l[..., None] * jnp.ones_like(cands)
    U = u[..., None] * jnp.ones_like(cands)
    lo_b, up_b = intercepts(act, cands, cands, L, U)
    k_lo = jnp.take_along_axis(cands, jnp.argmax(cands * mid + lo_b, -1)[..., None], -1)[..., 0]
    k_up = jnp.take_along_axis(cands, jnp.argmin(cands * mid + up_b, -1)[..., None], -1)[..., 0]
    return k_lo, k_up


def relu_slopes(l, u):
    """CROWN's ReLU slopes: upper = the chord u / (u - l) where the unit is unstable; lower adaptive (1 if
    u >= -l else 0); exact (0 or 1) where the unit is stable."""
    unstable = (l < 0) & (u > 0)
    chord = u / jnp.where(unstable, u - l, 1.0)
    k_up = jnp.where(unstable, chord, (l >= 0).astype(l.dtype))
    k_lo = jnp.where(unstable, (u >= -l).astype(l.dtype), (l >= 0).astype(l.dtype))
    return k_lo, k_up


def relax(act: ActivationBounds, l, u, *, lower_slope=None, upper_slope=None, name: str = "") -> Relaxation:
    """Sound lines on [l, u] for the given slopes (default: CROWN's, see `default_slopes` / `relu_slopes`)."""
    if name == "relu":
        k_lo, k_up = relu_slopes(l, u)
    else:
        k_lo, k_up = default_slopes(act, l, u)
    k_lo = k_lo if lower_slope is None else lower_slope
    k_up = k_up if upper_slope is None else upper_slope
    lo_b, up_b = intercepts(act, k_lo, k_up, l, u)
    return Relaxation(k_lo, lo_b, k_up, up_b)
