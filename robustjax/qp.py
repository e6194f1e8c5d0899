"""The minimum l2 distance from x to a polyhedron in a box, exactly, in jitted and batched JAX:

    min 1/2 ||z - x||^2  s.t.  G z >= h,  lo <= z <= hi,       x, lo, hi `[d]`, G `[m, d]`, h `[m]`.

Solved through its dual in the m multipliers (m small, d large: the region attack's problems). For lam >= 0 the
inner minimum over the box is z(lam) = clip(x + G^T lam, lo, hi), and

    phi(lam) = lam^T (G z(lam) - h) - 1/2 ||z(lam) - x||^2

is convex and continuously differentiable with gradient G z(lam) - h and generalized Hessian G_F G_F^T (F: the
coordinates of z(lam) strictly inside the box). Minimizing phi over lam >= 0 by projected Newton steps (Bertsekas
1982: Newton on the multipliers not held at zero, an Armijo search along the projection arc) ends in finitely
many steps on these piecewise-quadratic duals in practice; each step is a few `[m, d]` products and an `[m, m]`
Cholesky solve.

Statuses, per problem: OPTIMAL (KKT residual max_i |min(lam_i, (G z - h)_i)| <= tol: z is primal feasible to
tol, complementary to tol, and optimal), INFEASIBLE (a Farkas certificate: mu = lam / sum(lam) >= 0 with
max over the box of mu^T (G z - h) < -tol, so no z of the box meets every row), or MAX_ITER (neither within
max_iter steps; callers fall back to an exact solver: `robustjax.solvers`). Accuracy is that of the dtype: call
with float64 arrays under `jax.enable_x64(True)` for the region attack's tolerances (`solve` does).

Rows with mask False are ignored (padding: one compiled program per padded m serves every smaller problem).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

OPTIMAL, INFEASIBLE, MAX_ITER = 0, 1, 2
_WORK_ROWS = 64         # Newton systems on max(this, m / 2) gathered rows (all m when more multipliers move)
_MIN_STEP = 2.0 ** -40   # the Armijo search along the projection arc halves the step down to this
_ARMIJO = 1e-4


class QPSolution(NamedTuple):
    """z `[..., d]` the minimizer (the last iterate unless OPTIMAL), lam `[..., m]` its multipliers, status
    `[...]` int (OPTIMAL, INFEASIBLE, MAX_ITER), iterations `[...]` Newton steps taken, residual `[...]` the
    KKT residual at the end."""
    z: jax.Array
    lam: jax.Array
    status: jax.Array
    iterations: jax.Array
    residual: jax.Array


def _primal(x, G, lo, hi, lam):
    u = x + lam @ G
    return jnp.clip(u, lo, hi), (u > lo) & (u < hi)


def _phi(x, G, h, z, lam):
    return lam @ (G @ z - h) - 0.5 * jnp.sum((z - x) ** 2)


def _farkas(G, h, lo, hi, lam):
    """max over the box of mu^T (G z - h), mu = lam / sum(lam): negative proves infeasibility."""
    mu = lam / jnp.maximum(jnp.sum(lam), jnp.finfo(lam.dtype).tiny)
    a = mu @ G
    return jnp.sum(jnp.maximum(a * lo, a * hi)) - mu @ h


@functools.partial(jax.jit, static_argnames=("max_iter", "gather"))
def min_l2(x, G, h, lo, hi, mask=None, lam0=None, *, max_iter: int = 100, tol: float = 1e-9,
           gather: bool = True) -> QPSolution:
    """min 1/2 ||z - x||^2 s.t. G z >= h (rows with mask True), lo <= z <= hi, for one problem (vmap for many).

    x, lo, hi `[d]`; G `[m, d]` (scale rows to unit norm: tol is then a distance); h `[m]`; mask `[m]` bool
    (None: all rows); lam0 `[m]` a warm start (>= 0; None: zeros). The dtype is x's (float64 under x64 for
    the tolerances used here). gather: Newton systems on the gathered work rows when they fit (a `lax.cond`;
    under vmap both branches run, so the batched form solves on all rows). Returns a `QPSolution`."""
    dt = x.dtype
    m = G.shape[0]
    mask = jnp.ones(m, bool) if mask is None else mask
    lam = jnp.zeros(m, dt) if lam0 is None else jnp.where(mask, jnp.maximum(lam0.astype(dt), 0), 0)
    G = jnp.where(mask[:, None], G, 0)
    h = jnp.where(mask, h, 0)

    def kkt(lam):
        z, free = _primal(x, G, lo, hi, lam)
        g = jnp.where(mask, G @ z - h, 0)
        res = jnp.max(jnp.abs(jnp.minimum(lam, g)), initial=0.0)
        infeasible = (jnp.sum(lam) > 0) & (_farkas(G, h, lo, hi, lam) < -tol)
        return z, free, g, res, infeasible

    def newton(work, free, g, reg):
        """The Newton direction on the multipliers in `work` (zero elsewhere): (G_W diag(free) G_W^T + reg I)
        d_W = -g_W, on a gathered block of n_work rows when the work set fits, else on all m."""
        def solve(Gw, gw, valid):
            Hw = (Gw * free) @ Gw.T
            Hw = jnp.where(valid[:, None] & valid[None, :], Hw, 0) + jnp.diag(jnp.where(valid, reg, 1.0))
            return -jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(Hw), jnp.where(valid, gw, 0))

        def gathered():
            idx = jnp.nonzero(work, size=n_work, fill_value=0)[0]
            valid = jnp.arange(n_work) < jnp.sum(work)
            return jnp.zeros(m, dt).at[idx].add(jnp.where(valid, solve(G[idx], g[idx], valid), 0))

        if n_work == m:
            return solve(G, g, work)
        return jax.lax.cond(jnp.sum(work) <= n_work, gathered, lambda: solve(G, g, work))

    def cond(c):
        it, res, infeasible, stuck = c[0], c[5], c[6], c[7]
        return (it < max_iter) & (res > tol) & ~infeasible & ~stuck

    def body(c):
        it, lam, z, free, g, _, _, _ = c
        work = mask & ~((lam <= 0) & (g > 0))
        reg = 1e-10 + 1e-6 * jnp.max(jnp.abs(jnp.where(work, g, 0)))
        d = newton(work, free, g, reg)
        phi0 = _phi(x, G, h, z, lam)
        slack = 64 * jnp.finfo(dt).eps * (1 + jnp.abs(phi0))    # below rounding, Armijo cannot decide: step on

        def trial(t):
            cand = jnp.maximum(lam + t * d, 0)
            phic = _phi(x, G, h, _primal(x, G, lo, hi, cand)[0], cand)
            return cand, phic, phic <= phi0 + _ARMIJO * ((cand - lam) @ g) + slack

        def halve(c):
            t, _, _, _ = c
            return (t / 2,) + trial(t / 2)

        t, cand, phic, ok = jax.lax.while_loop(lambda c: ~c[3] & (c[0] > _MIN_STEP), halve, (1.0,) + trial(1.0))
        stuck = ~ok & (phic >= phi0)
        new = jnp.where(stuck, lam, cand)
        return (it + 1, new) + kkt(new) + (stuck,)

    n_work = min(m, max(_WORK_ROWS, m // 2)) if gather else m
    init = (jnp.int32(0), lam) + kkt(lam) + (jnp.bool_(False),)
    it, lam, z, _, _, res, infeasible, _ = jax.lax.while_loop(cond, body, init)
    status = jnp.where(res <= tol, OPTIMAL, jnp.where(infeasible, INFEASIBLE, MAX_ITER))
    return QPSolution(z, lam, status.astype(jnp.int32), it, res)


min_l2_batch = jax.jit(jax.vmap(functools.partial(min_l2.__wrapped__, gather=False), in_axes=(0, 0, 0, 0, 0, 0, 0)),
                       static_argnames=("max_iter",))


def padded_rows(m: int) -> int:
    """The padded row count for m rows: 16, 64, then the next multiple of 64 (few compiled shapes, each
    compiled once per process; the Newton matrix costs m^2 d)."""
    m = int(m)
    return 16 if m <= 16 else -(-m // 64) * 64


def solve(x, G, h, lo, hi, lam0=None, *, max_iter: int = 100, tol: float = 1e-9):
    """`min_l2` from numpy, in float64 (under `jax.enable_x64`), rows padded to `padded_rows`.

    x, lo, hi `[d]`, G `[m, d]`, h `[m]`, lam0 `[m]` or None. Returns (z `[d]` float64, lam `[m]`, status)."""
    G = np.asarray(G, np.float64)
    m, d = G.shape
    mp = padded_rows(m)
    Gp = np.zeros((mp, d))
    Gp[:m] = G
    hp, mask, lp = np.zeros(mp), np.zeros(mp, bool), np.zeros(mp)
    hp[:m], mask[:m] = h, True
    if lam0 is not None:
        lp[:len(lam0)] = lam0
    with jax.enable_x64(True):
        sol = min_l2(jnp.asarray(x, jnp.float64), jnp.asarray(Gp), jnp.asarray(hp), jnp.asarray(lo, jnp.float64),
                     jnp.asarray(hi, jnp.float64), jnp.asarray(mask), jnp.asarray(lp), max_iter=max_iter, tol=tol)
        z, lam, status = np.asarray(sol.z), np.asarray(sol.lam), int(sol.status)
    return z, lam[:m], status
