"""The ground floor shared by attacks, certificates, verifiers and diagnostics: input boxes, l_p norms and
their duals, classification margins, and the exact l_p step to a halfspace inside a box.

Conventions: a batch is `[batch, ...]`; norms are taken over everything but the leading axis; p is one of
1, 2, inf (`check_norm`). Nothing here imports another robustjax module.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

NORMS = (1.0, 2.0, np.inf)


# ------------------------------------------------------------------------------------------- norms

def check_norm(p, name: str = "p") -> float:
    """p as a float, one of 1, 2, inf; ValueError naming the argument otherwise."""
    try:
        q = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 1, 2 or inf, got {p!r}") from None
    if q not in NORMS:
        raise ValueError(f"{name} must be 1, 2 or inf, got {p!r}")
    return q


def dual(p) -> float:
    """The dual exponent q with 1/p + 1/q = 1 (1 <-> inf, 2 <-> 2)."""
    return {1.0: np.inf, 2.0: 2.0, np.inf: 1.0}[check_norm(p)]


def lp_norm(delta, p) -> jax.Array:
    """||delta_i||_p per example: `[batch, ...]` -> `[batch]` (JAX, jittable)."""
    d = jnp.reshape(delta, (delta.shape[0], int(np.prod(delta.shape[1:]))))
    p = check_norm(p)
    if p == np.inf:
        return jnp.max(jnp.abs(d), axis=-1, initial=0.0)
    if p == 1:
        return jnp.sum(jnp.abs(d), axis=-1)
    return jnp.sqrt(jnp.sum(d * d, axis=-1))


def vector_norm(v, p, axis: int = -1):
    """||v||_p along `axis` (numpy or JAX arrays, whichever comes in)."""
    xp = jnp if isinstance(v, jax.Array) else np
    p = check_norm(p)
    if p == np.inf:
        return xp.max(xp.abs(v), axis=axis)
    if p == 1:
        return xp.sum(xp.abs(v), axis=axis)
    return xp.sqrt(xp.sum(v * v, axis=axis))


def dual_norm(w, p, axis: int = -1):
    """||w||_q with q the dual of p, along `axis`: the largest w . delta over ||delta||_p <= 1."""
    return vector_norm(w, dual(p), axis)


def per_example(v, like):
    """`[batch]` -> `[batch, 1, ..., 1]`, broadcastable against `like` `[batch, ...]`."""
    return jnp.reshape(v, (-1,) + (1,) * (like.ndim - 1))


# -------------------------------------------------------------------------------------------- boxes

class Box(NamedTuple):
    """Elementwise input bounds lo <= x <= hi.

    lo, hi: scalars, arrays of one example's shape, or `[batch, ...]` (one box per example, as a
    verification property around each point gives). `as_box(box, x)` validates and broadcasts them.
    """
    lo: float | np.ndarray = 0.0
    hi: float | np.ndarray = 1.0

    def clip(self, x):
        """x clipped into the box (JAX or numpy, dtype of x)."""
        xp = jnp if isinstance(x, jax.Array) else np
        return xp.clip(x, xp.asarray(self.lo, x.dtype), xp.asarray(self.hi, x.dtype))


def as_box(box, x=None, *, name: str = "box") -> Box:
    """Validates a box and, given a batch x `[batch, ...]`, broadcasts it to x's shape.

    Accepts a `Box`, a pair `(lo, hi)` or None (the unit box [0, 1]). With x, lo and hi become numpy arrays
    of x's shape and dtype, rounded inward (lo up, hi down) so that a point clipped to them in that dtype lies in
    the box as given; a scalar, one example's shape or `[batch, ...]` broadcast, anything else is a ValueError
    naming the argument. Also ValueError for NaN bounds or lo > hi anywhere.
    """
    if box is None:
        box = Box()
    elif not isinstance(box, Box):
        if isinstance(box, (tuple, list)) and len(box) == 2:
            box = Box(*box)
        else:
            raise ValueError(f"{name} must be a robustjax Box(lo, hi) or a pair (lo, hi), got {type(box).__name__}")
    lo, hi = np.asarray(box.lo, np.float64), np.asarray(box.hi, np.float64)
    if np.isnan(lo).any() or np.isnan(hi).any():
        raise ValueError(f"{name} bounds contain NaN")
    if x is None:
        try:
            bad = lo > hi
        except ValueError:
            raise ValueError(f"{name}.lo {lo.shape} and {name}.hi {hi.shape} do not broadcast") from None
        if np.any(bad):
            raise ValueError(f"{name} must have lo <= hi; lo > hi at {int(np.sum(bad))} coordinates "
                             f"(e.g. lo={float(np.broadcast_to(lo, bad.shape)[bad][0])}, "
                             f"hi={float(np.broadcast_to(hi, bad.shape)[bad][0])})")
        return Box(box.lo, box.hi)
    shape = tuple(np.shape(x))
    dtype = np.dtype(x.dtype) if np.issubdtype(np.dtype(x.dtype), np.floating) else np.dtype(np.float32)

    def spread(v, which):
        try:
            if v.ndim <= len(shape):
                return np.broadcast_to(v, shape)
        except ValueError:
            pass
        raise ValueError(f"{name}.{which} has shape {v.shape}; expected a scalar, one example's shape "
                         f"{shape[1:]} or one box per example {shape}")

    def inward(w, which):
        r = w.astype(dtype)
        out = (r < w) if which == "lo" else (r > w)
        toward = np.asarray(np.inf if which == "lo" else -np.inf, dtype)
        return np.where(out & np.isfinite(r), np.nextafter(r, toward), r).astype(dtype)
    lo, hi = spread(lo, "lo"), spread(hi, "hi")
    near_lo, near_hi = lo.astype(dtype), hi.astype(dtype)
    bad = near_lo > near_hi
    if np.any(bad):
        raise ValueError(f"{name} must have lo <= hi; lo > hi at {int(np.sum(bad))} coordinates "
                         f"(e.g. lo={float(near_lo[bad][0])}, hi={float(near_hi[bad][0])})")
    lo, hi = inward(lo, "lo"), inward(hi, "hi")
    collapsed = lo > hi          # no number of the dtype lies in [lo, hi]: keep the nearest ones
    lo, hi = np.where(collapsed, near_lo, lo), np.where(collapsed, near_hi, hi)
    return Box(lo, hi)


def box_violation(x, box: Box) -> float:
    """The largest distance by which x leaves the box (0 inside)."""
    x = np.asarray(x, np.float64)
    lo, hi = np.asarray(box.lo, np.float64), np.asarray(box.hi, np.float64)
    if x.size == 0:
        return 0.0
    return float(max(np.max(lo - x), np.max(x - hi), 0.0))


# ------------------------------------------------------------------------------------------ margins

def class_margins(logits, labels):
    """f_y - f_j for every class j, `[batch, K]`, +inf at j = y (JAX)."""
    fy = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    m = fy - logits
    return jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), jnp.inf, m)


def take_max(v, axis: int = -1):
    """max of v along `axis` (JAX) whose gradient goes to the first maximizer through a gather.

    jnp.max's own gradient compares v with the max bitwise; under jit XLA may compute the two in different
    fusions with different rounding, and the gradient then comes out 0 or NaN (seen on XLA:CPU, jax 0.10, for a
    margin through an image transformation; the same mechanism as jax-ml/jax#40564 for the elementwise
    maximum on GPU). The gather has no such comparison."""
    return _take(v, jnp.argmax(v, axis=axis), axis)


def take_min(v, axis: int = -1):
    """min of v along `axis` with the gradient of `take_max` (to the first minimizer, through a gather)."""
    return _take(v, jnp.argmin(v, axis=axis), axis)


def _take(v, index, axis: int):
    return jnp.take_along_axis(v, jnp.expand_dims(index, axis), axis=axis).squeeze(axis)


def margin(logits, labels):
    """f_y - max_{j != y} f_j per example, `[batch, K]` -> `[batch]`: positive iff correctly classified
    (ties aside). Its negative is the attack loss of Carlini & Wagner (2017, f_6). Its gradient goes to the
    first runner-up (`take_min`)."""
    return take_min(class_margins(logits, labels), axis=-1)


def runner_up(logits, labels):
    """argmax_{j != y} f_j per example, `[batch, K]` -> `[batch]` int32."""
    mask = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
    return jnp.argmax(jnp.where(mask, -jnp.inf, logits), axis=-1).astype(jnp.int32)


# -------------------------------------------------------------------- exact halfspace-in-box steps

def halfspace_box_distance(w, r, x, lo, hi, p):
    """Exact min ||delta||_p s.t. w . delta >= r, lo <= x + delta <= hi; w, x, lo, hi `[d]`, r scalar -> scalar
    (JAX, jittable, vmappable); inf when the box cannot reach the halfspace, 0 when r <= 0.

    Closed form by sorting breakpoints: p = 2: delta = clip(lambda w, lo - x, hi - x); p = inf: delta_i =
    sign(w_i) min(eps, cap_i); p = 1: a fractional knapsack on |w_i| (largest first).
    """
    p = check_norm(p)
    cap = jnp.maximum(jnp.where(w > 0, hi - x, x - lo), 0.0)
    aw = jnp.abs(w)
    gain = aw * cap
    total = jnp.sum(gain)
    if p == 1:
        order = jnp.argsort(-aw)
        g, c, a = gain[order], cap[order], aw[order]
        cum = jnp.cumsum(g)
        k = jnp.argmax(cum >= r)
        before = cum[k] - g[k]
        cost = jnp.sum(jnp.where(jnp.arange(c.shape[0]) < k, c, 0.0)) + (r - before) / jnp.maximum(a[k], 1e-30)
    elif p == np.inf:
        order = jnp.argsort(cap)
        c, a, g = cap[order], aw[order], gain[order]
        c_before = jnp.cumsum(g) - g
        w_after = jnp.cumsum(a[::-1])[::-1]
        phi = c_before + c * w_after
        k = jnp.argmax(phi >= r)
        cost = (r - c_before[k]) / jnp.maximum(w_after[k], 1e-30)
    else:
        bp = jnp.where(aw > 0, cap / jnp.maximum(aw, 1e-30), jnp.inf)
        order = jnp.argsort(bp)
        b, a, g, c = bp[order], aw[order], gain[order], cap[order]
        c_before = jnp.cumsum(g) - g
        s2_after = jnp.cumsum((a * a)[::-1])[::-1]
        phi = c_before + jnp.where(jnp.isfinite(b), b, 0.0) * s2_after
        k = jnp.argmax((phi >= r) & jnp.isfinite(b))
        lam = (r - c_before[k]) / jnp.maximum(s2_after[k], 1e-30)
        sq_before = jnp.sum(jnp.where(jnp.arange(c.shape[0]) < k, c * c, 0.0))
        cost = jnp.sqrt(jnp.maximum(sq_before + lam * lam * s2_after[k], 0.0))
    cost = jnp.where(r <= 0, 0.0, cost)
    return jnp.where(total < r * (1 - 1e-6), jnp.inf, cost)


def halfspace_box_step(w, r, x, lo, hi, p):
    """argmin ||delta||_p s.t. w . delta >= r, lo <= x + delta <= hi (numpy, `[d]`); None if infeasible.

    The minimizer that `halfspace_box_distance` measures: p = 1 a fractional knapsack (saturate coordinates
    by decreasing |w_i|); p = inf delta_i = sign(w_i) min(eps, cap_i); p = 2 delta_i = sign(w_i)
    min(lambda |w_i|, cap_i), with eps and lambda found among the sorted breakpoints."""
    p = check_norm(p)
    if r <= 0:
        return np.zeros_like(x)
    cap = np.maximum(np.where(w > 0, hi - x, x - lo), 0.0)
    aw = np.abs(w)
    if np.sum(aw * cap) < r:
        return None
    if p == 1:
        order = np.argsort(-aw)
        cum = np.cumsum(aw[order] * cap[order])
        k = int(np.searchsorted(cum, r))
        delta = np.zeros_like(x)
        delta[order[:k]] = np.sign(w[order[:k]]) * cap[order[:k]]
        delta[order[k]] = np.sign(w[order[k]]) * (r - (cum[k - 1] if k else 0.0)) / aw[order[k]]
        return delta
    if p == np.inf:
        order = np.argsort(cap)
        g = (aw * cap)[order]
        before = np.cumsum(g) - g
        after = np.cumsum(aw[order][::-1])[::-1]
        k = int(np.argmax(before + cap[order] * after >= r))
        eps = (r - before[k]) / max(after[k], 1e-300)
        return np.sign(w) * np.minimum(eps, cap)
    bp = np.where(aw > 0, cap / np.maximum(aw, 1e-300), np.inf)
    order = np.argsort(bp)
    g = (aw * cap)[order]
    before = np.cumsum(g) - g
    s2 = np.cumsum((aw * aw)[order][::-1])[::-1]
    b = bp[order]
    k = int(np.argmax((before + np.where(np.isfinite(b), b, 0.0) * s2 >= r) & np.isfinite(b)))
    lam = (r - before[k]) / max(s2[k], 1e-300)
    return np.sign(w) * np.minimum(lam * aw, cap)
