"""Starting points of the region attack: verified adversarial points to search around.

The default starts are the points of the cheap minimal attacks, DeepFool (its l2 point for p = 1), DDN and
minimal PGD in l_p (`cheap_attacks`, run by the caller on the whole batch), plus, for p = 1, a sparse start by exact l1 steps; with a training set
also the nearest training point of another class; the closest verified start wins, and the closest cheap
attack point per example is kept as the floor the region attack never returns worse than. Where none is
adversarial: DDN's l2 point (after a given x_start), then the nearest of 1024 uniform box points the model
puts in another class. `targeted_starts` gives one start per other adversarial class, for the
restarts of the search.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from robustjax.attacks.region_oracle import RegionOracle
from robustjax.geometry import Box, halfspace_box_step, vector_norm


def verified(oracle: RegionOracle, x, c, z, lo, hi, p):
    """The first adversarial point on the segment x -> z (line search), its l_p distance; (None, inf) if none.
    x, z, lo, hi `[d]`."""
    point, found = oracle.ray(jnp.asarray(x, jnp.float32), jnp.asarray(z, jnp.float32), int(c),
                              jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32))
    if not bool(found):
        return None, np.inf
    point = np.asarray(point)
    return point, float(vector_norm(point.astype(np.float64) - x, p))


def step_from_x(out, jac, z, x, c, t, lo, hi, p, overshoot):
    """The exact l_p step delta from x (not from the iterate z) onto {f_t >= f_c} linearized at z, in the box,
    with an overshoot; out `[K]`, jac `[K, d]` at z. None if the box cannot reach it."""
    w = jac[t] - jac[c]
    r = out[c] - out[t] + w @ (z.astype(np.float64) - x)
    return halfspace_box_step(w, (1 + overshoot) * r + 1e-6, x, lo, hi, p)


def l1_linear_start(oracle: RegionOracle, x, c, lo, hi, steps: int = 30, overshoot: float = 0.05):
    """A sparse l1 start `[d]` for one example: repeatedly the exact l1 step from x to the nearest boundary
    linearized at the iterate, in the box; x itself where it never crosses."""
    z = x.astype(np.float32).copy()
    for _ in range(steps):
        out, _, jac = (np.asarray(a[0], np.float64) for a in oracle.probe(jnp.asarray(z[None])))
        if int(np.argmax(out)) != c:
            return z
        jac = jac.reshape(len(out), -1)
        steps_t = [step_from_x(out, jac, z, x, c, t, lo, hi, 1, overshoot) for t in range(len(out)) if t != c]
        steps_t = [s for s in steps_t if s is not None]
        if not steps_t:
            break
        z = np.clip(x + min(steps_t, key=lambda s: np.abs(s).sum()), lo, hi).astype(np.float32)
    return x.astype(np.float32)


def nearest_other_class(oracle: RegionOracle, x, labels, p, pool, pool_labels=None):
    """`[n, d]` per example the l_p-nearest pool point `[m, d]` whose predicted class (and pool label, when
    given) differs from the example's label; x itself where there is none."""
    pool = np.asarray(pool, np.float32).reshape(len(pool), -1)
    pred = np.concatenate([np.asarray(jnp.argmax(oracle.logits(jnp.asarray(pool[i:i + 1024])), -1))
                           for i in range(0, len(pool), 1024)]) if len(pool) else np.zeros(0, np.int64)
    true = pred if pool_labels is None else np.asarray(pool_labels)
    out = np.asarray(x, np.float32).copy()
    for i in range(len(x)):
        ok = (true != labels[i]) & (pred != labels[i])
        if ok.any():
            dist = np.asarray(vector_norm(jnp.asarray(pool[ok]) - jnp.asarray(x[i], jnp.float32), p))
            out[i] = pool[ok][int(np.argmin(dist))]
    return out


