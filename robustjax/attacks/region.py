"""The randomized linear-region attack for piecewise-affine (ReLU, max-pool) networks.

Croce & Hein, "A randomized gradient-free attack on ReLU networks" (GCPR 2018); Croce, Rauber & Hein,
"Scaling up the randomized gradient-free adversarial attack reveals overestimation of robustness
using established attacks" (IJCV 2019, arXiv 1903.11359). methods.md section 2.

A ReLU / max-pool network is affine on each linear region Q(y) = {z : the activation pattern at z is the one
at y} (`robustjax.network.region`; the model is read by `network.trace`). For a sample point y and a target
class t the attack solves the convex problem

    min ||z - x||_p  s.t.  z in Q(y),  f_t(z) >= f_c(z),  lo <= z <= hi

(a QP for p = 2: `robustjax.qp`, jitted and exact in float64, warm-started across the active-set rounds; an LP
for p = 1 and inf: `robustjax.lp`, a jitted interior-point method, HiGHS where it does not certify its
answer), keeps the closest verified adversarial point and samples the next regions around it
(x_r = x_best + dir ||x_best - x|| r^gamma, dir tilted toward x), plus the neighbouring regions across the faces
binding at the best solution.

Only the rows that can bind reach the solver: a problem starts with the misclassification row (plus the rows
active at the best solution so far) and the box; the region rows violated at the solution are added (one vjp
per ROW_CHUNK rows) and the problem re-solved until none is. A cheap exact lower bound prunes most (region,
target) pairs: no point of the half space {f_t >= f_c} in the box is closer to x than
`geometry.halfspace_box_distance`, so a pair whose bound exceeds the best distance cannot help.

Per example the search is `search_init` / `search_step` over a `SearchState`; starts come from
`region_starts` (DeepFool, DDN, minimal PGD, exact l1 steps, training points); a round without progress
widens the sampling and crosses the binding faces with larger steps (`escape_probes`); then searches from
targeted starts of every other class (K <= 10; `restart_budget` splits the regions) look into the other
classes' basins; `processes` spreads examples over worker processes with `robustjax.parallel.map_rows`.
With `batched` (meant for accelerators) a round's promising (region, target) problems run their active-set
rounds in lockstep (`region_solve_batch`): one vmapped QP or LP call, one vmapped row fetch and one vmapped
region check per active-set round for all of them, in place of hundreds of small launches.

Guarantees: every returned example is clipped to the box and re-verified with the real model (`finalize`);
the distance is an upper bound on the minimal adversarial distance, never below it; and it is never above
the distance of the cheap attacks it starts from (DeepFool, DDN-1000 and minimal PGD in l_p, re-verified by
their own `finalize`; not when x_start replaces them): per example the closer point is kept (`keep_best`).
"""
from __future__ import annotations

import functools
import numbers
import time
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import parallel, validate
from robustjax.attacks.region_oracle import ROW_CHUNK, RegionOracle, make_oracle, pad_rows_index
from robustjax.attacks.region_starts import (cheap_attacks, nearest_other_class, start_points, targeted_starts,
                                            verified)
from robustjax.attacks.result import AttackResult, check_inputs, finalize, keep_best
from robustjax.geometry import Box, as_box, box_violation, check_norm, halfspace_box_distance, lp_norm, vector_norm
from robustjax.solvers import LP_SOLVERS, QP_SOLVERS, min_l2, solve_min_norm


class Problem(NamedTuple):
    """One example's region search: the model, x `[d]` float64, its label c, its box lo, hi `[d]`, and the
    search options (see `region`)."""
    oracle: RegionOracle
    x: np.ndarray
    c: int
    lo: np.ndarray
    hi: np.ndarray
    p: float
    batch_regions: int
    gamma: float
    max_targets: int | None
    max_rounds: int
    lp_solver: str
    qp_solver: str = "dual"
    batched: bool = False


class SearchState(NamedTuple):
    """best `[d]` float32 the closest verified adversarial point, best_d its distance; seed_idx the region
    rows active at its solution; pending the probe points just across its binding faces; faces `[k, d]` the
    unit normals of those faces and z_sol the solver's point there (for the escapes); stall rounds without
    progress; done regions sampled; calls model calls; n_qp solver calls; n_rows region rows handed to the
    solver in all."""
    best: np.ndarray
    best_d: float
    seed_idx: np.ndarray
    pending: tuple
    faces: np.ndarray
    z_sol: np.ndarray
    stall: int
    done: int
    calls: int
    n_qp: int
    n_rows: int


def search_init(z0, d0) -> SearchState:
    """The state at a verified adversarial start z0 `[d]` of distance d0 (inf: nothing to search from)."""
    z0 = np.asarray(z0, np.float32)
    return SearchState(z0, float(d0), np.zeros(0, np.int64), (), np.zeros((0, z0.size)), z0.astype(np.float64),
                       0, 0, 0, 0, 0)


