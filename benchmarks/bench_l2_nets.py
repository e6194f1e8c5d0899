"""Minimal l2 adversarial distances on the two nets of issue 16, every attack side by side in one run.

    nice -n 10 python benchmarks/bench_l2_nets.py --n 20 --n-osqp 4 --out l2_nets    (about 20 min on 2 cores)
    python benchmarks/bench_l2_nets.py --quick                                       (a smoke run: a minute)

Nets (trained by robustjax, cached in results/models/; the recipe is `NETS`): a plain 784-1024-10 ReLU MLP (Adam
1e-3, batch 128, 5 epochs on all 60k MNIST images) and the same MLP trained with l2 PGD (eps 1.5, 7 steps, loss
CE(x) + CE(x_pgd)). Points: the first n test points each net classifies correctly.

Attacks (l2): robustjax's DeepFool, DDN-1000, CW (1000 steps x 9 constants), FAB (targeted, 100 steps), minimal
PGD and the region attack with its defaults (`qp_solver="dual"`, the jitted QP of `robustjax.qp`), the region
attack with `qp_solver="osqp"` on the first n_osqp points (the reference: same search, OSQP), and Foolbox 3's
DDN-1000, CW-1000 (9 constants) and FMN-1000 (eager EagerPy over the same JAX model). Every returned point is
re-verified with the model (`finalize`). Per attack: median / mean / 90th percentile distance, paired ratios
to the region attack, and wall seconds per point in one process (compilation excluded by a warm-up call where
the attack compiles; the region attack's time includes its cheap starts and its compilations of the QP shapes).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attacks import MODELS, TRAIN, foolbox_result, get_model  # noqa: E402
from bench_train import machine  # noqa: E402
from robustjax import report  # noqa: E402
from robustjax.attacks import cw, ddn, deepfool, fab_targeted, pgd_minimal  # noqa: E402
from robustjax.attacks.region import region  # noqa: E402
from robustjax.data import load  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

NETS = {
    "mlp1024_plain5": dict(model="mlp", model_config={"widths": (1024,), "act": "relu"}, epochs=5, at=None),
    "mlp1024_l2at": dict(model="mlp", model_config={"widths": (1024,), "act": "relu"}, epochs=5,
                         at=dict(p=2, eps=1.5, steps=7)),
}
TRAIN.update(NETS)


def attacks(args):
    """(name, fn(f, x, y) -> AttackResult, compiles) in the order they run."""
    import foolbox as fb
    key = jax.random.key(0)
    steps = 50 if args.quick else 1000
    bs = 100
    ours = [
        ("deepfool", lambda f, x, y: deepfool(f, x, y, p=2, batch_size=bs), True),
        (f"ddn-{steps}", lambda f, x, y: ddn(f, x, y, p=2, key=key, steps=steps, batch_size=bs), True),
        (f"cw-{steps}x9", lambda f, x, y: cw(f, x, y, p=2, key=key, steps=steps, binary_search_steps=9,
                                              learning_rate=0.01, batch_size=bs), True),
        ("fab-t", lambda f, x, y: fab_targeted(f, x, y, p=2, key=key, batch_size=bs), True),
        ("pgd_minimal", lambda f, x, y: pgd_minimal(f, x, y, p=2, key=key, batch_size=bs), True),
        ("region", lambda f, x, y: region(f, x, y, p=2, key=key, n_regions=20 if args.quick else 100), False),
    ]
    theirs = [
        (f"foolbox ddn-{steps}", fb.attacks.DDNAttack(steps=steps)),
        (f"foolbox cw-{steps}x9", fb.attacks.L2CarliniWagnerAttack(steps=steps, binary_search_steps=9,
                                                                    stepsize=0.01, abort_early=False)),
        (f"foolbox fmn-{steps}", fb.attacks.L2FMNAttack(steps=steps)),
    ]
    return ours, theirs, key


def run_net(name, data, args, log):
    (xtr, ytr), (xte, yte) = data
    f, acc, _ = get_model(name, data, log)
    pred = np.concatenate([np.asarray(jnp.argmax(f(xte[i:i + 1000]), -1)) for i in range(0, 2000, 1000)])
    idx = np.flatnonzero(pred == yte[:2000])[:args.n]
    x, y = jnp.asarray(xte[idx]), jnp.asarray(yte[idx])
    ours, theirs, key = attacks(args)
    rows, dist = {}, {}
    for label, fn, compiles in ours:
        if compiles:
            fn(f, x[:2], y[:2])
        else:
            region(f, x[:1], y[:1], p=2, key=key, n_regions=10, restarts=0)   # the oracle's and QP's compilations
        t0 = time.perf_counter()
        r = fn(f, x, y)
        dt = time.perf_counter() - t0
        rows[label], dist[label] = _row(r, dt, len(x)), np.asarray(r.distance)
        log(f"  {label:22s} median {np.median(r.distance):.4f} {dt / len(x):.3f} s/pt (load {report.load1():.1f})")
    if args.n_osqp:
        m = min(args.n_osqp, len(x))
        for label, solver in (("region (first n_osqp, dual QP)", "dual"), ("region (first n_osqp, OSQP)", "osqp")):
            t0 = time.perf_counter()
            r = region(f, x[:m], y[:m], p=2, key=key, n_regions=20 if args.quick else 100, qp_solver=solver)
            dt = time.perf_counter() - t0
            rows[label], dist[label] = _row(r, dt, m), np.asarray(r.distance)
            log(f"  {label:22s} median {np.median(r.distance):.4f} {dt / m:.3f} s/pt (load {report.load1():.1f})")
    for label, atk in ([] if args.no_foolbox else theirs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r, bad, blank = foolbox_result(atk, f, x, y, 2, label)
        rows[label] = dict(_row(r, float(np.sum(r.time_s)), len(x)), invalid_claimed=bad, black_images=blank)
        dist[label] = np.asarray(r.distance)
        log(f"  {label:22s} median {np.median(r.distance):.4f} {rows[label]['s_per_point']:.3f} s/pt "
            f"(load {report.load1():.1f})")
    ratios = {}
    for label, d in dist.items():
        if label == "region" or label.startswith("region ("):
            continue
        ok = np.isfinite(d) & np.isfinite(dist["region"])
        q = dist["region"][ok] / d[ok]
        if not ok.any():
            continue
        ratios[label] = dict(points=int(ok.sum()), median=float(np.median(q)), max=float(np.max(q)),
                             region_smaller=int(np.sum(q < 1 - 1e-3)), region_larger=int(np.sum(q > 1 + 1e-3)))
    if args.n_osqp:
        a, b = dist["region (first n_osqp, dual QP)"], dist["region (first n_osqp, OSQP)"]
        ratios["region dual / region osqp"] = dict(points=len(a), median=float(np.median(a / b)),
                                                   max=float(np.max(a / b)), region_smaller=int(np.sum(a < b * (1 - 1e-3))),
                                                   region_larger=int(np.sum(a > b * (1 + 1e-3))))
    ddn_label = next(k for k in rows if k.startswith("ddn-"))
    speed = dict(region_over_ddn=rows["region"]["s_per_point"] / rows[ddn_label]["s_per_point"])
    if args.n_osqp:
        speed["osqp_over_dual"] = (rows["region (first n_osqp, OSQP)"]["s_per_point"]
                                   / rows["region (first n_osqp, dual QP)"]["s_per_point"])
    return dict(test_accuracy=acc, points=len(x), attacks=rows, ratios_region_over=ratios, speed=speed,
                distances={k: v.tolist() for k, v in dist.items()})


def _row(r, seconds, n):
    d = np.asarray(r.distance)
    ok = np.isfinite(d)
    return dict(success=float(np.mean(ok)), median=float(np.median(d)), mean=float(np.mean(d[ok])) if ok.any() else None,
                p90=float(np.percentile(d, 90)), s_per_point=seconds / n)


def markdown(rep) -> str:
    out = [f"# Minimal l2 distances on two MNIST MLPs, every attack in one run ({rep['date']})", "",
           f"Machine: {rep['machine']}; 1-minute load {rep['load_start']:.1f} at the start, {rep['load_end']:.1f} at "
           f"the end (other jobs shared the 2 cores: times are inflated, ratios within one run are comparable). "
           f"Command: `{rep['command']}`.", "", __doc__.split("\n\n", 2)[2].strip(), ""]
    for name, r in rep["nets"].items():
        out += [f"## {name} (test accuracy {r['test_accuracy']:.4f}; {r['points']} points)", "",
                "| attack | success | median | mean | 90th pct | s / point |", "|---|---|---|---|---|---|"]
        for label, a in r["attacks"].items():
            extra = f" (claimed but invalid: {a['invalid_claimed']}, black images: {a['black_images']})" \
                if "invalid_claimed" in a else ""
            out.append(f"| {label}{extra} | {a['success']:.3f} | {a['median']:.4f} | {a['mean']:.4f} | {a['p90']:.4f} | "
                       f"{a['s_per_point']:.3f} |")
        out += ["", "Paired ratios region / attack (points where both succeed):", "",
                "| attack | points | median | max | region smaller by > 0.1 % | region larger by > 0.1 % |",
                "|---|---|---|---|---|---|"]
        for label, q in r["ratios_region_over"].items():
            out.append(f"| {label} | {q['points']} | {q['median']:.4f} | {q['max']:.4f} | {q['region_smaller']} | "
                       f"{q['region_larger']} |")
        sp = r["speed"]
        out += ["", f"Region attack time / DDN time per point: {sp['region_over_ddn']:.0f}x"
                + (f"; OSQP / dual QP region time on the same points: {sp['osqp_over_dual']:.1f}x" if "osqp_over_dual" in sp
                   else "") + ".", ""]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a smoke run (4 points, 50-step attacks, 20 regions)")
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--n", type=int, default=20, help="correctly classified test points per net")
    ap.add_argument("--n-osqp", type=int, default=4, help="points for the dual-QP vs OSQP region comparison")
    ap.add_argument("--no-foolbox", action="store_true", help="robustjax's attacks only")
    ap.add_argument("--out", default="l2_nets")
    args = ap.parse_args()
    if args.quick:
        args.n, args.n_osqp = 4, 2
    log = lambda s: print(s, flush=True)  # noqa: E731
    data = (load("mnist", "train"), load("mnist", "test"))
    rep = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=machine(),
               command="python benchmarks/bench_l2_nets.py " + " ".join(sys.argv[1:]), load_start=report.load1(), nets={})
    for name in args.nets.split(","):
        log(name)
        rep["nets"][name] = run_net(name, data, args, log)
        rep["load_end"] = report.load1()
        if not args.quick:
            report.write_json(RESULTS / f"{args.out}.json", rep)
            (HERE / f"{args.out}.md").write_text(markdown(rep))
    print(markdown(rep))


if __name__ == "__main__":
    main()
