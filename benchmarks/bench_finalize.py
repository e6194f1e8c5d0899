"""finalize (the exit of every attack) on the fast attacks: DeepFool l2 and DDN on 1000 MNIST test points of a
784-1024-10 ReLU MLP (Adam, 1 epoch on 10k images). Time per example of the whole attack call, warm (second call),
and of finalize alone on the attack's points; one JSON line on stdout. Run it on two checkouts back to back
(`PYTHONPATH=<checkout> python benchmarks/bench_finalize.py`) to compare them."""
from __future__ import annotations

import json
import os
import platform
import time

import jax
import numpy as np

from robustjax import train
from robustjax.attacks import ddn, deepfool
from robustjax.attacks.result import finalize
from robustjax.data import load


def main():
    xtr, ytr = load("mnist", "train")
    xte, yte = load("mnist", "test")
    cfg = train.TrainConfig(model="mlp", model_config={"widths": (1024,), "act": "relu"}, optimizer="adam",
                            learning_rate=1e-3, epochs=1, train_size=10000, progress=False)
    state = train.fit(cfg, (xtr, ytr))
    f = state.logits_fn()
    x, y = xte[:1000], yte[:1000]
    out = {"machine": platform.machine(), "cpus": os.cpu_count(), "load_1min": os.getloadavg()[0],
           "jax": jax.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for name, attack in (("deepfool_l2", lambda: deepfool(f, x, y, p=2)),
                         ("ddn_l2", lambda: ddn(f, x, y, key=jax.random.key(0)))):
        attack()
        t = time.perf_counter()
        res = attack()
        out[f"{name}_ms_per_example"] = 1e3 * (time.perf_counter() - t) / len(x)
        out[f"{name}_median"] = float(np.median(res.distance[res.success & (res.distance > 0)]))
        finalize(f, x, y, res.x_adv, p=2)
        t = time.perf_counter()
        for _ in range(5):
            finalize(f, x, y, res.x_adv, p=2)
        out[f"finalize_after_{name}_ms_per_example"] = 1e3 * (time.perf_counter() - t) / (5 * len(x))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