def region_solve(pb: Problem, y, sw_y, G0, h0, best_d, seed_idx, known: dict | None = None):
    """Active-set solve of min ||z - x||_p over Q(y), G0 z >= h0 and the box (`region_solve_batch` of one task).

    known: region rows of y already fetched {index: row `[d]`}, read and extended (one dict per region
    serves all its targets). Returns (None, solves, rows) when infeasible or no better than best_d, else
    ((z, the region rows used, unit normals `[k, d]` of the region faces binding at z), solves, rows)."""
    sols, n_qp, n_rows = region_solve_batch(pb, [(y, sw_y, G0, h0, {} if known is None else known)], best_d, seed_idx)
    return sols[0], n_qp, n_rows


def _padded_count(n: int) -> int:
    """Batch sizes padded to a power of two: few compiled shapes."""
    return 1 << max(0, int(n - 1).bit_length())


def _fetch_rows(pb: Problem, states: list):
    """Every state's region rows idx[len(cache):] into its cache, those not in its `known` fetched in vmapped vjps
    (`oracle.rows_batch`, ROW_CHUNK rows per region and call); states sharing a `known` (one region) share the
    fetches."""
    need = {}
    for st in states:
        for i in st["idx"][len(st["cache"]):]:
            if int(i) not in st["known"]:
                need.setdefault(id(st["known"]), (st["known"], st["y"], set()))[2].add(int(i))
    jobs = [(known, y, np.asarray(sorted(rows), np.int64)[k:k + ROW_CHUNK])
            for known, y, rows in need.values() for k in range(0, len(rows), ROW_CHUNK)]
    if jobs:
        P = _padded_count(len(jobs))
        Y = np.stack([y for _, y, _ in jobs] + [jobs[0][1]] * (P - len(jobs))).astype(np.float32)
        I = np.stack([pad_rows_index(ix) for _, _, ix in jobs] + [pad_rows_index(jobs[0][2])] * (P - len(jobs)))
        got = np.asarray(pb.oracle.rows_batch(jnp.asarray(Y), jnp.asarray(I)), np.float64)
        for (known, _, ix), g in zip(jobs, got):
            known.update(zip(ix.tolist(), g[:len(ix)]))
    for st in states:
        new = st["idx"][len(st["cache"]):]
        if len(new):
            st["cache"] = np.concatenate([st["cache"], np.stack([st["known"][int(i)] for i in new])])


def _solve_batch(pb: Problem, Gs: list, hs: list, lams: list) -> list:
    """[(z `[d]` or None when infeasible, multipliers)] of min ||z - x||_p s.t. G z >= h and the box for every
    (G, h) (unit-norm rows), in one vmapped call: `qp.min_l2_batch` (p = 2, warm-started from lams) or
    `lp.min_lp_batch` (p = 1, inf); problems padded to a power of two, rows to a common `qp.padded_rows`. A
    problem the batch leaves at MAX_ITER goes to `solve_min_norm`'s reference (OSQP for p = 2, HiGHS else)."""
    from robustjax import lp, qp
    T, d = len(Gs), pb.x.size
    P, mp = _padded_count(T), qp.padded_rows(max(len(G) for G in Gs))
    Gp, hp, mask, lp0 = np.zeros((P, mp, d)), np.zeros((P, mp)), np.zeros((P, mp), bool), np.zeros((P, mp))
    for j, (G, h, lam) in enumerate(zip(Gs, hs, lams)):
        Gp[j, :len(G)], hp[j, :len(G)], mask[j, :len(G)] = G, h, True
        if lam is not None:
            lp0[j, :len(lam)] = lam
    with jax.enable_x64(True):
        X, LO, HI = (jnp.broadcast_to(jnp.asarray(v, jnp.float64), (P, d)) for v in (pb.x, pb.lo, pb.hi))
        args = (X, jnp.asarray(Gp), jnp.asarray(hp), LO, HI, jnp.asarray(mask))
        sol = qp.min_l2_batch(*args, jnp.asarray(lp0)) if pb.p == 2 else lp.min_lp_batch(*args, p=pb.p)
        z, lam, status = np.asarray(sol.z), np.asarray(sol.lam), np.asarray(sol.status)
    out = []
    for j, G in enumerate(Gs):
        if status[j] == qp.OPTIMAL:
            out.append((z[j], lam[j, :len(G)]))
        elif status[j] == qp.INFEASIBLE:
            out.append((None, lam[j, :len(G)]))
        else:
            ref = solve_min_norm(pb.x, G, hs[j], pb.lo, pb.hi, pb.p, lp_solver="highs", qp_solver="osqp")
            out.append((ref, lam[j, :len(G)]))
    return out


def _batchable(pb: Problem) -> bool:
    """Whether pb's convex problems have a vmapped solver (`_solve_batch`; the LPs' needs x inside the box, as
    `solvers.min_lp` does for one problem)."""
    return (pb.p == 2 and pb.qp_solver == "dual") or (
        pb.p != 2 and pb.lp_solver == "ipm" and box_violation(pb.x, Box(pb.lo, pb.hi)) == 0)


