"""Minimal-norm attacks on MNIST: median/mean distance, success rate and time per example for every
attack and norm, with Foolbox 3's DeepFool and Carlini-Wagner run beside ours in the same process on
the same model and points.

Models: the one-hidden-layer ReLU net with 1024 units (`mlp`, widths (1024,)) and the MMR paper's
small CNN (`mmr_cnn`), each trained plainly and adversarially (PGD l_inf, see TRAIN below); their
variables are cached in benchmarks/results/models/ (flax msgpack, < 5 MB each).

    nice -n 10 python benchmarks/bench_attacks.py            # the full run (about an hour here)
    python benchmarks/bench_attacks.py --quick               # a smoke run on a few points

Writes benchmarks/results/attacks.json, benchmarks/attacks.md and the figures
benchmarks/results/attacks_curves_<model>.png (robust accuracy vs eps per norm, all attacks and the
per-example best) and benchmarks/results/attacks_examples_<model>.png (p = 1, 2, inf examples).
"""
from __future__ import annotations

import argparse
import datetime
import json
import time
import warnings
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")

from robustjax import train  # noqa: E402
from robustjax.attacks import (AttackResult, Box, best_of, cw, ddn, deepfool, lp_norm,  # noqa: E402
                               pgd_minimal, plot_adversarial_examples, plot_robust_accuracy)
from robustjax.attacks.result import finalize  # noqa: E402
from robustjax.data import load  # noqa: E402
from bench_train import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MODELS = RESULTS / "models"
INF = np.inf

# Training: Adam 1e-3, batch 128, constant schedule, the full 60k MNIST training set.
# Adversarial training: the regularizer term adversarial_training(1.0, p=inf, eps=0.1, steps=7),
# i.e. loss = CE(x) + CE(x_pgd), x_pgd from 7 PGD l_inf steps with a random start (Madry et al.).
TRAIN = {
    "mlp1024_plain": dict(model="mlp", model_config={"widths": (1024,), "act": "relu"}, epochs=3, at=None),
    "mlp1024_at": dict(model="mlp", model_config={"widths": (1024,), "act": "relu"}, epochs=3,
                       at=dict(p=INF, eps=0.1, steps=7)),
    "cnn_plain": dict(model="mmr_cnn", model_config={"act": "relu"}, epochs=3, at=None),
    "cnn_at": dict(model="mmr_cnn", model_config={"act": "relu"}, epochs=2, at=dict(p=INF, eps=0.1, steps=7)),
}

# Attack settings (ours and Foolbox's identical where both exist).
DF = dict(steps=50, overshoot=0.02)
CW = dict(steps=500, binary_search_steps=7, learning_rate=0.01, initial_const=0.1)


# ---------------------------------------------------------------------------------- models

def get_model(name, data, log, *, quick=False):
    """(logits_fn, test accuracy, train seconds or None): loads the cached variables or trains
    (quick: 1 epoch on 10k images, nothing cached)."""
    from robustjax.attacks import adversarial_training
    spec = TRAIN[name]
    cfg = train.TrainConfig(model=spec["model"], model_config=spec["model_config"], optimizer="adam",
                            learning_rate=1e-3, schedule="constant", epochs=1 if quick else spec["epochs"],
                            progress=False)
    (xtr, ytr), (xte, yte) = data
    if quick:
        xtr, ytr = xtr[:10000], ytr[:10000]
    model = train.build_model(cfg, 10)
    path = MODELS / f"{name}.msgpack"
    t_train = None
    if path.is_file() and not quick:
        template = model.init(jax.random.key(0), jnp.zeros((1,) + xtr.shape[1:], jnp.float32))
        variables = flax.serialization.from_bytes(template, path.read_bytes())
    else:
        term = adversarial_training(1.0, **spec["at"]) if spec["at"] else None
        t0 = time.perf_counter()
        state = train.fit(cfg, (xtr, ytr), regularizer=term)
        t_train = time.perf_counter() - t0
        variables = state.variables()
        blob = flax.serialization.to_bytes(variables)
        if len(blob) < 5e6 and not quick:
            MODELS.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
    f = jax.jit(lambda x: model.apply(variables, x))
    acc = float(np.mean(np.concatenate([np.asarray(jnp.argmax(f(xte[i:i + 1000]), -1))
                                        for i in range(0, len(xte), 1000)]) == yte))
    log(f"{name}: test accuracy {acc:.4f}" + (f", trained in {t_train:.0f} s" if t_train else " (cached)"))
    return f, acc, t_train


