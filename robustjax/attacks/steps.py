"""The pieces gradient attacks are composed of: l_p-ball projections, steepest-ascent steps per norm,
random starts in a ball, and a line search toward the decision boundary.

Every function works on a batch `[batch, ...]` with one radius per example `eps: [batch]` and is
jittable. Boxes are `geometry.Box`es whose lo, hi broadcast against the batch (a scalar, one example's
shape or `[batch, ...]`: `geometry.as_box(box, x)` makes them so). Projections are plain
`(delta, eps) -> delta` functions (as optax.projections); the steps are optax `GradientTransformation`s
over the batched gradient, so an attack's update is composed, e.g.
`optax.chain(mask_box(box), normalize(2), scale_per_example(alpha * eps))`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robustjax import losses
from robustjax.geometry import Box, check_norm, lp_norm, per_example

TINY = 1e-12


def _flat(a):
    return a.reshape(a.shape[0], -1)


# ------------------------------------------------------------------------------- projections

def _project_l1_single(v, eps):
    """Euclidean projection of one flat vector v `[d]` onto {||w||_1 <= eps} by sorting.

    Duchi, Shalev-Shwartz, Singer, Chandra, "Efficient projections onto the l1-ball for learning in
    high dimensions", ICML 2008, Fig. 1: theta = (sum_{i<=rho} u_i - eps) / rho with u = sort(|v|)
    descending and rho = max{j : u_j > (sum_{i<=j} u_i - eps) / j}; w = sign(v) max(|v| - theta, 0).
    """
    a = jnp.abs(v)
    u = -jnp.sort(-a)
    css = jnp.cumsum(u)
    j = jnp.arange(1, v.shape[0] + 1, dtype=v.dtype)
    cond = u - (css - eps) / j > 0
    rho = jnp.max(jnp.where(cond, j, 1.0))
    theta = (jnp.take(css, rho.astype(jnp.int32) - 1) - eps) / rho
    w = jnp.sign(v) * jnp.maximum(a - theta, 0.0)
    inside = jnp.sum(a) <= eps
    return jnp.where(inside, v, jnp.where(eps > 0, w, jnp.zeros_like(v)))


def _radii(eps, delta):
    return jnp.broadcast_to(jnp.asarray(eps, delta.dtype), delta.shape[:1])


def project_l1_ball(delta, eps):
    """delta `[batch, ...]` projected onto the l1 balls of radii eps `[batch]` (Duchi et al. 2008)."""
    return jax.vmap(_project_l1_single)(_flat(delta), _radii(eps, delta)).reshape(delta.shape)


def project_l2_ball(delta, eps):
    """delta `[batch, ...]` scaled onto the l2 balls of radii eps `[batch]` where it lies outside."""
    eps = _radii(eps, delta)
    n = lp_norm(delta, 2)
    return delta * per_example(jnp.where(n > eps, eps / jnp.maximum(n, TINY), 1.0), delta)


def project_linf_ball(delta, eps):
    """delta `[batch, ...]` clipped to [-eps, eps] per example."""
    e = per_example(_radii(eps, delta), delta)
    return jnp.clip(delta, -e, e)


def project_ball(p) -> Callable:
    """The (delta, eps) -> delta projection onto the lp ball, p in 1, 2, inf."""
    return {1.0: project_l1_ball, 2.0: project_l2_ball, np.inf: project_linf_ball}[check_norm(p)]


def project(p, box: Box) -> Callable:
    """project_fn(x_adv, x, eps) -> x + P_ball(x_adv - x) clipped to the box.

    The result lies in ball ∩ box: clipping moves each coordinate toward x (which is in the box),
    so it never increases |delta_i| and the point stays in the ball. For l_inf this is the exact
    projection onto the intersection; for l1 and l2 it is a feasible point, not always the nearest.
    """
    proj = project_ball(p)

    def project_fn(x_adv, x, eps):
        return box.clip(x + proj(x_adv - x, eps))
    return project_fn


# ------------------------------------------------------------------------ steepest-ascent steps

def steepest(g, p, sparsity: float = 0.0):
    """Per example, the direction s with ||s||_p = 1 maximizing <g, s> (l_inf: sign g; l2: g/||g||);
    for l1 the top (1 - sparsity) fraction of coordinates by |g|, with sign g, scaled to l1 norm 1
    (the exact l1 steepest direction is a single coordinate; a few speed up progress, as in SLIDE,
    Tramer & Boneh 2019). g `[batch, ...]` -> same shape; zero gradients give zero steps, never NaN."""
    p = check_norm(p)
    if p == np.inf:
        return jnp.sign(g)
    if p == 2:
        return g / per_example(jnp.maximum(lp_norm(g, 2), TINY), g)
    flat = jnp.abs(_flat(g))
    k = max(1, int(round((1.0 - sparsity) * flat.shape[1])))
    kth = jax.lax.top_k(flat, k)[0][:, -1:]
    keep = (flat >= kth) & (flat > 0)
    s = jnp.where(keep, jnp.sign(_flat(g)), 0.0)
    s = s / jnp.maximum(jnp.sum(keep, axis=1, keepdims=True), 1)
    return s.reshape(g.shape)


def normalize(p, *, sparsity: float = 0.99) -> optax.GradientTransformation:
    """optax transformation: the gradient `[batch, ...]` -> per-example unit steepest-ascent
    direction in the lp norm (`steepest`)."""
    p = check_norm(p)

    def update_fn(updates, state, params=None):
        del params
        return steepest(updates, p, sparsity), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def mask_box(box: Box) -> optax.GradientTransformation:
    """optax transformation: zeroes ascent directions that point out of the box at coordinates of
    params (the current x `[batch, ...]`) already on its boundary, so l1/l2 steps are not wasted."""
    def update_fn(updates, state, params=None):
        if params is None:
            return updates, state
        lo, hi = jnp.asarray(box.lo, params.dtype), jnp.asarray(box.hi, params.dtype)
        blocked = ((params <= lo) & (updates < 0)) | ((params >= hi) & (updates > 0))
        return jnp.where(blocked, 0.0, updates), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def scale_per_example(step) -> optax.GradientTransformation:
    """optax transformation: multiplies example i's update by step[i] (`[batch]`, e.g. alpha*eps)."""
    def update_fn(updates, state, params=None):
        del params
        return updates * per_example(jnp.asarray(step, updates.dtype), updates), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


