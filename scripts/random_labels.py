"""Zhang et al. (ICLR 2017) as the talk quotes them: a network fits true labels, randomly permuted labels
and random inputs (close to zero training error), and tests at chance on the latter two; on the true labels
the test accuracy over training shows what early stopping would pick (configs in
scripts/configs/random_labels.py).

    python scripts/random_labels.py --config mnist --out runs/random_labels
    python scripts/random_labels.py --config quick --out /tmp/rl

`run(config, out_dir=None) -> dict` returns {"config", "settings": {name: {...}}, "rows", "figures"} (and
writes results.json, random_labels.md and random_labels.png into out_dir when given). Each setting holds
the final training error (the trained net evaluated on its whole training set), the test accuracy and the
per-epoch curves (train error as the running mean over the epoch's batches, test accuracy after the epoch).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from robustjax.experiments.configs import check_config, load_config

LABELS = {"true_labels": "true labels", "random_labels": "random labels (permuted)",
          "random_inputs": "random inputs (Gaussian pixels)"}


def make_training_set(setting: str, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) for one setting: as they are, with the labels permuted, or with Gaussian pixels of the
    training set's mean and standard deviation (clipped to [0, 1]) in place of the images."""
    rng = np.random.default_rng(seed)
    if setting == "true_labels":
        return x, y
    if setting == "random_labels":
        return x, rng.permutation(y)
    if setting == "random_inputs":
        z = rng.normal(float(x.mean()), float(x.std()), size=x.shape)
        return np.clip(z, 0.0, 1.0).astype(np.float32), y
    raise ValueError(f"unknown setting {setting!r}; known: {', '.join(LABELS)}")


def train_setting(setting: str, config: dict, train_xy, test_xy) -> dict:
    from robustjax import train
    x, y = make_training_set(setting, *train_xy, config["seed"])
    cfg = train.TrainConfig(model=config["model"], model_config=dict(config["model_config"]), dataset="mnist",
                            optimizer=config["optimizer"], learning_rate=config["learning_rate"],
                            schedule=config["schedule"], epochs=config["epochs"], batch_size=config["batch_size"],
                            seed=config["seed"], progress=False)
    records = []
    t0 = time.perf_counter()
    state = train.fit(cfg, (x, y), test_xy, log=records.append)
    seconds = time.perf_counter() - t0
    train_acc = train.evaluate(state, x, y)["accuracy"]
    test_acc = train.evaluate(state, *test_xy)["accuracy"]
    curve_test = [r["test_accuracy"] for r in records]
    curve_train_err = [1.0 - r["train_accuracy"] for r in records]
    fitted = [i + 1 for i, e in enumerate(curve_train_err) if e <= config["fit_threshold"]]
    best = int(np.argmax(curve_test))
    return {"train_error": 1.0 - train_acc, "test_accuracy": test_acc, "train_seconds": seconds,
            "epochs": [r["epoch"] for r in records], "curve_train_error": curve_train_err,
            "curve_test_accuracy": curve_test, "best_test_accuracy": curve_test[best], "best_epoch": best + 1,
            "first_epoch_fitted": fitted[0] if fitted else None}


def plot(result: dict):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (name, s) in enumerate(result["settings"].items()):
        ax[0].plot(s["epochs"], s["curve_train_error"], color=f"C{i}", label=LABELS[name])
        ax[1].plot(s["epochs"], s["curve_test_accuracy"], color=f"C{i}", label=LABELS[name])
    if "true_labels" in result["settings"]:
        s = result["settings"]["true_labels"]
        ax[1].plot([s["best_epoch"]], [s["best_test_accuracy"]], "k*", ms=9, label="best epoch (early stopping)")
    ax[1].axhline(1.0 / 10, color="gray", ls=":", label="chance")
    ax[0].set(xlabel="epoch", ylabel="training error (running mean over the epoch)", ylim=(0, 1),
              title="fitting true labels, random labels, random inputs")
    ax[1].set(xlabel="epoch", ylabel="test accuracy", ylim=(0, 1), title="test accuracy during training")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    return fig


def markdown(result: dict) -> str:
    from robustjax import report
    c = result["config"]
    head = (f"MNIST, first {c['n_train']:,} training images, first {c['n_test']:,} test images; {c['model']} "
            f"{c['model_config']}, {c['optimizer']} lr {c['learning_rate']} ({c['schedule']}), batch "
            f"{c['batch_size']}, {c['epochs']} epochs, no explicit regularization; one run per setting. Zhang et "
            "al.: CIFAR-10 / ImageNet, Inception, AlexNet, MLPs.\n\n")
    return head + report.markdown_table(result["rows"], digits=4)


def run(config: dict, out_dir: str | Path | None = None) -> dict:
    from robustjax import data, report
    config = check_config(config, load_config("random_labels", "mnist"))
    (xtr, ytr), (xte, yte) = data.load_split_pair("mnist")
    train_xy = (xtr[:config["n_train"]], ytr[:config["n_train"]])
    test_xy = (xte[:config["n_test"]], yte[:config["n_test"]])
    result = {"config": config, "settings": {}, "rows": [], "figures": []}
    for setting in config["settings"]:
        s = train_setting(setting, config, train_xy, test_xy)
        result["settings"][setting] = s
        result["rows"].append({"training set": LABELS[setting], "train error": s["train_error"],
                               "test accuracy": s["test_accuracy"], "best test accuracy": s["best_test_accuracy"],
                               "at epoch": s["best_epoch"], "first epoch <= 1 % train error": s["first_epoch_fitted"],
                               "train s": s["train_seconds"]})
        print(f"  {setting:14s} train error {s['train_error']:.4f} test accuracy {s['test_accuracy']:.4f} "
              f"({s['train_seconds']:.0f} s)", flush=True)
    if out_dir is not None:
        import matplotlib.pyplot as plt
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        fig = plot(result)
        fig.savefig(out / "random_labels.png", dpi=110)
        plt.close(fig)
        result["figures"].append("random_labels.png")
        (out / "random_labels.md").write_text(markdown(result))
        report.write_json(out / "results.json", result)
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="mnist", help="variant of scripts/configs/random_labels.py")
    p.add_argument("--out", default=None, help="output folder for results.json, random_labels.md and the figure")
    args = p.parse_args(argv)
    result = run(load_config("random_labels", args.config), args.out)
    print(markdown(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
