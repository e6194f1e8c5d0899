"""Reproduce the talk end to end and write one report folder.

    robustjax --quick                    # = python scripts/reproduce.py --quick: minutes, 2-core CPU, embedded MNIST
    robustjax                            # the reduced CPU scale of every experiment (about 45 min on 2 cores; CIFAR-10
                                         #   parts need $ROBUSTJAX_DATA with cifar10.npz)
    robustjax --full                     # the talk's scale: needs a GPU (refused without one)
    robustjax --quick --parts attacks,guarantees --out reports/x
    robustjax --full --plan              # the parts, their settings and estimated GPU-hours (FULL_ESTIMATES); no GPU needed
    robustjax --full --out DIR --resume  # continue DIR: parts finished there are reused, the others run (the landscape
                                         #   part's nets from their checkpoints in DIR/landscape/ckpt), report rebuilt

The report folder holds report.md (every table of the talk beside ours: the width table, the
skip/rand table, Zhang et al.'s random labels, the cross-Lipschitz guarantees, the attack comparison,
spatial attacks and far from the data), the figures, results.json per part, the settings of every
number, each part's wall time (timings.json, with the machine's load; per part also in <part>/part.json, the
record that the part finished, which `--resume` checks), and one verdict per claim of the
talk (verdicts.json; the rules are in robustjax/verdicts.py, computed from the parts' results.json).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

PARTS = ("landscape", "random_labels", "guarantees", "attacks", "spatial", "ood")
TALK = {
    "widths": "VGG(A-E) 3000K (k=1) yes; InceptionV3 1300K (k=3) yes; InceptionV4 1300K (k=3) yes; SqueezeNet "
              "1180K (k=1) NO; ENet 1000K (k=1) NO; GoogLeNet 800K (k=1) NO; ResNet 800K (k=1) NO; Xception 700K "
              "(k=1) NO (N = 1.2 million).",
    "skip": "CIFAR-10 test accuracy % (sigmoid / softplus): VGG11 10 / 78.92; VGG11-skip rand 62.81 / 64.49; "
            "VGG11-skip SGD 72.51 / 80.57; VGG16 10 / 81.33; VGG16-skip rand 61.57 / 61.46; VGG16-skip SGD 70.61 / "
            "81.91; DenseNet121 86.41 / 89.31; DenseNet121-skip rand 52.07 / 55.39; DenseNet121-skip SGD 81.47 / "
            "86.76. Conclusion: among the zero-training-error solutions SGD picks one that generalizes.",
    "random_labels": "Zhang et al. (ICLR 2017): a network reaches (close to) zero training error on the true labels, "
                     "on randomly permuted labels and on random inputs; test accuracy is at chance for the latter two. "
                     "The talk's answer: early stopping and the implicit regularization of SGD.",
    "guarantees": "Cross-Lipschitz regularization gives larger guarantees and larger adversarial distances than "
                  "weight decay and dropout at similar test error; on the slide (one MNIST '1'), the kernel SVM "
                  "needs ||delta||_2 = 1.2 and the cross-Lipschitz kernel machine 2.5; the nets 0.94 (weight decay), "
                  "1.04 (dropout), 1.14 (cross-Lipschitz).",
    "attacks": "The randomized region attack improves upon DeepFool and Carlini-Wagner by up to 10 % for p = 2; "
               "slide examples: MNIST ||delta||_1 = 1.47, ||delta||_2 = 0.25-0.30, ||delta||_inf = 0.02.",
    "spatial": "Rotations and translations alone produce adversarial examples (Engstrom et al. 2017); robustness "
               "guarantees against them are an open problem.",
    "ood": "Outlook: low confidence far away from the training data (Hein, Andriushchenko, Bitterwolf 2019: "
           "MNIST plain median alpha for 99.9 % confidence on noise 1.5, ACET 3.0e15).",
}


def _config(module: str, variant: str) -> dict:
    import importlib
    return importlib.import_module(f"robustjax.experiments.configs.{module}").get_config(variant)


def _part(name: str):
    import importlib
    return importlib.import_module(f"robustjax.experiments.{name}")


def read_load() -> float | None:
    """The 1-minute load average (/proc/loadavg), None where unreadable: the report states it beside its times."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


_COMPILE = {"seconds": 0.0, "count": 0}
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


