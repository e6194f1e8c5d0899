"""Throughput against batch size, one device against several, and attack time per example, on
whatever devices JAX sees; plus the cost on paper of the full-scale experiments at the measured speed.

    python benchmarks/bench_parallel.py                       # this machine's devices
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python benchmarks/bench_parallel.py --tag cpu4

On a CPU the forced devices share the same cores: that run checks that data parallelism works and
what it costs, not a speed-up. Writes benchmarks/results/parallel_<tag>.json and benchmarks/parallel.md
(the table of every tag measured so far).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

import jax
import numpy as np

from robustjax import attacks, data, losses, parallel, train

HERE = Path(__file__).resolve().parent


def step_time(config, x, y, batch, mesh, repeats=20):
    model = train.build_model(config, 10)
    state = train.create_train_state(jax.random.key(0), config, model, x.shape[1:], 1000)
    raw = train.make_train_step(losses.get(config.loss), jit=False)
    if mesh is None:
        step = jax.jit(raw)
        put = lambda a, b: (a, b)  # noqa: E731
    else:
        rep = parallel.replicated(mesh)
        state = jax.device_put(state, rep)
        step = jax.jit(raw)
        put = lambda a, b: parallel.shard_batch(mesh, a, b)  # noqa: E731
    xb, yb = put(x[:batch], y[:batch])
    for _ in range(3):
        state, _ = step(state, xb, yb)
    jax.block_until_ready(state.params)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, _ = step(state, xb, yb)
        jax.block_until_ready(state.params)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


CIFAR_SKIP = {   # the full-scale skip table's networks (scripts/configs/landscape.py "full"), 32x32x3 inputs
    "vgg11_skip": dict(width_mult=1.0, classifier=(512, 512), skip_units=65536),
    "vgg16_skip": dict(width_mult=1.0, classifier=(512, 512), skip_units=65536),
    "densenet121_skip": dict(growth=32, stem="cifar", norm="group", blocks=(6, 12, 24, 16), skip_units=65536),
}


def cifar_skip_step_times(batch=128, repeats=10):
    """Train-step time of each full-scale CIFAR-10 skip network on random 32x32x3 data (speed only)."""
    x = np.random.default_rng(0).uniform(size=(batch, 32, 32, 3)).astype(np.float32)
    y = np.arange(batch) % 10
    out = {}
    for name, mc in CIFAR_SKIP.items():
        cfg = train.TrainConfig(model=name, model_config=mc, optimizer="sgd", momentum=0.9, learning_rate=0.01)
        t0 = time.perf_counter()
        out[name] = {"ms_per_step": 1e3 * step_time(cfg, x, y, batch, None, repeats=repeats), "batch": batch,
                     "compile_and_warmup_s": None}
        out[name]["compile_and_warmup_s"] = time.perf_counter() - t0 - out[name]["ms_per_step"] * repeats / 1e3
        print(name, out[name], flush=True)
    return out


def region_times(f, x, y, processes, n_regions=50):
    """Region attack (l2) in this process and over a process pool of CPU workers: (ms per example, success
    rate, pool comparison or None), the first two keyed by row name."""
    attacks.region(f, x[:1], y[:1], p=2, key=jax.random.key(0), n_regions=2)       # compile
    k = min(len(x), 8)
    t0 = time.perf_counter()
    r1 = attacks.region(f, x[:k], y[:k], p=2, key=jax.random.key(0), n_regions=n_regions)
    ms = {"region_l2_50_regions": 1e3 * (time.perf_counter() - t0) / k}
    success = {"region_l2_50_regions": float(np.mean(r1.success))}
    pool = None
    if processes > 1:
        name = f"region_l2_50_regions_{processes}_processes"
        t0 = time.perf_counter()
        rp = attacks.region(f, x, y, p=2, key=jax.random.key(0), n_regions=n_regions, processes=processes)
        ms[name] = 1e3 * (time.perf_counter() - t0) / len(x)
        success[name] = float(np.mean(rp.success))
        pool = {"points": len(x), "processes": processes, "pool_success": success[name],
                "distance_ratio_pool_over_one_process_median": float(np.median(rp.distance[:k] / r1.distance[:k]))}
    return ms, success, pool


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tag", default=None)
    ap.add_argument("--batches", default=None, help="default 32,128,512,2048 (CPU), up to 8192 on a GPU")
    ap.add_argument("--region-points", type=int, default=None, help="region attack points for the process pool")
    ap.add_argument("--processes", type=int, default=None, help="region pool workers (default: the CPU count)")
    ap.add_argument("--cifar", action="store_true", help="also the full CIFAR-10 skip nets' step time "
                                                         "(default on a GPU)")
    ap.add_argument("--no-cifar", action="store_true", help="not even on a GPU")
    args = ap.parse_args()
    devs = jax.devices()
    tag = args.tag or f"{devs[0].platform}{len(devs)}"
    gpu = devs[0].platform != "cpu"
    args.batches = args.batches or ("32,128,512,2048,8192" if gpu else "32,128,512,2048")
    processes = args.processes or os.cpu_count() or 1
    region_points = args.region_points or (8 * processes if processes > 1 else 5)
    (xtr, ytr), (xte, yte) = data.load_split_pair("mnist")
    nets = {"one_hidden_layer": train.TrainConfig(), "mmr_cnn": train.TrainConfig(model="mmr_cnn")}
    rows = []
    meshes = {"1 device": None}
    if len(devs) > 1:
        meshes[f"{len(devs)} devices (data parallel)"] = parallel.data_mesh()
    for name, cfg in nets.items():
        for b in map(int, args.batches.split(",")):
            for mname, mesh in meshes.items():
                t = step_time(cfg, xtr, ytr, b, mesh)
                rows.append({"model": name, "batch": b, "devices": mname, "ms_per_step": 1e3 * t,
                             "examples_per_s": b / t})
                print(rows[-1], flush=True)
    # attack time per example (batched, warm) on the 784-1024-10 ReLU net
    cfg = train.TrainConfig(model="mlp", model_config={"widths": (1024,), "act": "relu"}, optimizer="adam",
                            learning_rate=1e-3, schedule="constant", epochs=1, train_size=10000, progress=False)
    state = train.fit(cfg, (xtr, ytr))
    f = state.logits_fn()
    x, y = xte[:200], yte[:200]
    atk, success = {}, {}
    for name, fn in {"deepfool_l2": lambda xx, yy: attacks.deepfool(f, xx, yy, p=2),
                     "pgd_linf_100steps": lambda xx, yy: attacks.pgd(f, xx, yy, p=np.inf, eps=0.1, steps=100,
                                                                     key=jax.random.key(0)),
                     "cw_l2_1000x9": lambda xx, yy: attacks.cw(f, xx, yy, p=2, steps=1000)}.items():
        jax.block_until_ready(fn(x, y).distance)       # compile for this batch shape, outside the timing
        t0 = time.perf_counter()
        r = fn(x, y)
        atk[name] = 1e3 * (time.perf_counter() - t0) / len(x)
        success[name] = float(np.mean(r.success))
        print(name, atk[name], "ms/example", flush=True)
    ms, ok, pool = region_times(f, xte[:region_points], yte[:region_points], processes)
    atk.update(ms)
    success.update(ok)
    print(atk, pool, flush=True)
    out = {"tag": tag, "devices": [str(d) for d in devs], "date": datetime.date.today().isoformat(),
           "cpu_count": os.cpu_count(), "load_average": os.getloadavg()[0], "jax": jax.__version__, "train": rows,
           "attack_ms_per_example": atk, "attack_success": success, "region_pool": pool}
    if (args.cifar or gpu) and not args.no_cifar:
        out["cifar_skip_ms_per_step"] = cifar_skip_step_times()
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"parallel_{tag}.json").write_text(json.dumps(out, indent=1))
    render()


def _paper_lines(one, gpu):
    """The cost of the full-scale experiments at the measured speeds."""
    lines = ["## On paper: the full-scale experiments at these speeds", ""]
    steps = 100 * -(-50_000 // 128)                    # 100 epochs of CIFAR-10 at batch 128
    if gpu is not None and gpu.get("cifar_skip_ms_per_step"):
        cs = gpu["cifar_skip_ms_per_step"]
        per_net = {k: 4 * steps * v["ms_per_step"] / 1e3 for k, v in cs.items()}   # (sigmoid, softplus) x (plain, skip-SGD)
        total_h = sum(per_net.values()) / 3600
        lines.append(
            f"- CIFAR-10 skip table at the talk's scale (scripts/configs/landscape.py \"full\": M = 65,536 skip units, "
            f"100 epochs, batch 128, sigmoid and softplus, plain and skip-SGD = 4 trainings per net of {steps:,} steps), "
            "at the train-step times measured on the GPU ("
            + ", ".join(f"{k} {v['ms_per_step']:.1f} ms" for k, v in cs.items())
            + f"): {total_h:.1f} GPU-hours of steps ("
            + ", ".join(f"{k} {v / 3600:.2f} h" for k, v in per_net.items())
            + "), plus compilation (measured up to "
            + f"{max(v['compile_and_warmup_s'] for v in cs.values()):.0f} s per net), evaluation and 6 least-squares "
            "fits for the rand rows (a 50,000 x 65,536 feature matrix each: ~1.6e14 multiply-adds, minutes on the GPU). "
            f"The configuration's budget of 6-10 GPU-hours is {6 / total_h:.0f}-{10 / total_h:.0f}x these steps, room for "
            "evaluation and slower input pipelines; DenseNet121 dominates. Train steps vary by ~1.5-2x between two "
            "fresh machines of the same kind (tables above).")
    if one is not None:
        ohl = [row for row in one["train"] if row["model"] == "one_hidden_layer"]
        cpu_flops = max(row["examples_per_s"] for row in ohl) * 3 * 2 * 784 * 1024
        total = 12 * 100 * 50_000 * 3 * 0.63e9
        lines.append(f"- The same on this CPU (dense rate {cpu_flops / 1e9:,.0f} GFLOP/s from the one-hidden-layer step, "
                     f"~1.1e17 FLOP for the trainings): at least {total / cpu_flops / 86400:,.0f} days.")
        region_s = one["attack_ms_per_example"]["region_l2_50_regions"] / 1e3
        cpu_h = 10_000 * region_s * 8 * 4 / 3600
        text = (f"- Region attack on the whole CIFAR-10 test set (10,000 points, 400 regions each, d = 3072): "
                f"{region_s:.1f} s per MNIST point with 50 regions on this CPU; with 8x the regions and ~4x the solver "
                f"cost per region that is about {cpu_h:,.0f} CPU-hours")
        pool = (gpu or {}).get("region_pool")
        if pool:
            key = f"region_l2_50_regions_{pool['processes']}_processes"
            per_pt = gpu["attack_ms_per_example"][key] / 1e3
            text += (f". Measured on the GPU machine's {pool['processes']} cores with the process pool: "
                     f"{per_pt:.2f} s per MNIST point ({pool['points']} points, worker start-up included; the distances "
                     f"equal the one-process run's, median ratio {pool['distance_ratio_pool_over_one_process_median']:.4f}), "
                     f"so ~{10_000 * per_pt * 32 / 3600:,.0f} hours for CIFAR-10 on one such machine. The JAX part on "
                     f"the GPU does not help: one process with the model on the GPU took "
                     f"{gpu['attack_ms_per_example']['region_l2_50_regions'] / 1e3:.1f} s per point (many tiny launches "
                     "per region, full-precision float32 matmuls)")
        lines.append(text + ".")
    return lines + [""]


def render():
    from robustjax import report
    runs = [json.loads(p.read_text()) for p in sorted((HERE / "results").glob("parallel_*.json"))]
    lines = ["# Devices and throughput", "",
             "Written by `benchmarks/bench_parallel.py` (the GPU rows by `benchmarks/device_run.sh` on a lent H100 "
             "machine, through the device tool, with that machine's own jax). Forced CPU devices "
             "(`XLA_FLAGS=--xla_force_host_platform_device_count=4`) share the same 2 cores: they show that "
             "data parallelism runs and what its overhead is, not a speed-up.", ""]
    for r in runs:
        lines += [f"## {r['tag']}: {len(r['devices'])} device(s), {r['devices'][0]}, {r['cpu_count']} cores, "
                  f"{r['date']}, load average {r['load_average']:.1f}" + (f", jax {r['jax']}" if "jax" in r else ""),
                  "", report.markdown_table(r["train"], digits=4), "",
                  "Attack time per example on the MNIST 784-1024-10 ReLU net (200 points batched, compiled for that "
                  "batch first; region: 5-8 points in this process, and a process pool where measured):", "",
                  report.markdown_table([{"attack": k, "ms_per_example": v,
                                          "success": r.get("attack_success", {}).get(k, "-")}
                                         for k, v in r["attack_ms_per_example"].items()]), ""]
        if r.get("region_pool"):
            lines += [f"Region pool: {r['region_pool']}", ""]
        if r.get("cifar_skip_ms_per_step"):
            lines += ["Full-scale CIFAR-10 skip networks, train step at batch 128 (random 32x32x3 data):", "",
                      report.markdown_table([{"net": k, **v} for k, v in r["cifar_skip_ms_per_step"].items()]), ""]
        if r.get("first_machine"):
            fm = r["first_machine"]
            lines += [f"First GPU machine (same kind, same day; load average above from the 16 region workers): "
                      f"{fm['note']}. Its train steps:", "",
                      report.markdown_table(fm["train"], digits=4), ""]
    one = next((r for r in runs if r["tag"].startswith("cpu") and len(r["devices"]) == 1), None)
    gpu = next((r for r in runs if r["tag"].startswith("gpu")), None)
    lines += _paper_lines(one, gpu)
    (HERE / "parallel.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