# --------------------------------------------------------------------------------- attacks

def timed(fn, f, x, y, *, warm: int | None, **kw) -> AttackResult:
    """Runs fn once on the first `warm` rows to compile (if warm), then the timed call."""
    if warm:
        fn(f, x[:warm], y[:warm], **kw)
    return fn(f, x, y, **kw)


def foolbox_result(fb_attack, f, x, y, p, name) -> AttackResult:
    """Runs a Foolbox 3 attack on the JAX model and re-verifies its output with `finalize` (so a
    Foolbox 'success' that is not misclassified after clipping counts as a failure)."""
    import foolbox as fb
    fmodel = fb.JAXModel(f, bounds=(0.0, 1.0))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, clipped, success = fb_attack(fmodel, x, y, epsilons=None)
    dt = time.perf_counter() - t0
    clipped, success = np.asarray(clipped), np.asarray(success)
    r = finalize(f, x, y, clipped, p=p, box=Box(), time_s=dt, method=name)
    claimed_but_invalid = int(np.sum(success & ~r.success))
    # Foolbox's CW starts its best point at zeros: where it finds nothing it returns the black image,
    # which the model usually misclassifies (a real but far adversarial example)
    blank = int(np.sum(np.all(clipped.reshape(len(clipped), -1) == 0, axis=1)))
    return r, claimed_but_invalid, blank


def run_model(name, f, data, args, log):
    (xtr, ytr), (xte, yte) = data
    n = dict(fast=args.n_fast, mid=args.n_mid, slow=args.n_slow, cw=args.n_cw, fb_df=args.n_fb_df,
             fb_cw=args.n_fb_cw, region=args.n_region, region_cnn=args.n_region_cnn)
    x_all, y_all = jnp.asarray(xte[:max(n.values())]), jnp.asarray(yte[:max(n.values())])
    key = jax.random.key(0)
    bs = args.batch
    plan = [  # (label, fn, p, points, options, warm-up rows)
        ("deepfool", deepfool, 2, n["fast"], dict(DF, batch_size=bs), bs),
        ("deepfool", deepfool, INF, n["fast"], dict(DF, batch_size=bs), bs),
        ("ddn (100 steps)", ddn, 2, n["fast"], dict(steps=100, batch_size=bs), bs),
        # slow attacks on one batch: no warm-up run, their times include one compilation (seconds)
        ("pgd_minimal", pgd_minimal, 2, n["mid"], dict(batch_size=bs), None),
        ("pgd_minimal", pgd_minimal, INF, n["mid"], dict(batch_size=bs), None),
        ("pgd_minimal", pgd_minimal, 1, n["slow"], dict(batch_size=bs), None),
        ("cw", cw, 2, n["cw"], dict(CW, batch_size=bs), None),
    ]
    try:
        from robustjax.attacks.linearized import linearized
        plan.append(("linearized", linearized, 2, n["fast"], dict(batch_size=bs), bs))
    except ImportError as e:
        log(f"  linearized attack not available: {e}")
    results = {}
    for label, fn, p, m, opts, warm in plan:
        t0 = time.perf_counter()
        r = timed(fn, f, x_all[:m], y_all[:m], warm=warm if m > 0 else None, p=p, key=key, **opts)
        results[(label, float(p))] = r
        log(f"  {label:18s} l{p}: n={m} median {np.median(r.distance):.4f} "
            f"success {r.success.mean():.3f} {1e3 * r.time_s.mean():.1f} ms/ex (total {time.perf_counter() - t0:.0f} s)")
    # Foolbox 3 (EagerPy over JAX; eager, so no compilation to exclude)
    if not args.no_foolbox:
        import foolbox as fb
        fb_plan = [("foolbox deepfool", fb.attacks.L2DeepFoolAttack(**DF), 2, n["fb_df"]),
                   ("foolbox deepfool", fb.attacks.LinfDeepFoolAttack(**DF), INF, n["fb_df"]),
                   ("foolbox cw", fb.attacks.L2CarliniWagnerAttack(
                       steps=CW["steps"], binary_search_steps=CW["binary_search_steps"],
                       stepsize=CW["learning_rate"], initial_const=CW["initial_const"], abort_early=False),
                    2, n["fb_cw"])]
        for label, atk, p, m in fb_plan:
            r, bad, blank = foolbox_result(atk, f, x_all[:m], y_all[:m], p, label)
            log(f"  {label:18s} l{p}: n={m} median {np.median(r.distance):.4f} success {r.success.mean():.3f} "
                f"{1e3 * r.time_s.mean():.1f} ms/ex; claimed but not adversarial after re-check: {bad}; "
                f"all-zero images returned: {blank}")
            results[(label, float(p))] = r._replace(method=f"{label} (invalid claimed: {bad}, black images: {blank})")
    if not args.no_region:
        try:
            from robustjax.attacks.region import region
        except ImportError as e:
            log(f"  region attack not available: {e}")
            region = None
        if region is not None:
            for p in args.region_norms:
                m = n["region"] if "cnn" not in name else n["region_cnn"]
                opts = dict(n_regions=args.n_regions, x_train=xtr, y_train=ytr)
                region(f, x_all[:2], y_all[:2], p=p, key=key, **dict(opts, n_regions=2, restarts=0))  # compile
                opts["processes"] = args.region_processes
                t0 = time.perf_counter()
                r = region(f, x_all[:m], y_all[:m], p=p, key=key, **opts)
                results[("region", float(p))] = r
                log(f"  {'region':18s} l{_pn(p)}: n={m} median {np.median(r.distance):.4f} success {r.success.mean():.3f} "
                    f"{1e3 * r.time_s.mean():.1f} ms/ex (total {time.perf_counter() - t0:.0f} s)")
    return results, y_all