def count_compiles() -> None:
    """Adds JAX's tracing, lowering and XLA compile durations (jax.monitoring events) to _COMPILE, so that
    timings.json can say how much of each part was compilation (registered once per process)."""
    if _COMPILE.get("registered"):
        return
    import jax

    def listen(event: str, duration: float, **_):
        if event in _COMPILE_EVENTS:
            _COMPILE["seconds"] += duration
            _COMPILE["count"] += event == _COMPILE_EVENTS[-1]

    jax.monitoring.register_event_duration_secs_listener(listen)
    _COMPILE["registered"] = True


def has_gpu() -> bool:
    import jax
    return any(d.platform in ("gpu", "tpu") for d in jax.devices())


def has_cifar10() -> bool:
    from robustjax import data
    try:
        data.load("cifar10", "test")
        return True
    except data.DataNotFoundError:
        return False


# ----------------------------------------------------------------------------- parts

def run_landscape(scale: str, out: Path, workdir: Path | None = None) -> dict:
    """The landscape part; with a `workdir` its SGD nets train in checkpointed run folders there and the skip
    table's finished rows are kept in out/results_partial.json, so an interrupted part resumes (landscape.run)."""
    cfg = _config("landscape", {"quick": "test", "cpu": "quick", "full": "full"}[scale])
    if scale == "quick":
        # softplus only, and no plain VGG11: at this scale 30 Adam epochs leave plain VGG11 at chance (13 % train
        # accuracy, measured) at a third of the part's time; the claims tested here are rand vs SGD. The SGD net's 50
        # epochs are most of the part, and they are what fits the training set (99.0 % train accuracy, the
        # verdict's threshold): 40 epochs at lr 3e-3 on 500 images reach 97 %, 50 epochs on 400 images 98.5 %
        # (measured), so this part is not cut
        cfg.update(dataset="mnist", parts=("widths", "skip", "badnews"), acts=("softplus",),
                   variants=("skip_rand", "skip_sgd"), n_train=500, n_test=500, epochs=dict(vgg11=50),
                   train=dict(cfg["train"], learning_rate=2e-3),
                   widths_models=("vgg11", "vgg16", "inception_v3", "inception_v4", "squeezenet", "enet",
                                  "googlenet", "resnet50", "xception"))
    return _part("landscape").run(cfg, out, workdir=workdir)


def run_random_labels(scale: str, out: Path) -> dict:
    return _part("random_labels").run(_config("random_labels", {"quick": "quick", "cpu": "mnist", "full": "mnist"}[scale]),
                                      out)


def run_guarantees(scale: str, out: Path) -> dict:
    cfg = _config("cross_lipschitz", {"quick": "quick", "cpu": "mnist" if has_cifar10() else "mnist_only",
                                      "full": "mnist"}[scale])
    return _part("cross_lipschitz").run(cfg, out)


def run_spatial(scale: str, out: Path) -> dict:
    """Rotations and translations; the net is the attacks part's where that part trained one with the same
    config (the quick job: the same 784-256-10 MLP, 2 epochs on 60k), else trained here."""
    from robustjax import data, report, train
    cfg = _config("spatial", {"quick": "main", "cpu": "mnist", "full": "mnist"}[scale])
    tc = train.TrainConfig(model=cfg["model"], model_config=dict(cfg["model_config"]), dataset=cfg["dataset"],
                           optimizer=cfg["optimizer"], learning_rate=cfg["learning_rate"], schedule=cfg["schedule"],
                           epochs=cfg["epochs"], batch_size=cfg["batch_size"], train_size=cfg["train_size"],
                           seed=cfg["seed"], progress=False)
    trained = _TRAINED.get(_train_key(tc))
    if trained is None:
        return _part("spatial").run(cfg, out)
    state, acc, seconds = trained
    result = _part("spatial").run(cfg, out, trained=(state, data.load_split_pair(cfg["dataset"])[1], acc, seconds))
    result["model_from"] = "attacks"
    result.setdefault("setting", f"MNIST, MLP 784-{'-'.join(map(str, cfg['model_config']['widths']))}-10 ReLU, "
                                 f"{cfg['optimizer']}, {cfg['epochs']} epochs: the attacks part's net (the same "
                                 f"training config), not retrained here (test accuracy {acc:.4f})")
    report.write_json(out / "results.json", result)
    return result


def run_ood(scale: str, out: Path) -> dict:
    return _part("far_from_data").run(_config("ood", {"quick": "main", "cpu": "mnist", "full": "mnist"}[scale]), out)


