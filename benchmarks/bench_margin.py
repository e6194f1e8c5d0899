"""The margin's gradient with geometry.take_min (argmin + gather) against jnp.min (the reduction's own gradient),
the attacks' hot path: jit(grad(sum(margin(f(x), y)))) on a 784-1024-10 ReLU MLP, XLA's default settings.

    python benchmarks/bench_margin.py        # writes benchmarks/results/margin.json and benchmarks/margin.md

Both run in one process, alternating, so the ratio holds for this machine and load; the gradients are compared too.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import geometry

ROOT = Path(__file__).resolve().parents[1]


def _load() -> str:
    return open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"


def main(batch: int = 100, reps: int = 200) -> dict:
    rng = np.random.default_rng(0)
    W1 = jnp.asarray(rng.normal(size=(784, 1024)) / 28.0, jnp.float32)
    W2 = jnp.asarray(rng.normal(size=(1024, 10)) / 32.0, jnp.float32)
    x = jnp.asarray(rng.uniform(size=(batch, 784)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, batch), jnp.int32)
    f = lambda z: jax.nn.relu(z @ W1) @ W2                                           # noqa: E731
    grads = {"take_min": jax.jit(jax.grad(lambda z: jnp.sum(geometry.margin(f(z), y)))),
             "jnp.min": jax.jit(jax.grad(lambda z: jnp.sum(jnp.min(geometry.class_margins(f(z), y), -1))))}
    out = {k: g(x).block_until_ready() for k, g in grads.items()}
    times = {k: [] for k in grads}
    load0 = _load()
    for _ in range(reps):
        for k, g in grads.items():
            t = time.perf_counter()
            g(x).block_until_ready()
            times[k].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    res = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=platform.machine(),
               cores=os.cpu_count(), load_start=load0, load_end=_load(), batch=batch, reps=reps,
               median_ms={k: 1e3 * v for k, v in med.items()}, ratio_take_min_over_min=med["take_min"] / med["jnp.min"],
               max_abs_gradient_difference=float(jnp.max(jnp.abs(out["take_min"] - out["jnp.min"]))))
    (ROOT / "benchmarks" / "results" / "margin.json").write_text(json.dumps(res, indent=1))
    (ROOT / "benchmarks" / "margin.md").write_text(
        "# The margin's gradient: take_min against jnp.min\n\n"
        f"{res['date']}, {res['machine']}, {res['cores']} cores, 1-minute load {load0} -> {res['load_end']}; "
        f"784-1024-10 ReLU MLP, batch {batch}, jit(grad), median of {reps} alternating calls "
        "(`benchmarks/bench_margin.py`).\n\n| margin | ms per gradient |\n|---|---|\n"
        + "".join(f"| {k} | {v:.3f} |\n" for k, v in res["median_ms"].items())
        + f"\nRatio take_min / jnp.min: {res['ratio_take_min_over_min']:.3f}. Largest difference between the two "
        f"gradients: {res['max_abs_gradient_difference']:.2e} (no ties here, so the same subgradient).\n")
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