# --------------------------------------------------------------------------------- summary

def summarize(results, y, f, x):
    """Per attack: n, success rate, median and mean distance over the points the model classifies
    correctly (misclassified points have distance 0 for every attack and are left out)."""
    rows = []
    for (label, p), r in results.items():
        n = len(r.distance)
        correct = np.asarray(jnp.argmax(f(x[:n]), -1)) == np.asarray(y[:n])
        d = r.distance[correct]
        fin = d[np.isfinite(d)]
        rows.append(dict(attack=label, method=r.method, p=p, n=n, n_correct=int(correct.sum()),
                         success=float(np.mean(np.isfinite(d))), median=float(np.median(d)),
                         mean=float(fin.mean()) if fin.size else float("inf"),
                         ms_per_example=1e3 * float(r.time_s.mean()),
                         model_calls=float(np.mean(r.model_calls))))
    return rows


def paired_ratio(a: AttackResult, b: AttackResult):
    """Median and quantiles of a.distance / b.distance over the common prefix of points where both
    succeed with distance > 0; also the fraction where a is at least 0.1 % smaller."""
    n = min(len(a.distance), len(b.distance))
    da, db = a.distance[:n], b.distance[:n]
    ok = np.isfinite(da) & np.isfinite(db) & (db > 0) & (da > 0)
    if not ok.any():
        return None
    r = da[ok] / db[ok]
    return dict(n=int(ok.sum()), median=float(np.median(r)), q10=float(np.quantile(r, 0.1)),
                q90=float(np.quantile(r, 0.9)), a_better=float(np.mean(r < 0.999)),
                b_failed_a_found=int(np.sum(np.isfinite(da) & ~np.isfinite(db) & (da > 0))))