ATTACK_SCALES = {
    # hidden units, epochs, points for the fast attacks, points for the region attack in l2, its regions, its
    # restarts (classes searched from after the main search; None: the library's default, every class), CW steps;
    # "other": the region attack in l1 and l_inf (points, regions, restarts), None: as in l2. The verdict rests on
    # l2 alone (region against CW and DeepFool); l1 and l_inf fill the table only, on fewer points: with 100
    # regions on the CPU scale's net they cost 32 s (l1) and 57 s (l_inf) per point against 3.7 s in l2 (2-core
    # CPU, idle, 2026-12-06; 38, 67 and 2.5 s in the CPU scale's run at load 1-3; their per-region problems are
    # LPs solved by HiGHS).
    "quick": dict(widths=(256,), epochs=2, train_size=None, n=100, n_region=10, n_regions=20, restarts=2, cw_steps=200,
                  other=dict(n_region=10, n_regions=10, restarts=0)),
    "cpu": dict(widths=(1024,), epochs=5, train_size=None, n=1000, n_region=100, n_regions=100, restarts=None,
                cw_steps=1000, other=dict(n_region=20, n_regions=100, restarts=None)),
    "full": dict(widths=(1024,), epochs=10, train_size=None, n=1000, n_region=1000, n_regions=400, restarts=None,
                 cw_steps=1000, other=dict(n_region=50, n_regions=400, restarts=None)),
}

# nets trained by one part and reused by a later one with the same training config (the quick job's attacks
# and spatial parts train the same 784-256-10 ReLU MLP): {config key: (state, test accuracy, train seconds)}
_TRAINED: dict = {}


def _train_key(cfg) -> str:
    import json
    return json.dumps(cfg.to_json(), sort_keys=True, default=str)


def fit_shared(cfg, train_xy, test_xy):
    """train.fit(cfg, train_xy) and the test accuracy, or the net an earlier part trained with the same config
    (on the same data: the full MNIST training set). Returns (state, test accuracy, train seconds, shared)."""
    from robustjax import train
    key = _train_key(cfg)
    if key in _TRAINED:
        return (*_TRAINED[key], True)
    t0 = time.perf_counter()
    state = train.fit(cfg, train_xy)
    seconds = time.perf_counter() - t0
    acc = train.evaluate(state, *test_xy)["accuracy"]
    _TRAINED[key] = (state, acc, seconds)
    return state, acc, seconds, False


