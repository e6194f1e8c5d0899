"""The region attack against the exact optimum on many fresh small random ReLU nets, all three norms.

Nets: NETS random MLPs (fixed seeds), 10-20 inputs, 1-2 hidden layers of 16-32 ReLUs, 3-5 classes,
N(0, 1/fan_in) weights, N(0, 0.25) biases; POINTS points per net uniform in [0.2, 0.8]^d, labelled by the
net (box [0, 1]). Per (net, point, norm): `robustjax.attacks.region` with its defaults, every returned point
re-checked (in the box, adversarial in float64, distance as reported), and the exact optimum:

- l_inf, l1: `robustjax.verify.min_adversarial_milp` (HiGHS), its ball the region attack's radius
  ('infeasible' there proves the region point optimal: ratio 1).
- l2: `min_adversarial_l2` below, an outer-approximation MILP (Duran & Grossmann's OA for convex MINLP):
  the MILP master minimizes t over the ReLU net's big-M encoding with tangent cuts t >= g . (z - x) of the
  l2 norm (valid lower bounds: ||v||_2 >= g . v for unit g); each master solution's activation pattern and
  target fix one linear region, whose exact QP (OSQP, `robustjax.solvers.solve_min_norm`) gives a feasible
  point and the tangent cut at it, which keeps that region from coming back below its own optimum.
  It stops when the master with t <= (1 - TOL) * best is infeasible: the best point is then optimal to TOL
  relative (plus OSQP's 1e-7 tolerances).

Ratio = region distance / exact optimum. Target (issue 16): max ratio <= 1.05 in every norm, median 1.000.

    nice -n 5 .venv/bin/python benchmarks/bench_region_small.py            # writes region_small.md / .json
    .venv/bin/python benchmarks/bench_region_small.py --nets 3 --points 1  # a smoke run (prints only)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np
from scipy import optimize, sparse

from robustjax import network, verify
from robustjax.attacks import region
from robustjax.solvers import solve_min_norm

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TOL = 1e-3
NORMS = {"linf": np.inf, "l1": 1.0, "l2": 2.0}


def random_small_net(seed: int):
    """(layers, sizes) of one random net: 10-20 inputs, 1-2 hidden layers of 16-32 units, 3-5 classes."""
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(10, 21))] + [int(rng.integers(16, 33)) for _ in range(int(rng.integers(1, 3)))] \
        + [int(rng.integers(3, 6))]
    layers = [verify.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(verify.ReLU())
        layers.append(verify.Dense(rng.normal(size=(a, b)) / np.sqrt(a), 0.5 * rng.normal(size=b)))
    return layers, sizes


def logits_fn_of(layers):
    """The layers as a JAX function `[batch, d]` -> `[batch, K]` (`network.evaluate`; float32 unless x64 is on)."""
    graph = network.as_graph(list(layers))
    return lambda x: network.evaluate(graph, x.reshape(x.shape[0], -1))


# ----------------------------------------------------------------------------------- exact l2 reference

def _dense_chain(layers):
    return [(l.W, l.b) for l in layers if isinstance(l, verify.Dense)]


def region_rows(layers, pattern, c, t, d):
    """(G `[m, d]`, h `[m]`) of the linear region with ReLU signs `pattern` (list of bool arrays, per hidden
    layer) intersected with {f_t >= f_c}: G z >= h, rows normalized."""
    A, a = np.eye(d), np.zeros(d)           # the current layer's input as z @ A + a
    G, h = [], []
    dense = _dense_chain(layers)
    for k, (W, b) in enumerate(dense):
        S, s0 = A @ W, a @ W + b
        if k == len(dense) - 1:
            G.append((S[:, t] - S[:, c])[None])
            h.append(np.array([s0[c] - s0[t]]))
            break
        sg = np.where(pattern[k], 1.0, -1.0)
        G.append((S * sg).T)
        h.append(-s0 * sg)
        on = pattern[k].astype(np.float64)
        A, a = S * on, s0 * on
    G, h = np.concatenate(G), np.concatenate(h)
    nrm = np.maximum(np.linalg.norm(G, axis=1), 1e-300)
    keep = nrm > 1e-12
    return G[keep] / nrm[keep, None], h[keep] / nrm[keep]


def _l2_master(layers, x, c, lo, hi, radius, cap, cuts, time_limit):
    """The OA master: min t s.t. t >= g . (z - x) for g in cuts, t <= cap, z in box and ||z - x||_inf <=
    radius, the net's big-M encoding, f_t >= f_c for one selected t. Returns (scipy result, pattern and
    target reader)."""
    d = x.size
    zlo, zhi = np.maximum(lo, x - radius), np.minimum(hi, x + radius)
    bounds = verify.interval_bounds(layers, zlo, zhi)
    dense = _dense_chain(layers)
    lb, ub, integ, cost = [], [], [], []
    rows, rlo, rhi = [], [], []           # rows as dicts {col: val}

    def add(n, l, u, integer=False, c0=0.0):
        start = len(lb)
        lb.extend(np.broadcast_to(l, (n,)).tolist())
        ub.extend(np.broadcast_to(u, (n,)).tolist())
        integ.extend([int(integer)] * n)
        cost.extend([c0] * n)
        return np.arange(start, start + n)

    def row(coefs, l, u):
        rows.append(coefs)
        rlo.append(l)
        rhi.append(u)
    z = add(d, zlo, zhi)
    tv = add(1, 0.0, cap, c0=1.0)[0]
    for g in cuts:                           # t - g . z >= -g . x
        row({tv: 1.0, **{int(z[i]): -g[i] for i in np.flatnonzero(g)}}, -g @ x, np.inf)
    dense_bounds = [b for layer, b in zip(layers[1:], bounds[1:]) if isinstance(layer, verify.Dense)]
    h, readers = z, []
    for k, (W, b) in enumerate(dense):
        L, U = dense_bounds[k]
        y = add(W.shape[1], L, U)
        for j in range(W.shape[1]):        # y_j - W_j . h = b_j
            coefs = {int(h[i]): W[i, j] for i in range(len(h)) if W[i, j] != 0}
            coefs[int(y[j])] = -1.0
            row(coefs, -b[j], -b[j])
        if k == len(dense) - 1:
            h = y
            break
        a = add(W.shape[1], 0.0, np.maximum(U, 0.0))
        on, off = L >= 0, U <= 0
        dl = {}
        for j in range(W.shape[1]):
            if on[j]:
                row({int(a[j]): 1.0, int(y[j]): -1.0}, 0.0, 0.0)
            elif not off[j]:
                q = add(1, 0.0, 1.0, integer=True)[0]
                dl[j] = q
                row({int(a[j]): 1.0, int(y[j]): -1.0}, 0.0, np.inf)
                row({int(a[j]): 1.0, int(y[j]): -1.0, int(q): -L[j]}, -np.inf, -L[j])
                row({int(a[j]): 1.0, int(q): -U[j]}, -np.inf, 0.0)
        readers.append((on, dl))
        h = a
    K = len(h)
    out_lo, out_hi = dense_bounds[-1]
    others = [k for k in range(K) if k != c]
    sel = add(len(others), 0.0, 1.0, integer=True)
    row({int(s): 1.0 for s in sel}, 1.0, 1.0)
    for s, k in zip(sel, others):           # f_k - f_c >= -M (1 - sel)
        M = max(out_hi[c] - out_lo[k], 0.0)
        row({int(h[k]): 1.0, int(h[c]): -1.0, int(s): -M}, -M, np.inf)
    r_idx = np.concatenate([np.full(len(r), i) for i, r in enumerate(rows)])
    c_idx = np.concatenate([list(r.keys()) for r in rows])
    vals = np.concatenate([list(r.values()) for r in rows])
    A = sparse.csr_matrix((vals, (r_idx, c_idx.astype(np.int64))), shape=(len(rows), len(lb)))
    res = optimize.milp(np.asarray(cost), integrality=np.asarray(integ),
                        constraints=optimize.LinearConstraint(A, np.asarray(rlo), np.asarray(rhi)),
                        bounds=optimize.Bounds(np.asarray(lb), np.asarray(ub)),
                        options={"time_limit": time_limit, "mip_rel_gap": 1e-7, "disp": False})

    def read(sol):
        pattern = [on | np.isin(np.arange(len(on)), [j for j, q in dl.items() if sol[q] > 0.5])
                   for on, dl in readers]
        return pattern, others[int(np.argmax(sol[sel]))], sol[z]
    return res, read


def min_adversarial_l2(layers, x, c, *, lo=0.0, hi=1.0, upper=None, starts=(), max_iter: int = 300,
                       time_limit: float = 120.0):
    """The exact minimal l2 adversarial distance of a small ReLU chain (outer approximation, module
    docstring). upper: a known adversarial point `[d]` (its distance bounds the search ball); starts: more
    points whose directions seed the cuts. Returns dict(distance, lower, status, iterations, time_s,
    x_adv)."""
    t0 = time.perf_counter()
    x = np.asarray(x, np.float64).reshape(-1)
    d = x.size
    lo, hi = np.broadcast_to(np.asarray(lo, np.float64), (d,)), np.broadcast_to(np.asarray(hi, np.float64), (d,))
    best, best_z = np.inf, None
    if upper is not None:
        best, best_z = float(np.linalg.norm(np.asarray(upper, np.float64) - x)), np.asarray(upper, np.float64)
    cuts = [e for i in range(d) for e in (np.eye(d)[i], -np.eye(d)[i])]
    for s in ([] if upper is None else [upper]) + list(starts):
        v = np.asarray(s, np.float64).reshape(-1) - x
        if np.linalg.norm(v) > 0:
            cuts.append(v / np.linalg.norm(v))
    lower, status, it = 0.0, "iteration_limit", 0
    for it in range(1, max_iter + 1):
        left = time_limit - (time.perf_counter() - t0)
        if left <= 0:
            status = "time_limit"
            break
        radius = best if np.isfinite(best) else np.inf
        cap = best * (1 - TOL) if np.isfinite(best) else np.inf
        res, read = _l2_master(layers, x, c, lo, hi, radius, cap, cuts, left)
        if res.status == 2:                  # nothing below (1 - TOL) best: best is optimal
            lower, status = cap, "optimal"
            break
        if res.x is None:
            status = "time_limit" if res.status == 1 else "error"
            break
        dual = getattr(res, "mip_dual_bound", None)
        lower = max(lower, float(dual) if dual is not None and np.isfinite(dual) else float(res.fun))
        pattern, t, zk = read(res.x)
        points = [zk]
        for tt in range(len(verify.forward(layers, x[None])[0])):   # the master's region, every target
            if tt == c:
                continue
            G, h = region_rows(layers, pattern, c, tt, d)
            zq = solve_min_norm(x, G, h, lo, hi, 2)
            if zq is None:
                continue
            points.append(zq)
            dq = float(np.linalg.norm(zq - x))
            out = verify.forward(layers, zq[None])[0]
            if dq < best and np.max(np.delete(out, c)) >= out[c] - 1e-7 * max(1.0, np.abs(out).max()):
                best, best_z = dq, zq
        for zz in points:
            v = zz - x
            if np.linalg.norm(v) > 1e-12:
                cuts.append(v / np.linalg.norm(v))
        if lower >= best * (1 - TOL):
            status = "optimal"
            break
    return dict(distance=best, lower=min(lower, best), status=status, iterations=it,
                time_s=time.perf_counter() - t0, x_adv=best_z)


# --------------------------------------------------------------------------------------------- the run

def check_point(layers, x, c, z, dist, p, lo=0.0, hi=1.0):
    """A returned point is valid: in the box, adversarial for the float64 net, at the reported distance."""
    z = np.asarray(z, np.float64)
    out = verify.forward(layers, z[None])[0]
    in_box = bool(np.all(z >= lo) and np.all(z <= hi))
    adv = int(np.argmax(out)) != c
    same = abs(float(np.linalg.norm(z - np.asarray(x, np.float64), ord=p)) - dist) <= 1e-5 * max(dist, 1e-6)
    return in_box and adv and same


def run(args, save=lambda rows: None):
    rows = []
    for net in range(args.first, args.first + args.nets):
        layers, sizes = random_small_net(args.seed + net)
        f = logits_fn_of(layers)
        d = sizes[0]
        x = np.random.default_rng(10_000 + args.seed + net).uniform(0.2, 0.8, size=(args.points, d)).astype(np.float32)
        labels = np.argmax(verify.forward(layers, x), 1)
        for p_name in args.norms.split(","):
            p = NORMS[p_name]
            t0 = time.perf_counter()
            res = region(f, x, labels, p=p, key=jax.random.key(net), **args.region_kwargs)
            t_region = (time.perf_counter() - t0) / len(x)
            for i in range(len(x)):
                dist = float(res.distance[i])
                valid = bool(res.success[i]) and check_point(layers, x[i], int(labels[i]), res.x_adv[i], dist, p)
                t1 = time.perf_counter()
                if p == 2:
                    ex = min_adversarial_l2(layers, x[i], int(labels[i]),
                                            upper=res.x_adv[i] if res.success[i] else None,
                                            time_limit=args.time_limit)
                    exact, status = ex["distance"], ex["status"]
                else:
                    ex = verify.min_adversarial_milp(layers, x[i], int(labels[i]), p=p, time_limit=args.time_limit,
                                                     max_distance=dist * (1 + 1e-6) if np.isfinite(dist) else None)
                    status = ex.status
                    exact = dist if status == "infeasible" and np.isfinite(dist) else ex.distance
                ratio = dist / exact if status in ("optimal", "infeasible") and exact > 0 else None
                row = dict(net=net, sizes=sizes, point=i, norm=p_name, region=dist, exact=float(exact),
                           status=status, ratio=ratio, valid=valid, region_s=t_region,
                           exact_s=time.perf_counter() - t1,
                           start=float(res.info["start_distance"][i]))
                rows.append(row)
                print(f"net {net} {sizes} #{i} {p_name}: region {dist:.5f} exact {exact:.5f} ({status}) "
                      f"ratio {ratio if ratio is None else round(ratio, 4)} valid {valid} "
                      f"({t_region:.1f} s, exact {row['exact_s']:.1f} s)", flush=True)
        save(rows)
    return rows


def summary(rows):
    out = {}
    for p_name in NORMS:
        r = [row for row in rows if row["norm"] == p_name]
        if not r:
            continue
        # a point with no adversarial example in the box (exact infinite) has no ratio; the attack is right to
        # return none there, so it counts as valid
        ratios = np.array([row["ratio"] for row in r if row["ratio"] is not None and np.isfinite(row["ratio"])])
        none = [row for row in r if not np.isfinite(row["exact"]) and not np.isfinite(row["region"])]
        out[p_name] = dict(n=len(r), n_exact=len(ratios) + len(none),
                           valid=sum(row["valid"] for row in r) + len(none),
                           ratio_median=float(np.median(ratios)) if len(ratios) else None,
                           ratio_max=float(np.max(ratios)) if len(ratios) else None,
                           above_1pct=int(np.sum(ratios > 1.01)), above_5pct=int(np.sum(ratios > 1.05)),
                           region_s_median=float(np.median([row["region_s"] for row in r])),
                           exact_s_median=float(np.median([row["exact_s"] for row in r])))
    return out


def markdown(res):
    lines = ["# Region attack vs the exact optimum on small random ReLU nets", "",
             f"{res['machine']}; {res['date']}; 1-minute load {res['load_start']:.1f} at the start, "
             f"{res['load_end']:.1f} at the end; wall {res['wall_s']:.0f} s. {res['nets']} nets (seeds "
             f"{res['seed']}..{res['seed'] + res['nets'] - 1}: 10-20 inputs, 1-2 hidden layers of 16-32 ReLUs, "
             f"3-5 classes) x {res['points']} points per norm; region attack with "
             f"{res['region_kwargs'] or 'its defaults'}. Exact: verify.min_adversarial_milp (l_inf, l1), the "
             f"outer-approximation MILP of bench_region_small.py (l2, optimal to {TOL:g} relative).", "",
             "| norm | points | exact solved | valid | ratio median | ratio max | > 1.01 | > 1.05 | region s/pt "
             "| exact s/pt |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for p_name, s in res["summary"].items():
        lines.append(f"| {p_name} | {s['n']} | {s['n_exact']} | {s['valid']} | {fmt(s['ratio_median'])} | "
                     f"{fmt(s['ratio_max'])} | {s['above_1pct']} | {s['above_5pct']} | "
                     f"{s['region_s_median']:.2f} | {s['exact_s_median']:.2f} |")
    worst = sorted([r for r in res["rows"] if r["ratio"] is not None], key=lambda r: -r["ratio"])[:5]
    lines += ["", "Worst points: " + "; ".join(f"net {r['net']} {r['sizes']} #{r['point']} {r['norm']} "
                                                f"{r['ratio']:.4f}" for r in worst) + "."]
    if res.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", type=int, default=30)
    ap.add_argument("--points", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--first", type=int, default=0, help="start at net seed + first")
    ap.add_argument("--norms", default="linf,l1,l2")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--region", default="{}", help="region() keyword arguments as JSON")
    ap.add_argument("--out", default="", help="write region_small.md and results/region_small.json")
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args()
    args.region_kwargs = json.loads(args.region)
    load0, t0 = os.getloadavg()[0], time.perf_counter()

    def result(rows):
        return dict(machine=f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), shared with "
                       "other jobs", date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    load_start=load0, load_end=os.getloadavg()[0], wall_s=time.perf_counter() - t0,
                    nets=len({r["net"] for r in rows}), points=args.points, seed=args.seed + args.first,
                    region_kwargs=args.region_kwargs, tol=TOL, summary=summary(rows), rows=rows, notes=args.note)

    def save(rows):                          # after every net: a stopped run keeps what it measured
        if args.out:
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / "region_small.json").write_text(json.dumps(result(rows), indent=1))
            (HERE / "region_small.md").write_text(markdown(result(rows)))
    print(markdown(result(run(args, save))))


if __name__ == "__main__":
    main()
