"""Spatial attacks: time per example (warm, jitted) of the grid search and the first-order search, and
the robust accuracy they give, on MNIST (the MMR paper's small CNN, trained 2 epochs; a 784-64-10 ReLU
MLP for comparison).

    nice -n 10 python benchmarks/bench_spatial.py [--quick]

Writes benchmarks/results/spatial.json, benchmarks/results/spatial/ (the script's results.json and
figures) and benchmarks/spatial.md.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench_train = _load(HERE / "bench_train.py", "bench_train")
spatial_script = _load(ROOT / "scripts" / "spatial.py", "spatial_script")


def time_attack(attack, repeats: int) -> dict:
    """Median wall time per example of warm calls (the first call compiles and is reported apart)."""
    t0 = time.perf_counter()
    res = attack()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = attack()
        times.append(time.perf_counter() - t0)
    n = len(res.distance)
    return {"ms_per_example": 1e3 * float(np.median(times)) / n, "first_call_s": first,
            "model_calls_per_example": int(res.model_calls[0]), "fooled": float(np.mean(res.success)),
            "n": n}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    args = ap.parse_args()
    from robustjax.attacks import spatial

    config = spatial_script.load_config("spatial", "quick" if args.quick else "mnist")
    mlp_config = spatial_script.load_config("spatial", "quick")
    results = {"machine": bench_train.machine(), "date": datetime.date.today().isoformat(),
               "load_average_at_start": os.getloadavg()[0], "timing": {}}
    trained = {"mmr_cnn": spatial_script.train_model(config)}
    if not args.quick:
        trained["mlp 784-64-10"] = spatial_script.train_model({**mlp_config, "train_size": None, "epochs": 2})
    n, repeats = (40, 1) if args.quick else (100, 3)
    methods = {
        "grid 31 x 5 x 5 (Engstrom et al.)": lambda f, x, y: spatial.spatial_grid(
            f, x, y, num_angles=31, num_shifts=5, batch_size=n),
        "grid 31 x 7 x 7": lambda f, x, y: spatial.spatial_grid(f, x, y, num_angles=31, num_shifts=7, batch_size=n),
        "first-order 2 x 20 steps + 16": lambda f, x, y: spatial.spatial_first_order(
            f, x, y, key=jax.random.key(0), num_steps=20, restarts=2, line_search=16, batch_size=n),
        "first-order 5 x 40 steps + 16": lambda f, x, y: spatial.spatial_first_order(
            f, x, y, key=jax.random.key(0), num_steps=40, restarts=5, step_size=0.08, line_search=16,
            batch_size=n),
    }
    for model, (state, (xte, yte), acc, _) in trained.items():
        f = state.logits_fn()
        x, y = xte[:n], yte[:n]
        results["timing"][model] = {"clean_accuracy": acc}
        for name, make in methods.items():
            r = time_attack(lambda: make(f, x, y), repeats)
            results["timing"][model][name] = r
            print(model, name, r, flush=True)
    out = Path(tempfile.mkdtemp()) if args.quick else HERE / "results" / "spatial"
    t0 = time.perf_counter()
    results["script"] = spatial_script.run(config, out, trained=trained["mmr_cnn"])
    results["script_seconds"] = time.perf_counter() - t0
    from robustjax import report
    if args.quick:
        print("quick run written to", out)
        return
    report.write_json(HERE / "results" / "spatial.json", results)
    lines = ["# Spatial attacks (rotation + translation)", "",
             f"Machine: {results['machine']}. Date: {results['date']}. 1-minute load average at start: "
             f"{results['load_average_at_start']:.1f} (2 cores shared with other jobs during measurement: "
             "absolute times are inflated; compare the rows as ratios).", "",
             f"## Time per example (batch {n}, jitted, warm, median of {repeats} calls)", "",
             "Range: rotations in [-30, 30] degrees, translations up to 3 pixels, zero padding, bilinear.", "",
             "| model | attack | model calls / example | ms / example | fooled (of the first 100 test points) | first call s |",
             "|---|---|---|---|---|---|"]
    for model, rows in results["timing"].items():
        for name, r in rows.items():
            if name == "clean_accuracy":
                continue
            lines.append(f"| {model} (test acc {rows['clean_accuracy']:.3f}) | {name} | {r['model_calls_per_example']} | "
                         f"{r['ms_per_example']:.2f} | {r['fooled']:.2f} | {r['first_call_s']:.1f} |")
    s = results["script"]
    c = s["config"]
    lines += ["", f"## Robust accuracy against the range ({s['n_attacked']} test points, scripts/spatial.py --config mnist)", "",
              f"Model: {c['model']} trained {c['epochs']} epochs on all 60k MNIST images, Adam lr {c['learning_rate']}; "
              f"test accuracy {s['clean_accuracy_full_test']:.4f}. Grid {c['num_angles']} angles x {c['num_shifts']} x "
              f"{c['num_shifts']} shifts; first-order {c['fo_restarts']} x {c['fo_steps']} sign steps of "
              f"{c['fo_step_size']} + line search {c['fo_line_search']}. Columns: robust accuracy when the "
              "attack may use the given fraction of the range (0 = clean accuracy).", "",
              "| threat | search | " + " | ".join(f"{float(k):.2f} x range" for k in
                                                    next(iter(s['threats'].values()))['grid']['robust_accuracy']) +
              " | median magnitude of fooled | time / example ms (incl. compile) |",
              "|---|---|" + "---|" * (len(c["scales"]) + 2)]
    for threat, by in s["threats"].items():
        for method in ("grid", "first_order"):
            r = by[method]
            med = r["median_distance_of_fooled"]
            lines.append(f"| {threat} | {method} | " + " | ".join(f"{v:.3f}" for v in r["robust_accuracy"].values())
                         + f" | {med if med is None else round(med, 3)} | {r['time_per_example_ms']:.1f} |")
    lines += ["", "Figures: [original vs transformed](results/spatial/spatial_examples.png), "
              "[robust accuracy vs range](results/spatial/spatial_robust_accuracy.png).", "",
              "![examples](results/spatial/spatial_examples.png)", "",
              "![curves](results/spatial/spatial_robust_accuracy.png)", ""]
    (HERE / "spatial.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
