"""Confidence far from the data (Hein, Andriushchenko, Bitterwolf, CVPR 2019; methods.md section 4):
train the same net plainly, with CEDA and with ACET; measure the test error, the confidence on the test
set, on uniform noise, permuted pixels, low-pass noise and adversarial noise (MMC / AUROC / FPR at 95 %
TPR against the test set), and the confidence on alpha * x as alpha grows (Theorem 3.1).

    python scripts/far_from_data.py --config mnist --out runs/ood_mnist
    python scripts/far_from_data.py --config quick --out /tmp/ood

`run(config, out_dir)` returns the results as a dict (and writes results.json, ood_table.md and the
figures into out_dir when given); configs are in scripts/configs/ood.py.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from robustjax.experiments.configs import check_config as _check_keys, load_config

import jax
import jax.numpy as jnp
import numpy as np

SETS = ("uniform", "permuted", "lowpass", "adversarial")



def check_config(config: dict, defaults: dict) -> dict:
    config = _check_keys(config, defaults)
    unknown = set(config["methods"]) - {"plain", "ceda", "acet"}
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; known: plain, ceda, acet")
    return config


def regularizer_for(method: str, config: dict):
    """The regularizer term of a method: plain (weight decay only), CEDA, ACET."""
    from robustjax import ood, regularizers
    terms = []
    if config["weight_decay"]:
        terms.append(regularizers.weight_decay(config["weight_decay"]))
    if method == "ceda":
        terms.append(ood.ceda(config["noise_weight"], noise=config["noise"]))
    elif method == "acet":
        terms.append(ood.acet(config["noise_weight"], eps=config["acet_eps"], steps=config["acet_steps"],
                              step_size=config["acet_step_size"], noise=config["noise"]))
    return regularizers.combine(*terms)


def ood_sets(config: dict, x_test) -> dict:
    """The model-independent out-distribution inputs, from fixed keys: uniform noise, permuted test
    images, low-pass noise (the training noise; also the start of the adversarial noise)."""
    from robustjax import ood
    n = config["n_ood"]
    base = jnp.asarray(x_test[-n:])              # the last test images (the in-distribution set is the first)
    k = jax.random.split(jax.random.key(1234 + config["seed"]), 3)
    return {"uniform": ood.uniform_noise(k[0], base), "permuted": ood.permuted_pixels(k[1], base),
            "lowpass": ood.lowpass_noise(k[2], base)}


def evaluate_model(logits_fn, config: dict, x_test, sets: dict) -> dict:
    """MMC on the test set, MMC/AUROC/FPR95 per out-distribution set, the alpha-scaling numbers."""
    from robustjax import ood
    lc_in = ood.max_log_confidence(logits_fn, x_test[:config["n_test"]])
    adv = ood.adversarial_noise(logits_fn, sets["lowpass"], jax.random.key(99 + config["seed"]),
                                eps=config["adv_eps"], steps=config["adv_steps"],
                                step_size=config["adv_step_size"], restarts=config["adv_restarts"])
    out = {"mmc_test": float(np.mean(np.exp(lc_in.astype(np.float64)))), "sets": {},
           "zero_gradient_pct_lowpass": 100.0 * float(np.mean(
               ood.log_confidence_gradient_norm(logits_fn, sets["lowpass"]) == 0))}
    for name, z in {**sets, "adversarial": adv}.items():
        out["sets"][name] = ood.ood_metrics(lc_in, ood.max_log_confidence(logits_fn, z))
    noise = sets["uniform"][:config["n_alpha"]]
    alphas = np.logspace(0, config["alpha_max_exp"], 8 * config["alpha_max_exp"] + 1)
    a_star = ood.alpha_for_confidence(logits_fn, noise, target=config["alpha_target"], alphas=alphas)
    proj = ood.scaled_confidence(logits_fn, noise, alphas, project=True)        # [m, n]
    curve = ood.scaled_confidence(logits_fn, noise, config["curve_alphas"])
    curve_proj = ood.scaled_confidence(logits_fn, noise, config["curve_alphas"], project=True)
    out["alpha"] = {"median_alpha": float(np.median(a_star)), "reached_fraction": float(np.mean(np.isfinite(a_star))),
                    "overconfident_projected_pct": 100.0 * float(np.mean(proj.max(0) > config["overconfident"])),
                    "curve_alphas": list(config["curve_alphas"]), "mean_conf": curve.mean(1).tolist(),
                    "mean_conf_projected": curve_proj.mean(1).tolist()}
    out["_adversarial_examples"] = np.asarray(adv[:4])
    return out


def table_rows(result: dict) -> list[dict]:
    """Rows of the CEDA/ACET table (one per method)."""
    rows = []
    for method, r in result["methods"].items():
        row = {"method": method, "test error %": 100 * r["test_error"], "MMC test": r["mmc_test"]}
        for s in SETS:
            m = r["sets"][s]
            row[s] = f"{m['mmc']:.3f} / {m['auroc']:.3f} / {m['fpr95']:.3f}"
        row["zero grad. % (lowpass)"] = r.get("zero_gradient_pct_lowpass")
        row["median alpha (99.9 %)"] = r["alpha"]["median_alpha"]
        row["% overconf. projected"] = r["alpha"]["overconfident_projected_pct"]
        row["train s"] = r["train_seconds"]
        rows.append(row)
    return rows


def markdown(result: dict) -> str:
    from robustjax import report
    c = result["config"]
    head = (f"{c['dataset']}: {c['model']} {c['model_config']}, {c['train_size'] or 'all'} training images, "
            f"{c['epochs']} epochs, {c['optimizer']} lr {c['learning_rate']}; noise '{c['noise']}', weight "
            f"{c['noise_weight']}; ACET eps {c['acet_eps']}, {c['acet_steps']} steps of {c['acet_step_size']}. "
            f"Evaluation: {c['n_test']} test points vs {c['n_ood']} points per set (MMC / AUROC / FPR@95); "
            f"adversarial noise: {c['adv_restarts']} x {c['adv_steps']} sign-PGD steps of {c['adv_step_size']} "
            f"in the l_inf ball of {c['adv_eps']} around low-pass noise; alpha scaling on {c['n_alpha']} "
            f"uniform-noise points, alphas 1 to 1e{c['alpha_max_exp']}.\n\n")
    return head + report.markdown_table(table_rows(result), digits=4)


def plot_alpha_curves(result: dict):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for i, (method, r) in enumerate(result["methods"].items()):
        a = r["alpha"]
        ax.semilogx(a["curve_alphas"], a["mean_conf"], "-o", ms=3, color=f"C{i}", label=f"{method}: alpha x")
        ax.semilogx(a["curve_alphas"], a["mean_conf_projected"], "--", color=f"C{i}",
                    label=f"{method}: clip(alpha x, 0, 1)")
    ax.set_xlabel("alpha")
    ax.set_ylabel("mean max. confidence on uniform noise")
    ax.set_ylim(0, 1.02)
    ax.set_title(result["config"]["dataset"], fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_ood_examples(sets: dict, adversarial: dict):
    """One row per set (uniform, permuted, low-pass noise, then the adversarial noise of each method)."""
    import matplotlib.pyplot as plt
    rows = [(k, np.asarray(v[:4])) for k, v in sets.items()] + [(f"adv. noise ({m})", a) for m, a in adversarial.items()]
    fig, axes = plt.subplots(len(rows), 4, figsize=(6, 1.6 * len(rows)), squeeze=False)
    for (name, imgs), axs in zip(rows, axes):
        for j, ax in enumerate(axs):
            a = imgs[j]
            ax.imshow(a[..., 0] if a.shape[-1] == 1 else a, cmap="gray" if a.shape[-1] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axs[0].set_ylabel(name, fontsize=7)
    fig.tight_layout()
    return fig


def run(config: dict, out_dir: str | Path | None = None) -> dict:
    """Trains each method, evaluates; with out_dir writes results.json, ood_table.md, ood_alpha.png and
    ood_examples.png there."""
    from robustjax import data, train
    config = check_config(config, load_config("ood", "mnist"))
    (xtr, ytr), (xte, yte) = data.load_split_pair(config["dataset"])
    sets = ood_sets(config, xte)
    result = {"config": config, "methods": {}, "figures": []}
    adversarial = {}
    for method in config["methods"]:
        cfg = train.TrainConfig(model=config["model"], model_config=dict(config["model_config"]),
                                dataset=config["dataset"], optimizer=config["optimizer"],
                                learning_rate=config["learning_rate"], schedule=config["schedule"],
                                epochs=config["epochs"], batch_size=config["batch_size"],
                                train_size=config["train_size"], seed=config["seed"], progress=False)
        t0 = time.perf_counter()
        state = train.fit(cfg, (xtr, ytr), regularizer=regularizer_for(method, config))
        train_s = time.perf_counter() - t0
        acc = train.evaluate(state, xte, yte)["accuracy"]
        t0 = time.perf_counter()
        ev = evaluate_model(state.logits_fn(), config, xte, sets)
        adversarial[method] = ev.pop("_adversarial_examples")
        result["methods"][method] = {"test_error": 1.0 - acc, "train_seconds": train_s,
                                     "eval_seconds": time.perf_counter() - t0, **ev}
    if out_dir is not None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from robustjax import report
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, fig in (("ood_alpha.png", plot_alpha_curves(result)),
                          ("ood_examples.png", plot_ood_examples(sets, adversarial))):
            fig.savefig(out / name, dpi=120)
            plt.close(fig)
            result["figures"].append(name)
        (out / "ood_table.md").write_text(markdown(result))
        report.write_json(out / "results.json", result)
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="mnist", help="variant of scripts/configs/ood.py")
    p.add_argument("--out", default=None, help="output folder for results.json, ood_table.md and figures")
    args = p.parse_args(argv)
    result = run(load_config("ood", args.config), args.out)
    print(markdown(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