def comparisons(results):
    pairs = [(("deepfool", 2.0), ("foolbox deepfool", 2.0)), (("deepfool", INF), ("foolbox deepfool", INF)),
             (("cw", 2.0), ("foolbox cw", 2.0)),
             (("region", 2.0), ("cw", 2.0)), (("region", 2.0), ("deepfool", 2.0)),
             (("region", 2.0), ("ddn (100 steps)", 2.0)), (("region", 2.0), ("pgd_minimal", 2.0)),
             (("region", 2.0), ("foolbox cw", 2.0)), (("linearized", 2.0), ("deepfool", 2.0)),
             (("ddn (100 steps)", 2.0), ("cw", 2.0)),
             (("region", INF), ("pgd_minimal", INF)), (("region", INF), ("deepfool", INF)),
             (("region", 1.0), ("pgd_minimal", 1.0))]
    out = []
    for a, b in pairs:
        if a in results and b in results:
            pr = paired_ratio(results[a], results[b])
            if pr:
                out.append(dict(a=f"{a[0]} l{_pn(a[1])}", b=f"{b[0]} l{_pn(b[1])}", **pr))
    return out


def _pn(p):
    return "inf" if p == INF else str(int(p))


def best_of_norms(results):
    """Per norm: the per-example best over all attacks on their common prefix of points, and each
    attack's median ratio to that best (1 = the attack found the best point on the median)."""
    out, best = {}, {}
    for p in (1.0, 2.0, INF):
        rs = {k: r for k, r in results.items() if k[1] == p}
        if not rs:
            continue
        n = min(len(r.distance) for r in rs.values())
        cut = {k: r._replace(**{fld: getattr(r, fld)[:n] for fld in
                                ("x_adv", "distance", "success", "label_adv", "model_calls", "time_s")})
               for k, r in rs.items()}
        b = best_of(list(cut.values()))._replace(method="best of all")
        best[p] = (b, cut)
        ok = b.distance > 0
        out[_pn(p)] = dict(n=n, best_median=float(np.median(b.distance[ok])),
                           gap={f"{k[0]}": float(np.median(r.distance[ok] / b.distance[ok]))
                                for k, r in cut.items()},
                           wins={f"{k[0]}": float(np.mean(r.distance[ok] <= b.distance[ok] * (1 + 1e-6)))
                                 for k, r in cut.items()})
    return out, best


def figures(name, best, x, y):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(best), figsize=(5 * len(best), 3.6))
    axes = np.atleast_1d(axes)
    for ax, (p, (b, cut)) in zip(axes, sorted(best.items())):
        curves = {k[0]: r for k, r in cut.items()}
        curves["best of all"] = b
        plot_robust_accuracy(curves, ax=ax, p=p, title=f"{name}, l{_pn(p)}, n={len(b.distance)}")
    fig.savefig(RESULTS / f"attacks_curves_{name}.png", dpi=110)
    plt.close(fig)
    if all(p in best for p in (1.0, 2.0, INF)):
        n = len(best[1.0][0].distance)
        ok = np.where((best[1.0][0].distance > 0) & np.isfinite(best[1.0][0].distance))[0][:2]
        fig = plot_adversarial_examples(np.asarray(x[:n]), np.asarray(y[:n]),
                                        [best[1.0][0], best[2.0][0], best[INF][0]], indices=tuple(int(i) for i in ok))
        fig.savefig(RESULTS / f"attacks_examples_{name}.png", dpi=110)
        plt.close(fig)


