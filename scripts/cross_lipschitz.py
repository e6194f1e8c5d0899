"""Cross-Lipschitz regularization vs weight decay and dropout (Hein & Andriushchenko, NIPS 2017), at a
reduced, stated scale: for each training method and lambda, the test error, the Theorem 2.1 certified l2
radius on the test set (mean and median over correctly classified points; misclassified points have
radius 0), the global-Lipschitz baseline, and the l2 norm of the perturbation the authors' linearized
attack finds; a markdown table and a plot of guarantee against test error, one point per lambda.

    nice -n 10 python scripts/cross_lipschitz.py --config mnist --out runs/cross_lipschitz
    python scripts/cross_lipschitz.py --config quick --out /tmp/cl

`run(config, out_dir) -> dict` returns the results (and writes results.json, table.md and
cross_lipschitz_guarantees.png into out_dir when given); configs are in scripts/configs/cross_lipschitz.py.
Before returning it checks soundness: certified radius <= attack distance for every attacked point.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from robustjax.experiments.configs import check_config, load_config

import jax
import jax.numpy as jnp
import numpy as np





def _regularizer(kind: str, lam, *, structure: str, net: dict, centers=None, gamma=None, samples: int = 1):
    from robustjax import regularizers
    if kind in ("none", "dropout"):
        return regularizers.combine()
    if kind == "weight_decay":
        return regularizers.weight_decay(lam)
    if kind in ("cross_lipschitz", "cross_lipschitz_stochastic"):
        method = "stochastic" if kind.endswith("stochastic") else "auto"
        kw = dict(structure=structure, method=method, num_samples=samples)
        if structure == "one_hidden_layer":
            kw.update(act="softplus", alpha=net["alpha"])
        else:
            kw.update(centers=centers, gamma=gamma)
        return regularizers.cross_lipschitz(lam, **kw)
    raise ValueError(f"unknown regularizer kind {kind!r}")


def train_one(dataset: str, data, net: dict, kind: str, lam, *, seed: int, kernel: dict | None = None,
              samples: int = 1, progress: bool = False):
    """Trains one model; returns (state, structure, train seconds)."""
    from robustjax import train
    (xtr, ytr), (xte, yte) = data
    if kernel is None:
        mc = {"hidden": net["hidden"], "alpha": net["alpha"]}
        if kind == "dropout":
            mc.update(dropout_input=lam[0], dropout_hidden=lam[1])
        cfg = train.TrainConfig(model="one_hidden_layer", model_config=mc, dataset=dataset,
                                optimizer=net["optimizer"], learning_rate=net["learning_rate"],
                                momentum=net["momentum"], epochs=net["epochs"], batch_size=net["batch_size"],
                                train_size=net["train_size"], seed=seed, progress=progress)
        reg = _regularizer(kind, lam, structure="one_hidden_layer", net=net, samples=samples)
        init_kwargs = None
    else:
        n = kernel["num_centers"]
        centers = jnp.asarray(xtr[:n].reshape(n, -1))
        cfg = train.TrainConfig(model="gaussian_kernel", model_config={"num_centers": n, "gamma": kernel["gamma"]},
                                dataset=dataset, optimizer=kernel["optimizer"], learning_rate=kernel["learning_rate"],
                                epochs=kernel["epochs"], batch_size=kernel["batch_size"],
                                train_size=kernel["train_size"], seed=seed, progress=progress)
        reg = _regularizer(kind, lam, structure="gaussian_kernel", net=net, centers=centers, gamma=kernel["gamma"],
                           samples=samples)
        init_kwargs = {"centers": centers}
    t0 = time.perf_counter()
    state = train.fit(cfg, (xtr, ytr), None, init_kwargs=init_kwargs, regularizer=reg)
    seconds = time.perf_counter() - t0
    model = train.build_model(cfg, 10)
    return state, model.weights(state.variables()), seconds


def evaluate_one(state, structure, xte, yte, config) -> dict:
    """Test error, certified radii (local and global) and linearized-attack distances."""
    from robustjax import certify, train
    from robustjax.attacks.linearized import linearized
    err = 1 - train.evaluate(state, xte, yte)["accuracy"]
    n = min(config["n_certify"], len(xte))
    t0 = time.perf_counter()
    cert = certify.certified_radius(structure, xte[:n], yte[:n])
    cert_s = time.perf_counter() - t0
    glob = certify.global_lipschitz_radius(structure, xte[:n], yte[:n])
    ok = ~cert.misclassified
    na = min(config["n_attack"], n)
    f = jax.jit(state.logits_fn())
    att = linearized(f, xte[:na], yte[:na], key=jax.random.key(0), batch_size=config["attack_batch"])
    a_ok = ok[:na] & np.isfinite(att.distance)
    violations = int(np.sum(cert.radius[:na] > att.distance))
    if violations:
        raise AssertionError(f"{violations} certified radii exceed the attack distance: the certificate is unsound")
    return {
        "test_error": float(err),
        "certified_mean": float(np.mean(cert.radius[ok])) if ok.any() else 0.0,
        "certified_median": float(np.median(cert.radius[ok])) if ok.any() else 0.0,
        "global_median": float(np.median(glob.radius[ok])) if ok.any() else 0.0,
        "attack_mean": float(np.mean(att.distance[a_ok])) if a_ok.any() else float("inf"),
        "attack_median": float(np.median(att.distance[a_ok])) if a_ok.any() else float("inf"),
        "attack_success": float(np.mean(att.success[ok[:na]])) if ok[:na].any() else 0.0,
        "tightness_median": float(np.median(cert.radius[:na][a_ok] / att.distance[a_ok])) if a_ok.any() else 0.0,
        "n_certified_points": int(n), "n_attacked_points": int(na), "certify_seconds": cert_s,
    }


def _runs(config):
    for dataset, net_key, runs_key, kernel in (("mnist", "mnist", "kernel_runs", config["kernel"]),
                                               ("mnist", "mnist", "mnist_runs", None),
                                               ("cifar10", "cifar10", "cifar10_runs", None)):
        for name, kind, lam in config[runs_key]:
            yield dataset, config[net_key], name, kind, lam, kernel


def plot_guarantees(rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "certified_median", "median certified l2 radius (Thm 2.1)"),
                           (axes[1], "attack_mean", "mean l2 norm, linearized attack")):
        groups = {}
        for r in rows:
            groups.setdefault((r["dataset"], r["method"]), []).append(r)
        for (ds, method), rs in groups.items():
            rs = sorted(rs, key=lambda r: r["test_error"])
            ax.plot([100 * r["test_error"] for r in rs], [r[key] for r in rs], "o-", label=f"{ds}: {method}")
            for r in rs:
                if isinstance(r["lambda"], float) and r["lambda"]:
                    ax.annotate(f"{r['lambda']:g}", (100 * r["test_error"], r[key]), fontsize=7)
        ax.set_xlabel("test error (%)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Guarantee and adversarial distance against test error (one point per lambda)")
    fig.tight_layout()
    return fig


def run(config: dict, out_dir: str | Path | None = None) -> dict:
    """Trains every configured model, certifies and attacks it; returns {"config", "rows"}."""
    from robustjax import data, report
    defaults = load_config("cross_lipschitz", "mnist")
    config = check_config(config, defaults)
    cache = {}
    rows = []
    for dataset, net, name, kind, lam, kernel in _runs(config):
        if dataset not in cache:
            cache[dataset] = data.load_split_pair(dataset)
        (xtr, ytr), (xte, yte) = cache[dataset]
        state, structure, train_s = train_one(dataset, cache[dataset], net, kind, lam, seed=config["seed"],
                                              kernel=kernel, samples=config["stochastic_samples"],
                                              progress=config["progress"])
        res = evaluate_one(state, structure, xte, yte, config)
        epochs = (kernel or net)["epochs"]
        size = (kernel or net)["train_size"] or len(xtr)
        row = {"dataset": dataset, "model": "gaussian_kernel" if kernel else f"1HL-{net['hidden']}",
               "method": name, "lambda": lam if not isinstance(lam, tuple) else f"drop {lam[0]}/{lam[1]}",
               "epochs": epochs, "train_size": size, "train_seconds": train_s, "load1_after": report.load1(), **res}
        rows.append(row)
        print(json.dumps(report.to_jsonable(row)), flush=True)
        result = {"config": config, "rows": rows, "figures": []}
        if out_dir is not None:
            write_outputs(result, out_dir)
    return result


TABLE_COLUMNS = ["dataset", "model", "method", "lambda", "epochs", "train_size", "test_error", "certified_mean",
                 "certified_median", "global_median", "attack_mean", "attack_median", "tightness_median",
                 "train_seconds"]


def write_outputs(result: dict, out_dir: str | Path) -> dict:
    """Writes table.md, cross_lipschitz_guarantees.png and results.json of `result` into out_dir."""
    import matplotlib.pyplot as plt
    from robustjax import report
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(report.markdown_table(result["rows"], TABLE_COLUMNS, digits=4))
    fig = plot_guarantees(result["rows"])
    fig.savefig(out / "cross_lipschitz_guarantees.png", dpi=120)
    plt.close(fig)
    result["figures"] = ["cross_lipschitz_guarantees.png"]
    report.write_json(out / "results.json", result)
    return result


def merge(dirs, out_dir) -> dict:
    """Concatenates the rows of several runs' results.json (e.g. the main run and `kernel_lambdas`)."""
    rows, configs = [], []
    for d in dirs:
        r = json.loads((Path(d) / "results.json").read_text())
        rows += r["rows"]
        configs.append(r["config"])
    return write_outputs({"config": configs, "rows": rows, "figures": []}, out_dir)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="mnist", help="variant of scripts/configs/cross_lipschitz.py")
    p.add_argument("--out", default=None, help="output folder for results.json, table.md and the figure")
    p.add_argument("--merge", nargs="+", default=None, help="run folders whose results to merge into --out")
    args = p.parse_args(argv)
    if args.merge:
        result = merge(args.merge, args.out)
    else:
        result = run(load_config("cross_lipschitz", args.config), args.out)
    from robustjax import report
    print(report.markdown_table(result["rows"], ["dataset", "method", "lambda", "test_error", "certified_median",
                                                 "attack_mean", "tightness_median"]))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
