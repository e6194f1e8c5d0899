"""The minimum l1 or l_inf distance from x to a polyhedron in a box, in jitted and batched JAX:

    min ||z - x||_p  s.t.  G z >= h,  lo <= z <= hi,       x, lo, hi `[d]`, G `[m, d]`, h `[m]`,  p in {1, inf},

as the LPs of `robustjax.solvers.solve_min_norm` (delta = z - x; p = 1: delta = delta+ - delta-, delta+- >= 0;
p = inf: |delta_i| <= tau), by a primal-dual interior-point method (Mehrotra's predictor-corrector; Wright,
"Primal-Dual Interior-Point Methods", 1997, ch. 10). Every bound is kept as a bound, so each Newton step solves
one `[m, m]` system G K^-1 G^T + diag(w / y) (K diagonal for p = 1; diagonal plus the tau row and column for
p = inf, eliminated in O(d)): a step costs O(m^2 d), whatever the box, for the region attack's m << d.

Statuses, per problem (`robustjax.qp`'s): OPTIMAL when z is feasible to tol (max_i (h - G z)_i <= tol, rows of
unit norm: a distance) and the duality gap ||z - x||_p - `lp_dual_bound(nu)` <= gap_rtol * max(||z - x||_p, tol),
both checked exactly from the returned z and nu; INFEASIBLE with a Farkas certificate (mu = nu / sum(nu) with
max over the box of mu^T (G z - h) < -tol); MAX_ITER otherwise (callers fall back to HiGHS: `solvers`). The
returned z lies in the box exactly. Accuracy is that of the dtype: float64 under `jax.enable_x64` (`solve`).

Rows with mask False are ignored (padding, as in `robustjax.qp`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from robustjax.geometry import Box, box_violation, check_norm
from robustjax.qp import INFEASIBLE, MAX_ITER, OPTIMAL, QPSolution, _farkas, padded_rows

_STEP = 0.995           # fraction of the way to the boundary taken by each step
_RIDGE = 1e-14          # relative ridge on the normal equations
_AIM, _STALL = 1e-2, 3  # iterate on to a gap of _AIM * gap_rtol while the gap still halves within _STALL steps
_NEAR = 1e3             # not yet certified but within _NEAR * gap_rtol, 2 _STALL steps without halving the gap
                        # end the loop (it has stalled in floating point; the caller's HiGHS takes over)


def lp_dual_bound(x, G, h, lo, hi, nu, p):
    """A lower bound on min ||z - x||_p s.t. G z >= h, lo <= z <= hi for any nu `[m]` >= 0 (weak duality; the LP's
    optimum at the optimal nu), p = 1 or inf. With c = G^T nu, b = h - G x and cap_j the room from x to the box in
    the direction of sign(c_j):
    p = 1: nu^T b - sum_j (|c_j| - 1)_+ cap_j;   p = inf: nu^T b + min_{t >= 0} (t - sum_j |c_j| min(t, cap_j)).
    x, lo, hi `[d]`, G `[m, d]`, h, nu `[m]`; a scalar in x's dtype."""
    if check_norm(p) == 2:
        raise ValueError("p must be 1 or inf for the LP's dual bound, got 2")
    c = nu @ G
    cap = jnp.maximum(jnp.where(c > 0, hi - x, x - lo), 0)
    base = nu @ (h - G @ x)
    if p == 1:
        return base - jnp.sum(jnp.maximum(jnp.abs(c) - 1, 0) * cap)
    order = jnp.argsort(cap)
    cap_s, c_s = cap[order], jnp.abs(c)[order]
    below = jnp.cumsum(c_s * cap_s)
    above = jnp.sum(c_s) - jnp.cumsum(c_s)
    return base + jnp.minimum(0.0, jnp.min(cap_s - below - cap_s * above))


def _max_step(v, dv):
    """The largest a in [0, 1] with v + a dv >= 0 (v > 0)."""
    return jnp.minimum(1.0, jnp.min(jnp.where(dv < 0, -v / jnp.where(dv < 0, dv, -1.0), jnp.inf), initial=jnp.inf))


