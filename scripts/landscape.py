"""Why training works: the layer-width table, skip networks (rand vs SGD) on CIFAR-10, and the
"bad news" figure (methods.md section 3; configs in scripts/configs/landscape.py).

    nice -n 10 python scripts/landscape.py --config quick --out runs/landscape
    python scripts/landscape.py --config quick --parts widths --out /tmp/ls     (the width table only, ~30 s)

`run(config, out_dir=None) -> dict` returns every number (and writes results.json, widths.md, skip.md and
badnews.png into out_dir when given). Every number is computed here: the width table from the models'
definitions by shape inference, the accuracies by training/fitting; the talk's numbers are printed
beside ours, labelled "talk", for comparison only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# the talk's table "Are practical networks that wide?" (M = max_k n_k, its layer k, M > N)
TALK_WIDTHS = {
    "VGG(A-E)": (3_000_000, 1, True), "InceptionV3": (1_300_000, 3, True), "InceptionV4": (1_300_000, 3, True),
    "SqueezeNet": (1_180_000, 1, False), "ENet": (1_000_000, 1, False), "GoogLeNet": (800_000, 1, False),
    "ResNet": (800_000, 1, False), "Xception": (700_000, 1, False),
}
ROW_OF_MODEL = {"vgg11": "VGG(A-E)", "vgg13": "VGG(A-E)", "vgg16c": "VGG(A-E)", "vgg16": "VGG(A-E)",
                "vgg19": "VGG(A-E)", "inception_v3": "InceptionV3", "inception_v4": "InceptionV4",
                "squeezenet": "SqueezeNet", "enet": "ENet", "googlenet": "GoogLeNet", "resnet18": "ResNet",
                "resnet50": "ResNet", "xception": "Xception", "densenet121": None}
# the talk's CIFAR-10 table: test accuracy % (sigmoid, softplus)
TALK_SKIP = {
    ("vgg11", "plain"): (10.0, 78.92), ("vgg11", "skip_rand"): (62.81, 64.49), ("vgg11", "skip_sgd"): (72.51, 80.57),
    ("vgg16", "plain"): (10.0, 81.33), ("vgg16", "skip_rand"): (61.57, 61.46), ("vgg16", "skip_sgd"): (70.61, 81.91),
    ("densenet121", "plain"): (86.41, 89.31), ("densenet121", "skip_rand"): (52.07, 55.39),
    ("densenet121", "skip_sgd"): (81.47, 86.76),
}
ACT_COL = {"sigmoid": 0, "softplus": 1}


def load_config(arg: str = "quick") -> dict:
    from robustjax.experiments.configs import load_config as load
    return load("landscape", arg)


def _defaults() -> dict:
    return load_config("quick")


# ----------------------------------------------------------------------------- widths

def width_table(config: dict) -> dict:
    """M = max_k n_k, its k and layer, M > N, for each zoo model at its ImageNet input size."""
    from robustjax import models
    from robustjax.landscape import widths
    from robustjax.models import zoo
    N = config["imagenet_n"]
    rows = []
    for name in config["widths_models"]:
        t0 = time.perf_counter()
        model = models.build(name)
        shape = zoo.IMAGENET_INPUT[name]
        report = widths.wide_layer_check(model, shape, N)
        top = report.widest
        row = dict(model=name, input=list(shape[1:]), M=top.units, k=top.k, layer=top.name,
                   shape=list(top.shape), exceeds_N=top.units > N, n_layers=len(report.layers),
                   wide_layers=[c.layer.k for c in report.wide],
                   pyramidal_from_widest=widths.pyramidal_from(report.layers, top.k)[0],
                   failures=[f"{c.what}: {c.reason}" for c in report.failures()],
                   seconds=round(time.perf_counter() - t0, 2))
        talk = TALK_WIDTHS.get(ROW_OF_MODEL.get(name))
        if talk is not None:
            row.update(talk_M=talk[0], talk_k=talk[1], talk_exceeds=talk[2])
        rows.append(row)
    return dict(N=N, rows=rows)


def widths_markdown(res: dict) -> str:
    lines = [f"N = {res['N']:,} (ILSVRC-2012 training images). Ours: computed by `jax.eval_shape` from "
             "robustjax/models/zoo.py; talk: the slide's numbers.", "",
             "| model | input | M = max_k n_k | k | layer (H x W x C) | M > N | talk M | talk k | talk M > N |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        shp = " x ".join(str(s) for s in r["shape"])
        talk = (f"{r['talk_M'] // 1000}K | {r['talk_k']} | {'yes' if r['talk_exceeds'] else 'NO'}"
                if "talk_M" in r else "- | - | -")
        lines.append(f"| {r['model']} | {r['input'][0]} | {r['M']:,} | {r['k']} | {r['layer']} ({shp}) | "
                     f"{'yes' if r['exceeds_N'] else 'NO'} | {talk} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- skip table

def _model_config(config: dict, arch: str, act: str, variant: str) -> tuple[str, dict]:
    base = dict(config["vgg"]) if arch.startswith("vgg") else dict(config["densenet"])
    base["act"] = act
    if variant == "plain":
        return arch, base
    base["skip_units"] = config["skip_units"]
    if arch.startswith("vgg"):
        base.pop("stem", None)
    return f"{arch}_skip", base


def skip_table(config: dict, data, on_row=None, workdir=None, done=None) -> dict:
    """The skip/rand/SGD table. With a `workdir`, each SGD net trains in workdir/<model>_<act> (train.fit's
    checkpoints: an interrupted net resumes from its last epoch, a finished one is restored, not retrained);
    `done` maps (arch, act, variant) to rows finished by an earlier run with the same setting, reused as they are."""
    from robustjax import models, train
    from robustjax.landscape import lstsq
    (xtr, ytr), (xte, yte) = data
    rows = []
    for arch in config["archs"]:
        for act in config["acts"]:
            for variant in config["variants"]:
                name, mcfg = _model_config(config, arch, act, variant)
                if done and (arch, act, variant) in done:
                    rows.append(done[(arch, act, variant)])
                    print(f"  {arch:12s} {variant:10s} {act:9s} reused from the earlier run's results_partial.json",
                          flush=True)
                    continue
                t0 = time.perf_counter()
                row = dict(arch=arch, act=act, variant=variant, model=name, model_config=mcfg,
                           n_train=len(xtr), n_test=len(xte))
                if variant == "skip_rand":
                    model = models.build(name, num_classes=10, **mcfg)
                    variables = jax.jit(model.init)(jax.random.key(config["seed"]), xtr[:1])
                    fit = lstsq.rand_fit(model, variables, xtr, ytr, method=config["lstsq_method"])
                    test_logits = lstsq.predict(model, fit.variables, xte)
                    row.update(method=f"rand ({fit.info.method} least squares, hidden weights random)",
                               M=int(model.apply(variables, xtr[:1], return_features=True)[1].shape[1]),
                               P=fit.info.P, train_accuracy=fit.train_accuracy, train_residual=fit.train_residual,
                               zero_train_error=fit.zero_train_error, lstsq_seconds=fit.info.time_s,
                               test_accuracy=float(np.mean(np.argmax(test_logits, -1) == yte)))
                else:
                    tcfg = dict(config["train"])
                    loss = tcfg.pop("loss")
                    cfg = train.TrainConfig(model=name, model_config=mcfg, dataset=config["dataset"], loss=loss,
                                            epochs=config["epochs"][arch], seed=config["seed"], progress=False,
                                            eval_batch_size=500, **tcfg)
                    state = train.fit(cfg, (xtr, ytr), None,
                                      None if workdir is None else Path(workdir) / f"{name}_{act}")
                    tr = train.evaluate(state, xtr, ytr, loss=loss, batch_size=500)
                    te = train.evaluate(state, xte, yte, loss=loss, batch_size=500)
                    row.update(method=f"SGD, whole network ({cfg.epochs} epochs, {cfg.optimizer} lr "
                                      f"{cfg.learning_rate} momentum {cfg.momentum} {cfg.schedule}, batch "
                                      f"{cfg.batch_size}, {loss})",
                               train_accuracy=tr["accuracy"], test_accuracy=te["accuracy"])
                talk = TALK_SKIP.get((arch, variant))
                if talk is not None:
                    row["talk_test_accuracy"] = talk[ACT_COL[act]]
                row["seconds"] = round(time.perf_counter() - t0, 1)
                print(f"  {arch:12s} {variant:10s} {act:9s} train {row['train_accuracy'] * 100:6.2f} % "
                      f"test {row['test_accuracy'] * 100:6.2f} % (talk {row.get('talk_test_accuracy', '-')}) "
                      f"{row['seconds']:.0f} s", flush=True)
                rows.append(row)
                if on_row is not None:
                    on_row(rows)
    return dict(rows=rows)


def skip_markdown(res: dict, config: dict) -> str:
    s = res["setting"]
    ds = {"cifar10": "CIFAR-10", "mnist": "MNIST zero-padded to 32 x 32 (NOT the talk's CIFAR-10)"}.get(
        s.get("dataset", "cifar10"), s.get("dataset"))
    lines = [f"Setting: {ds}, N = {s['n_train']:,} training images (the first), {s['n_test']:,} test images; "
             f"VGG {s['vgg']}, DenseNet {s['densenet']}; M = {s['skip_units']} skip units; SGD "
             f"{s['train']}; epochs {s['epochs']}; seed {s['seed']}; one run per cell. Talk: N = 50,000, "
             "full-width nets, mean +- std over runs.", "",
             "| network | sigmoid (ours) | softplus (ours) | sigmoid (talk) | softplus (talk) | ours: train acc sigmoid / softplus |",
             "|---|---|---|---|---|---|"]
    label = {"plain": "", "skip_rand": "-skip (rand)", "skip_sgd": "-skip (SGD)"}
    arch_name = {"vgg11": "VGG11", "vgg16": "VGG16", "densenet121": "DenseNet121"}
    by = {(r["arch"], r["variant"], r["act"]): r for r in res["rows"]}
    for arch in config["archs"]:
        for variant in config["variants"]:
            cells, talk, tr = [], [], []
            for act in ("sigmoid", "softplus"):
                r = by.get((arch, variant, act))
                cells.append(f"{r['test_accuracy'] * 100:.2f}" if r else "-")
                tr.append(f"{r['train_accuracy'] * 100:.1f}" if r else "-")
                t = TALK_SKIP.get((arch, variant))
                talk.append(f"{t[ACT_COL[act]]:.2f}" if t else "-")
            lines.append(f"| {arch_name[arch]}{label[variant]} | {cells[0]} | {cells[1]} | {talk[0]} | {talk[1]} | "
                         f"{tr[0]} / {tr[1]} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- bad news

def bad_news(config: dict, out_dir: Path | None) -> dict:
    from robustjax.data import load
    from robustjax.landscape import single_neuron as sn
    c = config["neuron"]
    X, y = sn.auer_examples(c["per_dim"], c["dim"], c["ratio"])
    minima = sn.local_minima(X, y, per_dim=c["per_dim"])
    starts = sn.neuron_restarts(X, y, jax.random.key(config["seed"]), n_starts=c["n_starts"])
    w = config["wide"]
    xm, ym = load("mnist", "train")
    xm = xm[:w["n"]].reshape(w["n"], -1)
    Y = np.eye(10)[ym[:w["n"]]]
    finals, curves = sn.wide_net_restarts(xm, Y, jax.random.key(config["seed"] + 1), hidden=w["hidden"],
                                          n_starts=w["n_starts"], maxiter=w["maxiter"], record=True)
    res = dict(neuron=dict(examples=len(X), dim=c["dim"], minima=len(minima.points), per_axis=list(minima.per_axis),
                           minima_losses=sorted(set(np.round(minima.losses, 6).tolist())),
                           global_min=float(minima.losses.min()),
                           restart_final_losses=np.round(starts[:, -1], 6).tolist(),
                           restarts_at_global=int(np.sum(starts[:, -1] <= minima.losses.min() + 1e-6)),
                           distinct_restart_losses=len(set(np.round(starts[:, -1], 4).tolist()))),
               wide=dict(data=f"MNIST, first {w['n']} training digits, one-hot targets, squared loss",
                         hidden=w["hidden"], n_starts=w["n_starts"], maxiter=w["maxiter"],
                         final_losses=finals.tolist()))
    if out_dir is not None:
        _plot_bad_news(X, y, minima, starts, curves, res, out_dir / "badnews.png")
        res["figure"] = "badnews.png"
    return res


def _plot_bad_news(X, y, minima, starts, curves, res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import jax.numpy as jnp
    from robustjax.landscape import single_neuron as sn
    span = np.arcsinh(1.5 * np.abs(minima.points).max())
    u = np.linspace(-span, span, 241)
    U1, U2 = np.meshgrid(u, u, indexing="ij")
    W = np.stack([np.sinh(U1).ravel(), np.sinh(U2).ravel()], 1)
    with jax.enable_x64(True):
        L = np.asarray(jax.vmap(lambda w: sn.neuron_loss(w, jnp.asarray(X), jnp.asarray(y)))(jnp.asarray(W)))
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.6))
    cs = ax[0].contourf(U1, U2, L.reshape(U1.shape), levels=40, cmap="viridis")
    fig.colorbar(cs, ax=ax[0])
    ax[0].scatter(np.arcsinh(minima.points[:, 0]), np.arcsinh(minima.points[:, 1]), c="r", s=18, marker="x")
    ax[0].set(title=f"single sigmoid neuron, {len(X)} examples in 2-D:\n{len(minima.points)} local minima (verified)",
              xlabel="asinh(w1)", ylabel="asinh(w2)")
    ax[1].hist(starts[:, -1], bins=30, color="tab:red", alpha=0.8, label="single neuron")
    ax[1].hist(res["wide"]["final_losses"], bins=5, color="tab:blue", alpha=0.8, label="wide net")
    ax[1].set(title=f"final training loss, L-BFGS from random starts\nneuron: {len(starts)} starts, "
                    f"{res['neuron']['distinct_restart_losses']} distinct end values",
              xlabel="training loss (squared)", ylabel="starts")
    ax[1].legend()
    for cv in curves:
        ax[2].semilogy(np.maximum(cv, 1e-16))
    w = res["wide"]
    ax[2].set(title=f"wide net 784-{w['hidden']}-10 softplus on {w['data'].split(',')[1].strip()}\n"
                    f"n_1 = {w['hidden']} >= N: every start goes to ~0", xlabel="L-BFGS iteration",
              ylabel="training loss (squared)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main

def run(config: dict, out_dir: str | os.PathLike | None = None, workdir: str | os.PathLike | None = None) -> dict:
    """Runs config["parts"]; returns {"widths": ..., "skip": ..., "badnews": ..., "seconds": ...}.

    With a `workdir` the skip table resumes: its SGD nets train in checkpointed run folders under workdir
    (see skip_table), and the rows of out_dir/results_partial.json, written after each finished row, are
    reused when that file's setting equals this one's (the rand rows' least-squares fits are not checkpointed
    otherwise: a row interrupted mid-fit is redone)."""
    defaults = _defaults()
    bad = set(config) - set(defaults)
    if bad:
        raise ValueError(f"unknown config key(s) {sorted(bad)}; known: {sorted(defaults)}")
    config = {**defaults, **config}
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    results: dict = {"config": {k: v for k, v in config.items()}}
    t_all = time.perf_counter()
    if "widths" in config["parts"]:
        t0 = time.perf_counter()
        res = width_table(config)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        results["widths"] = res
        md = widths_markdown(res)
        print(md, flush=True)
        if out is not None:
            (out / "widths.md").write_text(md + "\n")
    if "skip" in config["parts"]:
        from robustjax.data import load
        if config["dataset"] == "cifar10":
            os.environ.setdefault("ROBUSTJAX_DATA", str(ROOT.parent / "shared" / "data"))
        xtr, ytr = load(config["dataset"], "train")
        xte, yte = load(config["dataset"], "test")
        if xtr.shape[1:3] == (28, 28):   # MNIST-like: zero-pad to 32 x 32 so that VGG's five poolings fit
            pad = ((0, 0), (2, 2), (2, 2), (0, 0))
            xtr, xte = np.pad(xtr, pad), np.pad(xte, pad)
        data = ((xtr[:config["n_train"]], ytr[:config["n_train"]]), (xte[:config["n_test"]], yte[:config["n_test"]]))
        del xtr, xte
        t0 = time.perf_counter()
        setting = {k: config[k] for k in ("dataset", "n_train", "n_test", "vgg", "densenet", "skip_units", "epochs",
                                          "train", "seed", "lstsq_method")}
        setting_json = json.loads(json.dumps(setting, default=str))

        def partial(rows):   # a killed run keeps the rows it finished
            if out is not None:
                (out / "results_partial.json").write_text(json.dumps({"skip": {"rows": rows, "setting": setting}},
                                                                     indent=1, default=str))

        done = {}
        if workdir is not None and out is not None and (out / "results_partial.json").is_file():
            try:
                earlier = json.loads((out / "results_partial.json").read_text())["skip"]
            except (OSError, ValueError, KeyError, TypeError):
                earlier = {}
            if earlier.get("setting") == setting_json:
                done = {(r["arch"], r["act"], r["variant"]): r for r in earlier.get("rows", [])}
        res = skip_table(config, data, on_row=partial, workdir=workdir, done=done)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        res["setting"] = setting
        results["skip"] = res
        md = skip_markdown(res, config)
        print(md, flush=True)
        if out is not None:
            (out / "skip.md").write_text(md + f"\n\nWall time of the table: {res['seconds']:.0f} s.\n")
    if "badnews" in config["parts"]:
        t0 = time.perf_counter()
        res = bad_news(config, out)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        results["badnews"] = res
        print(json.dumps({k: v for k, v in res["neuron"].items() if k != "restart_final_losses"}), flush=True)
        print("wide net final losses:", res["wide"]["final_losses"], flush=True)
    results["seconds"] = round(time.perf_counter() - t_all, 1)
    if out is not None:
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="quick", help="quick | full | test")
    p.add_argument("--parts", default=None, help="comma-separated subset of widths,skip,badnews")
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--archs", default=None, help="comma-separated subset of the skip table's architectures")
    p.add_argument("--merge", default=None, help="comma-separated result folders of skip runs to merge into --out")
    a = p.parse_args(argv)
    if a.parts and not set(a.parts.split(",")) <= {"widths", "skip", "badnews"}:
        p.error(f"--parts takes a comma-separated subset of widths,skip,badnews; got {a.parts!r}")
    if a.merge and not a.out:
        p.error("--merge needs --out")
    config = load_config(a.config)
    if a.merge:
        merge_skip([Path(d) for d in a.merge.split(",")], Path(a.out), config)
        return
    if a.parts:
        config["parts"] = tuple(a.parts.split(","))
    if a.archs:
        config["archs"] = tuple(a.archs.split(","))
    run(config, a.out)


def merge_skip(dirs, out: Path, config: dict) -> dict:
    """One skip table from several runs (e.g. one process per architecture, run side by side)."""
    parts = [json.loads((d / "results.json").read_text())["skip"] for d in dirs]
    res = dict(rows=[r for p in parts for r in p["rows"]], setting=parts[0]["setting"],
               seconds_per_run=[p["seconds"] for p in parts], runs=[str(d) for d in dirs])
    archs = tuple(dict.fromkeys(r["arch"] for r in res["rows"]))
    md = skip_markdown(res, {**config, "archs": archs})
    md += (f"\n\nWall time: {max(res['seconds_per_run']):.0f} s ({len(dirs)} processes side by side, "
           f"{', '.join(f'{s:.0f}' for s in res['seconds_per_run'])} s each).\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "skip.md").write_text(md)
    (out / "results.json").write_text(json.dumps({"skip": res}, indent=1, default=str))
    print(md)
    return res


if __name__ == "__main__":
    main()
