"""The worst rotation and translation of test images (Engstrom et al. 2017, cited in the talk): train a
small net, attack it by exhaustive grid search and by a first-order search on rotation only, translation
only, and both; robust accuracy against the fraction of the range, and a figure of original and transformed
images as on the slide.

    python scripts/spatial.py --config mnist --out runs/spatial_mnist
    python scripts/spatial.py --config quick --out /tmp/spatial

`run(config, out_dir)` returns the results as a dict (and writes results.json and the figures into
out_dir when given); configs are in scripts/configs/spatial.py.
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




def train_model(config: dict):
    """Trains config's model on config's data; returns (state, (x_test, y_test), test accuracy, seconds)."""
    from robustjax import data, train
    (xtr, ytr), (xte, yte) = data.load_split_pair(config["dataset"])
    cfg = train.TrainConfig(model=config["model"], model_config=dict(config["model_config"]),
                            dataset=config["dataset"], optimizer=config["optimizer"],
                            learning_rate=config["learning_rate"], schedule=config["schedule"],
                            epochs=config["epochs"], batch_size=config["batch_size"],
                            train_size=config["train_size"], seed=config["seed"], progress=False)
    t0 = time.perf_counter()
    state = train.fit(cfg, (xtr, ytr))
    seconds = time.perf_counter() - t0
    acc = train.evaluate(state, xte, yte)["accuracy"]
    return state, (xte, yte), acc, seconds


def _summary(res, scales) -> dict:
    from robustjax.attacks import robust_accuracy_curve
    ok = res.success & ~res.misclassified
    return {"robust_accuracy": dict(zip([f"{s:.3g}" for s in scales],
                                        robust_accuracy_curve(res.distance, scales).tolist())),
            "fooled_fraction": float(np.mean(res.success)),
            "median_distance_of_fooled": float(np.median(res.distance[ok])) if ok.any() else None,
            "model_calls_per_example": int(res.model_calls[0]),
            "time_per_example_ms": 1e3 * float(np.mean(res.time_s))}


def plot_transformed(x, labels, res, indices, *, class_names=None, box=(0.0, 1.0)):
    """As on the slide: originals (top row, with label and prediction) and their worst transformation
    (bottom row, with angle, shift and the new prediction). Returns the Figure."""
    import matplotlib.pyplot as plt
    name = (lambda c: class_names[int(c)]) if class_names else (lambda c: str(int(c)))
    fig, axes = plt.subplots(2, len(indices), figsize=(1.9 * len(indices), 4.3), squeeze=False)
    for col, i in enumerate(indices):
        for row, img, title in ((0, x[i], f"original: {name(labels[i])}"),
                                (1, res.x_adv[i], f"{res.info['angle'][i]:+.0f}°, ({res.info['shift'][i][0]:+.0f},"
                                                  f"{res.info['shift'][i][1]:+.0f}) px\npredicted: {name(res.label_adv[i])}")):
            a = np.asarray(img)
            ax = axes[row, col]
            ax.imshow(a[..., 0] if a.shape[-1] == 1 else a, cmap="gray" if a.shape[-1] == 1 else None,
                      vmin=box[0], vmax=box[1])
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_range_curves(results: dict, fractions):
    """Robust accuracy against the fraction of the transformation range, per threat model and search."""
    import matplotlib.pyplot as plt
    from robustjax.attacks import robust_accuracy_curve
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    colors = {"rotation": "C0", "translation": "C1", "rotation+translation": "C3"}
    for threat, by_method in results.items():
        for method, res in by_method.items():
            ax.step(fractions, robust_accuracy_curve(res.distance, fractions), where="post",
                    color=colors.get(threat), linestyle="-" if method == "grid" else "--",
                    label=f"{threat}, {method}")
    ax.set_xlabel("fraction of the range (30°, 3 px)")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def run(config: dict, out_dir: str | Path | None = None, *, trained=None) -> dict:
    """Trains (unless `trained`, the output of `train_model(config)`, is given), attacks, summarizes;
    with out_dir writes results.json, spatial_examples.png and spatial_robust_accuracy.png there."""
    from robustjax.attacks import spatial
    defaults = load_config("spatial", "mnist")
    config = check_config(config, defaults)
    state, (xte, yte), acc, train_s = trained if trained is not None else train_model(config)
    f = state.logits_fn()
    n = config["n_attack"]
    x, y = xte[:n], yte[:n]
    ma, ms = config["max_angle"], config["max_shift"]
    threats = {"rotation": (ma, 0.0), "translation": (0.0, ms), "rotation+translation": (ma, ms)}
    scales = list(config["scales"])
    raw, summary = {}, {}
    for threat, (a, s) in threats.items():
        grid = spatial.spatial_grid(f, x, y, max_angle=a, max_shift=s, num_angles=config["num_angles"],
                                    num_shifts=config["num_shifts"], padding=config["padding"],
                                    batch_size=config["attack_batch"])
        fo = spatial.spatial_first_order(f, x, y, key=jax.random.key(config["seed"]), max_angle=a, max_shift=s,
                                         num_steps=config["fo_steps"], restarts=config["fo_restarts"],
                                         step_size=config["fo_step_size"], line_search=config["fo_line_search"],
                                         padding=config["padding"], batch_size=config["attack_batch"])
        raw[threat] = {"grid": grid, "first_order": fo}
        summary[threat] = {"grid": _summary(grid, scales), "first_order": _summary(fo, scales),
                           "first_order_fooled_where_grid_not": int(np.sum(fo.success & ~grid.success)),
                           "grid_fooled_where_first_order_not": int(np.sum(grid.success & ~fo.success))}
    result = {"config": config, "clean_accuracy_full_test": acc, "train_seconds": train_s,
              "clean_accuracy_attacked": float(np.mean(np.asarray(jax.numpy.argmax(f(x), -1)) == y)),
              "n_attacked": int(n), "threats": summary, "figures": []}
    if out_dir is not None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from robustjax import report
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        both = raw["rotation+translation"]["grid"]
        fooled = np.flatnonzero(both.success & ~both.misclassified)[:config["n_figure"]]
        if len(fooled):
            names = CIFAR10_CLASSES if config["dataset"] == "cifar10" else None
            fig = plot_transformed(x, y, both, fooled, class_names=names)
            fig.savefig(out / "spatial_examples.png", dpi=120)
            plt.close(fig)
            result["figures"].append("spatial_examples.png")
        fig = plot_range_curves(raw, np.linspace(0, 1, 61))
        fig.savefig(out / "spatial_robust_accuracy.png", dpi=120)
        plt.close(fig)
        result["figures"].append("spatial_robust_accuracy.png")
        report.write_json(out / "results.json", result)
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="mnist", help="variant of scripts/configs/spatial.py")
    p.add_argument("--out", default=None, help="output folder for results.json and figures")
    args = p.parse_args(argv)
    result = run(load_config("spatial", args.config), args.out)
    from robustjax import report
    print(json.dumps(report.to_jsonable({k: result[k] for k in ("clean_accuracy_full_test", "threats")}), indent=1))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