def _solve_many(pb: Problem, Gs: list, hs: list, lams: list) -> list:
    """[(z `[d]` or None when infeasible, multipliers or None)] of min ||z - x||_p s.t. G z >= h and the box for
    every (G, h): several problems in one vmapped call where a batched solver exists (`_solve_batch`); one at
    a time otherwise (`solvers.min_l2`, warm-started, or `solve_min_norm`)."""
    if len(Gs) > 1 and _batchable(pb):
        return _solve_batch(pb, Gs, hs, lams)
    if pb.p == 2 and pb.qp_solver == "dual":
        return [min_l2(pb.x, G, h, pb.lo, pb.hi, lam) for G, h, lam in zip(Gs, hs, lams)]
    return [(solve_min_norm(pb.x, G, h, pb.lo, pb.hi, pb.p, lp_solver=pb.lp_solver, qp_solver=pb.qp_solver), None)
            for G, h in zip(Gs, hs)]


def region_solve_batch(pb: Problem, tasks: list, best_d: float, seed_idx) -> tuple[list, int, int]:
    """`region_solve` for many (region, target) problems at once: the active-set rounds run in lockstep, each
    solving every unfinished problem (`_solve_many`: one vmapped QP call for l2 with the dual QP), fetching
    their new region rows in vmapped vjps and checking their regions in one vmapped linearization
    (`oracle.lin_batch`). tasks: [(y `[d]`, sw_y `[n]`, G0 `[k, d]` unit rows, h0 `[k]`, known)], `known` as in
    region_solve (one dict per region, shared by its targets). Returns ([region_solve's first output per
    task], solver calls, rows handed to the solver)."""
    d = pb.x.size
    states = []
    for y, sw_y, G0, h0, known in tasks:
        sigma = np.sign(sw_y)
        live = sigma != 0
        idx = np.asarray(sorted(set(int(i) for i in seed_idx) & set(np.flatnonzero(live).tolist())), np.int64)
        states.append(dict(y=np.asarray(y, np.float64), sw=sw_y, G0=G0, h0=h0, known=known, sigma=sigma, live=live,
                           scale=max(np.abs(sw_y).max(initial=0.0), 1e-12), idx=idx, cache=np.zeros((0, d)), lam=None))
    out = [None] * len(tasks)
    active = list(range(len(tasks)))
    n_qp = n_rows = 0
    for _ in range(pb.max_rounds):
        if not active:
            break
        _fetch_rows(pb, [states[i] for i in active])
        for i in active:
            st = states[i]
            S = st["sigma"][st["idx"]][:, None] * st["cache"]
            b = -st["sigma"][st["idx"]] * (st["sw"][st["idx"]] - st["cache"] @ st["y"])
            nrm = np.maximum(np.linalg.norm(S, axis=1), 1e-12)
            st["G"], st["h"] = np.concatenate([st["G0"], S / nrm[:, None]]), np.concatenate([st["h0"], b / nrm])
        sols = _solve_many(pb, [states[i]["G"] for i in active], [states[i]["h"] for i in active],
                           [states[i]["lam"] for i in active])
        n_qp, n_rows = n_qp + len(active), n_rows + sum(len(states[i]["idx"]) for i in active)
        kept = []
        for i, (z, lam) in zip(active, sols):
            states[i]["lam"], states[i]["z"] = lam, z
            out[i] = None
            if z is not None and vector_norm(z - pb.x, pb.p) < best_d:
                kept.append(i)
        if not kept:
            break
        P = _padded_count(len(kept))
        Y = np.stack([states[i]["y"] for i in kept] + [states[kept[0]]["y"]] * (P - len(kept))).astype(np.float32)
        Z = np.stack([states[i]["z"] for i in kept] + [states[kept[0]]["z"]] * (P - len(kept))).astype(np.float32)
        lins = np.asarray(pb.oracle.lin_batch(jnp.asarray(Y), jnp.asarray(Z)))
        active = []
        for i, li in zip(kept, lins):
            st, z = states[i], states[i]["z"]
            viol = (st["sigma"] * li < -1e-6 * st["scale"]) & st["live"]
            viol[st["idx"]] = False
            if not viol.any():
                k0 = len(st["G0"])
                slack = st["G"][k0:] @ z - st["h"][k0:]
                binding = slack <= 1e-4 * max(np.linalg.norm(z - pb.x), 1e-9)
                out[i] = (z, st["idx"], st["G"][k0:][binding])
                continue
            st["idx"] = np.concatenate([st["idx"], np.flatnonzero(viol)])
            out[i] = (z, st["idx"], np.zeros((0, d)))       # the answer if the rounds run out
            active.append(i)
    return out, n_qp, n_rows