@functools.partial(jax.jit, static_argnames=("p", "max_iter"))
def min_lp(x, G, h, lo, hi, mask=None, *, p, max_iter: int = 80, tol: float = 1e-8,
           gap_rtol: float = 1e-7) -> QPSolution:
    """min ||z - x||_p s.t. G z >= h (rows with mask True), lo <= z <= hi, p = 1 or inf, for one problem
    (`min_lp_batch`: vmapped over a leading axis of every array). x, lo, hi `[d]` (x in the box); G `[m, d]`
    (unit-norm rows: tol is a distance); h `[m]`; mask `[m]` bool (None: all rows). The dtype is x's. Returns a
    `QPSolution` (lam: the LP's multipliers nu of G's rows; iterations: interior-point steps; residual: the
    primal infeasibility max(h - G z, 0))."""
    p = check_norm(p)
    if p == 2:
        raise ValueError("p must be 1 or inf for an LP, got 2 (the l2 problem is robustjax.qp.min_l2's)")
    dt = x.dtype
    m, d = G.shape
    mask = jnp.ones(m, bool) if mask is None else mask
    G, h = jnp.where(mask[:, None], G, 0), jnp.where(mask, h, 0)
    dlo, dhi = lo - x, hi - x
    b = jnp.where(mask, h - G @ x, 0)
    one = jnp.ones((), dt)
    if p == 1:                      # X = (delta+, delta-) in [0, U]; rows A X = G (delta+ - delta-) >= b
        U = jnp.concatenate([dhi, -dlo])
        cost = jnp.ones(2 * d, dt)
        coupled = False
    else:                           # X = (delta - dlo, tau) in [0, U]; rows G delta >= b, tau -+ delta >= 0
        span = dhi - dlo
        U = jnp.concatenate([span, jnp.max(span, initial=0.0)[None] + 1])
        cost = jnp.zeros(d + 1, dt).at[d].set(1)
        coupled = True
    fixed = U <= 0                  # a coordinate on a box face with no room that way: kept at 0, free of cost
    U = jnp.where(fixed, 1, U)
    cost = jnp.where(fixed, 0, cost)
    b = b - (G @ dlo if coupled else 0)
    norm = (lambda dd: jnp.sum(jnp.abs(dd))) if p == 1 else (lambda dd: jnp.max(jnp.abs(dd), initial=0.0))

    Am = jnp.concatenate([G, -G], 1) if not coupled else jnp.concatenate([G, jnp.zeros((m, 1), dt)], 1)
    Am = jnp.where(fixed[None, :], 0, Am)

    def A(X):
        return Am @ X

    def AT(y):
        return y @ Am

    bc = jnp.concatenate([dlo, -dlo]) if coupled else jnp.zeros(0, dt)

    def C(X):                       # tau - delta'_j >= dlo_j ; tau + delta'_j >= -dlo_j
        return jnp.concatenate([X[d] - X[:d], X[d] + X[:d]]) if coupled else jnp.zeros(0, dt)

    def CT(yc):
        if not coupled:
            return jnp.zeros_like(U)
        ya, yb = yc[:d], yc[d:]
        return jnp.concatenate([yb - ya, jnp.sum(ya + yb)[None]])

    def solve_K(Dx, ec, R):
        """K^-1 R for K = diag(Dx) + C^T diag(ec) C; R `[n]` or `[n, k]`."""
        if not coupled:
            return R / (Dx if R.ndim == 1 else Dx[:, None])
        ea, eb = ec[:d], ec[d:]
        dd = Dx[:d] + ea + eb
        k = eb - ea
        r1, r2 = R[:d], R[d]
        kd = k / dd
        schur = Dx[d] + jnp.sum((Dx[:d] * (ea + eb) + 4 * ea * eb) / dd)     # kk - k^T dd^-1 k, no cancellation
        t = (r2 - kd @ r1) / schur
        if R.ndim == 1:
            return jnp.concatenate([(r1 - k * t) / dd, t[None]])
        return jnp.concatenate([(r1 - k[:, None] * t[None]) / dd[:, None], t[None]], 0)

    def factor(state):
        """The normal equations' Cholesky factor at state, shared by the predictor and the corrector."""
        X, s, z, v, w, y, wc, yc = state
        Dx = z / X + v / s
        ec = yc / wc
        if coupled:
            AKA = Am @ solve_K(Dx, ec, Am.T)
        else:                       # A = [G, -G] with K diagonal: G diag(1/K+ + 1/K-) G^T, d columns, not 2d
            kinv = jnp.where(fixed[:d], 0, 1 / Dx[:d]) + jnp.where(fixed[d:], 0, 1 / Dx[d:])
            AKA = (G * kinv) @ G.T
        ridge = _RIDGE * jnp.max(jnp.diag(AKA)) + jnp.finfo(dt).tiny     # degenerate vertices: AKA near singular
        return Dx, ec, jax.scipy.linalg.cho_factor(AKA + jnp.diag(jnp.where(mask, w / y + ridge, 1.0)))

    def newton(state, fac, r_xz, r_sv, r_wy, r_wc):
        X, s, z, v, w, y, wc, yc = state
        Dx, ec, chol = fac
        r_d = cost - AT(y) - CT(yc) - z + v
        r_p = A(X) - w - b
        r_pc = C(X) - wc - bc
        f1 = r_d - r_xz / X + r_sv / s
        f2 = jnp.where(mask, -r_p + r_wy / y, 0)
        f3 = -r_pc + r_wc / yc
        g0 = CT(ec * f3) - f1
        dy = jnp.where(mask, jax.scipy.linalg.cho_solve(chol, f2 - Am @ solve_K(Dx, ec, g0)), 0)
        dX = solve_K(Dx, ec, Am.T @ dy + g0)
        dz = (r_xz - z * dX) / X
        dv = (r_sv + v * dX) / s
        dw = jnp.where(mask, (r_wy - w * dy) / y, 0)
        dyc = ec * (f3 - C(dX)) if coupled else jnp.zeros(0, dt)
        dwc = (r_wc - wc * dyc) / yc if coupled else jnp.zeros(0, dt)
        return dX, -dX, dz, dv, dw, dy, dwc, dyc

    n_pairs = 2 * U.size + jnp.sum(mask) + (2 * d if coupled else 0)

    def mu_of(state):
        X, s, z, v, w, y, wc, yc = state
        return (X @ z + s @ v + jnp.where(mask, w * y, 0).sum() + wc @ yc) / n_pairs

    def steps(state, delta):
        X, s, z, v, w, y, wc, yc = state
        dX, ds, dz, dv, dw, dy, dwc, dyc = delta
        w_ = jnp.where(mask, w, 1.0)
        y_ = jnp.where(mask, y, 1.0)
        ap = jnp.min(jnp.stack([_max_step(X, dX), _max_step(s, ds), _max_step(w_, dw),
                                _max_step(wc, dwc) if coupled else one]))
        ad = jnp.min(jnp.stack([_max_step(z, dz), _max_step(v, dv), _max_step(y_, dy),
                                _max_step(yc, dyc) if coupled else one]))
        return ap, ad

    def move(state, delta, ap, ad):
        X, s, z, v, w, y, wc, yc = state
        dX, ds, dz, dv, dw, dy, dwc, dyc = delta
        return (X + ap * dX, s + ap * ds, z + ad * dz, v + ad * dv, jnp.where(mask, w + ap * dw, 1.0),
                jnp.where(mask, y + ad * dy, 1.0), wc + ap * dwc, yc + ad * dyc)

    def answer(state):
        X, y = state[0], state[5]
        if coupled:
            delta = jnp.clip(X[:d] + dlo, dlo, dhi)
        else:
            delta = jnp.clip(jnp.where(fixed[:d], 0, X[:d]) - jnp.where(fixed[d:], 0, X[d:]), dlo, dhi)
        zz = jnp.clip(x + delta, lo, hi)
        nu = jnp.where(mask, y, 0)
        infeas = jnp.max(jnp.where(mask, h - G @ zz, 0), initial=0.0)
        dd = zz - x
        gap = norm(dd) - lp_dual_bound(x, G, h, lo, hi, nu, p)
        farkas = (jnp.sum(nu) > 0) & (_farkas(G, h, lo, hi, nu) < -tol)
        return zz, nu, infeas, gap, farkas

    def score(state):
        """(z, nu, farkas, the certified relative gap: inf unless z is feasible to tol)."""
        zz, nu, infeas, gap, farkas = answer(state)
        ok = (infeas <= tol) & jnp.isfinite(gap)
        return zz, nu, farkas, jnp.where(ok, gap / jnp.maximum(norm(zz - x), tol), jnp.inf)

    def cond(c):
        it, _, best, farkas, stall = c
        near = best[2] <= _NEAR * gap_rtol
        return ((it < max_iter) & (best[2] > _AIM * gap_rtol) & ~farkas & ((stall < 2 * _STALL) | ~near)
                & ((stall < _STALL) | (best[2] > gap_rtol)))

    def body(c):
        it, state, best, _, stall = c
        X, s, z, v, w, y, wc, yc = state
        fac = factor(state)
        aff = newton(state, fac, -X * z, -s * v, jnp.where(mask, -w * y, 0), -wc * yc)
        ap, ad = steps(state, aff)
        mu = mu_of(state)
        mu_aff = mu_of(move(state, aff, ap, ad))
        sigma = jnp.clip((mu_aff / mu) ** 3, 0, 1)
        dX, ds, dz, dv, dw, dy, dwc, dyc = aff
        corr = newton(state, fac, sigma * mu - X * z - dX * dz, sigma * mu - s * v - ds * dv,
                      jnp.where(mask, sigma * mu - w * y - dw * dy, 0), sigma * mu - wc * yc - dwc * dyc)
        ap, ad = steps(state, corr)
        state = move(state, corr, _STEP * ap, _STEP * ad)
        zz, nu, farkas, sc = score(state)
        better = sc < best[2]          # past the optimum the iterates can degrade in floating point: keep the best
        stall = jnp.where((sc < 0.5 * best[2]) | jnp.isinf(best[2]), 0, stall + 1)
        best = jax.tree.map(lambda a, b: jnp.where(better, a, b), (zz, nu, sc), best)
        return it + 1, state, best, farkas, stall

    X0 = U / 2
    s0 = U - X0
    w0 = jnp.where(mask, jnp.maximum(A(X0) - b, 1.0), 1.0)
    wc0 = jnp.maximum(C(X0) - bc, 1.0) if coupled else jnp.zeros(0, dt)
    state = (X0, s0, jnp.ones_like(U), jnp.ones_like(U), w0, jnp.ones(m, dt), wc0, jnp.ones_like(wc0))
    zz, nu, farkas, sc = score(state)
    it, state, (zz, nu, sc), farkas, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), state, (zz, nu, sc), farkas,
                                                                         jnp.int32(0)))
    far_nu = answer(state)[1]
    status = jnp.where(sc <= gap_rtol, OPTIMAL, jnp.where(farkas, INFEASIBLE, MAX_ITER)).astype(jnp.int32)
    nu = jnp.where(status == INFEASIBLE, far_nu, nu)
    infeas = jnp.max(jnp.where(mask, h - G @ zz, 0), initial=0.0)
    return QPSolution(zz, nu, status, it, infeas)


