"""The l1 and l_inf region attack's LPs: robustjax.lp's interior-point method (jitted, the default) against HiGHS's
dual simplex (scipy), the same search on the same points in one process, and the LPs themselves one by one.

    python benchmarks/bench_region_lp.py --n 2 --out region_lp        (about 15 min on 2 cores)

Net: the plain 784-1024-10 ReLU MLP of issue 16 (`bench_l2_nets.NETS`, trained and cached by robustjax). Points: the
first n test points it classifies correctly. Per norm: the region attack's distances and wall seconds per point
with lp_solver="ipm" and "highs" (default settings otherwise; the first call of each pays its compilations, so a
warm-up on one point with few regions runs first). Then every LP one search handed to the solver (captured from
an n_regions=30 run on the first point), solved by both: time per LP, the IPM's status, and its distance
relative to HiGHS's. Writes results/<out>.json and <out>.md (machine, load, date).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attacks import get_model  # noqa: E402
from bench_l2_nets import NETS  # noqa: E402,F401  (registers the nets' recipes)
from robustjax import lp, qp, report  # noqa: E402
from robustjax.attacks.region import region  # noqa: E402
from robustjax.data import load  # noqa: E402
from robustjax.solvers import solve_min_norm  # noqa: E402

HERE = Path(__file__).resolve().parent
NORMS = {"inf": np.inf, "1": 1}


def captured_lps(f, x, y, p):
    """Every LP (x, G, h, lo, hi) the IPM gets in one short search (n_regions=30, no restarts) on x[:1]."""
    caught, orig = [], lp.solve

    def spy(x_, G, h, lo, hi, p_, **kw):
        caught.append((x_, G, h, lo, hi))
        return orig(x_, G, h, lo, hi, p_, **kw)

    lp.solve = spy
    try:
        region(f, x[:1], y[:1], p=p, key=jax.random.key(1), n_regions=30, restarts=0)
    finally:
        lp.solve = orig
    return caught


def lp_table(problems, p):
    """Both solvers on every problem: times (ms), IPM statuses, IPM / HiGHS distance - 1 where both are optimal."""
    for prob in problems:                      # compile every padded shape first
        lp.solve(*prob, p)
    t_ipm, t_highs, status, rel = [], [], [], []
    for x, G, h, lo, hi in problems:
        t0 = time.perf_counter()
        z, _, st = lp.solve(x, G, h, lo, hi, p)
        t1 = time.perf_counter()
        ref = solve_min_norm(x, G, h, lo, hi, p, lp_solver="highs")
        t2 = time.perf_counter()
        t_ipm.append(1e3 * (t1 - t0))
        t_highs.append(1e3 * (t2 - t1))
        status.append(int(st))
        if st == qp.OPTIMAL and ref is not None:
            rel.append(float(np.linalg.norm(z - x, ord=p) / np.linalg.norm(ref - x, ord=p) - 1))
    return dict(rows=[int(pr[1].shape[0]) for pr in problems], ms_ipm=t_ipm, ms_highs=t_highs, status=status,
                rel_distance=rel)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--norms", default="inf,1")
    ap.add_argument("--net", default="mlp1024_plain5")
    ap.add_argument("--out", default="region_lp")
    args = ap.parse_args()
    data = (load("mnist", "train"), load("mnist", "test"))
    xte, yte = data[1]
    f, acc, _ = get_model(args.net, data, print)
    pred = np.asarray(jnp.argmax(f(xte[:1000]), -1))
    idx = np.flatnonzero(pred == yte[:1000])[:args.n]
    x, y = jnp.asarray(xte[idx]), jnp.asarray(yte[idx])
    rep = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=report.machine(), net=args.net,
               test_accuracy=acc, points=idx.tolist(), load_start=report.load1(),
               command="python benchmarks/bench_region_lp.py " + " ".join(sys.argv[1:]), norms={})
    for name in args.norms.split(","):
        p = NORMS[name]
        out = {}
        for solver in ("ipm", "highs"):
            region(f, x[:1], y[:1], p=p, key=jax.random.key(0), n_regions=5, restarts=0, lp_solver=solver)
            t0 = time.perf_counter()
            r = region(f, x, y, p=p, key=jax.random.key(0), lp_solver=solver)
            out[solver] = dict(distance=np.asarray(r.distance).tolist(),
                               s_per_point=(time.perf_counter() - t0) / len(x), load=report.load1())
            print(f"l{name} {solver}: {out[solver]['s_per_point']:.1f} s/pt, distances {out[solver]['distance']} "
                  f"(load {report.load1():.1f})", flush=True)
        out["lps"] = lp_table(captured_lps(f, x, y, p), p)
        t = out["lps"]
        print(f"l{name} LPs: {len(t['rows'])}, median {np.median(t['ms_ipm']):.1f} ms (IPM) vs "
              f"{np.median(t['ms_highs']):.1f} ms (HiGHS)", flush=True)
        rep["norms"][name] = out
    rep["load_end"] = report.load1()
    report.write_json(HERE / "results" / f"{args.out}.json", rep)
    (HERE / f"{args.out}.md").write_text(markdown(rep))


def markdown(rep) -> str:
    lines = [f"# The region attack's LPs: interior point (robustjax.lp) vs HiGHS ({rep['date']})", "",
             f"Machine: {rep['machine']}; 1-minute load {rep['load_start']:.1f} at the start, {rep['load_end']:.1f} "
             f"at the end. Net {rep['net']} (test accuracy {rep['test_accuracy']:.4f}), points {rep['points']}. "
             f"Command: `{rep['command']}`.", "",
             "| norm | attack s/point, IPM | attack s/point, HiGHS | HiGHS / IPM time | distances: max rel. diff. "
             "| LPs | ms per LP, IPM (median / mean) | ms per LP, HiGHS (median / mean) | IPM certified "
             "| IPM / HiGHS distance - 1 (max) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, o in rep["norms"].items():
        a, b = np.asarray(o["ipm"]["distance"]), np.asarray(o["highs"]["distance"])
        diff = np.max(np.abs(a / b - 1)) if np.all(np.isfinite(b)) else float("nan")
        t = o["lps"]
        lines.append(f"| l{name} | {o['ipm']['s_per_point']:.1f} | {o['highs']['s_per_point']:.1f} | "
                     f"{o['highs']['s_per_point'] / o['ipm']['s_per_point']:.2f} | {diff:.1e} | {len(t['rows'])} | "
                     f"{np.median(t['ms_ipm']):.1f} / {np.mean(t['ms_ipm']):.1f} | "
                     f"{np.median(t['ms_highs']):.1f} / {np.mean(t['ms_highs']):.1f} | "
                     f"{sum(s == qp.OPTIMAL for s in t['status'])} of {len(t['status'])} | "
                     f"{max(t['rel_distance'], default=float('nan')):.1e} |")
    lines += ["", "Attack times include the search's other work (row fetches, region checks, the cheap starts) and "
              "the compilations of LP shapes the warm-up did not meet. An LP the IPM does not certify goes to HiGHS."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