def start_points(oracle: RegionOracle, logits_fn, x, labels, *, p, key, lo, hi, x_start=None, cheap=None,
                 candidates=()):
    """Verified adversarial starts `[n, d]` (x where none), their l_p distances `[n]` (inf where none), and
    the floor: per example the closest successful point of the cheap attacks `[n, d]` and its distance `[n]`
    (inf where none): the region attack returns nothing farther.

    x `[n, ...]` float32, labels `[n]`, lo, hi `[n, d]`. cheap: (points `[n, m, d]`, success `[n, m]` bool)
    of the m cheap attacks (`cheap_attacks`, run on the whole batch by the caller), or None; x_start `[n, ...]`
    a given start; for p = 1 also the sparse start `l1_linear_start`; candidates: further `[n, d]` candidate
    points (e.g. nearest training points). Every candidate is verified by a line search from x; the closest
    wins.
    """
    n = x.shape[0]
    xf = np.asarray(x, np.float64).reshape(n, -1)
    box = Box(lo.reshape(x.shape), hi.reshape(x.shape))
    floor_x, floor_d = xf.astype(np.float32).copy(), np.full(n, np.inf)
    cands = [] if x_start is None else [np.asarray(x_start, np.float32).reshape(n, -1)]
    if cheap is not None:
        pts, ok = cheap
        for j in range(pts.shape[1]):
            z = np.asarray(pts[:, j], np.float32).reshape(n, -1)
            cands.append(z)
            dist = np.where(ok[:, j], vector_norm(z.astype(np.float64) - xf, p), np.inf)
            better = dist < floor_d
            floor_x[better], floor_d[better] = z[better], dist[better]
    if p == 1:
        cands.append(np.stack([l1_linear_start(oracle, xf[i], int(labels[i]), lo[i], hi[i]) for i in range(n)]))
    cands += list(candidates)
    best, best_d = xf.astype(np.float32).copy(), np.full(n, np.inf)

    def take(c, which):
        for i in which:
            z, dz = verified(oracle, xf[i], labels[i], c[i], lo[i], hi[i], p)
            if dz < best_d[i]:
                best[i], best_d[i] = z, dz
    for c in cands:
        take(c, range(n))
    missing = np.flatnonzero(~np.isfinite(best_d))
    if len(missing) and cheap is None:
        from robustjax.attacks import ddn   # public attacks; imported here, the package imports this one
        r = ddn(logits_fn, x[missing], labels[missing], p=2, key=key, box=Box(box.lo[missing], box.hi[missing]))
        fallback = np.zeros_like(best)
        fallback[missing] = np.asarray(r.x_adv, np.float32).reshape(len(missing), -1)
        take(fallback, missing)
    missing = np.flatnonzero(~np.isfinite(best_d))
    if len(missing):
        u = np.asarray(jax.random.uniform(jax.random.fold_in(key, 1), (1024, xf.shape[1])), np.float32)
        lo_m, hi_m = lo[missing].min(0), hi[missing].max(0)
        fallback = np.zeros_like(best)
        fallback[missing] = nearest_other_class(oracle, xf[missing], labels[missing], p, lo_m + u * (hi_m - lo_m))
        take(fallback, missing)
    return best, best_d, floor_x, floor_d


def cheap_attacks(logits_fn, x, labels, *, p, key, box):
    """The cheap minimal attacks whose points seed the region search (and bound its result), as
    AttackResults, each re-verified by its own `finalize`: DeepFool (l2 for p = 1), DDN with 1000 steps (l2;
    about 1 % of the search's time) and minimal PGD in l_p (key: fold_in(key, 2)). x `[n, ...]`, labels `[n]`,
    box a Box."""
    from robustjax.attacks import ddn, deepfool, pgd_minimal   # public attacks (the package imports this one)
    return [deepfool(logits_fn, x, labels, p=2.0 if p == 1 else p, key=key, box=box),
            ddn(logits_fn, x, labels, p=2, key=key, box=box, steps=1000),
            pgd_minimal(logits_fn, x, labels, p=p, key=jax.random.fold_in(key, 2), box=box)]


def targeted_starts(oracle: RegionOracle, x, c, lo, hi, p, *, exclude, top, steps: int = 30,
                    overshoot: float = 0.05, fab_steps: int = 100):
    """Up to `top` verified starts `[(point [d], l_p distance)]` of distinct predicted classes other than c
    and `exclude`, closest first, for one example: for every target t, exact l_p steps from x to the boundary
    between c and t linearized at the iterate (all targets in one batched probe per step), then the line
    search; when that gives fewer than `top` classes, also targeted FAB (fab_steps) toward every target.
    Returns (starts, model calls)."""
    out0 = np.asarray(oracle.logits(jnp.asarray(x[None], jnp.float32)))[0]
    targets = [t for t in range(len(out0)) if t != c and t != exclude]
    if not targets or top < 1:
        return [], 1
    z = np.tile(x.astype(np.float32), (len(targets), 1))
    active = np.ones(len(targets), bool)
    calls = 1
    for _ in range(steps):
        out, _, jac = (np.asarray(a, np.float64) for a in oracle.probe(jnp.asarray(z)))
        calls += len(targets) * (1 + out.shape[1])
        jac = jac.reshape(len(targets), out.shape[1], -1)
        for j, t in enumerate(targets):
            if not active[j]:
                continue
            if int(np.argmax(out[j])) != c:
                active[j] = False
                continue
            delta = step_from_x(out[j], jac[j], z[j], x, c, t, lo, hi, p, overshoot)
            if delta is None:
                active[j] = False
                z[j] = x
                continue
            z[j] = np.clip(x + delta, lo, hi)
        if not active.any():
            break
    found = {}

    def add(cands):
        nonlocal calls
        for zc in cands:
            point, dist = verified(oracle, x, c, zc, lo, hi, p)
            calls += oracle.ray_calls
            if point is None:
                continue
            label = int(np.argmax(np.asarray(oracle.logits(jnp.asarray(point[None])))[0]))
            if label != exclude and (label not in found or dist < found[label][1]):
                found[label] = (point, dist)

    add(z)
    if len(found) < min(top, len(targets)):
        # the linearization at x misses some classes (their boundary looks out of the box from x): targeted
        # FAB toward every other class, one batched call (one compiled shape per model)
        from robustjax.attacks.fab import fab   # public attack (the package imports this module)
        n = len(targets)
        r = fab(oracle.logits_fn, np.tile(x.astype(np.float32), (n, 1)), np.full(n, c), p=p, key=jax.random.key(c),
                box=Box(np.tile(lo.astype(np.float32), (n, 1)), np.tile(hi.astype(np.float32), (n, 1))),
                target=np.asarray(targets), steps=fab_steps)
        calls += int(np.sum(r.model_calls))
        add(np.asarray(r.x_adv, np.float64)[r.success])
    return sorted(found.values(), key=lambda s: s[1])[:top], calls
