"""Sound certificates on the MNIST models robustjax trains: bound propagation (IBP, CROWN-IBP, CROWN,
alpha-CROWN), the exact MILP minimum, deep Theorem 2.1, and the memory of CROWN on a wide CNN.

Three sections (issue "Sound certificates for every network", points 2, 3, 5):

1. l_inf on ReLU nets: an MLP 784-64-64-10 trained plainly and with PGD (l_inf eps 0.1), a small CNN (the MMR
   CNN at half width: conv 4x4x8 s2 - conv 4x4x16 s2 - FC 100 - 10) and a tiny MLP 784-32-10 on which the MILP
   (`verify.min_adversarial_milp`) finds the exact minimal distance. Per method: certified accuracy at a few
   eps (`bounds.verified`), certified radius (`bounds.certified_radius`) divided by the best attack distance
   (min of `pgd_minimal` and `deepfool`, l_inf; plus the region attack on the tiny net with --region), and
   time per point. Checked per point: radius <= MILP distance <= attack distance (a radius above either is a
   soundness bug), verified at eps => attack distance > eps, and CROWN >= IBP, alpha-CROWN >= CROWN.
2. l2 on softplus nets of depth 1, 2, 3 and a softplus CNN: `lipschitz.theorem21_radius` (deep Theorem 2.1)
   against `bounds.certified_radius(p=2)` with CROWN and alpha-CROWN; on the one-hidden-layer net (robustjax's
   `OneHiddenLayer`) also the closed form `certify.certified_radius`. Every radius <= the best l2 attack
   (DeepFool, DDN) is checked.
3. Memory: a CNN with about 100k ReLUs (conv 3x3x128 - conv 3x3x8 s2 - FC 100 - 10) verified at one small
   l_inf eps with CROWN, CROWN-IBP and IBP for batch sizes 1, 4, 16, each in a child process under an address
   space limit (peak resident memory = the child's ru_maxrss), and CROWN's memory on narrower versions of the
   same net (first layer 8, 16, 32 channels) to show how it grows.

    nice -n 10 python benchmarks/bench_bounds.py            # the real run (~30 minutes on 2 loaded cores)
    python benchmarks/bench_bounds.py --quick               # a smoke run on a handful of points
    python benchmarks/bench_bounds.py --render --note "..."  # rewrite bounds.md from bounds.json, adding notes

Writes benchmarks/results/bounds.json and benchmarks/bounds.md (--quick: into --out-dir, default a folder in
/tmp, so that a smoke run never overwrites the committed results).
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robustjax import bounds, certify, models, network, train, verify
from robustjax.attacks import adversarial_training, ddn, deepfool, pgd_minimal, region
from robustjax.bounds import lipschitz
from robustjax.report import load1, machine
from robustjax.data import load

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
INF = np.inf


# ------------------------------------------------------------------------------------------- models

class BenchCNN(nn.Module):
    """conv k x k (features[0], strides[0]) - ... - FC hidden - K, SAME padding, no pooling (so that the softplus
    version is C^1 for Theorem 2.1). (8, 16), k 4, strides (2, 2): the MMR CNN at half width."""
    features: Sequence[int] = (8, 16)
    kernel: int = 4
    strides: Sequence[int] = (2, 2)
    hidden: int = 100
    act: str = "relu"
    alpha: float = 1.0
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        sigma = models.activations.get(self.act, alpha=self.alpha).fn
        for i, (f, s) in enumerate(zip(self.features, self.strides)):
            x = sigma(nn.Conv(f, (self.kernel, self.kernel), strides=(s, s), padding="SAME", name=f"conv_{i}")(x))
        x = x.reshape((x.shape[0], -1))
        x = sigma(nn.Dense(self.hidden, name="dense_0")(x))
        return nn.Dense(self.num_classes, name="out")(x)


if "bench_bounds_cnn" not in models.REGISTRY:
    models.register("bench_bounds_cnn", BenchCNN)

SP = 10.0   # softplus slope of every smooth net (the cross-Lipschitz paper's alpha)
WIDE = dict(features=(128, 8), kernel=3, strides=(1, 2), hidden=100, act="relu")

# name: (registry model, model config, epochs, PGD training or None)
RELU_NETS = {
    "mlp_64x2": ("mlp", {"widths": (64, 64), "act": "relu"}, 1, None),
    "mlp_64x2_at": ("mlp", {"widths": (64, 64), "act": "relu"}, 1, dict(p=INF, eps=0.1, steps=7)),
    "cnn_small": ("bench_bounds_cnn", {"act": "relu"}, 1, None),
    "tiny_32": ("mlp", {"widths": (32,), "act": "relu"}, 1, None),
}
SMOOTH_NETS = {
    "sp_depth1_256": ("one_hidden_layer", {"hidden": 256, "act": "softplus", "alpha": SP}, 1, None),
    "sp_depth2_128": ("mlp", {"widths": (128, 128), "act": "softplus", "alpha": SP}, 1, None),
    "sp_depth3_128": ("mlp", {"widths": (128, 128, 128), "act": "softplus", "alpha": SP}, 1, None),
    "sp_cnn_small": ("bench_bounds_cnn", {"act": "softplus", "alpha": SP}, 1, None),
}


class Net:
    def __init__(self, name, model, variables, acc, train_s):
        self.name, self.model, self.variables, self.acc, self.train_s = name, model, variables, acc, train_s
        self.f = jax.jit(lambda x: model.apply(variables, x))
        self.graph = network.trace(self.f, (28, 28, 1))

    def relus(self) -> int:
        """Units of all ReLU (and smooth activation) layers."""
        shapes = bounds.propagate.crown.node_shapes(self.graph, self.graph.input_shape)
        return int(sum(np.prod(shapes[k]) for k, n in enumerate(self.graph.nodes, 1)
                       if isinstance(n.layer, (network.ReLU, network.Activation))))


def get_net(name, spec, data, args, log) -> Net:
    model_name, mcfg, epochs, at = spec
    (xtr, ytr), (xte, yte) = data
    size = min(len(xtr), args.train_size)
    if args.quick:
        size, epochs = min(size, 5000), 1
    xtr, ytr = xtr[:size], ytr[:size]
    cfg = train.TrainConfig(model=model_name, model_config=mcfg, optimizer="adam", learning_rate=1e-3,
                            schedule="constant", epochs=epochs, progress=False, seed=0)
    model = train.build_model(cfg, 10)
    cache = Path(args.model_cache) / f"{name}{'_quick' if args.quick else ''}.msgpack" if args.model_cache else None
    t_train = None
    if cache is not None and cache.is_file():
        template = model.init(jax.random.key(0), jnp.zeros((1,) + xtr.shape[1:], jnp.float32))
        variables = flax.serialization.from_bytes(template, cache.read_bytes())
    else:
        term = adversarial_training(1.0, **at) if at else None
        t0 = time.perf_counter()
        state = train.fit(cfg, (xtr, ytr), regularizer=term)
        t_train = time.perf_counter() - t0
        variables = state.variables()
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(flax.serialization.to_bytes(variables))
    net = Net(name, model, variables, None, t_train)
    net.acc = float(np.mean(np.concatenate([np.asarray(jnp.argmax(net.f(xte[i:i + 1000]), -1))
                                            for i in range(0, len(xte), 1000)]) == yte))
    net.train_images = size
    log(f"{name}: {model_name} {mcfg}, {epochs} epoch(s) on {size} images" + (f", PGD training {at}" if at else "")
        + f", test accuracy {net.acc:.4f}, {net.relus()} activation units"
        + (f", trained in {t_train:.0f} s" if t_train else " (cached)"))
    return net


# ------------------------------------------------------------------------------------------- helpers

def stats(v) -> dict:
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    if not v.size:
        return dict(n=0, median=None, q10=None, q90=None)
    return dict(n=int(v.size), median=float(np.median(v)), q10=float(np.quantile(v, 0.1)),
                q90=float(np.quantile(v, 0.9)))


def batched_radius(fn, x, y, upper, bs: int):
    """fn(x, y, upper) -> CertificateResult over batches of bs rows (the last padded, so one compilation);
    returns (radius, uncertain, misclassified) `[n]` arrays and the wall time of all batches."""
    n = len(x)
    out = []
    t0 = time.perf_counter()
    for i in range(0, n, bs):
        idx = np.arange(i, i + bs)
        idx = np.minimum(idx, n - 1)
        r = fn(x[idx], y[idx], upper[idx])
        k = min(bs, n - i)
        unc = np.zeros(bs, bool) if r.uncertain is None else np.asarray(r.uncertain)
        out.append((np.asarray(r.radius, np.float64)[:k], unc[:k], np.asarray(r.misclassified)[:k]))
    dt = time.perf_counter() - t0
    return tuple(np.concatenate([o[j] for o in out]) for j in range(3)), dt


def batched_verified(graph, x, y, eps, method, bs: int, alpha_steps: int):
    out = []
    n = len(x)
    for i in range(0, n, bs):
        idx = np.minimum(np.arange(i, i + bs), n - 1)
        out.append(bounds.verified(graph, x[idx], y[idx], eps=eps, method=method,
                                   alpha_steps=alpha_steps)[:min(bs, n - i)])
    return np.concatenate(out)


def attack_distances(f, x, y, p, names, key):
    """{name: distance [n]} and {name: seconds} for l_inf (deepfool, pgd_minimal) or l2 (deepfool, ddn)."""
    fns = {"deepfool": lambda: deepfool(f, x, y, p=p, steps=50, overshoot=0.02),
           "pgd_minimal": lambda: pgd_minimal(f, x, y, p=p, key=key),
           "ddn": lambda: ddn(f, x, y, p=2, steps=100)}
    dist, secs = {}, {}
    for nm in names:
        t0 = time.perf_counter()
        r = fns[nm]()
        secs[nm] = time.perf_counter() - t0
        dist[nm] = np.asarray(r.distance, np.float64)
    return dist, secs


def check_below(radius, dist, what, violations, points, net, method, rel=0.0):
    """Appends one violation record per point with radius > dist (1 + rel) (dist the distance of an adversarial
    point: a sound certificate is strictly below it); returns the count."""
    bad = np.flatnonzero(np.isfinite(dist) & (radius > 0) & (radius > dist * (1 + rel)))
    for i in bad:
        violations.append(dict(net=net, method=method, point=int(points[i]), radius=float(radius[i]),
                               against=what, distance=float(dist[i])))
    return int(len(bad))


# ------------------------------------------------------------------------------------------- section 1

def section1(nets, data, args, log):
    xte, yte = data[1]
    out = dict(nets={}, violations=[])
    methods = ["ibp", "crown-ibp", "crown", "alpha-crown"]
    for name, net in nets.items():
        t_sec = time.perf_counter()
        n = args.n_cnn if "cnn" in name else args.n
        n_alpha = min(n, args.n_alpha_cnn if "cnn" in name else args.n_alpha)
        bs = args.cnn_batch if "cnn" in name else n
        x, y = xte[:n], yte[:n]
        pred = np.asarray(jnp.argmax(net.f(x), -1))
        correct = pred == y
        log(f"[1] {name}: attacks l_inf on {n} points (load {load1():.2f})")
        dist, asecs = attack_distances(net.f, jnp.asarray(x), jnp.asarray(y), INF, ["deepfool", "pgd_minimal"],
                                       jax.random.key(0))
        best = np.minimum(dist["deepfool"], dist["pgd_minimal"])
        rec = dict(test_accuracy=net.acc, train_seconds=net.train_s, relus=net.relus(), n=n, n_alpha=n_alpha,
                   n_correct=int(correct.sum()), eps=args.eps, attack_seconds_per_point={k: v / n for k, v in asecs.items()},
                   attack_median={k: float(np.median(v[correct])) for k, v in dist.items()},
                   attack_best=best.tolist(), correct=correct.tolist(), methods={})
        upper = np.where(np.isfinite(best), best * 1.001, 1.0)
        radii = {}
        for method in methods:
            m = n_alpha if method == "alpha-crown" else n
            mbs = min(bs, m)
            xs, ys, us = x[:m], y[:m], upper[:m]
            log(f"[1] {name}: {method} on {m} points, batches of {mbs} (load {load1():.2f})")
            def fn(xb, yb, ub, steps=args.steps):
                return bounds.certified_radius(net.graph, xb, yb, p=INF, method=method, steps=steps, upper=ub,
                                               alpha_steps=args.alpha_steps)
            t0 = time.perf_counter()
            fn(xs[:mbs], ys[:mbs], us[:mbs], steps=1)   # compiles the program the timed calls use (same batch shape)
            t_compile = time.perf_counter() - t0
            (rad, unc, _), dt = batched_radius(fn, xs, ys, us, mbs)
            radii[method] = rad
            t0 = time.perf_counter()
            cert = {str(e): batched_verified(net.graph, xs, ys, e, method, mbs, args.alpha_steps) for e in args.eps}
            t_ver = (time.perf_counter() - t0) / len(args.eps)
            nv = check_below(rad, best[:m], "best attack l_inf", out["violations"], np.arange(m), name, method)
            nv_eps = 0
            for e, ok in cert.items():
                bad = np.flatnonzero(ok & (best[:m] <= float(e)))
                nv_eps += len(bad)
                for i in bad:
                    out["violations"].append(dict(net=name, method=method, point=int(i), verified_at=float(e),
                                                  against="best attack l_inf", distance=float(best[i])))
            ok_pts = correct[:m] & np.isfinite(best[:m]) & (best[:m] > 0)
            ratio = rad[ok_pts] / best[:m][ok_pts]
            rec["methods"][method] = dict(
                n=m, batch=mbs, radius=rad.tolist(), uncertain=int(unc.sum()),
                certified_accuracy={e: float(np.mean(v)) for e, v in cert.items()},
                verified={e: np.asarray(v).tolist() for e, v in cert.items()},
                ratio_to_attack=stats(ratio), radius_median=float(np.median(rad[correct[:m]])) if correct[:m].any() else None,
                radius_seconds_per_point=dt / m, verify_seconds_per_point=t_ver / m, compile_and_first_batch_s=t_compile,
                violations_radius_vs_attack=nv, violations_verified_vs_attack=nv_eps)
            log(f"    {method}: certified acc {', '.join(f'{e}: {np.mean(v):.2f}' for e, v in cert.items())}; "
                f"radius/attack median {rec['methods'][method]['ratio_to_attack']['median']}, "
                f"{dt / m:.3f} s/pt radius, {t_ver / m:.4f} s/pt verify; violations {nv} + {nv_eps}")
        # monotonicity between methods, per point
        mono = {}
        for a, b in (("crown", "ibp"), ("alpha-crown", "crown"), ("crown", "crown-ibp"), ("crown-ibp", "ibp")):
            k = min(len(radii[a]), len(radii[b]))
            ra, rb = radii[a][:k], radii[b][:k]
            tol = 1e-3 * np.maximum(rb, 1e-12)     # bisection resolution: ~upper / 2^steps
            mono[f"{a} >= {b}"] = dict(n=k, points_below=int(np.sum(ra < rb - tol)),
                                       median_a=float(np.median(ra)), median_b=float(np.median(rb)),
                                       median_ratio=stats(ra[rb > 0] / rb[rb > 0])["median"])
        rec["monotone"] = mono
        rec["same_points"] = dict(n=n_alpha, certified_accuracy={
            method: {e: float(np.mean(np.asarray(v["verified"][e], bool)[:n_alpha])) for e in v["verified"]}
            for method, v in rec["methods"].items()},
            radius_median={method: float(np.median(radii[method][:n_alpha])) for method in radii})
        if name == args.milp_net:
            rec["milp"] = milp_part(net, x, y, best, radii, rec, args, out["violations"], log)
            rec["exact"] = milp_at_eps(net, x, y, best, rec, args, out["violations"], log)
        rec["section_seconds"] = time.perf_counter() - t_sec
        out["nets"][name] = rec
    return out


def milp_part(net, x, y, best, radii, rec, args, violations, log):
    """The exact minimal l_inf distance by MILP on the first args.n_milp points, inside the ball of the best
    attack distance (x 1.0001); exact certified accuracy; radius <= MILP <= attack per point."""
    layers = verify.dense_layers(net.variables)
    m = min(args.n_milp, len(x))
    xj, yj = jnp.asarray(x[:m]), jnp.asarray(y[:m])
    att = best[:m].copy()
    reg = None
    if args.region:
        log(f"[1] {net.name}: region attack l_inf on {m} points (load {load1():.2f})")
        t0 = time.perf_counter()
        rr = region(net.f, xj, yj, p=INF, key=jax.random.key(1), n_regions=args.n_regions)
        reg = dict(distance=np.asarray(rr.distance, float).tolist(), seconds_per_point=(time.perf_counter() - t0) / m)
        att = np.minimum(att, np.asarray(rr.distance, float))
    rows = []
    for i in range(m):
        t0 = time.perf_counter()
        md = att[i] * (1 + 1e-4) if np.isfinite(att[i]) and att[i] > 0 else None
        ex = verify.min_adversarial_milp(layers, x[i], int(y[i]), p=INF, time_limit=args.milp_time, max_distance=md)
        rows.append(dict(point=i, status=ex.status, distance=float(ex.distance), lower=float(ex.lower_bound),
                         upper=float(ex.upper_bound), seconds=time.perf_counter() - t0, attack=float(att[i])))
        log(f"    MILP #{i}: {ex.status} {ex.distance:.5f} [{ex.lower_bound:.5f}, {ex.upper_bound:.5f}] "
            f"attack {att[i]:.5f} crown {radii['crown'][i]:.5f} ({time.perf_counter() - t0:.1f} s, load {load1():.2f})")
    lower = np.array([r["lower"] for r in rows])
    upper = np.array([r["upper"] for r in rows])
    status = [r["status"] for r in rows]
    exact_acc = {}
    for e in args.eps:
        robust, broken = np.zeros(m, bool), np.zeros(m, bool)
        for i, (s, lo, up) in enumerate(zip(status, lower, upper)):
            if s == "misclassified":
                broken[i] = True
            elif s == "infeasible":        # no adversarial point within att (1 + 1e-4) (or anywhere if att = inf)
                robust[i] = att[i] > e
            else:                          # optimal: lo = up = the minimum; time limit: lo <= minimum <= up
                robust[i], broken[i] = lo > e, up <= e
        exact_acc[str(e)] = dict(robust=float(np.mean(robust)), not_robust=float(np.mean(broken)),
                                 unknown=float(np.mean(~robust & ~broken)))
    checks = {}
    for method, rad in radii.items():
        k = min(m, len(rad))
        # against the MILP's adversarial points (optimal: the minimum; time limit: its incumbent)
        nv = check_below(rad[:k], upper[:k], "MILP adversarial point", violations, np.arange(k), net.name, method)
        ver = {e: batched_verified(net.graph, x[:k], y[:k], e, method, k, args.alpha_steps) for e in args.eps}
        nv_eps = sum(int(np.sum(ok & (upper[:k] <= e))) for e, ok in ver.items())
        ex_pts = np.array([s == "optimal" for s in status[:k]])
        ratio = rad[:k][ex_pts] / upper[:k][ex_pts] if ex_pts.any() else np.array([])
        checks[method] = dict(n=k, violations_radius_vs_milp=nv, violations_verified_vs_milp=nv_eps,
                              ratio_to_milp=stats(ratio[ratio > 0] if ratio.size else ratio),
                              ratio_to_milp_incl_zero=stats(ratio))
    # MILP <= attack: an optimal MILP distance above the attack's (float64 exact net vs the float32 model the
    # attacks ran on) or 'infeasible' in the attack's ball is an inconsistency between MILP and attack
    opt = np.array([s == "optimal" for s in status])
    milp_above = int(np.sum(opt & (upper > att * (1 + 1e-6))))
    infeasible = int(sum(s == "infeasible" for s in status))
    attack_gap = stats(att[opt] / upper[opt]) if opt.any() else stats([])
    return dict(n=m, time_limit_s=args.milp_time, rows=rows, region=reg, status_counts={s: status.count(s) for s in set(status)},
                exact_certified_accuracy=exact_acc, checks=checks, milp_above_attack=milp_above,
                infeasible_in_attack_ball=infeasible, attack_over_milp=attack_gap,
                milp_seconds_median=float(np.median([r["seconds"] for r in rows])))


def milp_at_eps(net, x, y, best, rec, args, violations, log):
    """Exact robustness at each eps on the first args.n_exact points: an attack point within eps -> not robust;
    else the MILP on the eps-ball (big-M constants from IBP, so independent of CROWN): infeasible -> robust, an
    adversarial point -> not robust, time limit -> unknown; points left when the time budget is spent: unknown.
    A point some method verified at eps with a MILP adversarial point within eps is a violation."""
    layers = verify.dense_layers(net.variables)
    n = min(args.n_exact, len(x))
    out = dict(n=n, time_limit_s=args.exact_time, budget_s=args.exact_budget, eps={})
    t_start = time.perf_counter()
    for e in args.eps:
        status, secs = [], []
        for i in range(n):
            if best[i] <= e:                   # misclassified (distance 0) or broken by the attack
                status.append("attack")
                continue
            if time.perf_counter() - t_start > args.exact_budget:
                status.append("skipped")
                continue
            t0 = time.perf_counter()
            ex = verify.min_adversarial_milp(layers, x[i], int(y[i]), p=INF, time_limit=args.exact_time,
                                             max_distance=e, bounds="ibp")
            secs.append(time.perf_counter() - t0)
            if ex.status == "infeasible":
                status.append("robust")
            elif np.isfinite(ex.upper_bound) and ex.upper_bound <= e * (1 + 1e-9):
                status.append("milp_adversarial")
            else:
                status.append("unknown")
        status = np.array(status)
        viol = {}
        for method, m in rec["methods"].items():
            ver = np.asarray(m["verified"][str(e)], bool)
            k = min(n, len(ver))
            bad = np.flatnonzero(ver[:k] & (status[:k] == "milp_adversarial"))
            viol[method] = int(len(bad))
            for i in bad:
                violations.append(dict(net=net.name, method=method, point=int(i), verified_at=float(e),
                                       against="MILP adversarial point within eps"))
            # a verified point the MILP could not decide is robust (the certificate proves it)
        crown_ok = np.asarray(rec["methods"]["crown"]["verified"][str(e)], bool)[:n]
        out["eps"][str(e)] = dict(
            robust=float(np.mean(status == "robust")), not_robust=float(np.mean(np.isin(status, ["attack", "milp_adversarial"]))),
            unknown=float(np.mean(np.isin(status, ["unknown", "skipped"]))),
            counts={s: int(np.sum(status == s)) for s in sorted(set(status.tolist()))},
            crown_verified=float(np.mean(crown_ok)), milp_robust_not_crown=int(np.sum((status == "robust") & ~crown_ok)),
            violations=viol, milp_seconds_median=float(np.median(secs)) if secs else None, status=status.tolist())
        log(f"    exact at eps {e}: {out['eps'][str(e)]['counts']} (CROWN verified {np.mean(crown_ok):.2f}); "
            f"violations {viol} ({time.perf_counter() - t_start:.0f} s, load {load1():.2f})")
    out["seconds"] = time.perf_counter() - t_start
    return out


# ------------------------------------------------------------------------------------------- section 2

def section2(nets, data, args, log):
    xte, yte = data[1]
    out = dict(nets={}, violations=[])
    for name, net in nets.items():
        t_sec = time.perf_counter()
        cnn = "cnn" in name
        n = args.n2_cnn if cnn else args.n2
        n_alpha = min(n, args.n2_alpha_cnn if cnn else args.n2_alpha)
        bs = n      # one batch: lipschitz.theorem21_radius jits a new function (compiles) on every call
        x, y = xte[:n], yte[:n]
        logits = np.asarray(net.f(x), np.float64)
        correct = np.argmax(logits, -1) == y
        srt = np.sort(logits, -1)
        margin = np.where(correct, srt[:, -1] - srt[:, -2], 0.0)
        log(f"[2] {name}: attacks l2 on {n} points (load {load1():.2f})")
        dist, asecs = attack_distances(net.f, jnp.asarray(x), jnp.asarray(y), 2, ["deepfool", "ddn"], jax.random.key(0))
        best = np.minimum(dist["deepfool"], dist["ddn"])
        upper = np.where(np.isfinite(best), best * 1.001, 28.0)
        rec = dict(test_accuracy=net.acc, train_seconds=net.train_s, n=n, n_alpha=n_alpha, n_correct=int(correct.sum()),
                   attack_median={k: float(np.median(v[correct])) for k, v in dist.items()},
                   attack_seconds_per_point={k: v / n for k, v in asecs.items()}, attack_best=best.tolist(),
                   margin=margin.tolist(), correct=correct.tolist(), methods={})
        runs = {
            "theorem2.1": (n, lambda xb, yb, ub: lipschitz.theorem21_radius(net.graph, xb, yb, upper=ub)),
            "crown": (n, lambda xb, yb, ub: bounds.certified_radius(net.graph, xb, yb, p=2, method="crown",
                                                                    steps=args.steps, upper=ub)),
            "alpha-crown": (n_alpha, lambda xb, yb, ub: bounds.certified_radius(
                net.graph, xb, yb, p=2, method="alpha-crown", steps=args.steps, upper=ub, alpha_steps=args.alpha_steps)),
        }
        if isinstance(net.model, models.OneHiddenLayer):
            W = net.model.weights(net.variables)
            runs["closed-form (certify)"] = (n, lambda xb, yb, ub: certify.certified_radius(W, xb, yb))
        radii = {}
        for method, (m, fn) in runs.items():
            mbs = min(bs, m)
            log(f"[2] {name}: {method} on {m} points (load {load1():.2f})")
            t0 = time.perf_counter()
            fn(x[:mbs], y[:mbs], upper[:mbs])
            t_compile = time.perf_counter() - t0
            (rad, unc, _), dt = batched_radius(fn, x[:m], y[:m], upper[:m], mbs)
            radii[method] = rad
            nv = check_below(rad, best[:m], "best attack l2", out["violations"], np.arange(m), name, method)
            ok = correct[:m] & np.isfinite(best[:m]) & (best[:m] > 0)
            rec["methods"][method] = dict(n=m, batch=mbs, radius=rad.tolist(), uncertain=int(unc.sum()),
                                          radius_median=float(np.median(rad[correct[:m]])) if correct[:m].any() else None,
                                          ratio_to_attack=stats(rad[ok] / best[:m][ok]), seconds_per_point=dt / m,
                                          compile_and_first_batch_s=t_compile, violations_radius_vs_attack=nv)
            log(f"    {method}: median radius {rec['methods'][method]['radius_median']}, radius/attack median "
                f"{rec['methods'][method]['ratio_to_attack']['median']}, {dt / m:.3f} s/pt, violations {nv}")
        # Theorem 2.1 vs CROWN per point, split at the median margin of the correct points
        comp = {}
        for other in [k for k in radii if k != "theorem2.1"]:
            k = len(radii[other])
            t, c = radii["theorem2.1"][:k], radii[other][:k]
            ok = correct[:k] & ((t > 0) | (c > 0))
            med_m = float(np.median(margin[:k][ok])) if ok.any() else 0.0
            row = dict(n=int(ok.sum()), ratio_t_over_other=stats(t[ok] / np.maximum(c[ok], 1e-300)),
                       theorem_wins=float(np.mean(t[ok] > c[ok])) if ok.any() else None, margin_split=med_m)
            for part, sel in (("small_margin", margin[:k] <= med_m), ("large_margin", margin[:k] > med_m)):
                s = ok & sel
                row[part] = dict(n=int(s.sum()), theorem_wins=float(np.mean(t[s] > c[s])) if s.any() else None,
                                 ratio_median=stats(t[s] / np.maximum(c[s], 1e-300))["median"])
            comp[f"theorem2.1 vs {other}"] = row
        rec["comparison"] = comp
        rec["section_seconds"] = time.perf_counter() - t_sec
        out["nets"][name] = rec
    return out


# ------------------------------------------------------------------------------------------- section 3

def _hwm_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    return -1


def memory_child(spec: dict):
    """Runs in a child process: one (net, method, batch) verification, prints a JSON line."""
    cfg = dict(WIDE, features=tuple(spec["features"]))
    model = BenchCNN(**cfg)
    template = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1), jnp.float32))
    variables = flax.serialization.from_bytes(template, Path(spec["weights"]).read_bytes()) if spec.get("weights") \
        else template
    f = jax.jit(lambda x: model.apply(variables, x))
    graph = network.trace(f, (28, 28, 1))
    xte, yte = load("mnist", "test")
    B = spec["batch"]
    res = dict(spec, hwm_before_kb=_hwm_kb())
    x, y = xte[:B], yte[:B]
    t0 = time.perf_counter()
    try:
        ok = bounds.verified(graph, x, y, eps=spec["eps"], method=spec["method"])
    except Exception as e:      # e.g. XLA's RESOURCE_EXHAUSTED under the address-space limit
        alloc = re.findall(r"allocating (\d+) bytes", str(e))
        res.update(status="failed", error=f"{type(e).__name__}: {str(e).splitlines()[0]}"[:300],
                   requested_bytes=int(alloc[-1]) if alloc else None, failed_after_s=time.perf_counter() - t0,
                   maxrss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        print("RESULT " + json.dumps(res), flush=True)
        return
    res["first_call_s"] = time.perf_counter() - t0     # compile + run
    res["verified"] = int(np.sum(ok))
    res["hwm_after_first_kb"] = _hwm_kb()
    if res["first_call_s"] < spec.get("second_if_below_s", 0):
        x, y = xte[B:2 * B], yte[B:2 * B]
        t0 = time.perf_counter()
        ok = bounds.verified(graph, x, y, eps=spec["eps"], method=spec["method"])
        res["second_call_s"] = time.perf_counter() - t0
        res["verified"] += int(np.sum(ok))
    res["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("RESULT " + json.dumps(res), flush=True)


def run_child(spec, args, log) -> dict:
    limit = int(args.mem_limit_gb * 2 ** 30)

    def preexec():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    t0 = time.perf_counter()
    l0 = load1()
    try:
        p = subprocess.run([sys.executable, __file__, "--memory-child", json.dumps(spec)], capture_output=True,
                           text=True, timeout=args.mem_timeout, preexec_fn=preexec)
        wall = time.perf_counter() - t0
        m = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
        if m:
            r = json.loads(m[-1][7:])
            r.setdefault("status", "ok")
        else:
            err = p.stderr.strip().splitlines()
            alloc = re.findall(r"allocating (\d+) bytes", p.stderr)
            r = dict(spec, status="failed", returncode=p.returncode, error=(err[-1] if err else "")[:300],
                     requested_bytes=int(alloc[-1]) if alloc else None)
    except subprocess.TimeoutExpired:
        wall = time.perf_counter() - t0
        r = dict(spec, status=f"timeout after {args.mem_timeout} s")
    r.update(wall_s=wall, load_start=l0, load_end=load1())
    log(f"[3] {spec['label']} {spec['method']} B={spec['batch']}: {r['status']}"
        + (f", peak RSS {r['maxrss_kb'] / 2 ** 20:.2f} GB, first call {r['first_call_s']:.1f} s"
           + (f", second {r['second_call_s']:.1f} s ({r['second_call_s'] / spec['batch']:.2f} s/pt)"
              if 'second_call_s' in r else '') if r['status'] == 'ok' else
           f" {r.get('error', '')} (requested {r.get('requested_bytes')})")
        + f" (load {l0:.2f} -> {r['load_end']:.2f})")
    return r


def section3(data, args, log):
    out = dict(rows=[])
    # train the wide net briefly (its weights go to the children through a temp file)
    name = "wide_cnn"
    spec = ("bench_bounds_cnn", dict(WIDE), 1, None)
    args2 = argparse.Namespace(**vars(args))
    args2.train_size = args.wide_train      # one epoch on a few images: the point is memory and time, not accuracy
    net = get_net(name, spec, data, args2, log)
    out["relus"] = net.relus()
    out["test_accuracy"] = net.acc
    out["architecture"] = "conv 3x3x128 SAME - ReLU - conv 3x3x8 stride 2 - ReLU - FC 100 - ReLU - 10"
    log(f"[3] wide CNN: {out['relus']} ReLUs")
    tmp = Path(tempfile.mkdtemp(prefix="bench_bounds_"))
    wpath = tmp / "wide.msgpack"
    wpath.write_bytes(flax.serialization.to_bytes(net.variables))
    plan = []
    for method, batches in (("ibp", args.mem_batches), ("crown-ibp", args.mem_batches), ("crown", args.mem_batches[:1])):
        for B in batches:
            plan.append(dict(label="wide 128 ch", features=[128, 8], weights=str(wpath), method=method, batch=B,
                             eps=args.mem_eps, second_if_below_s=args.mem_timeout / 3))
    for c1 in args.mem_scaling:   # CROWN on narrower first layers, untrained weights (same program, same memory)
        for B in (args.mem_batches[:2] if c1 == args.mem_scaling[0] else args.mem_batches[:1]):
            plan.append(dict(label=f"narrow {c1} ch (init weights)", features=[c1, 8], weights=None, method="crown",
                             batch=B, eps=args.mem_eps, second_if_below_s=args.mem_timeout / 3))
    for spec_ in plan:
        r = run_child(spec_, args, log)
        r["relus"] = 28 * 28 * spec_["features"][0] + 14 * 14 * 8 + 100
        out["rows"].append(r)
    return out


# ------------------------------------------------------------------------------------------- report

def derived_checks(rep):
    """From the stored per-point data: the number of soundness checks made, radius vs the MILP's adversarial points
    at eps (a radius >= eps with an adversarial point within eps is a violation), and the exact robust accuracy's
    lower bound 'MILP-infeasible or certified by some method' (certificates are sound, so a verified point the MILP
    could not decide within its time limit is robust)."""
    out = dict(checks=0, exact_union={}, radius_vs_milp_eps={}, violations=[])
    for name, r in rep.get("section1", {}).get("nets", {}).items():
        for m in r["methods"].values():
            out["checks"] += m["n"] * (1 + len(m["verified"]))
        mil = r.get("milp")
        if mil:
            out["checks"] += sum(c["n"] * (1 + len(rep["args"]["eps"])) for c in mil["checks"].values())
        exa = r.get("exact")
        if not exa:
            continue
        for e, v in exa["eps"].items():
            st = np.array(v["status"])
            n = len(st)
            cert = np.zeros(n, bool)
            for method, m in r["methods"].items():
                ver = np.asarray(m["verified"][e], bool)[:n]
                cert[:len(ver)] |= ver
                rad = np.asarray(m["radius"])[:n]
                bad = np.flatnonzero((rad >= float(e)) & (st[:len(rad)] == "milp_adversarial"))
                out["checks"] += 2 * len(ver)      # verified at eps and radius >= eps, each vs the MILP's status
                out["radius_vs_milp_eps"][f"{name} {method} eps {e}"] = int(len(bad))
                for i in bad:
                    out["violations"].append(dict(net=name, method=method, point=int(i), radius=float(rad[i]),
                                                  against=f"MILP adversarial point within eps {e}"))
            robust = (st == "robust") | cert
            out["exact_union"][e] = dict(robust=float(np.mean(robust)),
                                         not_robust=float(np.mean(np.isin(st, ["attack", "milp_adversarial"]))),
                                         unknown=float(np.mean(~robust & ~np.isin(st, ["attack", "milp_adversarial"]))))
    for r in rep.get("section2", {}).get("nets", {}).values():
        out["checks"] += sum(m["n"] for m in r["methods"].values())
    return out


def f4(v, nd=4):
    return "-" if v is None else f"{v:.{nd}f}"


def markdown(rep) -> str:
    L = [f"# Sound certificates on MNIST: bound propagation, MILP, deep Theorem 2.1, memory ({rep['date']})", "",
         f"Machine: {rep['machine']}; shared with other jobs. 1-minute load average {rep['load_start']:.2f} at the "
         f"start and {rep['load_end']:.2f} at the end of the run (per stage in the log lines of the JSON); every "
         f"time below is wall time on this loaded machine. Total {rep['total_s']:.0f} s wall. "
         f"Command: `{rep['command']}`.", ""]
    L += rep.get("notes_top", [])
    L += ["", "## Soundness", ""]
    violations = rep["violations"] + rep.get("derived", {}).get("violations", [])
    nviol = len(violations)
    if rep.get("derived"):
        L += [f"{rep['derived']['checks']} per-point checks in all (radius vs the best attack, verified-at-eps vs the "
              "best attack, radius and verified-at-eps vs the MILP's adversarial points, l2 radii vs the best l2 "
              "attack).", ""]
    if nviol:
        L += [f"**{nviol} SOUNDNESS VIOLATIONS** (a certified radius at or above the distance of an adversarial point, "
              "or a point verified at eps with an adversarial point within eps):", ""]
        for v in violations[:50]:
            L.append(f"- {json.dumps(v)}")
    else:
        L += ["**No violation**: on every net and point, every certified radius (IBP, CROWN-IBP, CROWN, alpha-CROWN, "
              "deep Theorem 2.1, closed form) is below the distance of the best attack found, no point verified at "
              "eps has an adversarial point within eps, and on the MILP net every radius is below the MILP's "
              "adversarial distance (radius <= MILP <= attack)."]
    L += ["", "## 1. l_inf certificates on ReLU nets", "",
          "Certified accuracy over the first N test points (misclassified points count as not certified) by "
          "`bounds.verified` at each eps; radius: `bounds.certified_radius` (bisection, "
          f"{rep['args']['steps']} steps, started at 1.001 x the best attack distance so that a radius at or "
          "above the attack is visible as a violation); ratio = radius / best attack distance (min of DeepFool and "
          "minimal PGD, l_inf) over correctly classified points; alpha-CROWN: "
          f"{rep['args']['alpha_steps']} Adam steps on the slopes. Times per point exclude compilation (one warm-up "
          "call of the same batch shape); 'verify' is one bound evaluation at one eps, 'radius' the whole bisection.", ""]
    s1 = rep["section1"]
    eps = rep["args"]["eps"]
    L += ["| net | test acc | ReLUs | method | points | " + " | ".join(f"cert. acc eps {e}" for e in eps)
          + " | radius / attack median | 90 % | s/pt verify | s/pt radius |",
          "|---|---|---|---|---|" + "---|" * len(eps) + "---|---|---|---|"]
    for name, r in s1["nets"].items():
        for method, m in r["methods"].items():
            L.append(f"| {name} | {r['test_accuracy']:.4f} | {r['relus']} | {method} | {m['n']} | "
                     + " | ".join(f"{m['certified_accuracy'][str(e)]:.2f}" for e in eps)
                     + f" | {f4(m['ratio_to_attack']['median'], 3)} | {f4(m['ratio_to_attack']['q90'], 3)} | "
                     f"{m['verify_seconds_per_point']:.4f} | {m['radius_seconds_per_point']:.3f} |")
        exa = r.get("exact")
        if exa:
            L.append(f"| {name} | | | **exact (MILP at eps)** | {exa['n']} | "
                     + " | ".join(f"{exa['eps'][str(e)]['robust']:.2f}" + (f" (+{exa['eps'][str(e)]['unknown']:.2f} unknown)"
                                  if exa['eps'][str(e)]['unknown'] else "") for e in eps)
                     + f" | | | {f4(exa['eps'][str(eps[-1])]['milp_seconds_median'], 2)} (median MILP, eps {eps[-1]}) | |")
        mil = r.get("milp")
        if mil:
            L.append(f"| {name} | | | **exact (MILP min. distance)** | {mil['n']} | "
                     + " | ".join(f"{mil['exact_certified_accuracy'][str(e)]['robust']:.2f}"
                                  + (f" (+{mil['exact_certified_accuracy'][str(e)]['unknown']:.2f} unknown)"
                                     if mil['exact_certified_accuracy'][str(e)]['unknown'] else "") for e in eps)
                     + f" | attack / MILP: {f4(mil['attack_over_milp']['median'], 4)} | max "
                     f"{f4(mil['attack_over_milp']['q90'], 4)} (90 %) | | {mil['milp_seconds_median']:.1f} (median) |")
    L += ["", "Attacks (l_inf, medians over correct points, s/pt):", ""]
    for name, r in s1["nets"].items():
        L.append(f"- {name}: " + ", ".join(f"{k} {v:.4f} ({r['attack_seconds_per_point'][k]:.3f} s/pt)"
                                           for k, v in r["attack_median"].items()))
    L += ["", "The same points for every method (the first n_alpha points, where alpha-CROWN ran): certified accuracy "
          "at each eps and median radius (all points, 0 where not certified):", "",
          "| net | points | " + " | ".join(f"{mth} (eps {', '.join(str(e) for e in eps)}; median radius)" for mth in
                                             ("ibp", "crown-ibp", "crown", "alpha-crown")) + " |", "|---|---|---|---|---|---|"]
    for name, r in s1["nets"].items():
        sp = r["same_points"]
        L.append(f"| {name} | {sp['n']} | " + " | ".join(
            ", ".join(f"{sp['certified_accuracy'][mth][str(e)]:.2f}" for e in eps) + f"; {sp['radius_median'][mth]:.4f}"
            for mth in ("ibp", "crown-ibp", "crown", "alpha-crown")) + " |")
    L += ["", "Monotonicity per point (a radius more than 0.1 % below the other method's; bisection and the "
          "rounding pads can make single points non-monotone):", "",
          "| net | comparison | points | points violating | median a | median b | median a / b |", "|---|---|---|---|---|---|---|"]
    for name, r in s1["nets"].items():
        for k, v in r["monotone"].items():
            L.append(f"| {name} | {k} | {v['n']} | {v['points_below']} | {v['median_a']:.5f} | {v['median_b']:.5f} | "
                     f"{f4(v['median_ratio'], 3)} |")
    for name, r in s1["nets"].items():
        exa = r.get("exact")
        if exa:
            L += ["", f"Exact robustness at eps on {name} ({exa['n']} points): an attack point within eps, else "
                  f"`verify.min_adversarial_milp` in the eps-ball with big-M constants from IBP (independent of "
                  f"CROWN), {exa['time_limit_s']} s limit per MILP, {exa['budget_s']} s budget in all (points left "
                  "when it is spent: skipped = unknown). Every point a method verified is checked against the MILP's "
                  "adversarial points.", "",
                  "| eps | robust (MILP infeasible) | robust (MILP infeasible or certified by a method) | not robust "
                  "(attack / MILP point) | unknown (of the union) | statuses | CROWN verified | MILP-robust, CROWN not | "
                  "violations (verified but MILP adversarial) |", "|---|---|---|---|---|---|---|---|---|"]
            union = rep.get("derived", {}).get("exact_union", {})
            for e, v in exa["eps"].items():
                u = union.get(e, {})
                L.append(f"| {e} | {v['robust']:.2f} | {f4(u.get('robust'), 2)} | {v['not_robust']:.2f} | "
                         f"{f4(u.get('unknown'), 2)} | {json.dumps(v['counts'])} | "
                         f"{v['crown_verified']:.2f} | {v['milp_robust_not_crown']} | {json.dumps(v['violations'])} |")
        mil = r.get("milp")
        if not mil:
            continue
        L += ["", f"MILP on {name} ({mil['n']} points, HiGHS, {mil['time_limit_s']} s limit, search inside the ball of "
              "1.0001 x the best attack distance): status " + json.dumps(mil["status_counts"])
              + f"; optimal MILP distance above the attack distance: {mil['milp_above_attack']} points; "
              f"'infeasible' in the attack's ball: {mil['infeasible_in_attack_ball']}"
              + (f"; region attack on these points: {mil['region']['seconds_per_point']:.1f} s/pt" if mil.get("region") else ""),
              "", "| method | points | radius > MILP adversarial distance | verified at eps but MILP adversarial within eps | "
              "radius / MILP distance median (optimal points, radius > 0) | 90 % |", "|---|---|---|---|---|---|"]
        for method, c in mil["checks"].items():
            L.append(f"| {method} | {c['n']} | {c['violations_radius_vs_milp']} | {c['violations_verified_vs_milp']} | "
                     f"{f4(c['ratio_to_milp']['median'], 3)} | {f4(c['ratio_to_milp']['q90'], 3)} |")
    s2 = rep.get("section2")
    if s2:
        L += ["", "## 2. l2: deep Theorem 2.1 vs CROWN / alpha-CROWN on softplus nets", "",
              f"softplus slope alpha = {SP} in every net; radii over the first N test points; ratio = radius / best "
              "l2 attack (min of DeepFool and DDN) over correct points; Theorem 2.1: `lipschitz.theorem21_radius` "
              "(16 bisection steps from 1.001 x the attack); CROWN: `bounds.certified_radius(p=2)`; closed form: "
              "`certify.certified_radius` (one hidden layer only; certifies on all of R^d, without the [0, 1] box).", "",
              "| net | test acc | method | points | median radius | radius / attack median | 10 % | 90 % | s/pt |",
              "|---|---|---|---|---|---|---|---|---|"]
        for name, r in s2["nets"].items():
            for method, m in r["methods"].items():
                q = m["ratio_to_attack"]
                L.append(f"| {name} | {r['test_accuracy']:.4f} | {method} | {m['n']} | {f4(m['radius_median'])} | "
                         f"{f4(q['median'], 3)} | {f4(q['q10'], 3)} | {f4(q['q90'], 3)} | {m['seconds_per_point']:.3f} |")
        L += ["", "Per point, Theorem 2.1 radius / other radius (correct points where either is > 0), and the share of "
              "points where Theorem 2.1 is larger, overall and split at the median logit margin:", "",
              "| net | comparison | points | ratio median | 10 % | 90 % | Th. 2.1 wins | small margin: wins (ratio) | "
              "large margin: wins (ratio) |", "|---|---|---|---|---|---|---|---|---|"]
        for name, r in s2["nets"].items():
            for k, c in r["comparison"].items():
                q = c["ratio_t_over_other"]
                L.append(f"| {name} | {k} | {c['n']} | {f4(q['median'], 3)} | {f4(q['q10'], 3)} | {f4(q['q90'], 3)} | "
                         f"{f4(c['theorem_wins'], 2)} | {f4(c['small_margin']['theorem_wins'], 2)} "
                         f"({f4(c['small_margin']['ratio_median'], 3)}) | {f4(c['large_margin']['theorem_wins'], 2)} "
                         f"({f4(c['large_margin']['ratio_median'], 3)}) |")
        L += ["", "l2 attacks (medians over correct points):", ""]
        for name, r in s2["nets"].items():
            L.append(f"- {name}: " + ", ".join(f"{k} {v:.4f} ({r['attack_seconds_per_point'][k]:.3f} s/pt)"
                                               for k, v in r["attack_median"].items()))
    s3 = rep.get("section3")
    if s3:
        L += ["", "## 3. Memory: CROWN on a CNN with about 100k ReLUs", "",
              f"Net: {s3['architecture']}: **{s3['relus']} ReLUs**, trained 1 epoch on {rep['args']['wide_train']} "
              f"images, test accuracy {s3['test_accuracy']:.4f}. Each row is a child process verifying one batch "
              f"at l_inf eps {rep['args']['mem_eps']} (`bounds.verified`), under an address-space limit of "
              f"{rep['args']['mem_limit_gb']} GB (so that an allocation beyond it fails cleanly instead of "
              f"pushing the shared machine into the OOM killer) and a {rep['args']['mem_timeout']} s wall limit. "
              "Peak RSS = the child's ru_maxrss (includes JAX, the data set and compilation); first call = compile + "
              "run, second call (on the next batch, only when the first was quick) = run; s/pt = second call / batch.", "",
              "| net | ReLUs | method | batch | status | peak RSS GB | first call s | second call s | s/pt | verified | "
              "XLA request that failed | load start -> end |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in s3["rows"]:
            head = f"| {r['label']} | {r['relus']} | {r['method']} | {r['batch']} | {r['status']} | "
            tail = f" | {r['load_start']:.2f} -> {r['load_end']:.2f} |"
            if r["status"] == "ok":
                sec = r.get("second_call_s")
                L.append(head + f"{r['maxrss_kb'] / 2 ** 20:.2f} | {r['first_call_s']:.1f} | {f4(sec, 1)} | "
                         f"{f4(None if sec is None else sec / r['batch'], 2)} | {r['verified']} | " + tail)
            else:
                why = f"{r['requested_bytes'] / 2 ** 30:.1f} GB" if r.get("requested_bytes") else (r.get("error") or "-")[:80]
                rss = f"{r['maxrss_kb'] / 2 ** 20:.2f}" if r.get("maxrss_kb") else "-"
                t = f"{r['failed_after_s']:.1f} (failed)" if r.get("failed_after_s") else "-"
                L.append(head + f"{rss} | {t} | - | - | - | " + why + tail)
    L += ["", "## Notes", ""] + [f"- {n}" for n in rep.get("notes", [])]
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a smoke run on a handful of points")
    ap.add_argument("--sections", default="1,2,3")
    ap.add_argument("--n", type=int, default=100, help="section 1: points on the MLPs (IBP, CROWN-IBP, CROWN)")
    ap.add_argument("--n-alpha", type=int, default=30, help="section 1: alpha-CROWN points on the MLPs")
    ap.add_argument("--n-cnn", type=int, default=20, help="section 1: points on the CNN")
    ap.add_argument("--n-alpha-cnn", type=int, default=6)
    ap.add_argument("--cnn-batch", type=int, default=10, help="points per bound call on CNNs (memory)")
    ap.add_argument("--eps", default="0.01,0.02,0.05")
    ap.add_argument("--steps", type=int, default=10, help="bisection steps of bounds.certified_radius")
    ap.add_argument("--alpha-steps", type=int, default=20)
    ap.add_argument("--milp-net", default="tiny_32")
    ap.add_argument("--n-milp", type=int, default=8)
    ap.add_argument("--milp-time", type=float, default=30.0)
    ap.add_argument("--n-exact", type=int, default=100, help="points of the MILP-at-eps exact robustness")
    ap.add_argument("--exact-time", type=float, default=10.0, help="seconds per MILP at one eps")
    ap.add_argument("--exact-budget", type=float, default=300.0, help="seconds for all MILPs at eps")
    ap.add_argument("--region", action="store_true", help="the region attack on the MILP net's points too")
    ap.add_argument("--n-regions", type=int, default=20)
    ap.add_argument("--n2", type=int, default=40, help="section 2: points on the smooth MLPs")
    ap.add_argument("--n2-alpha", type=int, default=20)
    ap.add_argument("--n2-cnn", type=int, default=6)
    ap.add_argument("--n2-alpha-cnn", type=int, default=3)
    ap.add_argument("--wide-train", type=int, default=8000, help="section 3: training images of the wide CNN")
    ap.add_argument("--mem-batches", default="1,4,16")
    ap.add_argument("--mem-scaling", default="8,16,32", help="first-layer channels of the CROWN scaling rows")
    ap.add_argument("--mem-eps", type=float, default=0.005)
    ap.add_argument("--mem-limit-gb", type=float, default=14.0)
    ap.add_argument("--mem-timeout", type=int, default=300)
    ap.add_argument("--train-size", type=int, default=30000, help="training images of every net (1 epoch)")
    ap.add_argument("--model-cache", default="", help="a folder to cache trained weights in (outside the repo)")
    ap.add_argument("--out-dir", default="", help="where bounds.json / bounds.md go (default: the repo; "
                    "--quick: a folder in /tmp)")
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--render", action="store_true", help="rewrite bounds.md from bounds.json (adding --note lines)")
    ap.add_argument("--memory-child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return
    args.eps = [float(e) for e in args.eps.split(",")]
    args.mem_batches = [int(b) for b in args.mem_batches.split(",")]
    args.mem_scaling = [int(c) for c in args.mem_scaling.split(",") if c]
    sections = set(args.sections.split(","))
    if args.quick:
        args.n, args.n_alpha, args.n_cnn, args.n_alpha_cnn, args.cnn_batch = 4, 2, 2, 2, 2
        args.n_exact, args.exact_budget = 4, 30.0
        args.n_milp, args.milp_time, args.n2, args.n2_alpha, args.n2_cnn, args.n2_alpha_cnn = 1, 10.0, 4, 2, 2, 2
        args.steps, args.alpha_steps, args.mem_batches, args.mem_scaling = 6, 5, [1], [8]
        args.mem_timeout, args.wide_train = 120, 1000
    out_json = (Path(args.out_dir) if args.out_dir else (Path(tempfile.gettempdir()) / "bench_bounds_quick"
                                                          if args.quick else RESULTS)) / "bounds.json"
    out_md = out_json.parent / "bounds.md" if (args.out_dir or args.quick) else HERE / "bounds.md"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    if args.render:
        rep = json.loads(out_json.read_text())
        rep["notes"] = rep.get("notes", []) + args.note
        rep["derived"] = derived_checks(rep)
        out_json.write_text(json.dumps(rep, indent=1, default=float))
        out_md.write_text(markdown(rep))
        print(f"rendered {out_md}; {len(rep['violations']) + len(rep['derived']['violations'])} violations")
        return
    t_start = time.perf_counter()
    log_lines = []

    def log(s):
        s = f"[{time.perf_counter() - t_start:6.0f} s] {s}"
        print(s, flush=True)
        log_lines.append(s)

    rep = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), machine=machine(),
               load_start=load1(), command="nice -n 10 python benchmarks/bench_bounds.py " + " ".join(sys.argv[1:]),
               args={k: v for k, v in vars(args).items() if k != "memory_child"}, violations=[], notes=list(args.note))
    rep["notes_top"] = [
        f"Training (every net): Adam 1e-3, batch 128, constant schedule, 1 epoch on the first "
        f"{min(args.train_size, 5000) if args.quick else args.train_size} MNIST training images (brief training: the "
        "benchmark is about the certificates). PGD training (mlp_64x2_at): the regularizer "
        "`attacks.adversarial_training(1.0, p=inf, eps=0.1, steps=7)`, loss CE(x) + CE(x_pgd), the recipe of "
        "bench_attacks.py's mlp1024_at. Points: the first N MNIST test images (misclassified ones included)."]
    log(f"start, load {rep['load_start']:.2f}")
    data = (load("mnist", "train"), load("mnist", "test"))

    def save():
        rep["derived"] = derived_checks(rep)
        rep["load_end"] = load1()
        rep["total_s"] = time.perf_counter() - t_start
        rep["log"] = log_lines
        out_json.write_text(json.dumps(rep, indent=1, default=float))
        out_md.write_text(markdown(rep))

    if "1" in sections:
        nets = {k: get_net(k, v, data, args, log) for k, v in RELU_NETS.items()}
        rep["section1"] = section1(nets, data, args, log)
        rep["violations"] += rep["section1"]["violations"]
        save()
    if "2" in sections:
        nets = {k: get_net(k, v, data, args, log) for k, v in SMOOTH_NETS.items()}
        rep["section2"] = section2(nets, data, args, log)
        rep["violations"] += rep["section2"]["violations"]
        save()
    if "3" in sections:
        rep["section3"] = section3(data, args, log)
        save()
    save()
    log(f"done: {len(rep['violations']) + len(rep['derived']['violations'])} soundness violations; wrote {out_json} and {out_md}; load {load1():.2f}")
    if rep["violations"] or rep["derived"]["violations"]:
        print("!!! SOUNDNESS VIOLATIONS !!!", json.dumps((rep["violations"] + rep["derived"]["violations"])[:20],
                                                         indent=1), flush=True)


if __name__ == "__main__":
    main()
