"""The randomized linear-region attack for piecewise-affine (ReLU, max-pool) networks.

Croce & Hein, "A randomized gradient-free attack on ReLU networks" (GCPR 2018); Croce, Rauber & Hein,
"Scaling up the randomized gradient-free adversarial attack reveals overestimation of robustness
using established attacks" (IJCV 2019, arXiv 1903.11359). methods.md section 2.

A ReLU / max-pool network is affine on each linear region Q(y) = {z : the activation pattern at z is
the one at y}. For a sample point y and a target class t the attack solves the convex problem

    min ||z - x||_p  s.t.  z in Q(y),  f_t(z) >= f_c(z),  lo <= z <= hi

(a QP for p = 2 with OSQP; an LP for p = 1 and inf, with HiGHS by default or OSQP), keeps the closest
verified adversarial point and samples the next regions around it (x_r = x_best + dir ||x_best - x|| r^6,
dir tilted toward x), plus the neighbouring regions across the faces binding at the best solution.

How the region is found without knowing the architecture: `logits_fn` is traced once to a jaxpr and
re-evaluated by a small interpreter that records every *switch* quantity whose sign selects a branch
of a piecewise-affine primitive: `max(a, b)` and `min(a, b)` (so `jax.nn.relu`) record `a - b`,
`reduce_window_max` (max-pooling) and `reduce_max` record `a_i - max(window)` for each window entry,
comparisons (`gt`, `ge`, `lt`, `le`, feeding `jnp.where`) record `a - b`, `abs` and `sign` their
operand, `clamp(lo, a, hi)` both `a - lo` and `a - hi`. On Q(y) the logits and all switches are affine
in z, so their linearization at y is exact there, and Q(y) = {z : sign(s_j(y)) s_j(z) >= 0} (switches
that are 0 at y, e.g. max-pool windows of equal zeros, are constant on Q(y) and dropped). Control flow
(cond, while, scan) inside `logits_fn` is rejected; for such models, or to state the pre-activations
yourself, pass `preacts_fn(x) -> list of [batch, n_l]` arrays: the pre-activations of every ReLU.

Only the rows that can bind reach OSQP: a problem starts with the misclassification row (plus the
rows that were active at the best solution so far) and the box; the region rows violated at the
solution are added (computed by one vjp) and the problem re-solved until none is violated. A cheap
exact lower bound prunes most (region, target) pairs: no point of the half space {f_t >= f_c} is
closer to x than |f_t(x) - f_c(x)| / ||grad (f_t - f_c)||_q (q the dual norm), so a pair whose bound
exceeds the best distance cannot help. The constraints of all sampled points of a round come from one
jitted `jax.vmap`.

Guarantees: every returned example is clipped to the box and re-verified with the real model
(`finalize`); the distance is an upper bound on the minimal adversarial distance, never below it.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import osqp
import scipy.sparse as sp
from scipy import optimize
from jax.extend import core as jcore

from robustjax.attacks.result import AttackResult, Box, check_inputs, check_norm, finalize

# ----------------------------------------------------------------------------------------------
# Switch tracing: the sign pattern of every piecewise-affine primitive, as functions of x.
# ----------------------------------------------------------------------------------------------


def _flat_diff(a, b, shape):
    return (jnp.broadcast_to(a, shape) - jnp.broadcast_to(b, shape)).reshape(-1)


def _rec_binary(eqn, invals, outvals):
    return [_flat_diff(invals[0], invals[1], outvals[0].shape)]


def _rec_unary(eqn, invals, outvals):
    return [jnp.asarray(invals[0]).reshape(-1)]


def _rec_clamp(eqn, invals, outvals):
    lo, a, hi = invals
    return [_flat_diff(a, lo, outvals[0].shape), _flat_diff(a, hi, outvals[0].shape)]


def _rec_reduce_max(eqn, invals, outvals):
    a, out = invals[0], outvals[0]
    axes = tuple(eqn.params["axes"])
    return [(a - jnp.expand_dims(out, axes)).reshape(-1)]


def _window_index(in_shape, window, strides, padding):
    """For reduce_window: `[n_out, n_window]` flat indices into the unpadded operand, and a validity mask."""
    in_shape, window, strides = map(tuple, (in_shape, window, strides))
    pads = [p[0] for p in padding]
    out_shape = tuple((n + lo + hi - w) // s + 1 for n, (lo, hi), w, s in zip(in_shape, padding, window, strides))
    out_idx = np.stack(np.meshgrid(*[np.arange(o) for o in out_shape], indexing="ij"), -1).reshape(-1, len(in_shape))
    win_idx = np.stack(np.meshgrid(*[np.arange(w) for w in window], indexing="ij"), -1).reshape(-1, len(in_shape))
    pos = out_idx[:, None, :] * np.asarray(strides) + win_idx[None, :, :] - np.asarray(pads)
    valid = np.all((pos >= 0) & (pos < np.asarray(in_shape)), axis=-1)
    flat = np.ravel_multi_index(tuple(np.clip(pos, 0, np.asarray(in_shape) - 1).transpose(2, 0, 1)), in_shape)
    return flat, valid


def _rec_reduce_window_max(eqn, invals, outvals):
    prm = eqn.params
    if any(d != 1 for d in prm["base_dilation"]) or any(d != 1 for d in prm["window_dilation"]):
        raise NotImplementedError("region attack: dilated max-pooling is not supported; pass preacts_fn")
    a, out = invals[0], outvals[0]
    flat, valid = _window_index(a.shape, prm["window_dimensions"], prm["window_strides"], prm["padding"])
    diff = a.reshape(-1)[flat] - out.reshape(-1)[:, None]
    return [jnp.where(valid, diff, 0.0).reshape(-1)]


# Primitive name -> recorder (eqn, invals, outvals) -> list of flat switch arrays. Extend by adding rows.
SWITCH_RECORDERS: dict[str, Callable] = {
    "max": _rec_binary, "min": _rec_binary,
    "gt": _rec_binary, "ge": _rec_binary, "lt": _rec_binary, "le": _rec_binary,
    "abs": _rec_unary, "sign": _rec_unary, "clamp": _rec_clamp,
    "reduce_max": _rec_reduce_max, "reduce_min": _rec_reduce_max,
    "reduce_window_max": _rec_reduce_window_max, "reduce_window_min": _rec_reduce_window_max,
}
_CALL_PRIMITIVES = ("pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
                    "custom_vjp_call_jaxpr", "remat", "checkpoint", "custom_lin")
_REJECTED = ("cond", "while", "scan", "switch")


def _sub_jaxpr(eqn):
    for k in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        j = eqn.params.get(k)
        if isinstance(j, jcore.ClosedJaxpr):
            return j.jaxpr, j.consts
        if isinstance(j, jcore.Jaxpr):
            return j, []
    raise NotImplementedError(f"region attack: cannot look inside primitive {eqn.primitive.name}")


def _eval_recording(jaxpr, consts, args, rec: list):
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in _CALL_PRIMITIVES:
            sub, sub_consts = _sub_jaxpr(eqn)
            outvals = _eval_recording(sub, sub_consts, invals, rec)
        elif name in _REJECTED:
            raise NotImplementedError(f"region attack: control flow ({name}) in logits_fn; pass preacts_fn")
        else:
            outvals = eqn.primitive.bind(*invals, **eqn.params)
            if not eqn.primitive.multiple_results:
                outvals = [outvals]
            recorder = SWITCH_RECORDERS.get(name)
            if recorder is not None:
                rec.extend(recorder(eqn, invals, outvals))
        for v, o in zip(eqn.outvars, outvals):
            if not isinstance(v, jcore.DropVar):
                env[v] = o
    return [read(v) for v in jaxpr.outvars]


def switch_fn(logits_fn: Callable, example_shape: Sequence[int], *, preacts_fn: Callable | None = None,
              dtype=jnp.float32) -> Callable:
    """g(x_flat `[d]`) -> (logits `[K]`, switches `[n]`): one example, with the signs that fix its region.

    With `preacts_fn` the switches are its pre-activations (concatenated); otherwise they are traced
    from `logits_fn` (module docstring). g is traceable (jit, vmap, jvp, vjp all apply).
    """
    example_shape = tuple(example_shape)

    def single_logits(xf):
        return logits_fn(xf.reshape((1,) + example_shape))[0]

    if preacts_fn is not None:
        def g(xf):
            pre = preacts_fn(xf.reshape((1,) + example_shape))
            sw = jnp.concatenate([jnp.reshape(a[0], -1) for a in pre]) if len(pre) else jnp.zeros((0,), dtype)
            return single_logits(xf), sw
        return g

    d = int(np.prod(example_shape))
    closed = jax.make_jaxpr(single_logits)(jnp.zeros((d,), dtype))

    def g(xf):
        rec: list = []
        (out,) = _eval_recording(closed.jaxpr, closed.consts, [xf], rec)
        sw = jnp.concatenate([r.astype(out.dtype) for r in rec]) if rec else jnp.zeros((0,), out.dtype)
        return out, sw
    return g


# ----------------------------------------------------------------------------------------------
# Convex problems: min ||z - x||_p  s.t.  G z >= h,  lo <= z <= hi, with OSQP.
# ----------------------------------------------------------------------------------------------

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
        bounds = np.stack([np.zeros(2 * d), np.concatenate([np.maximum(dhi, 0.0), np.maximum(-dlo, 0.0)])], 1)
    res = optimize.linprog(c, A_ub=A, b_ub=b, bounds=bounds, method="highs-ds")
    if res.status != 0 or res.x is None:
        return None
    return res.x[:d] if p == np.inf else res.x[:d] - res.x[d:]


def solve_min_norm(x, G, h, lo, hi, p, *, lp_solver: str = "highs"):
    """min ||z - x||_p s.t. G z >= h, lo <= z <= hi; x `[d]`, G `[m, d]`, h `[m]`, lo/hi `[d]`.

    p = 2: the QP min 1/2 ||delta||^2; p = inf: the LP min tau s.t. |delta_i| <= tau; p = 1: the LP
    min 1^T (delta+ + delta-) with delta = delta+ - delta-, delta+- >= 0. delta = z - x.

    The QP goes to OSQP; the LPs to HiGHS's dual simplex by default (`lp_solver="highs"`): OSQP (ADMM)
    solves them too (`lp_solver="osqp"`) but measured here 10-100x slower on d = 784 with 20 region
    rows (2.4 s vs 0.24 s for l_inf, 5.2 s vs 0.05 s for l1). Returns z, or None when the solver
    reports infeasibility.
    """
    x, G, h = np.asarray(x, np.float64), np.asarray(G, np.float64), np.asarray(h, np.float64)
    d, m = x.size, G.shape[0]
    dlo, dhi = np.asarray(lo, np.float64) - x, np.asarray(hi, np.float64) - x
    rhs = h - G @ x
    inf = np.full(m, np.inf)
    if p != 2 and lp_solver == "highs":
        sol = _highs_lp(x, G, rhs, dlo, dhi, p)
        return None if sol is None else x + sol
    if p != 2 and lp_solver != "osqp":
        raise ValueError(f"lp_solver must be 'highs' or 'osqp', got {lp_solver!r}")
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


def _norm_np(v, p):
    return float(np.max(np.abs(v))) if p == np.inf else float(np.sum(np.abs(v)) if p == 1 else np.linalg.norm(v))


# ----------------------------------------------------------------------------------------------
# The attack.
# ----------------------------------------------------------------------------------------------


class RegionInfo(NamedTuple):
    """Diagnostics of a region attack run, one row per example.

    trajectory: `[batch, n_regions + 1]` best distance after the start (column 0) and after each
      sampled region (inf while nothing is found; 0 for misclassified inputs).
    start_distance: `[batch]` distance of the starting point (inf if none was found).
    n_qp: `[batch]` OSQP solves (each re-solve of the active-set loop counts).
    rows: `[batch]` mean number of region rows handed to OSQP per solve.
    time_s: `[batch]` wall time per example, including the start.
    """
    trajectory: np.ndarray
    start_distance: np.ndarray
    n_qp: np.ndarray
    rows: np.ndarray
    time_s: np.ndarray


class _Fns(NamedTuple):
    probe: Callable       # Y [R, d] -> (logits [R, K], switches [R, n], jac [R, K, d])
    lin: Callable         # (y [d], z [d]) -> linearized switches at z [n]
    rows: Callable        # (y [d], idx [m]) -> switch gradient rows [m, d]
    logits: Callable      # Z [B, d] -> logits [B, K]
    ray: Callable         # (x [d], z [d], c, lo, hi) -> (point, found): first adversarial point on x -> z
    round: Callable       # one sampling round: (Y, logits, switches, w, lower bounds)


@functools.lru_cache(maxsize=8)
def _make_fns(logits_fn, preacts_fn, example_shape, dtype, n_grid=64, n_bisect=24, s_max=1.05) -> _Fns:
    """The jitted pieces for one model (cached: repeated attacks on the same logits_fn compile once)."""
    g = switch_fn(logits_fn, example_shape, preacts_fn=preacts_fn, dtype=dtype)

    def logits_only(yf):
        return g(yf)[0]

    def one_probe(y):
        out, sw = g(y)
        jac = jax.jacrev(logits_only)(y)
        return out, sw, jac

    probe = jax.jit(jax.vmap(one_probe))

    @jax.jit
    def lin(y, z):
        (_, sw), (_, dsw) = jax.jvp(g, (y,), (z - y,))
        return sw + dsw

    @jax.jit
    def rows(y, idx):
        sw, pullback = jax.vjp(lambda t: g(t)[1], y)
        cot = jax.nn.one_hot(idx, sw.shape[0], dtype=sw.dtype)
        return jax.vmap(lambda c: pullback(c)[0])(cot)

    def batched_logits(zf):
        return logits_fn(zf.reshape((zf.shape[0],) + tuple(example_shape)))

    logits_j = jax.jit(batched_logits)

    @jax.jit
    def ray(x, z, c, lo, hi):
        """The point clip(x + s (z - x)) with the smallest s in [0, s_max] (grid, then bisection) at which
        max_{k != c} f_k - f_c > margin (a relative 1e-6 safety margin against rounding), and `found`."""
        def adv(s):
            pts = jnp.clip(x[None] + s[:, None] * (z - x)[None], lo, hi)
            out = batched_logits(pts)
            other = jnp.max(jnp.where(jnp.arange(out.shape[-1]) == c, -jnp.inf, out), -1)
            return other - out[:, c] > 1e-6 * (1.0 + jnp.max(jnp.abs(out), -1))
        grid = jnp.linspace(0.0, s_max, n_grid)
        a = adv(grid)
        found = jnp.any(a)
        k = jnp.argmax(a)
        s_hi = grid[k]
        s_lo = jnp.where(k > 0, grid[jnp.maximum(k - 1, 0)], 0.0)

        def body(_, lh):
            lo_, hi_ = lh
            mid = 0.5 * (lo_ + hi_)
            ok = adv(mid[None])[0]
            return jnp.where(ok, lo_, mid), jnp.where(ok, mid, hi_)
        _, s_hi = jax.lax.fori_loop(0, n_bisect, body, (s_lo, s_hi))
        return jnp.clip(x + s_hi * (z - x), lo, hi), found

    @functools.partial(jax.jit, static_argnames=("p", "R"))
    def round_fn(key, x, x_best, c, lo, hi, gamma, first, extra, n_extra, *, p, R):
        """One round: R points around x_best (the first one x_best itself when `first`; the first n_extra
        replaced by `extra` `[R, d]`), their logits,
        switches, margin gradients w = J_t - J_c `[R, K, d]`, and the lower bounds `[R, K]`."""
        k_r, k_u = jax.random.split(key)
        frac = jax.random.uniform(k_u, (R,)) ** gamma
        frac = jnp.where(first & (jnp.arange(R) == 0), 0.0, frac)
        Y = _sample_points(k_r, x, x_best, frac)
        Y = jnp.where((jnp.arange(R) < n_extra)[:, None], extra, Y)   # neighbours across binding faces first
        out, sw, jac = jax.vmap(one_probe)(Y)
        w = jac - jnp.take(jac, c, axis=1)[:, None, :]
        g_x = out - jnp.take(out, c, axis=1)[:, None] + jnp.einsum("rkd,d->rk", w, x) - jnp.einsum("rkd,rd->rk", w, Y)
        bound = functools.partial(halfspace_box_distance, x=x, lo=lo, hi=hi, p=p)
        lb = jax.vmap(jax.vmap(bound))(w, -g_x)
        lb = jnp.where(jnp.arange(out.shape[1])[None] == c, jnp.inf, lb)
        return Y, out, sw, w, lb

    return _Fns(probe, lin, rows, logits_j, ray, round_fn)


_CHUNK = 32   # region rows are fetched 32 at a time (one vjp each): a single compilation


def _pad_idx(idx):
    return np.concatenate([idx, np.full(_CHUNK - len(idx), idx[0])]).astype(np.int32)


def _dual_norm(w, p):
    if p == np.inf:
        return jnp.sum(jnp.abs(w), -1)
    if p == 1:
        return jnp.max(jnp.abs(w), -1)
    return jnp.linalg.norm(w, axis=-1)


def halfspace_box_distance(w, r, x, lo, hi, p):
    """Exact min ||delta||_p s.t. w . delta >= r, lo <= x + delta <= hi; w `[d]`, r scalar -> scalar.

    The region problem minus its region rows, so a lower bound on it (inf when infeasible). Closed form
    by sorting breakpoints: p = 2: delta = clip(lambda w, lo - x, hi - x); p = inf: delta_i =
    sign(w_i) min(eps, cap_i); p = 1: a fractional knapsack on |w_i| (largest first).
    """
    cap = jnp.where(w > 0, hi - x, x - lo)
    cap = jnp.maximum(cap, 0.0)
    aw = jnp.abs(w)
    gain = aw * cap                        # what coordinate i contributes to w . delta once saturated
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
        c_before = jnp.cumsum(g) - g                      # sum_{j<k} |w_j| cap_j
        w_after = jnp.cumsum(a[::-1])[::-1]              # sum_{j>=k} |w_j|
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


def _sample_points(key, x, x_best, frac):
    """`[R, d]` points x_best + dir ||x_best - x||_2 r^6 (methods.md 2, step 2); frac `[R]` = r^6."""
    k1, k2, k3 = jax.random.split(key, 3)
    R = frac.shape[0]
    diff = x - x_best
    nrm = jnp.linalg.norm(diff)
    e = diff / jnp.maximum(nrm, 1e-12)
    n = jax.random.normal(k1, (R, x.shape[0]))
    n = n - (n @ e)[:, None] * e[None]
    n = n / jnp.maximum(jnp.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    toward = jax.random.uniform(k2, (R,)) < 0.8
    alpha = jax.random.uniform(k3, (R,), minval=0.0, maxval=jnp.pi)
    alpha = jnp.where(toward, alpha, -alpha)
    direction = jnp.sin(alpha)[:, None] * e[None] + jnp.cos(alpha)[:, None] * n
    return x_best[None] + direction * (nrm * frac)[:, None]


def _region_solve(fns, x, y, sw_y, G0, h0, lo, hi, p, best, seed_idx, max_rounds, stats, lp_solver):
    """Active-set solve of min ||z - x||_p over Q(y), G0 z >= h0 and the box.

    Returns None (infeasible, or no better than `best`) or (z, the region rows used, unit normals
    `[k, d]` of the region faces binding at z: crossing one leads to a neighbouring region).
    """
    sigma = np.sign(sw_y)
    live = sigma != 0
    scale = np.maximum(np.abs(sw_y).max(initial=0.0), 1e-12)
    idx = np.asarray(sorted(set(int(i) for i in seed_idx) & set(np.flatnonzero(live).tolist())), np.int64)
    y_j = jnp.asarray(y)
    rows_cache = np.zeros((0, x.size))
    z = None
    for _ in range(max_rounds):
        if len(idx) > len(rows_cache):
            new = idx[len(rows_cache):]
            chunks = [np.asarray(fns.rows(y_j, jnp.asarray(_pad_idx(new[k:k + _CHUNK]))))[: len(new[k:k + _CHUNK])]
                      for k in range(0, len(new), _CHUNK)]
            rows_cache = np.concatenate([rows_cache] + [c.astype(np.float64) for c in chunks])
        S = sigma[idx][:, None] * rows_cache
        b = -sigma[idx] * (sw_y[idx] - rows_cache @ y)   # sigma (s(y) + J (z - y)) >= 0  <=>  S z >= b
        nrm = np.maximum(np.linalg.norm(S, axis=1), 1e-12)
        G = np.concatenate([G0, S / nrm[:, None]])
        h = np.concatenate([h0, b / nrm])
        z = solve_min_norm(x, G, h, lo, hi, p, lp_solver=lp_solver)
        stats["n_qp"] += 1
        stats["rows"] += len(idx)
        if z is None or _norm_np(z - x, p) >= best:
            return None
        viol = sigma * np.asarray(fns.lin(y_j, jnp.asarray(z, jnp.float32))) < -1e-6 * scale
        viol &= live
        viol[idx] = False
        if not viol.any():
            slack = G[1:] @ z - h[1:]                      # region rows (unit normals): distance to each face
            binding = slack <= 1e-4 * max(np.linalg.norm(z - x), 1e-9)
            return z, idx, G[1:][binding]
        idx = np.concatenate([idx, np.flatnonzero(viol)])
    return z, idx, np.zeros((0, x.size))


def _nearest_training(fns, xf, labels, p, x_train, y_train):
    """`[batch, d]` nearest training point (in l_p) of another true and predicted class; x where none."""
    n = xf.shape[0]
    xt = np.asarray(x_train, np.float32).reshape(len(x_train), -1)
    pred_t = np.concatenate([np.asarray(jnp.argmax(fns.logits(jnp.asarray(xt[i:i + 1024])), -1))
                             for i in range(0, len(xt), 1024)])
    yt = pred_t if y_train is None else np.asarray(y_train)
    tr = np.empty((n, xf.shape[1]), np.float32)
    for i in range(n):
        ok = (yt != labels[i]) & (pred_t != labels[i])
        if not ok.any():
            tr[i] = xf[i]
            continue
        pool = xt[ok]
        dist = np.asarray(_pool_dist(jnp.asarray(pool), jnp.asarray(xf[i], jnp.float32), p))
        tr[i] = pool[int(np.argmin(dist))]
    return tr


def _start_points(logits_fn, x, labels, p, key, box, x_start, x_train, y_train, fns, flat_lo, flat_hi,
                  extra_starts=None):
    """Candidate starting points `[batch, d]` (flat; x itself where none) and their distances."""
    n = x.shape[0]
    xf = np.asarray(x.reshape(n, -1), np.float64)
    cands = []
    if x_start is not None:
        cands.append(np.asarray(x_start, np.float32).reshape(n, -1))
    else:
        try:
            from robustjax.attacks.deepfool import deepfool  # optional: written alongside this module
            # any adversarial point is a valid start: l1 starts from DeepFool's l2 point (and the l1 start below)
            r = deepfool(logits_fn, x, labels, p=2.0 if p == 1 else p, key=key, box=box)
            cands.append(np.asarray(r.x_adv, np.float32).reshape(n, -1))
        except (ImportError, ValueError):   # no DeepFool module, or not for this norm (p = 1)
            pass
    if p == 1:
        cands.append(_l1_linear_start(fns, xf, labels, flat_lo, flat_hi))
    if x_train is not None:
        cands.append(_nearest_training(fns, xf, labels, p, x_train, y_train))
    if extra_starts is not None:
        cands.append(np.asarray(extra_starts, np.float32).reshape(n, -1))
    best = xf.astype(np.float32).copy()
    best_d = np.full(n, np.inf)
    lo_j, hi_j = jnp.asarray(flat_lo, jnp.float32), jnp.asarray(flat_hi, jnp.float32)

    def take(c, which):
        for i in which:
            z, found = fns.ray(jnp.asarray(xf[i], jnp.float32), jnp.asarray(c[i]), int(labels[i]), lo_j, hi_j)
            if bool(found):
                z = np.asarray(z)
                dz = _norm_np(z.astype(np.float64) - xf[i], p)
                if dz < best_d[i]:
                    best[i], best_d[i] = z, dz
    for c in cands:
        take(c, range(n))
    missing = np.flatnonzero(~np.isfinite(best_d))
    if len(missing):   # fallback 1: DeepFool-style linearized steps of our own
        lin = np.zeros((n, xf.shape[1]), np.float32)
        lin[missing] = _linear_steps(fns, xf[missing].astype(np.float32), labels[missing], 2.0 if p == 1 else p,
                                     flat_lo, flat_hi)
        take(lin, missing)
    missing = np.flatnonzero(~np.isfinite(best_d))
    if len(missing):   # fallback 2: the nearest of 1024 uniform points of the box the model puts in another class
        pool = np.asarray(jax.random.uniform(jax.random.fold_in(key, 1), (1024, xf.shape[1])), np.float32)
        pool = (flat_lo + pool * (flat_hi - flat_lo)).astype(np.float32)
        pred = np.asarray(jnp.argmax(fns.logits(jnp.asarray(pool)), -1))
        near = np.zeros((n, xf.shape[1]), np.float32)
        for i in missing:
            ok = pred != labels[i]
            if ok.any():
                dist = np.asarray(_pool_dist(jnp.asarray(pool[ok]), jnp.asarray(xf[i], jnp.float32), p))
                near[i] = pool[ok][int(np.argmin(dist))]
        take(near, missing)
    return best, best_d


@jax.jit
def _pool_dist_2(pool, x):
    return jnp.sum((pool - x) ** 2, -1)


def _pool_dist(pool, x, p):
    if p == 2:
        return _pool_dist_2(pool, x)
    return jnp.max(jnp.abs(pool - x), -1) if p == np.inf else jnp.sum(jnp.abs(pool - x), -1)


def halfspace_box_step(w, r, x, lo, hi, p):
    """argmin ||delta||_p s.t. w . delta >= r, lo <= x + delta <= hi (numpy, `[d]`); None if infeasible.

    The minimizer that `halfspace_box_distance` measures: p = 1 a fractional knapsack (saturate coordinates
    by decreasing |w_i|); p = inf delta_i = sign(w_i) min(eps, cap_i); p = 2 delta_i = sign(w_i)
    min(lambda |w_i|, cap_i), with eps and lambda found among the sorted breakpoints."""
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


def _step_from_x(out, jac, z, x, c, t, lo, hi, p, overshoot):
    """The exact l_p step delta from x (not from the iterate z) onto {f_t >= f_c} linearized at z, in the box,
    with an overshoot; out `[K]`, jac `[K, d]` at z. None if the box cannot reach it."""
    w = jac[t] - jac[c]
    r = out[c] - out[t] + w @ (z.astype(np.float64) - x)
    return halfspace_box_step(w, (1 + overshoot) * r + 1e-6, x, lo, hi, p)


def _l1_linear_start(fns, xf, labels, lo, hi, steps=30, overshoot=0.05):
    """l1 start `[batch, d]`: repeatedly the exact l1 step from x (not from the iterate) to the nearest
    boundary linearized at the iterate, in the box (sparse, unlike DeepFool's l2 point, so it starts the
    region search in an l1 basin). x itself where it never crosses."""
    z = xf.astype(np.float32).copy()
    out_z = np.array(z)
    for i in range(len(z)):
        c = int(labels[i])
        found = False
        for _ in range(steps):
            out, _, jac = (np.asarray(a[0], np.float64) for a in fns.probe(jnp.asarray(z[i:i + 1])))
            if int(np.argmax(out)) != c:
                found = True
                break
            jac = jac.reshape(len(out), -1)
            best = None
            for t in np.flatnonzero(np.arange(len(out)) != c):
                delta = _step_from_x(out, jac, z[i], xf[i], c, t, lo, hi, 1, overshoot)
                if delta is not None and (best is None or np.abs(delta).sum() < np.abs(best).sum()):
                    best = delta
            if best is None:
                break
            z[i] = np.clip(xf[i] + best, lo, hi)
        if found:
            out_z[i] = z[i]
    return out_z


def _linear_steps(fns, xf, labels, p, lo, hi, steps=50, overshoot=0.02):
    """Fallback start (no DeepFool, no training set): DeepFool-style steps to the nearest linearized
    boundary, clipped to the box, `[batch, d]`."""
    z = xf.copy()
    for i in range(len(z)):
        for _ in range(steps):
            out, _, jac = (np.asarray(a[0], np.float64) for a in fns.probe(jnp.asarray(z[i:i + 1])))
            c = int(labels[i])
            if int(np.argmax(out)) != c:
                break
            w = jac - jac[c]
            g = out - out[c]
            dn = np.asarray(_dual_norm(jnp.asarray(w), p)) + 1e-12
            ratio = np.abs(g) / dn
            ratio[c] = np.inf
            t = int(np.argmin(ratio))
            wt = w[t]
            if p == 2:
                step = wt / dn[t]
            elif p == np.inf:
                step = np.sign(wt)
            else:
                step = np.zeros_like(wt)
                step[np.argmax(np.abs(wt))] = np.sign(wt[np.argmax(np.abs(wt))])
            z[i] = np.clip(z[i] + (1 + overshoot) * ratio[t] * step + 1e-6 * step, lo, hi)
    return z


def region_with_info(logits_fn: Callable, x, labels, *, p, key, box: Box = Box(), n_regions: int = 100,
                     batch_regions: int = 10, x_start=None, x_train=None, y_train=None,
                     preacts_fn: Callable | None = None, gamma: float = 6.0, max_targets: int | None = None,
                     max_rounds: int = 50, lp_solver: str = "highs", restarts: int | None = None,
                     restart_regions: int | None = None, processes: int | None = None, progress: bool = False,
                     _offset: int = 0, _extra_starts=None) -> tuple[AttackResult, RegionInfo]:
    """The randomized region attack, with its diagnostics (trajectory of the best distance).

    Args:
      logits_fn: batched piecewise-affine function `[batch, ...]` -> logits `[batch, K]` (ReLU, max-pool,
        dense, conv, reshape, ...; no softmax).
      x: `[batch, ...]` inputs in the box; labels: `[batch]` int.
      p: 1, 2 or inf.
      key: jax.random key (region sampling; the DeepFool start).
      box: input bounds.
      n_regions: sampled regions per example (the paper uses 400 for CIFAR-10).
      batch_regions: regions per round (one jitted vmap each): up to half are the neighbours across the
        region faces binding at the best solution so far (a local search), the rest random around it.
      x_start: optional `[batch, ...]` starting points (adversarial or not; a line search from x picks
        the first misclassified point on the segment). Default: DeepFool's point
        (`robustjax.attacks.deepfool`; its l2 point for p = 1); with `x_train` (and `y_train`), also the
        nearest training point of another (true and predicted) class; the closest start wins. Where
        none is adversarial: our own DeepFool-style linearized steps, then the nearest of 1024 uniform
        box points of another predicted class. An example with no start stays unsolved (success False,
        distance inf); an example the model already misclassifies gets distance 0 and x_adv = x.
      preacts_fn: optional `x [batch, ...] -> list of [batch, n_l]` pre-activations of every ReLU, for
        models the jaxpr tracer cannot read (module docstring).
      gamma: sampling radius exponent (r^gamma, r ~ U[0, 1]).
      max_targets: at most this many target classes per region (lowest lower bounds first); None: all.
      max_rounds: active-set rounds per convex problem.
      lp_solver: "highs" (default) or "osqp" for the p = 1 and inf LPs (see `solve_min_norm`).
      restarts, restart_regions: after the main search, independent searches of `restart_regions` regions
        (None: max(batch_regions, n_regions // 5)) from each of the `restarts` closest targeted starts of other
        adversarial classes than the main start's (`_targeted_starts`: a search from one start tends to stay in
        its class's basin); the best point of all wins, so the result is never worse than the main search's
        (the last trajectory column includes the restarts). None: 3 for p = 1 and inf (on small MNIST nets
        they took the region attack from up to 39 % (l1) and 7.6 % (l_inf) above the MILP optimum to it), 0 for
        p = 2 (no gain on 10 MNIST points of the 1024-unit net at 3.7x the time). 0 turns them off.
      processes: spread the examples over this many worker processes (spawned, JAX on their CPU; the
        solver work is single-threaded per process). `logits_fn` travels by cloudpickle; every example's
        random stream depends on its index alone, so the result equals the one-process run up to float
        rounding. None or 1: this process. `progress`: a bar over the chunks.

    Returns:
      (AttackResult, RegionInfo); distances are verified upper bounds on the minimal l_p distance.
    """
    p = check_norm(p)
    restarts = (0 if p == 2 else 3) if restarts is None else restarts
    if n_regions < 0 or batch_regions < 1 or restarts < 0:
        raise ValueError(f"n_regions and restarts must be >= 0 and batch_regions >= 1, got {n_regions}, {restarts}, "
                         f"{batch_regions}")
    if processes is not None and processes > 1 and len(x) > 1:
        return _region_pool(logits_fn, x, labels, p=p, key=key, box=box, processes=processes, progress=progress,
                            x_start=x_start, x_train=x_train, y_train=y_train,
                            options=dict(n_regions=n_regions, batch_regions=batch_regions, preacts_fn=preacts_fn,
                                         gamma=gamma, max_targets=max_targets, max_rounds=max_rounds,
                                         lp_solver=lp_solver, restarts=restarts, restart_regions=restart_regions))
    with jax.default_matmul_precision("highest"):   # exact region algebra also where f32 matmuls default to TF32
        x_adv, calls, info = _region_single(
            logits_fn, x, labels, p=p, key=key, box=box, n_regions=n_regions, batch_regions=batch_regions,
            x_start=x_start, x_train=x_train, y_train=y_train, preacts_fn=preacts_fn, gamma=gamma,
            max_targets=max_targets, max_rounds=max_rounds, lp_solver=lp_solver, restarts=restarts,
            restart_regions=restart_regions, _offset=_offset, _extra_starts=_extra_starts)
    res = finalize(logits_fn, x, labels, x_adv, p=p, box=box, model_calls=calls,
                   time_s=float(np.sum(info.time_s)), method="region")
    return res._replace(time_s=info.time_s), info


def _region_single(logits_fn, x, labels, *, p, key, box, n_regions, batch_regions, x_start, x_train, y_train,
                   preacts_fn, gamma, max_targets, max_rounds, lp_solver, restarts, restart_regions, _offset,
                   _extra_starts):
    """`region_with_info` in this process."""
    t0 = time.perf_counter()
    x, labels, clean = check_inputs(logits_fn, x, labels, box)
    n = x.shape[0]
    example_shape = x.shape[1:]
    d = int(np.prod(example_shape))
    flat_lo = np.broadcast_to(np.asarray(box.lo, np.float64), example_shape).reshape(-1)
    flat_hi = np.broadcast_to(np.asarray(box.hi, np.float64), example_shape).reshape(-1)
    fns = _make_fns(logits_fn, preacts_fn, tuple(example_shape), jnp.dtype(x.dtype))
    labels_np = np.asarray(labels)
    wrong = np.asarray(jnp.argmax(clean, -1)) != labels_np
    k_start, k_sample = jax.random.split(key)
    flat_lo_j, flat_hi_j = jnp.asarray(flat_lo, x.dtype), jnp.asarray(flat_hi, x.dtype)

    best, best_d = _start_points(logits_fn, x, labels_np, p, k_start, box, x_start, x_train, y_train, fns,
                                 flat_lo, flat_hi, _extra_starts)
    start_d = best_d.copy()
    xf = np.asarray(x.reshape(n, -1), np.float64)
    traj = np.full((n, n_regions + 1), np.inf)
    n_qp = np.zeros(n, np.int64)
    rows = np.zeros(n)
    times = np.zeros(n)
    calls = np.zeros(n, np.int64)
    t_start = (time.perf_counter() - t0) / max(n, 1)
    for i in range(n):
        ti = time.perf_counter()
        if wrong[i]:
            traj[i] = 0.0
            times[i] = t_start
            continue
        c = int(labels_np[i])
        x_i = xf[i]
        stats = {"n_qp": 0, "rows": 0}
        key_i = jax.random.fold_in(k_sample, _offset + i)
        search = functools.partial(_search, fns, x_i, c, p=p, batch_regions=batch_regions, gamma=gamma,
                                   max_targets=max_targets, max_rounds=max_rounds, lp_solver=lp_solver, lo=flat_lo,
                                   hi=flat_hi, stats=stats)
        traj[i, 0] = best_d[i]
        start_class = int(np.argmax(np.asarray(fns.logits(jnp.asarray(best[i][None])))[0])) if restarts else c
        best[i], best_d[i], n_calls = search(best[i], best_d[i], key_i, n_regions, traj=traj[i])
        calls[i] += n_calls
        if restarts and np.isfinite(best_d[i]):
            starts, n_calls = _targeted_starts(fns, x_i, c, flat_lo, flat_hi, p, exclude=start_class, top=restarts)
            calls[i] += n_calls
            for k, (z0, d0) in enumerate(starts):
                z, dz, n_calls = search(z0, d0, jax.random.fold_in(key_i, 1_000_000 + k),
                                        restart_regions or max(batch_regions, n_regions // 5))
                calls[i] += n_calls
                if dz < best_d[i]:
                    best[i], best_d[i] = z, dz
            traj[i, -1] = best_d[i]
        traj[i] = np.minimum.accumulate(np.where(np.isnan(traj[i]), np.inf, traj[i]))
        n_qp[i] = stats["n_qp"]
        rows[i] = stats["rows"] / max(stats["n_qp"], 1)
        times[i] = time.perf_counter() - ti + t_start
    return best.reshape(x.shape), calls, RegionInfo(traj, start_d, n_qp, rows, times)


def _search(fns, x_i, c, z0, d0, key, n_regions, *, p, batch_regions, gamma, max_targets, max_rounds, lp_solver,
            lo, hi, stats, traj=None):
    """The region search from the verified adversarial point z0 (distance d0): rounds of `batch_regions`
    sampled regions around the best point so far (plus the neighbours across its binding faces), one convex
    problem per promising (region, target). Returns (best point, its distance, model calls); fills
    traj[1:] with the best distance after each region."""
    d = x_i.size
    x_j = jnp.asarray(x_i, jnp.float32)
    lo_j, hi_j = jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32)
    best, best_d, calls = z0, d0, 0
    seed_idx = np.zeros(0, np.int64)
    done = 0
    pending: list = []     # probe points just across the faces binding at the best solution
    while done < n_regions and np.isfinite(best_d):
        R = min(batch_regions, n_regions - done)
        n_extra = min(len(pending), (batch_regions + 1) // 2)
        extra = np.zeros((batch_regions, d), np.float32)
        if n_extra:
            extra[:n_extra] = np.clip(np.stack(pending[:n_extra]), lo, hi)
            del pending[:n_extra]
        Y, out, sw, w, lb = fns.round(jax.random.fold_in(key, done), x_j, jnp.asarray(best), c, lo_j, hi_j, gamma,
                                      done == 0, jnp.asarray(extra), n_extra, p=p, R=batch_regions)
        lb = np.asarray(lb, np.float64)
        Yn, outn, swn, wn = np.asarray(Y, np.float64), np.asarray(out, np.float64), np.asarray(sw, np.float64), None
        calls += R * (1 + out.shape[1])
        for r in range(R):
            order = np.argsort(lb[r])
            if max_targets is not None:
                order = order[:max_targets]
            for t in order:
                if lb[r, t] >= best_d * (1 - 1e-6):
                    break
                if wn is None:
                    wn = np.asarray(w, np.float64)
                wt = wn[r, t]
                bt = -(outn[r, t] - outn[r, c] - wt @ Yn[r])
                nt = max(np.linalg.norm(wt), 1e-30)
                margin = 1e-6 * nt
                sol = _region_solve(fns, x_i, Yn[r], swn[r], (wt / nt)[None], np.array([(bt + margin) / nt]),
                                    lo, hi, p, best_d, seed_idx, max_rounds, stats, lp_solver)
                if sol is None:
                    continue
                z, act, faces = sol
                cand, found = fns.ray(x_j, jnp.asarray(z, jnp.float32), c, lo_j, hi_j)
                calls += 88
                if not bool(found):
                    continue
                cand = np.asarray(cand)
                dz = _norm_np(cand.astype(np.float64) - x_i, p)
                if dz < best_d:
                    best, best_d = cand, dz
                    seed_idx = act
                    step = 1e-4 * np.linalg.norm(z - x_i) + 1e-7
                    pending = [z - step * nrm for nrm in faces[:batch_regions]]
            if traj is not None:
                traj[done + r + 1] = best_d
        done += R
    return best, best_d, calls


def _targeted_starts(fns, x_i, c, lo, hi, p, *, exclude, top, steps=30, overshoot=0.05):
    """Up to `top` verified adversarial starts `[(point [d], l_p distance)]` of distinct predicted classes
    other than `exclude`, closest first: for every target t, exact l_p steps from x to the boundary between
    c and t linearized at the iterate (all targets in one batched probe per step), then the line search.
    The region search from one start often stays in its class's basin (benchmarks/region_milp.md), so the
    attack also searches briefly from these. Returns (starts, model calls)."""
    out0 = np.asarray(fns.logits(jnp.asarray(x_i[None], jnp.float32)))[0]
    targets = [t for t in range(len(out0)) if t != c and t != exclude]
    if not targets or top < 1:
        return [], 1
    z = np.tile(x_i.astype(np.float32), (len(targets), 1))
    active = np.ones(len(targets), bool)
    calls = 1
    for _ in range(steps):
        out, _, jac = (np.asarray(a, np.float64) for a in fns.probe(jnp.asarray(z)))
        calls += len(targets) * (1 + out.shape[1])
        jac = jac.reshape(len(targets), out.shape[1], -1)
        for j, t in enumerate(targets):
            if not active[j]:
                continue
            if int(np.argmax(out[j])) != c:
                active[j] = False
                continue
            delta = _step_from_x(out[j], jac[j], z[j], x_i, c, t, lo, hi, p, overshoot)
            if delta is None:
                active[j] = False
                z[j] = x_i
                continue
            z[j] = np.clip(x_i + delta, lo, hi)
        if not active.any():
            break
    x_j = jnp.asarray(x_i, jnp.float32)
    lo_j, hi_j = jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32)
    found = {}
    for j in range(len(targets)):
        point, ok = fns.ray(x_j, jnp.asarray(z[j]), c, lo_j, hi_j)
        calls += 88
        if not bool(ok):
            continue
        point = np.asarray(point)
        label = int(np.argmax(np.asarray(fns.logits(jnp.asarray(point[None])))[0]))
        dist = _norm_np(point.astype(np.float64) - x_i, p)
        if label != exclude and (label not in found or dist < found[label][1]):
            found[label] = (point, dist)
    return sorted(found.values(), key=lambda s: s[1])[:top], calls


_WORKER_FNS: dict = {}


def _region_worker(payload):
    """One chunk of examples in a worker process (`region_with_info(processes=...)`)."""
    fn_bytes, x, labels, p, key_data, typed_key, offset, extra, box, x_start, options = payload
    jax.config.update("jax_platforms", "cpu")
    import hashlib

    import cloudpickle
    digest = hashlib.sha256(fn_bytes).hexdigest()
    if digest not in _WORKER_FNS:    # one function object per model and worker: its compilations are reused
        _WORKER_FNS.clear()
        _WORKER_FNS[digest] = cloudpickle.loads(fn_bytes)
    logits_fn = _WORKER_FNS[digest]
    key = jax.random.wrap_key_data(key_data) if typed_key else jnp.asarray(key_data)
    res, info = region_with_info(logits_fn, x, labels, p=p, key=key, box=box, x_start=x_start, _offset=offset,
                                 _extra_starts=extra, **options)
    return np.asarray(res.x_adv), np.asarray(res.model_calls), info


def _region_pool(logits_fn, x, labels, *, p, key, box, processes, progress, x_start, x_train, y_train, options):
    import cloudpickle

    from robustjax.parallel import process_map
    x, labels, _ = check_inputs(logits_fn, x, labels, box)
    n = x.shape[0]
    xn, labels_np = np.asarray(x), np.asarray(labels)
    extra = None
    if x_train is not None:      # computed once here, not shipped (the training set) to every worker
        fns = _make_fns(logits_fn, options["preacts_fn"], tuple(x.shape[1:]), jnp.dtype(x.dtype))
        extra = _nearest_training(fns, xn.reshape(n, -1).astype(np.float64), labels_np, p, x_train, y_train)
    typed_key = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    key_data = np.asarray(jax.random.key_data(key) if typed_key else key)
    fn_bytes = cloudpickle.dumps(logits_fn)
    chunks = [c for c in np.array_split(np.arange(n), min(n, 4 * processes)) if len(c)]
    payloads = [(fn_bytes, xn[c], labels_np[c], p, key_data, typed_key, int(c[0]),
                 None if extra is None else extra[c], box, None if x_start is None else np.asarray(x_start)[c],
                 options) for c in chunks]
    parts = process_map(_region_worker, payloads, processes=processes, progress=progress, desc="region")
    x_adv = np.concatenate([a for a, _, _ in parts]).reshape(x.shape)
    calls = np.concatenate([c for _, c, _ in parts])
    info = RegionInfo(*(np.concatenate([getattr(i, f) for _, _, i in parts]) for f in RegionInfo._fields))
    res = finalize(logits_fn, x, labels, x_adv, p=p, box=box, model_calls=calls,
                   time_s=float(np.sum(info.time_s)), method="region")
    return res._replace(time_s=info.time_s), info


def region(logits_fn: Callable, x, labels, *, p, key, box: Box = Box(), n_regions: int = 100,
           x_start=None, x_train=None, y_train=None, preacts_fn: Callable | None = None,
           **options) -> AttackResult:
    """The randomized linear-region attack (see `region_with_info` for the arguments): `AttackResult`.

    Minimal-distance attack: x_adv is the closest adversarial point found, clipped to the box and
    re-verified with the model; distance is an upper bound on the true minimal l_p distance.
    """
    res, _ = region_with_info(logits_fn, x, labels, p=p, key=key, box=box, n_regions=n_regions,
                              x_start=x_start, x_train=x_train, y_train=y_train, preacts_fn=preacts_fn,
                              **options)
    return res
