"""The region attack in action, as on the talk's slide: the randomized region attack's best l2 distance
shrinking over the sampled regions, and its adversarial image after a few of them, on MNIST and (where
the data are available) CIFAR-10.

    python scripts/attack_in_action.py --out benchmarks/results/attack_in_action
    python scripts/attack_in_action.py --config quick --out /tmp/aia

`run(config, out)` trains a small ReLU MLP per data set (scripts/configs/attack_in_action.py), attacks one
correctly classified test point with `attacks.region(..., snapshots=...)` and returns the results as a
dict; with out it writes attack_in_action_<dataset>.png (`attacks.plot_attack_in_action`) and results.json
there. CIFAR-10 needs cifar10.npz in $ROBUSTJAX_DATA; without it that part is skipped with a note.
benchmarks/results/attack_in_action/attack_in_action_mnist.png and attack_in_action_cifar10.png are
produced by this script with the default config.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from robustjax.experiments.configs import check_config, load_config

import jax
import numpy as np

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def train_net(dataset: str, net: dict, seed: int):
    """A net trained on `dataset` by the settings `net`; returns (logits_fn, (x_train, y_train) the training
    subset it saw, (x_test, y_test), test accuracy, seconds). Raises data.DataNotFoundError where the data set
    is not available."""
    from robustjax import data, train
    (xtr, ytr), (xte, yte) = data.load_split_pair(dataset)
    cfg = train.TrainConfig(dataset=dataset, seed=seed, progress=False, **net)
    t0 = time.perf_counter()
    state = train.fit(cfg, (xtr, ytr))
    seconds = time.perf_counter() - t0
    n = net["train_size"] or len(xtr)
    return state.logits_fn(), (xtr[:n], ytr[:n]), (xte, yte), train.evaluate(state, xte, yte)["accuracy"], seconds


def nearest_other_class(f, x, label, x_train, y_train):
    """The training image `[...]` closest to x (l2) whose label is not `label` and that f classifies as
    another class too (the authors' start); None if there is none."""
    from robustjax.batching import map_batches
    pred = map_batches(lambda z: jax.numpy.argmax(f(z), -1), (x_train,), batch_size=1000)
    ok = np.flatnonzero((y_train != label) & (pred != label))
    if not len(ok):
        return None
    d = np.linalg.norm((x_train[ok] - x).reshape(len(ok), -1), axis=1)
    return x_train[ok[np.argmin(d)]]


def run(config: dict, out: str | Path | None = None) -> dict:
    """Per data set of config["datasets"]: trains, attacks the config["point"]-th correctly classified test
    point in l_p with snapshots; with out, writes the figures and results.json there. Returns
    {"config", "datasets": {name: {...} or {"skipped": reason}}, "figures"}."""
    from robustjax import data
    from robustjax.attacks import plot_attack_in_action, region
    config = check_config(config, load_config("attack_in_action"))
    out = None if out is None else Path(out)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    result = {"config": config, "datasets": {}, "figures": []}
    for name in config["datasets"]:
        try:
            f, (xtr, ytr), (xte, yte), acc, train_s = train_net(name, config["nets"][name], config["seed"])
        except data.DataNotFoundError as e:
            print(f"{name}: skipped, the data set is not available ({str(e).split('. ')[0]})", flush=True)
            result["datasets"][name] = {"skipped": "data set not available"}
            continue
        pred = np.asarray(jax.numpy.argmax(f(xte[:100]), -1))
        correct = np.flatnonzero(pred == yte[:100])
        i = int(correct[config["point"]])
        x, y = xte[i:i + 1], yte[i:i + 1]
        if config["start"] not in ("train", "cheap"):
            raise ValueError(f"start must be 'train' or 'cheap', got {config['start']!r}")
        x_start = nearest_other_class(f, x[0], y[0], xtr, ytr) if config["start"] == "train" else None
        t0 = time.perf_counter()
        res = region(f, x, y, p=config["p"], key=jax.random.key(config["seed"]), n_regions=config["n_regions"],
                     batch_regions=config["batch_regions"], restarts=config["restarts"], snapshots=config["snapshots"],
                     x_start=None if x_start is None else x_start[None])
        attack_s = time.perf_counter() - t0
        steps = res.info["snapshot_regions"][0]
        snap_d = [float(np.linalg.norm((z - x[0]).ravel(), ord=config["p"])) for z in res.info["snapshots"][0]]
        row = {"start": config["start"] if x_start is not None or config["start"] == "cheap" else "none found",
               "test_accuracy": acc, "train_seconds": train_s, "test_index": i, "label": int(y[0]),
               "label_adv": int(res.label_adv[0]), "success": bool(res.success[0]),
               "distance": float(res.distance[0]), "start_distance": float(res.info["start_distance"][0]),
               "trajectory": res.info["trajectory"][0].tolist(),
               "snapshots": dict(zip(map(str, steps.tolist()), snap_d)), "attack_seconds": attack_s}
        result["datasets"][name] = row
        print(f"{name}: test accuracy {acc:.4f} (trained in {train_s:.0f} s); test point {i} (label {int(y[0])}): "
              f"l{config['p']} distance {row['start_distance']:.3f} at the start, "
              + ", ".join(f"{d:.3f} after {k}" for k, d in row["snapshots"].items())
              + f", final {row['distance']:.3f} (label {row['label_adv']}; {attack_s:.0f} s)", flush=True)
        if out is not None:
            fig = plot_attack_in_action(x, res, labels=y, class_names=CIFAR10_CLASSES if name == "cifar10" else None)
            start = {"train": "from the nearest training image of another class",
                     "cheap": "from the cheap attacks' points"}[config["start"]]
            fig.suptitle(f"The region attack in action: {name}, l{config['p']}, {config['n_regions']} regions {start}",
                         fontsize=10)
            fig.tight_layout()
            fig.savefig(out / f"attack_in_action_{name}.png", dpi=120)
            plt.close(fig)
            result["figures"].append(f"attack_in_action_{name}.png")
    if out is not None:
        from robustjax import report
        report.write_json(out / "results.json", result)
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="default", help="variant of scripts/configs/attack_in_action.py")
    p.add_argument("--out", default=None, help="output folder for the figures and results.json")
    args = p.parse_args(argv)
    result = run(load_config("attack_in_action", args.config), args.out)
    from robustjax import report
    print(json.dumps(report.to_jsonable({k: {kk: vv for kk, vv in v.items() if kk != "trajectory"}
                                         for k, v in result["datasets"].items()}), indent=1))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