def escape_probes(s: SearchState, x, k: int, most: int) -> list:
    """At most `most` probe points across the incumbent's binding faces at a step growing with the stall
    count k (1e-3, 1e-2, ... of ||z - x||), each face alone and (from k = 2) pairs of faces: a way out of a
    region vertex that single small steps do not leave."""
    if not len(s.faces):
        return []
    step = 10.0 ** (-4 + k) * np.linalg.norm(s.z_sol - x) + 1e-7
    out = [s.z_sol - step * f for f in s.faces]
    if k >= 2:
        out += [s.z_sol - step * (s.faces[i] + s.faces[j]) for i in range(len(s.faces))
                for j in range(i + 1, len(s.faces))]
    return out[:most]


def search_step(pb: Problem, s: SearchState, key, n: int, trace: list | None = None) -> tuple[SearchState, np.ndarray]:
    """One round: n (<= batch_regions) sampled regions around s.best, the first up to half of them the
    neighbours across its binding faces; one convex problem per promising (region, target). A round
    without progress counts a stall: the next samples spread wider (gamma halved per stall, down to 1) and
    the binding faces are crossed with larger steps (`escape_probes`).
    Returns (the new state, the best distance after each of the n regions `[n]`); with a list `trace`, the
    best point `[d]` after each of the n regions is appended to it (the distances' points; not copied)."""
    R, d = pb.batch_regions, pb.x.size
    x_j = jnp.asarray(pb.x, jnp.float32)
    pend = list(s.pending)
    if s.stall and not pend:
        pend = escape_probes(s, pb.x, min(s.stall, 3), R)
    n_extra = min(len(pend), (R + 1) // 2)
    extra = np.zeros((R, d), np.float32)
    if n_extra:
        extra[:n_extra] = np.clip(np.stack(pend[:n_extra]), pb.lo, pb.hi)
    pending = pend[n_extra:]
    gamma = max(pb.gamma / 2 ** s.stall, 1.0)
    Y, out, sw, w, lb = pb.oracle.round(key, x_j, jnp.asarray(s.best), pb.c, jnp.asarray(pb.lo, jnp.float32),
                                        jnp.asarray(pb.hi, jnp.float32), gamma, s.done == 0, jnp.asarray(extra),
                                        n_extra, p=pb.p, R=R)
    lb = np.asarray(lb, np.float64)
    Yn, outn, swn, wn = (np.asarray(a, np.float64) for a in (Y, out, sw, w))
    cur = dict(best=s.best, best_d=s.best_d, seed_idx=s.seed_idx, faces=s.faces, z_sol=s.z_sol, pending=pending,
               calls=s.calls + n * (1 + out.shape[1]), n_qp=s.n_qp, n_rows=s.n_rows)

    def targets(r):
        """(G0 `[1, d]`, h0 `[1]`) of region r's promising targets, lowest lower bound first."""
        for t in np.argsort(lb[r])[:pb.max_targets]:
            if lb[r, t] >= cur["best_d"] * (1 - 1e-6):
                return
            wt = wn[r, t]
            bt = -(outn[r, t] - outn[r, pb.c] - wt @ Yn[r])
            nt = max(np.linalg.norm(wt), 1e-30)
            yield (wt / nt)[None], np.array([(bt + 1e-6 * nt) / nt])

    def accept(sol):
        if sol is None:
            return
        z, act, fc = sol
        cand, dz = verified(pb.oracle, pb.x, pb.c, z, pb.lo, pb.hi, pb.p)
        cur["calls"] += pb.oracle.ray_calls
        if dz < cur["best_d"]:
            step = 1e-4 * np.linalg.norm(z - pb.x) + 1e-7
            cur.update(best=cand, best_d=dz, seed_idx=act, faces=fc, z_sol=z, pending=[z - step * nrm for nrm in fc[:R]])

    batched = pb.batched and _batchable(pb)
    if batched:           # every promising (region, target) of the round in lockstep (pruned at the round's start)
        tasks, owner = [], []
        for r in range(n):
            known = {}
            for G0, h0 in targets(r):
                tasks.append((Yn[r], swn[r], G0, h0, known))
                owner.append(r)
        sols, q, k = region_solve_batch(pb, tasks, cur["best_d"], cur["seed_idx"]) if tasks else ([], 0, 0)
        cur["n_qp"], cur["n_rows"] = cur["n_qp"] + q, cur["n_rows"] + k
    traj = np.empty(n)
    for r in range(n):
        if batched:
            for sol in (sol for sol, o in zip(sols, owner) if o == r):
                accept(sol)
        else:
            known = {}
            for G0, h0 in targets(r):
                sol, q, k = region_solve(pb, Yn[r], swn[r], G0, h0, cur["best_d"], cur["seed_idx"], known)
                cur["n_qp"], cur["n_rows"] = cur["n_qp"] + q, cur["n_rows"] + k
                accept(sol)
        traj[r] = cur["best_d"]
        if trace is not None:
            trace.append(cur["best"])
    best, best_d, seed_idx, faces, z_sol, pending = (cur[k] for k in ("best", "best_d", "seed_idx", "faces",
                                                                        "z_sol", "pending"))
    calls, n_qp, n_rows = cur["calls"], cur["n_qp"], cur["n_rows"]
    stall = 0 if best_d < s.best_d * (1 - 1e-9) else s.stall + 1
    return SearchState(best, best_d, seed_idx, tuple(pending), faces, z_sol, stall, s.done + n, calls, n_qp,
                       n_rows), traj


def search(pb: Problem, z0, d0, key, n_regions: int, trace: list | None = None) -> tuple[SearchState, np.ndarray]:
    """The region search of n_regions regions from the verified start z0 (distance d0): (final state, best
    distance after each region `[n_regions]`, inf-padded if the search could not start). trace: as in
    `search_step` (n_regions points appended, none if the search could not start)."""
    s = search_init(z0, d0)
    traj = np.full(n_regions, float(d0))
    while s.done < n_regions and np.isfinite(s.best_d):
        n = min(pb.batch_regions, n_regions - s.done)
        done = s.done
        s, tr = search_step(pb, s, jax.random.fold_in(key, done), n, trace)
        traj[done:done + n] = tr
    return s, traj


_halfspace_box_distance = jax.jit(halfspace_box_distance, static_argnames=("p",))    # one program, not ~20 eager ops


def restart_budget(pb: Problem, starts, total: int) -> list[int]:
    """Regions per restart start `[(point, distance)]`, `total` in all, split by each start's class's
    linearized distance at x (`halfspace_box_distance` of its margin's linearization, a cheap estimate of the
    basin's distance): shares proportional to 1 / that estimate, at least batch_regions each."""
    if not starts:
        return []
    out, _, jac = (np.asarray(a[0], np.float64) for a in pb.oracle.probe(jnp.asarray(pb.x[None], jnp.float32)))
    jac = jac.reshape(len(out), -1)
    est = []
    for z, dz in starts:
        t = int(np.argmax(np.asarray(pb.oracle.logits(jnp.asarray(z[None])))[0]))
        e = float(_halfspace_box_distance(jnp.asarray(jac[t] - jac[pb.c]), out[pb.c] - out[t], jnp.asarray(pb.x),
                                          jnp.asarray(pb.lo), jnp.asarray(pb.hi), p=pb.p))
        est.append(min(e if np.isfinite(e) else dz, dz))
    wgt = 1.0 / np.maximum(np.asarray(est), 1e-6 * max(est))
    share = np.maximum(np.round(total * wgt / wgt.sum()), pb.batch_regions)
    return [int(v) for v in share]


def attack_example(pb: Problem, z0, d0, key, *, n_regions: int, restarts: int, restart_regions: int,
                   snapshots: Sequence[int] = ()):
    """The region attack on one example from its verified start z0 (distance d0): the main search, then
    searches from targeted starts of `restarts` other classes (every class for restarts >= K - 1), with
    restart_regions regions each on average (`restart_budget`), then a final search from the best point.
    Returns (best point `[d]`, its distance, trajectory `[n_regions + 1]`, model calls, solver calls, mean
    region rows per solve, the main search's best points `[len(snapshots), d]` float32 after each of
    `snapshots` (counts in [1, n_regions]) regions, at the distances traj[snapshots] before the restarts
    enter the last column; NaN if the search could not start)."""
    trace = [] if snapshots else None
    s, tr = search(pb, z0, d0, key, n_regions, trace)
    points = np.full((len(snapshots), pb.x.size), np.nan, np.float32)
    for j, k in enumerate(snapshots):
        if k <= len(trace):
            points[j] = trace[k - 1]        # a copy: z0 may be a row of the caller's array, rewritten later
    traj = np.concatenate([[d0], tr])
    best, best_d, used, calls = s.best, s.best_d, [s], 0
    if restarts and np.isfinite(best_d):
        starts, calls = targeted_starts(pb.oracle, pb.x, pb.c, pb.lo, pb.hi, pb.p, exclude=-1, top=restarts)
        budget = restart_budget(pb, starts, restart_regions * len(starts))
        for k, ((z, dz), m) in enumerate(zip(starts, budget)):
            r, _ = search(pb, z, dz, jax.random.fold_in(key, 1_000_000 + k), m)
            used.append(r)
            if r.best_d < best_d:
                best, best_d = r.best, r.best_d
        if best_d < s.best_d:                      # polish the winner of another basin
            r, _ = search(pb, best, best_d, jax.random.fold_in(key, 2_000_000), restart_regions)
            used.append(r)
            best, best_d = (r.best, r.best_d) if r.best_d < best_d else (best, best_d)
        traj[-1] = min(traj[-1], best_d)
    n_qp = sum(u.n_qp for u in used)
    return (best, best_d, traj, calls + sum(u.calls for u in used), n_qp, sum(u.n_rows for u in used) / max(n_qp, 1),
            points)


def _attack_rows(logits_fn, x, labels, index, lo, hi, x_start, train, cheap_x, cheap_ok, *, p, key_data, typed_key,
                 options):
    """The region attack on rows of examples in this process: (x_adv `[n, d]`, model calls, trajectory,
    start distance, solver calls, mean rows per solve, seconds, snapshots `[n, len(options["snapshots"]), d]`),
    as numpy. index `[n]`: the examples' positions in the whole batch (their random streams); x_start, train
    `[n, d]` or `[n, 0]` (none): the given starts and the nearest training points; cheap_x `[n, m, d]`,
    cheap_ok `[n, m]`: the cheap attacks' points and successes (m = 0: none). Snapshots: as `region` states
    (a snapshot at n_regions is the final point, the one x_adv is made from)."""
    key = jax.random.wrap_key_data(key_data) if typed_key else jnp.asarray(key_data)
    o = options
    t0 = time.perf_counter()
    n = x.shape[0]
    oracle = make_oracle(logits_fn, o["preacts_fn"], tuple(x.shape[1:]), jnp.dtype(jnp.float32))
    with jax.default_matmul_precision("highest"):   # exact region algebra also where f32 matmuls default to TF32
        clean = np.argmax(np.asarray(oracle.logits(jnp.asarray(x.reshape(n, -1)))), -1)
        k_start, k_sample = jax.random.split(key)
        best, best_d, floor_x, floor_d = start_points(
            oracle, logits_fn, x, labels, p=p, key=k_start, lo=lo, hi=hi,
            x_start=x_start.reshape(x.shape) if x_start.shape[1] else None,
            cheap=(cheap_x, cheap_ok) if cheap_ok.shape[1] else None, candidates=(train,) if train.shape[1] else ())
        start_d = best_d.copy()
        xf = np.asarray(x, np.float64).reshape(n, -1)
        traj = np.zeros((n, o["n_regions"] + 1))
        steps = o["snapshots"]
        snaps = np.full((n, len(steps), xf.shape[1]), np.nan, np.float32)
        calls, n_qp, rows, times = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n), np.zeros(n)
        t_start = (time.perf_counter() - t0) / max(n, 1)
        todo = np.flatnonzero(clean == labels)         # misclassified inputs keep x, distance 0
        if o["progress"]:
            from tqdm.auto import tqdm
            todo = tqdm(todo, desc=f"region attack (p = {float(p):g})")
        for i in todo:
            ti = time.perf_counter()
            pb = Problem(oracle, xf[i], int(labels[i]), lo[i], hi[i], p, o["batch_regions"], o["gamma"],
                         o["max_targets"], o["max_rounds"], o["lp_solver"], o["qp_solver"], o["batched"])
            K = int(oracle.logits(jnp.asarray(xf[i:i + 1], jnp.float32)).shape[1])
            restarts = (min(K - 1, 3) if p == 2 else K - 1 if K - 1 <= 9 else 3) if o["restarts"] is None \
                else o["restarts"]
            best[i], best_d[i], traj[i], calls[i], n_qp[i], rows[i], snaps[i] = attack_example(
                pb, best[i], best_d[i], jax.random.fold_in(k_sample, int(index[i])), n_regions=o["n_regions"],
                restarts=restarts, restart_regions=o["restart_regions"], snapshots=steps)
            times[i] = time.perf_counter() - ti
        x32 = np.asarray(x, np.float32).reshape(n, -1)      # distances as finalize measures them (float32)
        own = np.where(np.isfinite(best_d), np.asarray(lp_norm(jnp.asarray(best - x32), p)), np.inf)
        cheap = np.where(np.isfinite(floor_d), np.asarray(lp_norm(jnp.asarray(floor_x - x32), p)), np.inf)
        best = np.asarray(keep_best(best, own, floor_x, cheap, np.isfinite(floor_d))[0])
        best_d = np.minimum(best_d, floor_d)
        traj[:, -1] = np.minimum(traj[:, -1], np.where(clean == labels, best_d, 0.0))
        if steps and steps[-1] == o["n_regions"]:          # the last column: restarts and the cheap floor
            snaps[:, -1] = np.where(np.isfinite(best_d)[:, None], best, np.nan)
        snaps[clean != labels] = x32[clean != labels, None]   # distance 0, as the trajectory
        times += t_start
    return best, calls, traj, start_d, n_qp, rows, times, snaps


