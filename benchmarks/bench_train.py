"""Train-step throughput (examples/s, batch 128, warm, jitted) of the one-hidden-layer net and the
small CNNs, and the one-hidden-layer net trained the paper's way on MNIST to >= 98 % test accuracy.

    python benchmarks/bench_train.py [--epochs 60] [--skip-accuracy]

Writes benchmarks/results/train.json and benchmarks/train.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

import jax

from robustjax import data, train
from robustjax.report import machine

HERE = Path(__file__).resolve().parent


def throughput(config: train.TrainConfig, x, y, *, batch=128, repeats=50) -> dict:
    from bench_parallel import step_time  # benchmarks/ is on sys.path when run as a script
    med = step_time(config, x, y, batch, None, repeats=repeats)
    params = jax.eval_shape(lambda: train.build_model(config, 10).init(jax.random.key(0), x[:1]))["params"]
    return {"median_step_ms": 1e3 * med, "examples_per_s": batch / med,
            "params": int(sum(p.size for p in jax.tree.leaves(params)))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--skip-accuracy", action="store_true")
    args = ap.parse_args()
    (xtr, ytr), (xte, yte) = data.load_split_pair("mnist")
    nets = {
        "one_hidden_layer (784-1024-10 softplus)": train.TrainConfig(),
        "mmr_cnn (conv16-conv32-fc100, relu)": train.TrainConfig(model="mmr_cnn"),
        "lenet (conv32-conv64-fc1024, relu)": train.TrainConfig(model="lenet"),
    }
    results = {"machine": machine(), "date": datetime.date.today().isoformat(), "batch": 128,
               "load_average_at_start": os.getloadavg()[0], "throughput": {}}
    for name, cfg in nets.items():
        results["throughput"][name] = throughput(cfg, xtr, ytr)
        print(name, results["throughput"][name], flush=True)
    if not args.skip_accuracy:
        cfg = train.TrainConfig(epochs=args.epochs, progress=False)
        log = []
        t0 = time.time()
        train.fit(cfg, (xtr, ytr), (xte, yte), log=log.append)
        wall = time.time() - t0
        first98 = next((r["epoch"] for r in log if r["test_accuracy"] >= 0.98), None)
        results["paper_training"] = {
            "config": cfg.to_json(), "epochs": args.epochs, "wall_time_s": wall,
            "final_test_accuracy": log[-1]["test_accuracy"], "first_epoch_at_98": first98,
            "curve": [(r["epoch"], r["test_accuracy"]) for r in log]}
        print(results["paper_training"]["final_test_accuracy"], wall, flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "train.json").write_text(json.dumps(results, indent=1))
    lines = ["# Training benchmarks", "", f"Machine: {results['machine']}. Date: {results['date']}. "
             f"1-minute load average at start: {results['load_average_at_start']:.1f} (above the core count "
             "means other jobs shared the CPU and the times are inflated).", "",
             "## Train-step throughput (batch 128, jitted, warm, median of 50 steps)", "",
             "| model | params | ms / step | examples / s |", "|---|---|---|---|"]
    for name, r in results["throughput"].items():
        lines.append(f"| {name} | {r['params']:,} | {r['median_step_ms']:.2f} | {r['examples_per_s']:,.0f} |")
    if "paper_training" in results:
        pt = results["paper_training"]
        lines += ["", "## One-hidden-layer net trained the paper's way (methods.md 1(d))", "",
                  "784-1024-10, no bias, softplus alpha=10, plain SGD lr 0.2, batch 128, lr x0.1 at 72 % and "
                  "x0.01 at 88 % of the updates, cross-entropy, no regularization, full 60k training set.", "",
                  f"- epochs: {pt['epochs']}; wall time: {pt['wall_time_s']:.0f} s (including per-epoch test evaluation)",
                  f"- final test accuracy: {pt['final_test_accuracy']:.4f}",
                  f"- first epoch with test accuracy >= 98 %: {pt['first_epoch_at_98']}", "",
                  "| epoch | test accuracy |", "|---|---|"]
        for e, a in pt["curve"]:
            if e % 5 == 0 or e == 1 or e == pt["epochs"]:
                lines.append(f"| {e} | {a:.4f} |")
    (HERE / "train.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
