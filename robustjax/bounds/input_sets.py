"""Input sets of bound propagation: an l_p ball (p = 1, 2, inf) around x intersected with a per-coordinate
box, and the exact (or dual, hence always valid) minimum of a linear function over it.

`linear_lower(s, A, c)` returns a lower bound of min_{x in S} A x + c per row, computed in the dtype of the
inputs (use float64 for certificates): exact for l_inf; for l2 and l1 the value of the Lagrangian dual at a
multiplier found by bisection (l2) or sorting (l1), which is a valid lower bound at any multiplier (weak
duality) and equals the minimum at the optimal one. A padding of a few ulps of the summed magnitudes makes
it hold in floating point as well.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import geometry


class BallInBox(NamedTuple):
    """{x : ||x - center||_p <= eps, lo <= x <= hi}; center, lo, hi `[d]` (flat), eps scalar, p in 1, 2, inf."""
    center: jax.Array
    eps: jax.Array
    lo: jax.Array
    hi: jax.Array
    p: float

    def coordinate_bounds(self):
        """The smallest box containing the set: `([d], [d])`."""
        return jnp.maximum(self.center - self.eps, self.lo), jnp.minimum(self.center + self.eps, self.hi)


def ball_in_box(center, eps, p, box=None) -> BallInBox:
    """A `BallInBox` around one flat example center `[d]`; box: as geometry.as_box, broadcast to `[d]`."""
    center = jnp.asarray(center)
    b = geometry.as_box(box, np.asarray(center)[None])
    return BallInBox(center, jnp.asarray(eps, center.dtype), jnp.asarray(b.lo[0], center.dtype),
                     jnp.asarray(b.hi[0], center.dtype), geometry.check_norm(p))


def _pad(A, x):
    eps = jnp.finfo(A.dtype).eps
    return 4 * A.shape[-1] * eps * (jnp.abs(A) @ jnp.abs(x) + 1.0)


def _box_min(A, lo, hi):
    """min over lo <= d <= hi of A d, per row."""
    return jnp.where(A > 0, A * lo, A * hi).sum(-1)


def linear_lower(s: BallInBox, A, c=0.0):
    """Lower bound of min_{x in s} A x + c: A `[m, d]`, c `[m]` -> `[m]`."""
    lo, hi = s.coordinate_bounds()
    dlo, dhi = lo - s.center, hi - s.center          # dlo <= 0 <= dhi
    base = A @ s.center + c
    if s.p == np.inf:
        val = _box_min(A, dlo, dhi)
    elif s.p == 2:
        val = jax.vmap(lambda a: _l2_dual(a, dlo, dhi, s.eps))(A)
    else:
        val = jax.vmap(lambda a: _l1_dual(a, dlo, dhi, s.eps))(A)
    return base + val - _pad(A, jnp.maximum(jnp.abs(lo), jnp.abs(hi)))


def linear_upper(s: BallInBox, A, c=0.0):
    """Upper bound of max_{x in s} A x + c (= -linear_lower(s, -A, -c))."""
    return -linear_lower(s, -A, -jnp.asarray(c))


def _l2_dual(a, dlo, dhi, eps, steps: int = 60):
    """max over mu >= 0 of min_{dlo <= d <= dhi} a.d + mu/2 (||d||^2 - eps^2), evaluated at a bisected mu."""
    def dual(mu):
        d = jnp.clip(-a / jnp.maximum(mu, 1e-300), dlo, dhi)
        return a @ d + 0.5 * mu * (d @ d - eps * eps), d @ d
    corner = jnp.where(a > 0, dlo, dhi)
    box_ok = corner @ corner <= eps * eps                # the box bound already lies in the ball
    hi0 = jnp.sqrt(a @ a) / jnp.maximum(eps, 1e-300) + 1e-300     # ||clip(-a / mu)|| <= eps from here on
    lo0 = jnp.zeros_like(hi0)

    def body(_, lh):
        lo_, hi_ = lh
        mid = 0.5 * (lo_ + hi_)
        _, n2 = dual(mid)
        return jnp.where(n2 > eps * eps, mid, lo_), jnp.where(n2 > eps * eps, hi_, mid)
    _, mu = jax.lax.fori_loop(0, steps, body, (lo0, hi0))
    val, _ = dual(mu)
    return jnp.where(box_ok, a @ corner, val)


def _l1_dual(a, dlo, dhi, eps):
    """max over mu >= 0 of -mu eps + sum_i min_{dlo_i <= d_i <= dhi_i} (a_i d_i + mu |d_i|), at the sorted
    breakpoint mu = |a_k| where the capacities of the largest |a_i| first exceed eps (fractional knapsack)."""
    cap = jnp.where(a > 0, -dlo, dhi)
    aa = jnp.abs(a)
    order = jnp.argsort(-aa)
    cum = jnp.cumsum(cap[order])
    k = jnp.argmax(cum >= eps)
    mu = jnp.where(cum[-1] >= eps, aa[order][k], 0.0)
    return -mu * eps - jnp.sum(jnp.maximum(aa - mu, 0.0) * cap)