@functools.partial(jax.jit, static_argnames=("p", "max_iter"))
def min_lp_batch(x, G, h, lo, hi, mask, *, p, max_iter: int = 80, tol: float = 1e-8,
                 gap_rtol: float = 1e-7) -> QPSolution:
    """`min_lp` vmapped over the leading axis of x, G, h, lo, hi and mask (every problem its own status)."""
    one = functools.partial(min_lp.__wrapped__, p=p, max_iter=max_iter, tol=tol, gap_rtol=gap_rtol)
    return jax.vmap(one)(x, G, h, lo, hi, mask)


def solve(x, G, h, lo, hi, p, *, max_iter: int = 80, tol: float = 1e-8):
    """`min_lp` from numpy, in float64 (under `jax.enable_x64`), rows padded to `qp.padded_rows`. x, lo, hi `[d]`,
    G `[m, d]` (unit-norm rows), h `[m]`, p 1 or inf. Returns (z `[d]` float64, nu `[m]`, status)."""
    G = np.asarray(G, np.float64)
    m, d = G.shape
    gap = box_violation(x, Box(lo, hi))
    if gap > 0:
        raise ValueError(f"x must lie in the box [lo, hi]; got a coordinate {gap:g} outside it")
    mp = padded_rows(m)
    Gp, hp, mask = np.zeros((mp, d)), np.zeros(mp), np.zeros(mp, bool)
    Gp[:m], hp[:m], mask[:m] = G, h, True
    with jax.enable_x64(True):
        sol = min_lp(jnp.asarray(x, jnp.float64), jnp.asarray(Gp), jnp.asarray(hp), jnp.asarray(lo, jnp.float64),
                     jnp.asarray(hi, jnp.float64), jnp.asarray(mask), p=check_norm(p), max_iter=max_iter, tol=tol)
        z, nu, status = np.asarray(sol.z), np.asarray(sol.lam), int(sol.status)
    return z, nu[:m], status
