"""How many targeted restarts the l2 region attack needs: the same points and key with restarts = 0, 1, 3 and
K - 1 (the default for K <= 10), the distance each ends at and its time, on the nets of bench_l2_nets.py.

    nice -n 5 python benchmarks/bench_region_restarts.py --n 20 --out region_restarts   (about 15 min on 2 cores)

A restart count is worth its time where it lowers distances: the table gives, per count, the median distance,
the paired ratio to the default's distance (median, max) and how many points end above the default by > 0.1 %.
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
from bench_l2_nets import NETS  # noqa: E402,F401  (registers the nets' recipes)
from bench_attacks import get_model  # noqa: E402
from robustjax import report  # noqa: E402
from robustjax.attacks.region import region  # noqa: E402
from robustjax.data import load  # noqa: E402

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", default="mlp1024_plain5,mlp1024_l2at")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--restarts", default="0,1,3,9")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    counts = [int(c) for c in args.restarts.split(",")]
    data = (load("mnist", "train"), load("mnist", "test"))
    (_, _), (xte, yte) = data
    rep = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=report.machine(),
               load_start=report.load1(), command="python benchmarks/bench_region_restarts.py " + " ".join(sys.argv[1:]),
               nets={})
    for name in args.nets.split(","):
        f, acc, _ = get_model(name, data, print)
        pred = np.asarray(jnp.argmax(f(xte[:1000]), -1))
        idx = np.flatnonzero(pred == yte[:1000])[:args.n]
        x, y = jnp.asarray(xte[idx]), jnp.asarray(yte[idx])
        region(f, x[:1], y[:1], p=2, key=jax.random.key(0), n_regions=10, restarts=0)
        out = {}
        for r in counts:
            t0 = time.perf_counter()
            res = region(f, x, y, p=2, key=jax.random.key(0), restarts=r)
            out[r] = dict(distance=np.asarray(res.distance).tolist(), s_per_point=(time.perf_counter() - t0) / len(x),
                          load=report.load1())
            print(f"{name} restarts {r}: median {np.median(res.distance):.4f} {out[r]['s_per_point']:.2f} s/pt", flush=True)
        rep["nets"][name] = out
    rep["load_end"] = report.load1()
    lines = [f"# l2 region attack: targeted restarts against time ({rep['date']})", "",
             f"Machine: {rep['machine']}; 1-minute load {rep['load_start']:.1f} at the start, {rep['load_end']:.1f} at the "
             f"end. Command: `{rep['command']}`. Same points (the first n correctly classified MNIST test points) and "
             f"key for every count; default n_regions = 100, restart_regions = 20 on average.", "",
             "| net | restarts | median | ratio to restarts = max: median | max | points > +0.1 % | s / point |",
             "|---|---|---|---|---|---|---|"]
    for name, out in rep["nets"].items():
        ref = np.asarray(out[max(counts)]["distance"])
        for r, o in out.items():
            d = np.asarray(o["distance"])
            q = d / ref
            lines.append(f"| {name} | {r} | {np.median(d):.4f} | {np.median(q):.4f} | {np.max(q):.4f} | "
                         f"{int(np.sum(q > 1.001))} | {o['s_per_point']:.2f} |")
    md = "\n".join(lines) + "\n"
    print(md)
    if args.out:
        report.write_json(HERE / "results" / f"{args.out}.json", rep)
        (HERE / f"{args.out}.md").write_text(md)


if __name__ == "__main__":
    main()