def run_attacks(scale: str, out: Path) -> dict:
    """Minimal perturbations on an MNIST ReLU net: every attack and norm on the same points, the region
    attack's l2 distance against Carlini-Wagner's and DeepFool's, figures for p = 1, 2, inf."""
    import jax
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robustjax import attacks, data, report, train
    from robustjax.attacks import region

    s = ATTACK_SCALES[scale]
    (xtr, ytr), (xte, yte) = data.load_split_pair("mnist")
    cfg = train.TrainConfig(model="mlp", model_config={"widths": s["widths"], "act": "relu"}, optimizer="adam",
                            learning_rate=1e-3, schedule="piecewise", epochs=s["epochs"],
                            train_size=s["train_size"], progress=False)
    state, acc, train_s, _ = fit_shared(cfg, (xtr, ytr), (xte, yte))
    f = state.logits_fn()
    key = jax.random.key(0)
    x, y = xte[:s["n"]], yte[:s["n"]]
    runs = {
        ("deepfool", 2): lambda: attacks.deepfool(f, x, y, p=2),
        ("cw", 2): lambda: attacks.cw(f, x, y, p=2, key=key, steps=s["cw_steps"], learning_rate=0.1),
        ("ddn", 2): lambda: attacks.ddn(f, x, y, p=2, key=key),
        ("pgd_minimal", 2): lambda: attacks.pgd_minimal(f, x, y, p=2, key=key),
        ("deepfool", np.inf): lambda: attacks.deepfool(f, x, y, p=np.inf),
        ("pgd_minimal", np.inf): lambda: attacks.pgd_minimal(f, x, y, p=np.inf, key=key),
        ("pgd_minimal", 1): lambda: attacks.pgd_minimal(f, x, y, p=1, key=key),
    }
    results = {}
    for (name, p), fn in runs.items():
        results[(name, p)] = fn()
    m = s["n_region"]
    k = s["n_regions"]
    rest = s["other"] or dict(n_region=m, n_regions=k, restarts=s["restarts"])   # l1 and l_inf
    steps = sorted({1, max(1, k // 4), max(1, k // 2)}) if k else ()   # the l2 run's points after these: "in action"
    for p in (2, np.inf, 1):
        mp, kp, rp = (m, k, s["restarts"]) if p == 2 else (rest["n_region"], rest["n_regions"], rest["restarts"])
        results[("region", p)] = region(f, x[:mp], y[:mp], p=p, key=key, n_regions=kp, restarts=rp,
                                        snapshots=steps if p == 2 else (), progress=scale != "quick")
    rows = []
    for (name, p), r in results.items():
        ok = r.success & (r.distance > 0)
        rows.append({"attack": name, "p": "inf" if p == np.inf else int(p), "points": len(r.distance),
                     "success": float(np.mean(r.success)), "median": float(np.median(r.distance)),
                     "mean": float(np.mean(r.distance[ok])) if ok.any() else float("inf"),
                     "ms_per_example": 1e3 * float(np.mean(r.time_s))})
    # the talk's claim, on the points the region attack ran on
    ratio_rows = []
    for other in ("cw", "deepfool", "ddn", "pgd_minimal"):
        a, b = results[("region", 2)].distance, results[(other, 2)].distance[:m]
        both = np.isfinite(a) & np.isfinite(b) & (b > 0)
        ratio_rows.append({"region l2 over": other, "points": int(both.sum()),
                           "median ratio": float(np.median(a[both] / b[both])) if both.any() else float("nan"),
                           "region better on": float(np.mean(a[both] < b[both] * (1 - 1e-3))) if both.any() else float("nan"),
                           "median of region": float(np.median(a[both])) if both.any() else float("nan"),
                           "median of other": float(np.median(b[both])) if both.any() else float("nan")})
    figs = []
    best = {p: attacks.best_of([r for (nm, q), r in results.items() if q == p and len(r.distance) == len(x)])
            for p in (1, 2, np.inf)}
    idx = int(np.argmax(best[2].distance > 0))
    fig = attacks.plot_adversarial_examples(x, y, [best[1], best[2], best[np.inf]], indices=[idx])
    fig.savefig(out / "adversarial_examples_p1_p2_pinf.png", dpi=110)
    plt.close(fig)
    figs.append("adversarial_examples_p1_p2_pinf.png")
    r2 = results[("region", 2)]
    moved = np.flatnonzero(r2.success & (r2.distance > 0))
    if len(moved):   # the region attack in action on the first point it attacked (from the cheap attacks' starts)
        fig = attacks.plot_attack_in_action(x[:m], r2, index=int(moved[0]), labels=y[:m])
        fig.savefig(out / "attack_in_action_mnist.png", dpi=110)
        plt.close(fig)
        figs.append("attack_in_action_mnist.png")
    for p in (2, np.inf):
        fig = attacks.plot_robust_accuracy({nm: r for (nm, q), r in results.items() if q == p and len(r.distance) == len(x)})
        tag = "inf" if p == np.inf else "2"
        fig.savefig(out / f"robust_accuracy_l{tag}.png", dpi=110)
        plt.close(fig)
        figs.append(f"robust_accuracy_l{tag}.png")
    setting = (f"MNIST, MLP 784-{'-'.join(map(str, s['widths']))}-10 ReLU, Adam, {s['epochs']} epochs on "
               f"{s['train_size'] or 60000} images (test accuracy {acc:.4f}, trained in {train_s:.0f} s); "
               f"first {s['n']} test points; the region attack in l2 on the first {m} with {k} regions and "
               f"{_restarts_text(s['restarts'])}, in l1 and l_inf on the first {rest['n_region']} with "
               f"{rest['n_regions']} regions and {_restarts_text(rest['restarts'])}; "
               f"Carlini-Wagner {s['cw_steps']} Adam steps (learning rate 0.1) x 9 binary-search steps")
    (out / "attacks.md").write_text(report.markdown_table(rows) + "\n" + report.markdown_table(ratio_rows))
    result = {"setting": setting, "test_accuracy": acc, "rows": rows, "region_ratios": ratio_rows, "figures": figs}
    report.write_json(out / "results.json", result)
    return result


def _restarts_text(restarts) -> str:
    if restarts is None:
        return "restarts from every other class"
    return "no restarts" if restarts == 0 else f"restarts from {restarts} other classes"


RUNNERS = {"landscape": run_landscape, "random_labels": run_random_labels, "guarantees": run_guarantees, "attacks": run_attacks,
           "spatial": run_spatial, "ood": run_ood}
TITLES = {"landscape": "Why training works: wide layers, skip networks, rand against SGD",
          "random_labels": "Why training works (2): fitting random labels and random inputs (Zhang et al.)",
          "guarantees": "Formal guarantees: Theorem 2.1 and cross-Lipschitz regularization",
          "attacks": "Minimal adversarial perturbations in l1, l2 and l_inf",
          "spatial": "Beyond l_p balls: rotations and translations",
          "ood": "Outlook: low confidence far from the data"}
TALK_KEYS = {"landscape": ("widths", "skip"), "random_labels": ("random_labels",), "guarantees": ("guarantees",), "attacks": ("attacks",),
             "spatial": ("spatial",), "ood": ("ood",)}

# GPU-hours of each part at the full scale (`robustjax --full --plan` prints them, the full report's preamble
# repeats them): estimates, each from the basis it states, not measurements of this script end to end (no GPU
# has run `--full` yet). Ranges: train steps varied 1.5-2x between two fresh GPU machines of the same kind
# (benchmarks/parallel.md). The parts other than landscape and attacks use the CPU scale's configs at --full too.
FULL_ESTIMATES = {
    "landscape": dict(
        hours=(2.0, 4.0),
        setting="width table; CIFAR-10 skip table at the talk's scale (configs/landscape.py 'full': N = 50,000, "
                "10,000 test images, full-width VGG11 / VGG16 / DenseNet121, M = 65,536 skip units, plain and "
                "skip-SGD x sigmoid and softplus = 12 trainings of 100 SGD epochs = 39,100 steps each at batch 128, "
                "6 rand least-squares fits); bad-news figure",
        basis="1.6 GPU-hours of train steps at the step times measured on an H100 (benchmarks/parallel.md: "
              "vgg11_skip 2.1 ms, vgg16_skip 3.3 ms, densenet121_skip 30.8 ms per step; 0.09 + 0.15 + 1.34 h), "
              "x1-2 for the step-time spread between machines, plus compilation (up to 104 s per net measured, "
              "~0.15 h for 12 nets), evaluation, per-epoch checkpoints and the 6 rand fits (a 50,000 x 65,536 "
              "feature matrix each, 'minutes' by benchmarks/parallel.md, not measured at this size); the config's "
              "own budget, 6-10 GPU-hours, is the cautious bound"),
    "random_labels": dict(
        hours=(0.01, 0.05),
        setting="configs/random_labels.py 'mnist' (the CPU scale's): MLP 784-512-512-10, N = 5,000, 120 epochs "
                "x 3 settings (true labels, random labels, random inputs)",
        basis="14,040 MLP steps at batch 128 (0.2-0.45 ms per step for the one-hidden-layer MLP on an H100, "
              "benchmarks/parallel.md) plus per-epoch evaluation and compilation; the config states about 1 min "
              "on 2 CPU cores"),
    "guarantees": dict(
        hours=(0.05, 0.2),
        setting="configs/cross_lipschitz.py 'mnist' (the CPU scale's): 8 one-hidden-layer MNIST nets x 4 epochs "
                "on 30k images, 2 kernel machines, 2 CIFAR-10 nets x 3 epochs; certified radii on 2,000 test "
                "points, the linearized attack on 500",
        basis="about 9,000 train steps (the cross-Lipschitz ones cost more per step) plus certification; the "
              "config states ~10 CPU-min on 2 cores (~40 min niced on busy cores)"),
    "attacks": dict(
        hours=(5.0, 21.0),
        setting="ATTACK_SCALES['full']: MLP 784-1024-10 ReLU, 10 epochs; DeepFool, CW (1000 steps x 9), DDN, "
                "minimal PGD on 1,000 test points; the region attack on the same 1,000 points in l2 and on the "
                "first 50 in l1 and l_inf, with 400 regions and restarts from every other class, in one process",
        basis="the region attack dominates: 3.0 s per MNIST point with 50 regions in one process on the H100 "
              "machine (model on the GPU), 1.0 s on the 2-core CPU (benchmarks/parallel.md), scaled linearly to "
              "400 regions (8-24 s per point) x 1,000 points in l2 (2.2-6.7 h); l1 and l_inf cost 9-15x and 15-27x l2 "
              "per point on the 2-core CPU (100 regions, two measurements; taken the same here): 50 points each, "
              "2.7-14 h; "
              "the other attacks are minutes (CW 1.9 ms per example on the GPU). The region attack's process pool "
              "(0.37 s per point with 50 regions over 16 processes, measured) would make it ~2.5 h; this part "
              "does not use it yet"),
    "spatial": dict(
        hours=(0.02, 0.1),
        setting="configs/spatial.py 'mnist' (the CPU scale's): MMR CNN, 2 epochs on 60k; grid of 31 angles x 7 "
                "x 7 shifts and a first-order search on 500 test points",
        basis="938 CNN steps (0.7 ms per step for mmr_cnn at batch 128 on an H100, benchmarks/parallel.md) and "
              "760k forward passes of the grid; the config states about 3 min on 2 busy CPU cores"),
    "ood": dict(
        hours=(0.02, 0.2),
        setting="configs/ood.py 'mnist' (the CPU scale's): MMR CNN, plain / CEDA / ACET, 2 epochs on 30k each; "
                "adversarial noise (40 steps x 2 restarts), the alpha scan on 200 noise points",
        basis="about 1,400 CNN steps (ACET with 5 PGD steps each) plus evaluation; the config states about 6 "
              "min on 2 busy CPU cores"),
}


def _hours(lo: float, hi: float) -> str:
    fmt = (lambda h: f"{h:.2f}".rstrip("0").rstrip(".")) if hi < 1 else (lambda h: f"{h:.1f}".rstrip("0").rstrip("."))
    return f"{fmt(lo)}-{fmt(hi)}"


def plan_text(scale: str, parts) -> str:
    """What `robustjax [--quick|--full] --plan` prints: the parts in order, and at the full scale each one's
    setting, estimated GPU-hours and their basis (FULL_ESTIMATES), the total, and how to resume."""
    lines = [f"robustjax{' --quick' if scale == 'quick' else (' --full' if scale == 'full' else '')}: "
             f"{len(parts)} part(s), run in this order, each into OUT/<part>/ (results.json, tables, figures)"]
    if scale != "full":
        lines += [f"  {p:14s} {TITLES[p]}" for p in parts]
        lines.append("GPU-hour estimates are stated for --full only (this scale runs on the CPU).")
        return "\n".join(lines)
    lines.append("Estimated GPU-hours (estimates from the stated basis, not measurements; one H100-class GPU):")
    for p in parts:
        e = FULL_ESTIMATES[p]
        lines += [f"  {p:14s} {_hours(*e['hours']):>9s} GPU-hours  {TITLES[p]}",
                  f"      setting: {e['setting']}", f"      basis:   {e['basis']}"]
    lo = sum(FULL_ESTIMATES[p]["hours"][0] for p in parts)
    hi = sum(FULL_ESTIMATES[p]["hours"][1] for p in parts)
    lines.append(f"  {'total':14s} {_hours(lo, hi):>9s} GPU-hours (estimate)")
    if "landscape" in parts:
        lines.append("The CIFAR-10 skip table alone: --full --parts landscape, "
                     f"{_hours(*FULL_ESTIMATES['landscape']['hours'])} GPU-hours (estimate).")
    lines.append("Resumable per part: rerun the same command with --out DIR --resume; finished parts (results.json "
                 "and a completion record) are reused, an interrupted one restarts, the landscape part's SGD nets "
                 "from their last per-epoch checkpoint in DIR/landscape/ckpt (and its finished rows are kept).")
    return "\n".join(lines)


def section(part: str, folder: Path, seconds: float, result: dict, reused: str | None = None):
    from robustjax import report
    talk = "\n".join(f"- **The talk ({k}):** {TALK[k]}" for k in TALK_KEYS[part])
    setting = result.get("setting") if isinstance(result, dict) else None
    when = f" (an earlier run's, finished {reused}; reused by --resume)" if reused else ""
    text = talk + (f"\n\n**Our setting:** {setting}" if isinstance(setting, str) else "") + \
        f"\n\nWall time of this part: {seconds:.0f} s{when}. Raw numbers: `{folder.name}/results.json`."
    tables = [p.read_text() for p in sorted(folder.glob("*.md"))]
    figures = [f"{folder.name}/{p.name}" for p in sorted(folder.glob("*.png"))]
    return report.Section(TITLES[part], text, tables, figures)


# parts whose training resumes inside the part from checkpoints under OUT/<part>/ckpt (train.fit's run folders);
# the others restart from scratch when interrupted (minutes at every scale, but for the full attacks part,
# whose region attack keeps no partial state)
CHECKPOINTED = ("landscape",)
DONE = "part.json"   # written into OUT/<part>/ after its results.json: the part finished at the scale it records


def finished_part(folder: Path, scale: str) -> tuple[dict | None, str]:
    """(the completion record of OUT/<part>, "") when that part finished at `scale`: its part.json (written
    last) records this scale, its results.json reads and every figure results.json lists exists; else (None,
    why it must run)."""
    from robustjax import report
    done, res = folder / DONE, folder / "results.json"
    if not res.is_file():
        return None, "no results.json"
    if not done.is_file():
        return None, "results.json without a completion record (interrupted, or written by an older version)"
    try:
        record, result = report.read_json(done), report.read_json(res)
    except (OSError, ValueError) as e:
        return None, f"unreadable ({type(e).__name__})"
    if record.get("scale") != scale:
        return None, f"finished at the {record.get('scale')} scale, not {scale}"
    figures = result.get("figures", []) if isinstance(result, dict) else []
    missing = [f for f in figures if isinstance(f, str) and not (folder / f).is_file()]
    if missing:
        return None, f"figure(s) missing: {', '.join(missing)}"
    return record, ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="robustjax", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="minutes on a 2-core CPU, embedded MNIST only")
    g.add_argument("--full", action="store_true", help="the talk's scale (needs a GPU)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--out", default=None, help="report folder (default reports/<scale>-<timestamp>)")
    ap.add_argument("--resume", action="store_true",
                    help="continue the report folder --out: reuse the parts that finished there at this scale, rerun "
                         "the others (the landscape part's nets from their checkpoints), rebuild the report")
    ap.add_argument("--plan", action="store_true",
                    help="print the parts, their settings and (with --full) estimated GPU-hours, then exit")
    args = ap.parse_args(argv)
    scale = "quick" if args.quick else ("full" if args.full else "cpu")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"unknown part(s) {bad}; known: {', '.join(PARTS)}")
    if args.plan:
        print(plan_text(scale, parts))
        return 0
    if args.resume and not args.out:
        ap.error("--resume needs --out, the report folder to continue")
    if scale == "full" and not has_gpu():
        print("robustjax --full runs the talk's scale (CIFAR-10 skip networks at width 64, 100 epochs each; the "
              "region attack on 1000 points with 400 regions): it needs a GPU, and none is visible to JAX here. "
              "Run `robustjax` for the reduced CPU scale or `robustjax --quick` for the minutes-long version; "
              "`robustjax --full --plan` prints the full scale's parts and estimated GPU-hours.",
              file=sys.stderr)
        return 2
    if scale != "quick" and any(p in parts for p in ("landscape",)) and not has_cifar10():
        print("the landscape part's skip table needs CIFAR-10: put cifar10.npz in a folder and set "
              "ROBUSTJAX_DATA to it (../shared/data has it), or leave the part out with --parts.", file=sys.stderr)
        return 2
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"reports/{scale}-{stamp}")
    out.mkdir(parents=True, exist_ok=True)
    from robustjax import report
    load_start = read_load()
    sections, timings, cpu, compiled, reused = [], {}, {}, {}, {}
    count_compiles()
    t_all, c_all = time.perf_counter(), time.process_time()
    for i, part in enumerate(parts):
        folder = out / part
        if args.resume:
            record, why = finished_part(folder, scale)
            if record is not None:
                timings[part], cpu[part], compiled[part] = record["seconds"], record["cpu_seconds"], record["compile"]
                reused[part] = record.get("finished", "earlier")
                sections.append(section(part, folder, timings[part], report.read_json(folder / "results.json"),
                                        reused=reused[part]))
                print(f"[{i + 1}/{len(parts)}] {TITLES[part]} ({scale}): reused, finished {reused[part]} "
                      f"({timings[part]:.0f} s then) -> {folder}", flush=True)
                continue
            print(f"[{i + 1}/{len(parts)}] {TITLES[part]} ({scale}): running ({why})", flush=True)
        else:
            print(f"[{i + 1}/{len(parts)}] {TITLES[part]} ({scale})", flush=True)
        folder.mkdir(exist_ok=True)
        (folder / DONE).unlink(missing_ok=True)      # until this run of the part finishes
        # checkpoints at the full scale, and wherever a run may be resumed
        kw = {"workdir": folder / "ckpt"} if part in CHECKPOINTED and (scale == "full" or args.resume) else {}
        t0, c0, k0, n0 = time.perf_counter(), time.process_time(), _COMPILE["seconds"], _COMPILE["count"]
        result = RUNNERS[part](scale, folder, **kw)
        timings[part] = time.perf_counter() - t0
        cpu[part] = time.process_time() - c0
        compiled[part] = {"seconds": _COMPILE["seconds"] - k0, "programs": _COMPILE["count"] - n0}
        report.write_json(folder / DONE, {"scale": scale, "seconds": timings[part], "cpu_seconds": cpu[part],
                                          "compile": compiled[part],
                                          "finished": datetime.datetime.now().isoformat(timespec="seconds")})
        sections.append(section(part, folder, timings[part], result))
        print(f"      done in {timings[part]:.0f} s -> {folder}", flush=True)
    if reused:
        print(f"reused from {out} (--resume): {', '.join(reused)}; run now: "
              f"{', '.join(p for p in timings if p not in reused) or 'none'}", flush=True)
    import jax
    from robustjax import verdicts
    # the verdicts are computed from the numbers the parts wrote (read back from their results.json)
    written = {part: report.read_json(out / part / "results.json") for part in timings
               if (out / part / "results.json").is_file()}
    found = verdicts.all_verdicts(written)
    total = time.perf_counter() - t_all
    cpu["total"] = time.process_time() - c_all
    if reused:   # the report's totals cover every part, the reused ones at their earlier times
        total += sum(timings[p] for p in reused)
        cpu["total"] += sum(cpu[p] for p in reused)
    load_end = read_load()
    load_text = "" if None in (load_start, load_end) else f", 1-minute load {load_start:.2f} at the start and {load_end:.2f} at the end"
    scale_text = {"quick": "every part trained just enough to test its claim, on the embedded MNIST (no download), "
                           "within minutes on a 2-core CPU; each section states its setting; the numbers are not "
                           "the paper's scale",
                  "cpu": "the reduced CPU scale; see each part", "full": "the talk's scale; see each part"}[scale]
    pre = (f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by `robustjax"
           f"{' --quick' if scale == 'quick' else (' --full' if scale == 'full' else '')}` on "
           f"{os.cpu_count()} CPU cores ({platform.machine()}), JAX {jax.__version__} on {jax.devices()[0].platform}"
           f"{load_text}. Scale: **{scale}** ({scale_text}). "
           "Every table of ours stands under the talk's claim it checks; settings are stated beside the numbers.\n\n"
           f"Wall time: {total:.0f} s in all; " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
           + " (compilation included). CPU time of this process (all threads; on a busy machine it inflates less "
           f"than the wall time): {cpu['total']:.0f} s; " + ", ".join(f"{k} {cpu[k]:.0f} s" for k in timings) + ". Of the wall "
           "time, tracing and compiling (JAX's compile events): " + ", ".join(
               f"{k} {v['seconds']:.0f} s ({v['programs']} programs)" for k, v in compiled.items()) + ".")
    if reused:
        pre += (f"\n\nResumed (`--resume`): {', '.join(reused)} reused from an earlier run into this folder "
                f"(finished {', '.join(f'{p} {w}' for p, w in reused.items())}; their times are that run's), "
                f"{', '.join(p for p in timings if p not in reused) or 'no part'} run now.")
    if scale == "full":
        lo, hi = (sum(FULL_ESTIMATES[p]["hours"][j] for p in timings) for j in (0, 1))
        pre += ("\n\nEstimated GPU-hours per part before the run (`robustjax --full --plan`; estimates from the basis "
                "stated in scripts/reproduce.py FULL_ESTIMATES, not measurements; the wall times above are the "
                "measurements): " + ", ".join(f"{p} {_hours(*FULL_ESTIMATES[p]['hours'])}" for p in timings)
                + f"; total {_hours(lo, hi)}.")
    verdict_section = report.Section(
        "Verdicts: the talk's claims at this scale",
        "Each line is computed by robustjax/verdicts.py from the numbers in this report (the parts' results.json) "
        "by the rule it states; `verdicts.json` holds the same.\n\n" + "\n".join(f"- {v.line()}" for v in found))
    (out / "report.md").write_text(report.render("robustjax: the talk, reproduced", [verdict_section] + sections,
                                                 preamble=pre))
    report.write_json(out / "verdicts.json", [dataclasses.asdict(v) for v in found])
    report.write_json(out / "timings.json", {**timings, "total": total, "load_start": load_start, "load_end": load_end,
                                             "cpu_seconds": cpu, "compile": compiled})
    print(f"report: {out / 'report.md'}  ({total:.0f} s in all: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ")")
    for v in found:
        print(f"  {v.outcome:27s} {v.claim}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
