"""Bound propagation tried hard on thousands of random networks (issue 13, "soundness, tested hard"): counts,
over random (net, point) pairs, outputs outside their bounds and certified radii above an adversarial distance
(every count must be 0).

Networks: Dense layers of width 16 on 10 inputs, 4 classes, depth 1-6, ReLU / sigmoid / tanh / softplus, a
random gain (0.7-2.0) so that the number of unstable units varies; weights rounded to float32, so that the
float32 network and the float64 one have the same weights. Points uniform in [0.1, 0.9]^10, l_inf, l2 and l1
balls of random radii intersected with the box [0, 1]. For every method (IBP, CROWN-IBP, CROWN, alpha-CROWN
with 5 steps) and both arithmetics, `bounds.linear_bounds(..., dtype)` of every logit (rows +-e_k), then:
  * output checks: points of the set (random points, l_inf corners, and per logit the ends of a projected
    ascent / descent) are evaluated in float64 numpy (against the dtype=float64 bounds) and, rounded to
    float32 and kept only where still inside the set (checked in float64), by the float32 network twice: jitted
    and op by op (eager JAX), against the dtype=float32 bounds, which hold for any summation order. A value
    outside its bounds is a violation;
  * order: CROWN, CROWN-IBP inside IBP and alpha-CROWN inside CROWN (a bound looser by more than 1e-9 (1 + |b|)
    is counted, a property of the methods, not of soundness);
  * radii: `bounds.certified_radius` (CROWN, float32) and for smooth nets in l2 `lipschitz.theorem21_radius`
    at the point and at points tau = 1e-2, 1e-4, 1e-6 of the way from the boundary: FAB finds an adversarial
    point, a bisection of the segment in float32 points finds the crossing (x_in keeps the label, x_out does
    not, in the jitted float32 network); a radius at x_t = x_in + tau (x - x_in) (label: its float64 class)
    that reaches ||x_out - x_t||_p is a violation (x_out is then inside the certified ball and misclassified
    by a float32 evaluation).

    python benchmarks/bench_bounds_soundness.py [--nets N] [--quick]
      (writes bounds_soundness.md and results/bounds_soundness.json next to this file)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import bounds, geometry
from robustjax.attacks import fab
from robustjax.network import Activation, Dense, Flatten, ReLU, as_graph, evaluate, evaluate_numpy
from robustjax.network.function import as_function, join, split

HERE = Path(__file__).resolve().parent
ACTS = ("relu", "sigmoid", "tanh", "softplus")
DEPTHS = (1, 2, 3, 4, 5, 6)
NORMS = (np.inf, 2.0, 1.0)
EPS = {np.inf: (0.005, 0.08), 2.0: (0.03, 0.5), 1.0: (0.1, 1.5)}      # log-uniform radius per point
TAUS = (1e-2, 1e-4, 1e-6)
D, WIDTH, K, B = 10, 16, 4, 6
ALPHA_STEPS = 5


def random_net(rng, act, depth):
    gain = rng.uniform(0.7, 2.0)
    f32 = lambda a: np.asarray(np.asarray(a, np.float32), np.float64)  # noqa: E731
    layers, n = [Flatten()], D
    for _ in range(depth):
        layers += [Dense(f32(gain * rng.normal(size=(n, WIDTH)) / np.sqrt(n)), f32(0.3 * rng.normal(size=WIDTH))),
                   ReLU() if act == "relu" else Activation(act)]
        n = WIDTH
    layers.append(Dense(f32(gain * rng.normal(size=(n, K)) / np.sqrt(n)), f32(0.3 * rng.normal(size=K))))
    return as_graph(layers, (D,))


def as_float32(graph):
    structure, arrays = split(graph)
    return join(structure, [np.asarray(a, np.float32) if np.issubdtype(np.asarray(a).dtype, np.floating) else a
                            for a in arrays])


def in_set(pts, x, eps, p, slack=0.0):
    """`[n]` bool: pts `[n, D]` inside the l_p ball of radius eps (1 - slack) around x and the box [0, 1]."""
    norm = geometry.vector_norm(pts - x, p)
    return (norm <= eps * (1 - slack)) & np.all((pts >= 0) & (pts <= 1), -1)


def into_set(pts, x, eps, p):
    """pts `[n, *x.shape]` moved into the set in float64: scaled into the ball, then clipped to the box (x is in
    the box, so the clip keeps them in the ball)."""
    d = (pts - x).reshape(len(pts), -1)
    scale = np.minimum(1.0, eps / np.maximum(geometry.vector_norm(d, p), 1e-300)) * (1 - 1e-12)
    return np.clip(x + (d * scale[:, None]).reshape(pts.shape), 0.0, 1.0)


def random_points(rng, x, eps, p, n):
    """`[n (+ n // 4 corners for l_inf), *x.shape]` points of the l_p ball around x (radius uniform^(1/3) of eps),
    not yet clipped to the box (`into_set`)."""
    shape = (n,) + np.shape(x)
    z = (rng.laplace(size=shape) if p == 1 else rng.normal(size=shape)).reshape(n, -1)
    z /= geometry.vector_norm(z, p)[:, None]
    pts = x + (eps * rng.uniform(0, 1, (n, 1)) ** (1 / 3) * z).reshape(shape)
    if p == np.inf:
        pts = np.concatenate([pts, x + eps * np.sign(rng.normal(size=(n // 4,) + np.shape(x)))])
    return pts


@jax.jit
def _ascent(fn, x, eps, p_code, signs):
    """Projected steepest ascent of signs . f from x `[D]`, one row per sign vector `[2K, K]`, 20 steps in
    float32; the projection scales into the ball and clips to [0, 1]."""
    def proj(z):
        dz = z - x
        n = jnp.where(p_code == 0, jnp.max(jnp.abs(dz), -1),
                      jnp.where(p_code == 1, jnp.sum(jnp.abs(dz), -1), jnp.linalg.norm(dz, axis=-1)))
        return jnp.clip(x + dz * jnp.minimum(1.0, eps / (n + 1e-12))[:, None], 0.0, 1.0)

    def body(t, z):
        g = jax.grad(lambda v: jnp.sum(fn(v) * signs))(z)
        step = jnp.where(p_code == 0, jnp.sign(g), g / (jnp.linalg.norm(g, axis=-1, keepdims=True) + 1e-12))
        return proj(z + 0.3 * eps * (0.9 ** t) * step)
    z0 = jnp.broadcast_to(x, (signs.shape[0], x.shape[0]))
    return jax.lax.fori_loop(0, 20, body, z0)


P_CODE = {np.inf: 0, 1.0: 1, 2.0: 2}


def ascent_ends(fn, x, eps, p):
    """`[2K, D]` float64: per logit, the ends of a projected ascent and of a descent from x `[D]` inside the set
    (fn: a batched logits_fn, e.g. `network.as_function`, whose programs are then shared per architecture)."""
    x32 = jnp.asarray(x, jnp.float32)
    k = int(fn(x32[None]).shape[-1])
    signs = jnp.asarray(np.concatenate([np.eye(k), -np.eye(k)]), jnp.float32)
    return np.asarray(_ascent(fn, x32, jnp.float32(eps), P_CODE[p], signs), np.float64)


def set_points(rng, fn32, x, eps, p):
    """Points of the set: random, corners (l_inf) and ascent ends, float64, each exactly inside."""
    return into_set(np.concatenate([random_points(rng, x, eps, p, 160), ascent_ends(fn32, x, eps, p)]), x, eps, p)


def float32_points(pts, x, eps, p):
    """pts rounded to float32, those still inside the set (float64 check with a relative slack of 1e-9)."""
    q = np.asarray(np.asarray(pts, np.float32), np.float64)
    return q[in_set(q, x, eps, p, slack=1e-9)]


def _outside(y, lo, hi):
    return int(np.sum(np.any((y < lo) | (y > hi), -1)))


def check_outputs(rng, g64, g32, fn32, x, eps, p, stats):
    """Every method's dtype=float64 and dtype=float32 logit bounds against points of each example's set."""
    E = np.concatenate([np.eye(K), -np.eye(K)])
    res = {}
    for m in bounds.METHODS:
        for dt in ("float64", "float32"):
            low = bounds.linear_bounds(g64, x, E, eps=eps, p=p, box=(0.0, 1.0), method=m, alpha_steps=ALPHA_STEPS,
                                       dtype=np.dtype(dt))
            res[m, dt] = (low[:, :K], -low[:, K:])
    for i in range(len(x)):
        pts = set_points(rng, fn32, x[i], eps[i], p)
        q = float32_points(pts, x[i], eps[i], p)
        y64 = evaluate_numpy(g64, pts)
        y32e = np.asarray(evaluate(g32, jnp.asarray(q, jnp.float32)), np.float64)
        y32j = np.asarray(fn32(jnp.asarray(q, jnp.float32)), np.float64)
        stats["points64"] += len(pts)
        stats["points32"] += len(q)
        for m in bounds.METHODS:
            lo, hi = res[m, "float64"]
            stats[f"viol64_{m}"] += _outside(y64, lo[i], hi[i])
            lo, hi = res[m, "float32"]
            stats[f"viol32_{m}"] += _outside(y32e, lo[i], hi[i]) + _outside(y32j, lo[i], hi[i])
    for loose, tight in (("ibp", "crown-ibp"), ("ibp", "crown"), ("crown", "alpha-crown")):
        for dt in ("float64", "float32"):
            (l0, h0), (l1, h1) = res[loose, dt], res[tight, dt]
            tol = 1e-9 * (1 + np.abs(l0))
            stats[f"order_{tight}"] += int(np.sum((l1 < l0 - tol) | (h1 > h0 + 1e-9 * (1 + np.abs(h0)))))
    stats["examples"] += len(x)
    for m in ("ibp", "crown", "alpha-crown"):
        lo, hi = res[m, "float64"]
        stats[f"width_{m}"].append(float(np.median(hi - lo)))


def crossing(fn32, x, a, label, iters=60):
    """(x_in, x_out): float32 points on the segment x -> a with x_in classified `label` and x_out not (jitted
    float32 network), as close as float32 allows; None if a keeps the label."""
    cls = lambda v: np.asarray(jnp.argmax(fn32(jnp.asarray(v[None], jnp.float32)), -1))[0]  # noqa: E731
    r32 = lambda v: np.asarray(np.asarray(v, np.float32), np.float64)  # noqa: E731
    lo_pt, hi_pt = r32(x), r32(a)
    if cls(lo_pt) != label or cls(hi_pt) == label:
        return None
    for _ in range(iters):
        mid = r32(0.5 * (lo_pt + hi_pt))
        if np.array_equal(mid, lo_pt) or np.array_equal(mid, hi_pt):
            break
        if cls(mid) == label:
            lo_pt = mid
        else:
            hi_pt = mid
    return lo_pt, hi_pt


def check_radii(key, g64, fn32, x, p, smooth, stats):
    """Certified radii at x and near the boundary against float32-misclassified points (module docstring)."""
    labels = bounds.predict_float64(g64, x)
    adv = fab(fn32, jnp.asarray(x, jnp.float32), labels, p=p, key=key, steps=100)
    centres, outs, labs = [], [], []
    for i in range(len(x)):
        if not adv.success[i]:
            continue
        c = crossing(fn32, x[i], np.asarray(adv.x_adv[i], np.float64), labels[i])
        if c is None:
            continue
        x_in, x_out = c
        for t in (1.0,) + TAUS:
            xt = np.clip(np.asarray(np.asarray(x_in + t * (x[i] - x_in), np.float32), np.float64), 0, 1)
            centres.append(xt)
            outs.append(x_out)
    if not centres:
        return
    centres, outs = np.array(centres), np.array(outs)
    labs = bounds.predict_float64(g64, centres)
    out_cls = np.asarray(jnp.argmax(fn32(jnp.asarray(outs, jnp.float32)), -1))
    keep = out_cls != labs
    centres, outs, labs = centres[keep], outs[keep], labs[keep]
    if not len(centres):
        return
    dist = geometry.vector_norm(outs - centres, p)
    radii = {"crown": bounds.certified_radius(g64, centres, labs, p=p, box=(0.0, 1.0), method="crown", steps=14,
                                              upper=2 * dist)}
    if smooth and p == 2:
        radii["theorem21"] = bounds.lipschitz.theorem21_radius(g64, centres, labs, box=(0.0, 1.0), upper=2 * dist)
    for name, r in radii.items():
        rad = np.asarray(r.radius)
        stats[f"radius_pairs_{name}"] += len(rad)
        stats[f"radius_viol_{name}"] += int(np.sum(rad >= dist))
        stats[f"radius_zero_{name}"] += int(np.sum(rad == 0))
        stats[f"radius_ratio_{name}"].extend((rad / dist)[rad > 0].tolist())


def run(n_nets, seed=0, acts=ACTS, depths=DEPTHS, norms=NORMS, log=print, clear_caches=False):
    rows = []
    t_all = time.perf_counter()
    for act in acts:
        for depth in depths:
            for p in norms:
                rng = np.random.default_rng([seed, ACTS.index(act), depth, P_CODE[p]])
                stats = _new_stats()
                t0 = time.perf_counter()
                for k in range(n_nets):
                    g64 = random_net(rng, act, depth)
                    g32 = as_float32(g64)
                    fn32 = as_function(g32)
                    x = np.asarray(np.asarray(rng.uniform(0.1, 0.9, (B, D)), np.float32), np.float64)
                    eps = np.exp(rng.uniform(*np.log(EPS[p]), B))
                    check_outputs(rng, g64, g32, fn32, x, eps, p, stats)
                    check_radii(jax.random.key(int(rng.integers(1 << 30))), g64, fn32, x, p, act != "relu", stats)
                    stats["nets"] += 1
                if clear_caches:      # each group is a new architecture: keep the process's memory mappings few
                    jax.clear_caches()
                row = _summary(act, depth, p, stats, time.perf_counter() - t0)
                rows.append(row)
                log(f"{act} depth {depth} p {p}: {row['nets']} nets, {row['violations']} violations, "
                    f"{row['order_violations']} order, {row['time_s']:.0f} s "
                    f"({time.perf_counter() - t_all:.0f} s in all)")
    return rows


def _new_stats():
    from collections import defaultdict
    s = defaultdict(int)
    for name in ("width_ibp", "width_crown", "width_alpha-crown", "radius_ratio_crown", "radius_ratio_theorem21"):
        s[name] = []
    return s


def _summary(act, depth, p, s, seconds):
    viol = {k: s[k] for k in sorted(s) if k.startswith(("viol64_", "viol32_", "radius_viol_"))}
    order = {k: s[k] for k in sorted(s) if k.startswith("order_")}
    med = lambda v: float(np.median(v)) if len(v) else None  # noqa: E731
    return {"act": act, "depth": depth, "p": "inf" if p == np.inf else int(p), "nets": s["nets"],
            "examples": s["examples"], "points64": s["points64"], "points32": s["points32"],
            "violations": int(sum(viol.values())), "by_check": viol,
            "order_violations": int(sum(order.values())), "order": order,
            "median_width": {m: med(s[f"width_{m}"]) for m in ("ibp", "crown", "alpha-crown")},
            "radius_pairs": {n: s[f"radius_pairs_{n}"] for n in ("crown", "theorem21")},
            "radius_zero": {n: s[f"radius_zero_{n}"] for n in ("crown", "theorem21")},
            "median_radius_ratio": {n: med(s[f"radius_ratio_{n}"]) for n in ("crown", "theorem21")},
            "time_s": seconds}


def write(rows, wall, load_before, load_after, args, path_md, path_json):
    total = {k: sum(r[k] for r in rows) for k in ("nets", "examples", "points64", "points32", "violations",
                                                   "order_violations")}
    pairs = sum(sum(r["radius_pairs"].values()) for r in rows)
    out = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{platform.machine()} CPU ({os.cpu_count()} cores), jax {jax.__version__}",
           "xla_flags": os.environ.get("XLA_FLAGS", ""), "command": args,
           "load": {"before": load_before, "after": load_after}, "wall_s": wall, "totals": total,
           "radius_pairs": pairs, "rows": rows}
    path_json.write_text(json.dumps(out, indent=1))
    lines = [
        "# Bound propagation on random networks: soundness counts", "",
        f"{out['date']}, {out['machine']}, XLA flags `{out['xla_flags']}`; 1/5/15-min load averages "
        f"{' '.join(load_before)} before, {' '.join(load_after)} after; {wall:.0f} s wall. "
        f"Command: `python benchmarks/bench_bounds_soundness.py {args}`. What is checked: the script's docstring.", "",
        f"**{total['nets']} random networks, {total['examples']} (net, point) pairs, "
        f"{total['points64']:,} float64 and {total['points32']:,} float32 points, each checked against 4 methods' "
        f"bounds (float32 points twice: jitted and eager JAX); {pairs} certified radii against a float32-"
        f"misclassified point: {total['violations']} violations.** Order (a tighter method looser than "
        f"a looser one): {total['order_violations']} bound pairs.", "",
        "Per activation and norm (depths 1-6 pooled): median width of the logit bounds (float64 dtype) per method, "
        "the radius checks (pairs, radius 0, median radius / distance to the misclassified point where > 0).", "",
        "| act | p | nets | violations | order | width ibp | width crown | width alpha | CROWN radii (zero) | "
        "ratio | Thm 2.1 radii (zero) | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for act in ACTS:
        for p in ("inf", 2, 1):
            rs = [r for r in rows if r["act"] == act and r["p"] == p]
            if not rs:
                continue
            w = {m: np.median([r["median_width"][m] for r in rs]) for m in ("ibp", "crown", "alpha-crown")}
            cell = []
            for n in ("crown", "theorem21"):
                n_pairs = sum(r["radius_pairs"][n] for r in rs)
                zero = sum(r["radius_zero"][n] for r in rs)
                ratios = [r["median_radius_ratio"][n] for r in rs if r["median_radius_ratio"][n] is not None]
                cell += [f"{n_pairs} ({zero})" if n_pairs else "-",
                         f"{np.median(ratios):.3f}" if ratios else "-"]
            lines.append(f"| {act} | {p} | {sum(r['nets'] for r in rs)} | {sum(r['violations'] for r in rs)} | "
                         f"{sum(r['order_violations'] for r in rs)} | {w['ibp']:.3g} | {w['crown']:.3g} | "
                         f"{w['alpha-crown']:.3g} | " + " | ".join(cell) + " |")
    lines += ["", "Per depth (all activations and norms): violations / nets; median CROWN width over IBP width.", "",
              "| depth | nets | violations | crown / ibp width |", "|---|---|---|---|"]
    for depth in DEPTHS:
        rs = [r for r in rows if r["depth"] == depth]
        if rs:
            ratio = np.median([r["median_width"]["crown"] / r["median_width"]["ibp"] for r in rs])
            lines.append(f"| {depth} | {sum(r['nets'] for r in rs)} | {sum(r['violations'] for r in rs)} | "
                         f"{ratio:.3f} |")
    path_md.write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def main():
    # compile fast, as the test suite does (JAX reads the flags when its backend starts, at the first computation)
    os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", type=int, default=28, help="random networks per (activation, depth, norm)")
    ap.add_argument("--quick", action="store_true", help="2 nets per group, depths 1 and 3 (a smoke run)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    t0 = time.perf_counter()
    depths = (1, 3) if a.quick else DEPTHS
    rows = run(2 if a.quick else a.nets, a.seed, depths=depths, log=lambda m: print(m, flush=True), clear_caches=True)
    wall = time.perf_counter() - t0
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    args = "--quick" if a.quick else f"--nets {a.nets} --seed {a.seed}"
    suffix = "_quick" if a.quick else ""
    print(write(rows, wall, load_before, load_after, args, HERE / f"bounds_soundness{suffix}.md",
                HERE / "results" / f"bounds_soundness{suffix}.json"))


if __name__ == "__main__":
    main()
