"""The region attack over a process pool (one CPU worker per core) beside DeepFool, Carlini-Wagner and DDN
(on the default JAX device) on the same MNIST test points of the cached mlp1024_plain net.

    python benchmarks/bench_region_pool.py 192 --tag h100    # writes results/region_pool_h100.json, region_pool.md
    python benchmarks/bench_region_pool.py --render h100      # the markdown from the saved JSON

Run on a lent H100 machine (16 cores) through the device tool (osqp carried as a wheel, see device_run.sh).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_attacks as BA  # noqa: E402
from robustjax.attacks import cw, ddn, deepfool, region  # noqa: E402
from robustjax.data import load  # noqa: E402

HERE = Path(__file__).resolve().parent
OTHERS = (("deepfool", "DeepFool"), ("cw_lr0.1_1000x9", "CW 1000x9, lr 0.1"), ("ddn_1000", "DDN 1000 steps"))


def run(n, path):
    data = (load("mnist", "train"), load("mnist", "test"))
    f, acc, _ = BA.get_model("mlp1024_plain", data, print)
    x, y = data[1][0][:n], data[1][1][:n]
    res = {"model": "mlp1024_plain", "test_accuracy": acc, "n": n, "jax": jax.__version__,
           "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
           "date": time.strftime("%Y-%m-%d", time.gmtime())}
    for name, fn in [("deepfool", lambda: deepfool(f, x, y, p=2, steps=50, overshoot=0.02)),
                     ("cw_lr0.1_1000x9", lambda: cw(f, x, y, p=2, key=jax.random.key(0), steps=1000,
                                                    binary_search_steps=9, learning_rate=0.1, initial_const=0.1)),
                     ("ddn_1000", lambda: ddn(f, x, y, p=2, key=jax.random.key(0), steps=1000))]:
        fn()                                  # compile for this batch
        t0 = time.time()
        r = fn()
        res[name] = {"distance": np.round(r.distance, 6).tolist(), "success": float(np.mean(r.success)),
                     "s_per_example": (time.time() - t0) / n}
        print(name, np.median(r.distance), res[name]["s_per_example"], flush=True)
        path.write_text(json.dumps(res))
    t0 = time.time()
    r = region(f, x, y, p=2, key=jax.random.key(0), n_regions=100, x_train=data[0][0], y_train=data[0][1],
               processes=os.cpu_count())
    res["region_100"] = {"distance": np.round(r.distance, 6).tolist(), "success": float(np.mean(r.success)),
                         "wall_s_per_example": (time.time() - t0) / n, "processes": os.cpu_count()}
    print("region", np.median(r.distance), res["region_100"]["wall_s_per_example"], flush=True)
    path.write_text(json.dumps(res))


def render(d) -> str:
    r = np.array(d["region_100"]["distance"])
    lines = [f"# Region attack over {d['region_100']['processes']} processes vs DeepFool, CW, DDN on {d['n']} MNIST points", "",
             f"{d.get('date', '2026-11-26')}, {d['device']} with {d.get('cpu_count', d['region_100']['processes'])} "
             f"cores (a lent H100 machine), jax {d['jax']}; net mlp1024_plain (784-1024-10 ReLU, test accuracy "
             f"{d['test_accuracy']:.4f}, the cached model of bench_attacks.py); the first {d['n']} test points "
             "(misclassified ones have distance 0 for every attack and are left out of the ratios). DeepFool (50 steps, "
             "overshoot 0.02), Carlini-Wagner (1000 Adam steps x 9 values of c, lr 0.1, c0 0.1) and DDN (1000 steps) on "
             "the GPU; the region attack (100 regions, starts DeepFool + nearest training point) over CPU worker "
             f"processes. Command: `python benchmarks/bench_region_pool.py {d['n']}`.", "",
             "| attack | median l2 | success | seconds per example |", "|---|---|---|---|"]
    for key, label in OTHERS:
        o = np.array(d[key]["distance"])
        lines.append(f"| {label} | {np.median(o[o > 0]):.4f} | {d[key]['success']:.3f} | "
                     f"{d[key]['s_per_example']:.2g} (GPU, batched) |")
    lines += [f"| region (100 regions) | {np.median(r[r > 0]):.4f} | {d['region_100']['success']:.3f} | "
              f"{d['region_100']['wall_s_per_example']:.2f} (wall, {d['region_100']['processes']} processes) |", "",
              "Paired ratios region / other on the points both break:", "",
              "| other | points | median | 10 % | region smaller by > 0.1 % |", "|---|---|---|---|---|"]
    meds = {}
    for key, label in OTHERS:
        o = np.array(d[key]["distance"])
        m = (r > 0) & np.isfinite(r) & np.isfinite(o) & (o > 0)
        q = r[m] / o[m]
        lines.append(f"| {label} | {m.sum()} | {np.median(q):.4f} | {np.percentile(q, 10):.4f} | {np.mean(q < 0.999):.2f} |")
        meds[label] = float(np.median(q))
    lines += ["", "The talk's claim was a region median l2 5-10 % below CW's and DeepFool's; here the paired median is "
              + ", ".join(f"{100 * (1 - v):.1f} % below {k}" for k, v in meds.items()) + "."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=192)
    ap.add_argument("--tag", default="h100")
    ap.add_argument("--render", default="", help="only rewrite region_pool.md from results/region_pool_<tag>.json")
    args = ap.parse_args()
    path = HERE / "results" / f"region_pool_{args.render or args.tag}.json"
    if not args.render:
        run(args.n, path)
    (HERE / "region_pool.md").write_text(render(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