# ----------------------------------------------------------------------------- random starts

def uniform_in_ball(p) -> Callable:
    """init_fn(key, x, eps) -> x + delta, delta uniform in the lp ball of radius eps (per example;
    l2 and l1: a uniform direction on the sphere times radius u^(1/d)); not yet clipped to a box."""
    p = check_norm(p)

    def init_fn(key, x, eps):
        d = int(np.prod(x.shape[1:]))
        kd, kr = jax.random.split(key)
        e = per_example(jnp.asarray(eps, x.dtype) * jnp.ones(x.shape[:1], x.dtype), x)
        if p == np.inf:
            return x + e * jax.random.uniform(kd, x.shape, x.dtype, -1.0, 1.0)
        r = jax.random.uniform(kr, x.shape[:1], x.dtype) ** (1.0 / d)
        g = (jax.random.normal if p == 2 else jax.random.laplace)(kd, x.shape, x.dtype)
        g = g / per_example(jnp.maximum(lp_norm(g, p), TINY), g)
        return x + e * per_example(r, x) * g
    return init_fn


# ------------------------------------------------------------------------------- line search

def is_adversarial(logits, labels):
    """argmax f != label per example, `[batch, K]` -> `[batch]` bool."""
    return jnp.argmax(logits, -1) != labels


class LineSearch(NamedTuple):
    x_adv: jax.Array
    found: jax.Array
    calls: jax.Array


LINE_SEARCH_MARGIN = 1e-5


def line_search(logits_fn, x, labels, x_adv, found, steps: int) -> LineSearch:
    """Bisection on t in [0, 1] along x + t (x_adv - x) for the smallest adversarial t, per example.

    `found` `[batch]` marks rows where x_adv is adversarial (t = 1 works); other rows are returned
    unchanged. Never increases a distance, keeps every point adversarial by a margin of
    LINE_SEARCH_MARGIN max(1, max|f|) (off the boundary, where `finalize`'s re-check could round the
    other way) and in the box (a convex combination of two box points); `steps` forward passes. Jittable.
    """
    delta = x_adv - x
    lo = jnp.zeros(x.shape[:1], x.dtype)
    hi = jnp.ones(x.shape[:1], x.dtype)

    def body(_, carry):
        lo, hi = carry
        t = 0.5 * (lo + hi)
        logits = logits_fn(x + per_example(t, x) * delta)
        scale = jnp.maximum(1.0, jnp.max(jnp.abs(logits), -1))
        adv = losses.margin(logits=logits, labels=labels) > LINE_SEARCH_MARGIN * scale
        return jnp.where(adv, lo, t), jnp.where(adv, t, hi)
    lo, hi = jax.lax.fori_loop(0, steps, body, (lo, hi))
    out = jnp.where(per_example(found, x), x + per_example(hi, x) * delta, x_adv)
    return LineSearch(out, found, jnp.full(x.shape[:1], steps, jnp.int32))