def markdown(report) -> str:
    lines = [f"# Minimal-norm attacks on MNIST ({report['date']})", "",
             f"Machine: {report['machine']}; {report['load_note']}. Command: `{report['command']}`.", "",
             "Distances are over the test points the model classifies correctly (misclassified points have "
             "distance 0 for every attack and are left out); `success` is the fraction of those points "
             "broken; mean is over successes; time per example excludes compilation (one warm-up batch) "
             "for DeepFool, DDN and the linearized attack, and includes one compilation (seconds) for "
             "pgd_minimal, cw and region; Foolbox 3.3.4 runs eagerly through EagerPy (nothing to compile). "
             "Every returned point, ours and Foolbox's, was re-verified with the model after clipping to [0, 1].", "",
             "Training: " + report["train_note"], "",
             "Settings: DeepFool " + json.dumps(DF) + " (ours and Foolbox); Carlini-Wagner " + json.dumps(CW) +
             " (ours and Foolbox, abort_early=False; ours also checks the last Adam iterate per c); DDN 100 steps, gamma 0.05 (Foolbox defaults) + 10-step line "
             "search; pgd_minimal: 12 radii x 50 PGD steps (margin loss, cosine-decayed steps, warm starts) "
             "+ 10-step line search; region: " + report["region_note"], ""]
    for m in report["models"]:
        lines += [f"## {m['name']} (test accuracy {m['accuracy']:.4f})", ""]
        if m.get("settings"):
            lines += ["Run: `" + m["settings"] + "`", ""]
        lines += [
                  "| attack | norm | points | success | median | mean | ms / example | model calls / ex |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sorted(m["rows"], key=lambda r: (r["p"], r["attack"])):
            lines.append(f"| {r['attack']} | l{_pn(r['p'])} | {r['n']} ({r['n_correct']} correct) | "
                         f"{r['success']:.3f} | {r['median']:.4f} | {r['mean']:.4f} | {r['ms_per_example']:.1f} | "
                         + (f"{r['model_calls']:.0f} |" if r['model_calls'] else "not counted |"))
        lines += ["", "Paired medians of distance ratios a / b on the common points (both succeed):", "",
                  "| a | b | points | median a/b | 10 % | 90 % | a smaller by > 0.1 % | b failed, a found |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in m["comparisons"]:
            lines.append(f"| {c['a']} | {c['b']} | {c['n']} | {c['median']:.4f} | {c['q10']:.4f} | {c['q90']:.4f} | "
                         f"{c['a_better']:.2f} | {c['b_failed_a_found']} |")
        lines += ["", "Per-example best of all attacks per norm (common points): median of the best, and "
                  "each attack's median ratio to it (share of points where it is the best):", ""]
        for p, b in m["best_of"].items():
            gaps = ", ".join(f"{k} {v:.3f} ({b['wins'][k]:.2f})" for k, v in sorted(b["gap"].items(), key=lambda t: t[1]))
            lines.append(f"- l{p} (n={b['n']}): best median {b['best_median']:.4f}; {gaps}")
        lines += ["", f"![curves](results/attacks_curves_{m['name']}.png)", ""]
    lines += report.get("notes", [])
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a smoke run on a few points")
    ap.add_argument("--models", default=",".join(TRAIN))
    ap.add_argument("--n-fast", type=int, default=500)
    ap.add_argument("--n-mid", type=int, default=100)
    ap.add_argument("--n-slow", type=int, default=50)
    ap.add_argument("--n-cw", type=int, default=100)
    ap.add_argument("--n-fb-df", type=int, default=100)
    ap.add_argument("--n-fb-cw", type=int, default=30)
    ap.add_argument("--n-region", type=int, default=50)
    ap.add_argument("--n-region-cnn", type=int, default=15, help="region attack points on the CNNs (slow)")
    ap.add_argument("--n-regions", type=int, default=100)
    ap.add_argument("--region-norms", default="2")
    ap.add_argument("--region-processes", type=int, default=1, help="worker processes for the region attack "
                    "(its time per example is then each worker's time)")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--cw-steps", type=int, default=CW["steps"], help="Adam steps per c (ours and Foolbox)")
    ap.add_argument("--cw-bs", type=int, default=CW["binary_search_steps"], help="values of c (ours and Foolbox)")
    ap.add_argument("--no-foolbox", action="store_true")
    ap.add_argument("--no-region", action="store_true")
    ap.add_argument("--out", default="attacks")
    ap.add_argument("--merge", default="", help="comma-separated result JSONs (in results/) to merge into --out")
    ap.add_argument("--note", action="append", default=[], help="a line for the notes section (with --merge)")
    ap.add_argument("--load-note", default="2-core CPU, shared with other jobs during measurement")
    args = ap.parse_args()
    args.region_norms = [float(s) if s != "inf" else INF for s in args.region_norms.split(",")]
    CW.update(steps=args.cw_steps, binary_search_steps=args.cw_bs)
    if args.quick:
        args.n_fast = args.n_mid = args.n_slow = args.n_cw = args.n_fb_df = args.n_fb_cw = args.n_region = 20
        args.n_region_cnn = 20
        args.batch, args.n_regions = 20, 10
        CW.update(steps=100, binary_search_steps=4)
        args.out = args.out + "_quick"
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.merge:   # runs split over processes: concatenate their models
        parts = [json.loads((RESULTS / name).read_text()) for name in args.merge.split(",")]
        merged = dict(parts[0], models=[m for part in parts for m in part["models"]])
        merged["notes"] = [n for part in parts for n in part.get("notes", [])] + args.note
        merged["command"] = " + ".join(part["command"] for part in parts)
        (RESULTS / f"{args.out}.json").write_text(json.dumps(merged, indent=1, default=float))
        (HERE / f"{args.out}.md").write_text(markdown(merged))
        return
    t_start = time.perf_counter()
    log_lines = []

    def log(s):
        print(s, flush=True)
        log_lines.append(s)

    data = (load("mnist", "train"), load("mnist", "test"))
    report = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  machine=machine(), load_note=args.load_note,
                  command="nice -n 10 python benchmarks/bench_attacks.py " + ("--quick " if args.quick else "")
                          + f"--models {args.models} --out {args.out} --n-fast {args.n_fast} --n-mid {args.n_mid} "
                          f"--n-slow {args.n_slow} --n-cw {args.n_cw} --n-fb-df {args.n_fb_df} --n-fb-cw {args.n_fb_cw} "
                          f"--n-region {args.n_region} --n-region-cnn {args.n_region_cnn} --n-regions {args.n_regions} "
                          f"--cw-steps {args.cw_steps} --cw-bs {args.cw_bs} --region-norms "
                          f"{','.join(_pn(p) for p in args.region_norms)} --region-processes {args.region_processes}",
                  train_note="Adam 1e-3, batch 128, all 60k training images; " + "; ".join(
                      f"{k}: {v['model']} {v['epochs']} epochs" + (f", PGD training l_inf eps {v['at']['eps']}, "
                                                                   f"{v['at']['steps']} steps, loss CE(x) + CE(x_pgd)"
                                                                   if v['at'] else "")
                      for k, v in TRAIN.items()),
                  region_note=f"robustjax.attacks.region, n_regions={args.n_regions} and its defaults: starts "
                              f"from the best of DeepFool, DDN-1000 and minimal PGD per example (never returned worse "
                              f"than them) and the nearest differently classified training point; then searches "
                              f"from targeted starts of other classes (all 9 in l1 and l_inf, 3 in l2), about "
                              f"n_regions / 5 regions each, and a final search from the winner; norms "
                              f"{[_pn(p) for p in args.region_norms]}; {args.region_processes} worker process(es), "
                              f"time per example = a worker's wall time for it (the cheap starts run in the parent "
                              f"and are not included)",
                  models=[], notes=[])
    for name in args.models.split(","):
        f, acc, t_train = get_model(name, data, log, quick=args.quick)
        results, y = run_model(name, f, data, args, log)
        x = jnp.asarray(data[1][0][:len(y)])
        rows = summarize(results, y, f, x)
        comps = comparisons(results)
        bo, best = best_of_norms(results)
        figures(name, best, x, y)
        for c in comps:
            log(f"  ratio {c['a']} / {c['b']}: median {c['median']:.4f} (n={c['n']})")
        report["models"].append(dict(name=name, accuracy=acc, train_seconds=t_train, rows=rows, comparisons=comps,
                                     settings=report["command"] + f" (CW {json.dumps(CW)})",
                                     best_of=bo, distances={f"{k[0]} l{_pn(k[1])}": np.round(r.distance, 5).tolist()
                                                            for k, r in results.items()}))
        (RESULTS / f"{args.out}.json").write_text(json.dumps(report, indent=1, default=float))
        (HERE / f"{args.out}.md").write_text(markdown(report))
    log(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