def _snapshot_steps(snapshots, n_regions: int) -> tuple[int, ...]:
    """snapshots as sorted distinct region counts in [1, n_regions]; ValueError naming `snapshots` otherwise."""
    try:
        steps = list(snapshots)
    except TypeError:
        raise ValueError(f"snapshots must be a sequence of region counts, got {snapshots!r}") from None
    for k in steps:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise ValueError(f"snapshots must be integers (region counts), got {k!r}")
        if not 1 <= k <= n_regions:
            raise ValueError(f"snapshots must lie in [1, n_regions] = [1, {n_regions}], got {k!r}")
    return tuple(sorted({int(k) for k in steps}))


def region(logits_fn: Callable, x, labels, *, p, key, box=None, n_regions: int = 100, batch_regions: int = 10,
           x_start=None, x_train=None, y_train=None, preacts_fn: Callable | None = None, gamma: float = 6.0,
           max_targets: int | None = None, max_rounds: int = 50, lp_solver: str = "ipm", qp_solver: str = "dual",
           restarts: int | None = None, restart_regions: int | None = None, processes: int | None = None,
           progress: bool = False, snapshots: Sequence[int] = (), batched: bool = False) -> AttackResult:
    """The randomized region attack: the closest adversarial point found, clipped to the box, re-verified.

    Args:
      logits_fn: batched piecewise-affine function `[batch, ...]` -> logits `[batch, K]` (ReLU, max-pool, dense,
        conv, reshape, residual adds: what `robustjax.network.trace` reads; no softmax).
      x: `[batch, ...]` inputs in the box; labels: `[batch]` int. An empty batch gives an empty result.
      p: 1, 2 or inf. key: jax.random key (region sampling; the starts).
      box: Box, (lo, hi) or None ([0, 1]); lo, hi a scalar, one example's shape or `[batch, ...]`.
      n_regions: sampled regions per example (the paper uses 400 for CIFAR-10).
      batch_regions: regions per round (one jitted vmap each): up to half are the neighbours across the region
        faces binding at the best solution so far (a local search), the rest random around it.
      x_start: optional `[batch, ...]` starting points (adversarial or not; a line search from x picks the first
        misclassified point on the segment), instead of the cheap attacks' points (DeepFool, DDN, minimal PGD:
        `region_starts.cheap_attacks`; without them the result is not bounded by theirs). With
        `x_train` (and `y_train`), also the nearest training point of another (true and predicted) class; the
        closest verified start wins. An example with no start stays unsolved (success False, distance inf).
      preacts_fn: optional `x [batch, ...] -> list of [batch, n_l]` pre-activations of every ReLU, for models
        `network.trace` cannot read.
      gamma: sampling radius exponent (r^gamma, r ~ U[0, 1]).
      max_targets: at most this many target classes per region (lowest lower bounds first); None: all.
      max_rounds: active-set rounds per convex problem. lp_solver: "ipm" (`robustjax.lp`, jitted; HiGHS where
        it does not certify its answer), "highs" (the reference) or "osqp" for the p = 1, inf LPs;
        qp_solver: "dual" (`robustjax.qp`: exact, jitted, warm-started across the rounds; OSQP where it does
        not finish) or "osqp" (the reference) for the p = 2 QPs.
      restarts, restart_regions: after the main search, searches from targeted starts of `restarts` classes
        (`region_starts.targeted_starts`; a search from one start tends to stay in its class's basin), about
        `restart_regions` regions each (None: max(batch_regions, n_regions // 5)), split among them by their
        classes' linearized distances at x (`restart_budget`), then a search from the winner; the best point
        of all wins. None: for l1 and l_inf every class (K - 1 starts) for K <= 10 classes, else 3
        (benchmarks/region_small.md, region_milp.md); for l2 at most 3 (benchmarks/region_restarts.md: on two
        MNIST MLPs 3 restarts end within 0.04 % of 9 on every point, in half the time).
      processes: spread the examples over this many worker processes (`parallel.map_rows`: spawned, JAX on
        their CPU; logits_fn travels by cloudpickle). Every example's random stream depends on its index
        alone, so the result equals the one-process run up to float rounding. None or 1: this process.
        progress: a bar over the chunks (over the examples in this process).
      snapshots: region counts in [1, n_regions] after which the best point so far is recorded (sorted,
        duplicates dropped; the attack itself is the same with or without them).
      batched: with qp_solver "dual" (p = 2) or lp_solver "ipm" (p = 1, inf): all promising (region, target)
        problems of a round solved in lockstep, each active-set round one vmapped QP or LP call for all of them
        (`region_solve_batch`), pruned by the round's starting distance (so more problems than the sequential
        search, which prunes by the best distance so far, in far fewer launches: meant for accelerators; on the
        CPU it is slower, benchmarks/region_batched_cpu.md).

    Returns:
      AttackResult; distance is a verified upper bound on the minimal l_p distance. info: trajectory
      `[batch, n_regions + 1]` (best distance after the start and after each region; the last column includes
      the restarts; 0 for misclassified inputs), start_distance `[batch]`, n_qp `[batch]` solver calls, rows
      `[batch]` mean region rows per solve. With snapshots, also snapshot_regions `[batch, m]` (the sorted
      counts, repeated per row: every info entry has the batch axis) and snapshots `[batch, m, ...]` float32: the best verified adversarial
      point after that many regions of the main search, its l_p distance to x the trajectory at that column
      (up to float32 rounding); NaN where there is none (no start); x for misclassified inputs. A snapshot at
      n_regions is the point after the restarts and the cheap attacks' floor, as the last trajectory column;
      x_adv is made from it by `finalize` (pushed outward or rejected where the margin check asks). Earlier
      snapshots are the main search's: the restarts and the floor may later beat them, so the last of them
      need not be x_adv.
    """
    p = check_norm(p)
    key = validate.key(key)
    restarts = None if restarts is None else validate.positive_int(restarts, "restarts", allow_zero=True)
    n_regions = validate.positive_int(n_regions, "n_regions", allow_zero=True)
    batch_regions = validate.positive_int(batch_regions, "batch_regions")
    steps = _snapshot_steps(snapshots, n_regions)
    if lp_solver not in LP_SOLVERS:
        raise ValueError(f"lp_solver must be one of {LP_SOLVERS}, got {lp_solver!r}")
    if qp_solver not in QP_SOLVERS:
        raise ValueError(f"qp_solver must be one of {QP_SOLVERS}, got {qp_solver!r}")
    if restart_regions is not None:
        validate.positive_int(restart_regions, "restart_regions", allow_zero=True)
    t0 = time.perf_counter()
    x, labels, logits = check_inputs(logits_fn, x, labels, box)
    box = as_box(box, x)
    n = x.shape[0]
    xn, yn = np.asarray(x, np.float32), np.asarray(labels)
    if x_train is not None:
        x_train = validate.batch(x_train, "x_train")
        if int(np.prod(x_train.shape[1:])) != int(np.prod(xn.shape[1:])):
            raise ValueError(f"x_train must have x's {int(np.prod(xn.shape[1:]))} features per example, "
                             f"got shape {tuple(x_train.shape)}")
        if y_train is not None:
            y_train = validate.labels(y_train, len(x_train), num_classes=logits.shape[1], name="y_train")
    elif y_train is not None:
        raise ValueError("y_train needs x_train")
    lo, hi = (np.asarray(b, np.float64).reshape(n, int(np.prod(xn.shape[1:]))) for b in (box.lo, box.hi))
    options = dict(n_regions=n_regions, batch_regions=batch_regions, preacts_fn=preacts_fn,
                   gamma=validate.positive_float(gamma, "gamma"),
                   max_targets=None if max_targets is None else validate.positive_int(max_targets, "max_targets"),
                   max_rounds=validate.positive_int(max_rounds, "max_rounds"), lp_solver=lp_solver, qp_solver=qp_solver,
                   restarts=restarts, restart_regions=restart_regions or max(batch_regions, n_regions // 5),
                   snapshots=steps, batched=bool(batched),
                   progress=bool(progress) and not (processes is not None and processes > 1 and n > 1))
    none = np.zeros((n, 0), np.float32)
    starts = none if x_start is None else \
        np.asarray(validate.batch(x_start, "x_start", example_shape=xn.shape[1:]), np.float32).reshape(n, -1)
    train = none
    if x_train is not None and n:   # computed once here, not shipped (the training set) to every worker
        oracle = make_oracle(logits_fn, preacts_fn, tuple(xn.shape[1:]), jnp.dtype(jnp.float32))
        train = nearest_other_class(oracle, xn.reshape(n, -1), yn, p, x_train, y_train)
    cheap_x, cheap_ok = np.zeros((n, 0, lo.shape[1]), np.float32), np.zeros((n, 0), bool)
    if x_start is None and n:   # on the whole batch here: the same points whatever the processes
        cheap = cheap_attacks(logits_fn, x, labels, p=p, key=jax.random.split(key)[0], box=Box(
            lo.reshape(xn.shape).astype(np.float32), hi.reshape(xn.shape).astype(np.float32)))
        cheap_x = np.stack([np.asarray(r.x_adv, np.float32).reshape(n, -1) for r in cheap], 1)
        cheap_ok = np.stack([r.success & (r.distance > 0) for r in cheap], 1)
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    key_data = np.asarray(jax.random.key_data(key) if typed else key)
    fn = functools.partial(_attack_rows, logits_fn, p=p, key_data=key_data, typed_key=typed, options=options)
    rows = (xn, yn, np.arange(n), lo, hi, starts, train, cheap_x, cheap_ok)
    if n == 0:
        out = (np.zeros((0, lo.shape[1]), np.float32), np.zeros(0, np.int64), np.zeros((0, n_regions + 1)),
               *(np.zeros(0) for _ in range(4)), np.zeros((0, len(steps), lo.shape[1]), np.float32))
    elif processes is not None and processes > 1 and n > 1:
        out = parallel.map_rows(fn, rows, processes=processes, progress=progress, desc="region")
    else:
        out = fn(*rows)
    best, calls, traj, start_d, n_qp, mean_rows, times, snaps = out
    info = dict(trajectory=np.minimum.accumulate(np.where(np.isnan(traj), np.inf, traj), axis=1),
                start_distance=start_d, n_qp=n_qp, rows=mean_rows)
    if steps:
        info.update(snapshot_regions=np.tile(np.asarray(steps, np.int64), (n, 1)),
                    snapshots=snaps.reshape((n, len(steps)) + xn.shape[1:]))
    res = finalize(logits_fn, x, labels, best.reshape(x.shape), p=p, box=box, model_calls=calls,
                   time_s=time.perf_counter() - t0, method="region", info=info)
    return res._replace(time_s=times)

