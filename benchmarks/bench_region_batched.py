"""The region attack's two round shapes side by side in one process: sequential (one convex problem at a time,
pruned by the best distance so far; the CPU default) and batched (`region(..., batched=True)`: every promising
(region, target) problem of a round in lockstep, one vmapped QP (l2) or interior-point LP (l1, l_inf) call per
active-set round; meant for accelerators).

    python benchmarks/bench_region_batched.py --n 8 --regions 100           # l2; CPU here, or on a GPU machine
    python benchmarks/bench_region_batched.py --p inf --n 4 --regions 100   # l_inf (and --p 1)

Nets: the two nets of issue 16 (`bench_l2_nets.NETS`, trained and cached by robustjax). Points: the first n test
points each net classifies correctly. Each mode runs twice on the same points: the first run pays its
compilations, the second is warm; both are timed. Per mode: median distance, distances against the other mode
per point, solver calls, wall seconds per point. Writes results/region_batched_<backend><suffix>.json and
region_batched_<backend><suffix>.md (machine, backend, load, date; suffix "" for l2, "_l1" or "_linf").
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
from bench_train import machine  # noqa: E402
from robustjax import report  # noqa: E402
from robustjax.attacks.region import region  # noqa: E402
from robustjax.data import load  # noqa: E402

HERE = Path(__file__).resolve().parent


def run(args):
    data = (load("mnist", "train"), load("mnist", "test"))
    backend = jax.default_backend()
    p = {"2": 2, "1": 1, "inf": np.inf}[args.p]
    suffix = {"2": "", "1": "_l1", "inf": "_linf"}[args.p]
    rep = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=machine(), backend=backend,
               devices=[str(d) for d in jax.devices()], load_start=report.load1(), n=args.n, regions=args.regions,
               norm=args.p,
               command="python benchmarks/bench_region_batched.py " + " ".join(sys.argv[1:]), nets={})
    for name in args.nets.split(","):
        f, acc, _ = get_model(name, data, print)
        xte, yte = data[1]
        pred = np.asarray(jnp.argmax(f(xte[:1000]), -1))
        idx = np.flatnonzero(pred == yte[:1000])[:args.n]
        x, y = jnp.asarray(xte[idx]), jnp.asarray(yte[idx])
        out = {}
        for batched in (False, True):
            runs = []
            for rep_i in range(2):
                t = time.perf_counter()
                r = region(f, x, y, p=p, key=jax.random.key(0), n_regions=args.regions, batched=batched)
                runs.append(time.perf_counter() - t)
            mode = "batched" if batched else "sequential"
            out[mode] = dict(distance=[float(v) for v in r.distance], n_qp=[int(v) for v in r.info["n_qp"]],
                             s_per_point_cold=runs[0] / len(idx), s_per_point_warm=runs[1] / len(idx),
                             load=report.load1())
            print(f"{name} {mode}: median {np.median(r.distance):.4f}, {runs[0] / len(idx):.2f} s/pt cold, "
                  f"{runs[1] / len(idx):.2f} s/pt warm, solves {int(np.sum(r.info['n_qp']))} "
                  f"(load {report.load1():.1f})", flush=True)
        rep["nets"][name] = dict(test_accuracy=acc, points=[int(i) for i in idx], **out)
    rep["load_end"] = report.load1()
    report.write_json(HERE / "results" / f"region_batched_{backend}{suffix}.json", rep)
    (HERE / f"region_batched_{backend}{suffix}.md").write_text(markdown(rep))


def markdown(rep) -> str:
    lines = [f"# The l{rep.get('norm', '2')} region attack: sequential vs batched rounds ({rep['backend']})", "",
             f"{rep['date']}; machine: {rep['machine']}; devices: {', '.join(rep['devices'])}; 1-minute load "
             f"{rep['load_start']:.1f} at the start, {rep['load_end']:.1f} at the end. {rep['n']} points per net, "
             f"{rep['regions']} regions, the region attack's other defaults. Command: `{rep['command']}`.", "",
             "| net | mode | median distance | batched / sequential distance per point (max) | solver calls | "
             "s/point cold | s/point warm | warm time / sequential's |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rep["nets"].items():
        seq, bat = r["sequential"], r["batched"]
        ratio = np.asarray(bat["distance"]) / np.asarray(seq["distance"])
        for mode, m in (("sequential", seq), ("batched", bat)):
            lines.append(f"| {name} | {mode} | {np.median(m['distance']):.4f} | "
                         f"{'' if mode == 'sequential' else f'{np.max(ratio):.4f}'} | {sum(m['n_qp'])} | "
                         f"{m['s_per_point_cold']:.2f} | {m['s_per_point_warm']:.2f} | "
                         f"{m['s_per_point_warm'] / seq['s_per_point_warm']:.2f} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--regions", type=int, default=100)
    ap.add_argument("--p", choices=("2", "1", "inf"), default="2")
    ap.add_argument("--nets", default="mlp1024_plain5,mlp1024_l2at")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
