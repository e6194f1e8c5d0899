"""The CPU convex problems behind the region attack: the minimum l_p distance from x to a polyhedron in a box,

    min ||z - x||_p  s.t.  G z >= h,  lo <= z <= hi,

as a QP for p = 2 (`robustjax.qp`'s exact dual Newton solver in float64 JAX, OSQP where it does not finish, or
OSQP alone) and an LP for p = 1 and inf (`robustjax.lp`'s interior-point method in float64 JAX, HiGHS where it
does not certify its answer; HiGHS's dual simplex through scipy alone; or OSQP). One problem per call, numpy
float64 in and out; `solve_min_norm` is the whole interface.
"""
from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
import osqp
import scipy.sparse as sp
from scipy import optimize

from robustjax import lp, qp
from robustjax.geometry import Box, box_violation, check_norm

LP_SOLVERS = ("ipm", "highs", "osqp")
QP_SOLVERS = ("dual", "osqp")

_OSQP_SETTINGS = dict(verbose=False, eps_abs=1e-7, eps_rel=1e-7, eps_prim_inf=1e-8, eps_dual_inf=1e-8,
                      max_iter=20000, polishing=True, polish_refine_iter=10)


@contextlib.contextmanager
def _quiet_stdout():
    """OSQP's C code prints 'Polishing not needed' even with verbose=False: silence fd 1 meanwhile."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):   # no real stdout (captured): nothing to silence
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def _osqp(P, q, A, l, u):
    solver = osqp.OSQP()
    solver.setup(P=sp.csc_matrix(P), q=q, A=sp.csc_matrix(A), l=l, u=u, **_OSQP_SETTINGS)
    with _quiet_stdout():
        res = solver.solve(raise_error=False)
    status = str(getattr(res.info, "status", "")).lower()
    if res.x is None or "infeasible" in status or not np.all(np.isfinite(res.x)):
        return None
    return np.asarray(res.x)


def _highs_lp(x, G, rhs, dlo, dhi, p):
    """The l_inf / l1 LPs of `solve_min_norm` with HiGHS (scipy.optimize.linprog, dual simplex): delta."""
    d, m = x.size, G.shape[0]
    Gs = sp.csr_matrix(G)
    if p == np.inf:   # variables (delta, tau): min tau, |delta_i| <= tau, G delta >= rhs
        col = sp.csr_matrix(np.ones((d, 1)))
        A = sp.vstack([sp.hstack([sp.eye(d), -col]), sp.hstack([-sp.eye(d), -col]),
                       sp.hstack([-Gs, sp.csr_matrix((m, 1))])]).tocsc()
        b = np.concatenate([np.zeros(2 * d), -rhs])
        c = np.zeros(d + 1)
        c[-1] = 1.0
        bounds = np.stack([np.concatenate([dlo, [0.0]]), np.concatenate([dhi, [np.inf]])], 1)
    else:             # variables (delta+, delta-) >= 0: min sum, G (delta+ - delta-) >= rhs
        A = sp.hstack([-Gs, Gs]).tocsc()
        b = -rhs
        c = np.ones(2 * d)
        lower = np.concatenate([np.maximum(dlo, 0.0), np.maximum(-dhi, 0.0)])    # nonzero only for x off the box
        bounds = np.stack([lower, np.concatenate([np.maximum(dhi, 0.0), np.maximum(-dlo, 0.0)])], 1)
    res = optimize.linprog(c, A_ub=A, b_ub=b, bounds=bounds, method="highs-ds")
    if res.status != 0 or res.x is None:
        return None
    return res.x[:d] if p == np.inf else res.x[:d] - res.x[d:]


def min_l2(x, G, h, lo, hi, lam0=None):
    """The p = 2 problem of `solve_min_norm` by `robustjax.qp.solve` (rows scaled to unit norm; lam0 `[m]` a
    warm start for the multipliers of those scaled rows), OSQP where it reaches its iteration limit.
    Returns (z `[d]` or None when infeasible, the multipliers `[m]` of the scaled rows: the next warm start)."""
    G, h = np.asarray(G, np.float64), np.asarray(h, np.float64)
    scale = np.maximum(np.linalg.norm(G, axis=1), 1e-300)
    z, lam, status = qp.solve(x, G / scale[:, None], h / scale, lo, hi, lam0)
    if status == qp.OPTIMAL:
        return z, lam
    if status == qp.INFEASIBLE:
        return None, lam
    return solve_min_norm(x, G, h, lo, hi, 2, qp_solver="osqp"), lam


def min_lp(x, G, h, lo, hi, p):
    """The p = 1 or inf problem of `solve_min_norm` by `robustjax.lp.solve` (rows scaled to unit norm), HiGHS
    where it neither certifies an optimum nor proves infeasibility, or where x lies outside the box (the interior
    point's variables start at x). Returns z `[d]`, or None when infeasible."""
    if box_violation(x, Box(lo, hi)) > 0:
        return solve_min_norm(x, G, h, lo, hi, p, lp_solver="highs")
    G, h = np.asarray(G, np.float64), np.asarray(h, np.float64)
    scale = np.maximum(np.linalg.norm(G, axis=1), 1e-300)
    z, _, status = lp.solve(x, G / scale[:, None], h / scale, lo, hi, p)
    if status == qp.OPTIMAL:
        return z
    if status == qp.INFEASIBLE:
        return None
    return solve_min_norm(x, G, h, lo, hi, p, lp_solver="highs")


def solve_min_norm(x, G, h, lo, hi, p, *, lp_solver: str = "ipm", qp_solver: str = "dual"):
    """min ||z - x||_p s.t. G z >= h, lo <= z <= hi; x `[d]`, G `[m, d]`, h `[m]`, lo/hi `[d]`.

    p = 2: the QP min 1/2 ||delta||^2; p = inf: the LP min tau s.t. |delta_i| <= tau; p = 1: the LP
    min 1^T (delta+ + delta-) with delta = delta+ - delta-, delta+- >= 0. delta = z - x.

    The QP goes to `robustjax.qp.solve` (`qp_solver="dual"`: optimal to 1e-9 in distance, or infeasible with
    a Farkas certificate; OSQP where it reaches its iteration limit) or to OSQP alone (`"osqp"`, the
    reference); the LPs to `robustjax.lp`'s interior-point method (`lp_solver="ipm"`: feasible to 1e-8 and
    optimal to a duality gap of 1e-7 relative, both checked exactly, or infeasible with a Farkas certificate;
    HiGHS where it certifies neither), to HiGHS's dual simplex alone (`"highs"`, the reference), or to OSQP
    (ADMM: an order of magnitude slower or more on these LPs). Returns z `[d]`, or None when the problem is
    infeasible.
    """
    p = check_norm(p)
    if lp_solver not in LP_SOLVERS:
        raise ValueError(f"lp_solver must be one of {LP_SOLVERS}, got {lp_solver!r}")
    if qp_solver not in QP_SOLVERS:
        raise ValueError(f"qp_solver must be one of {QP_SOLVERS}, got {qp_solver!r}")
    x, G, h = np.asarray(x, np.float64), np.asarray(G, np.float64), np.asarray(h, np.float64)
    if G.ndim != 2 or G.shape[1] != x.size or h.shape != (G.shape[0],):
        raise ValueError(f"G must be [m, {x.size}] and h [m] for x of {x.size} entries; got G {G.shape}, h {h.shape}")
    d, m = x.size, G.shape[0]
    dlo, dhi = np.asarray(lo, np.float64) - x, np.asarray(hi, np.float64) - x
    rhs = h - G @ x
    inf = np.full(m, np.inf)
    if p != 2 and lp_solver == "ipm":
        return min_lp(x, G, h, lo, hi, p)
    if p != 2 and lp_solver == "highs":
        sol = _highs_lp(x, G, rhs, dlo, dhi, p)
        return None if sol is None else x + sol
    if p == 2 and qp_solver == "dual":
        return min_l2(x, G, h, lo, hi)[0]
    if p == 2:
        A = sp.vstack([sp.eye(d), sp.csr_matrix(G)])
        sol = _osqp(sp.eye(d), np.zeros(d), A, np.concatenate([dlo, rhs]), np.concatenate([dhi, inf]))
        return None if sol is None else x + sol
    if p == np.inf:
        eye, col = sp.eye(d), sp.csr_matrix(np.ones((d, 1)))
        A = sp.vstack([sp.hstack([eye, sp.csr_matrix((d, 1))]),
                       sp.hstack([eye, -col]), sp.hstack([eye, col]),
                       sp.hstack([sp.csr_matrix(G), sp.csr_matrix((m, 1))]),
                       sp.hstack([sp.csr_matrix((1, d)), sp.csr_matrix(np.ones((1, 1)))])])
        l = np.concatenate([dlo, np.full(d, -np.inf), np.zeros(d), rhs, [0.0]])
        u = np.concatenate([dhi, np.zeros(d), np.full(d, np.inf), inf, [np.inf]])
        q = np.zeros(d + 1)
        q[-1] = 1.0
        sol = _osqp(sp.csc_matrix((d + 1, d + 1)), q, A, l, u)
        return None if sol is None else x + sol[:d]
    # p == 1
    A = sp.vstack([sp.eye(2 * d), sp.hstack([sp.csr_matrix(G), sp.csr_matrix(-G)])])
    l = np.concatenate([np.zeros(2 * d), rhs])
    u = np.concatenate([np.maximum(dhi, 0.0), np.maximum(-dlo, 0.0), inf])
    sol = _osqp(sp.csc_matrix((2 * d, 2 * d)), np.ones(2 * d), A, l, u)
    return None if sol is None else x + sol[:d] - sol[d:]

