"""robustjax's APGD, APGD-T, FAB, Square and standard evaluation against the reference implementations that
install here (torchattacks 3.5.1 and ART 1.20.1 on torch CPU), per point, on the same weights.

Two MNIST nets are trained with robustjax (`train.fit`, Adam): an MLP 784-256-256-10 and the MMR paper's
small CNN (conv 4x4x16 s2 - conv 4x4x32 s2 - FC 100 - 10), both ReLU. The identical torch nn.Module is built
for each and the weights are copied (Dense kernel [in, out] -> Linear weight [out, in]; Conv kernel
[kh, kw, in, out] -> [out, in, kh, kw]; the CNN's first Dense rows permuted from flax's (h, w, c) flatten
order to torch's (c, h, w)); the script asserts that both give the same logits to 1e-4 on 256 test images
before any attack runs.

On the first N MNIST test points (misclassified ones included; they count as broken for everyone), each
attack runs in both frameworks with the published defaults matched as far as the APIs allow (SETTINGS
below, also written to the output). Every point either side returns is re-verified with robustjax's
model in float32 (`verify`): clipped to [0, 1], inside the eps ball (relative tolerance 1e-5), argmax
different from the label. eps per model and norm is chosen on held-out test points (indices 9000 + ...)
as the value of a fixed grid where our APGD-CE leaves robust accuracy closest to 50 % (`calibrate`).

    nice -n 10 python benchmarks/bench_reference_attacks.py            # the full run (16 min here, load 7 -> 4)
    nice -n 10 python benchmarks/bench_reference_attacks.py --quick    # 10 points, a smoke run (6 min at load 6)
    python benchmarks/bench_reference_attacks.py --render --note "..."  # rewrite the markdown from the JSON

Needs the optional extra `compare` (torch, torchattacks, adversarial-robustness-toolbox). Writes
benchmarks/results/reference_attacks.json and benchmarks/reference_attacks.md (--quick: *_quick).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import warnings
from pathlib import Path


def _threads_from_argv(default: int = 1) -> int:
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return default


# Both frameworks get the same number of CPU threads (default 1): on this shared 2-core machine torch's
# default 2 OpenMP threads ran a small MLP's gradient step 30-40x slower than 1 thread at load 8-9, which
# would measure the oversubscription, not the attack. XLA's flags must be set before jax is imported.
THREADS = _threads_from_argv()
if THREADS == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from robustjax import train
from robustjax.attacks import apgd, apgd_targeted, fab, square, standard_evaluation
from robustjax.data import load
from bench_train import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
INF = np.inf

NETS = {
    "mlp": dict(model="mlp", model_config={"widths": (256, 256), "act": "relu"}, epochs=2),
    "cnn": dict(model="mmr_cnn", model_config={"act": "relu"}, epochs=2),
}
EPS_GRID = {INF: (0.02, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3),
            2.0: (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)}
CALIBRATION_START = 9000
FAB_TOL = 1e-4

# The attacks' settings: the published defaults (Croce & Hein 2020; Andriushchenko et al. 2020), the same
# in every framework unless written otherwise.
SETTINGS = dict(
    apgd_ce=dict(steps=100, restarts=1, loss="ce", rho=0.75, momentum=0.75, initial_step="2 eps"),
    apgd_t=dict(steps=100, restarts=1, loss="targeted DLR", n_targets=9,
                targets="the 2nd .. 10th largest clean logits"),
    square=dict(n_queries=5000, p_init=0.8, restarts=1, loss="margin"),
    fab=dict(steps=100, restarts=1, alpha_max=0.1, eta=1.05, beta=0.9, targeted=False,
             note="minimal-norm (no eps): torchattacks FAB gets eps=1e6, so every point it finds is returned"),
    autoattack=dict(version="standard", attacks=["apgd-ce", "apgd-t", "fab-t", "square"], apgd_steps=100,
                    fab_steps=100, n_targets=9, n_queries=5000, restarts=1),
)


# ------------------------------------------------------------------------------------------ compile time

_COMPILE = [0.0]


def _on_event(event, duration, **_):
    if event.startswith("/jax/core/compile/"):
        _COMPILE[0] += duration


jax.monitoring.register_event_duration_secs_listener(_on_event)


def loadavg() -> float:
    return float(open("/proc/loadavg").read().split()[0])


# ---------------------------------------------------------------------------------------------- models

def train_net(name, data, log, *, quick):
    spec = NETS[name]
    cfg = train.TrainConfig(model=spec["model"], model_config=spec["model_config"], optimizer="adam",
                            learning_rate=1e-3, schedule="constant", epochs=1 if quick else spec["epochs"],
                            batch_size=128, seed=0, progress=False)
    (xtr, ytr), (xte, yte) = data
    if quick:
        xtr, ytr = xtr[:10000], ytr[:10000]
    t0 = time.perf_counter()
    state = train.fit(cfg, (xtr, ytr))
    t_train = time.perf_counter() - t0
    variables = jax.device_get(state.variables())
    model = train.build_model(cfg, 10)
    f = jax.jit(lambda x: model.apply(variables, x))
    pred = np.concatenate([np.asarray(jnp.argmax(f(xte[i:i + 1000]), -1)) for i in range(0, len(xte), 1000)])
    acc = float(np.mean(pred == yte))
    log(f"{name}: test accuracy {acc:.4f}, trained in {t_train:.0f} s ({cfg.epochs} epochs on {len(xtr)} images)")
    return f, variables, acc, t_train, cfg


def torch_net(name, variables):
    """The identical torch nn.Module (NCHW input) with robustjax's weights copied."""
    import torch
    from torch import nn
    p = jax.tree.map(lambda a: np.asarray(a, np.float32), variables["params"])

    def linear(layer, kernel, bias):
        layer.weight.data = torch.from_numpy(np.ascontiguousarray(kernel.T))
        layer.bias.data = torch.from_numpy(bias.copy())
        return layer

    def conv(layer, kernel, bias):
        layer.weight.data = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        layer.bias.data = torch.from_numpy(bias.copy())
        return layer

    if name == "mlp":
        # flax flattens NHWC as (h, w, c), torch NCHW as (c, h, w): the same order for MNIST's c = 1
        dims = [784] + [p[f"dense_{i}"]["kernel"].shape[1] for i in range(len(NETS["mlp"]["model_config"]["widths"]))]
        layers = [nn.Flatten()]
        for i in range(len(dims) - 1):
            layers += [linear(nn.Linear(dims[i], dims[i + 1]), p[f"dense_{i}"]["kernel"], p[f"dense_{i}"]["bias"]),
                       nn.ReLU()]
        layers.append(linear(nn.Linear(dims[-1], 10), p["out"]["kernel"], p["out"]["bias"]))
    else:
        # flax SAME padding for k = 4, stride 2 on 28 -> 14 -> 7 pads 1 on each side: torch padding=1
        k0 = p["dense_0"]["kernel"]                                   # [7 * 7 * 32 in (h, w, c) order, 100]
        k0 = k0.reshape(7, 7, 32, -1).transpose(2, 0, 1, 3).reshape(7 * 7 * 32, -1)   # (c, h, w) order
        layers = [conv(nn.Conv2d(1, 16, 4, stride=2, padding=1), p["conv_0"]["kernel"], p["conv_0"]["bias"]),
                  nn.ReLU(),
                  conv(nn.Conv2d(16, 32, 4, stride=2, padding=1), p["conv_1"]["kernel"], p["conv_1"]["bias"]),
                  nn.ReLU(), nn.Flatten(),
                  linear(nn.Linear(7 * 7 * 32, 100), k0, p["dense_0"]["bias"]), nn.ReLU(),
                  linear(nn.Linear(100, 10), p["out"]["kernel"], p["out"]["bias"])]
    net = nn.Sequential(*layers).eval()
    for q in net.parameters():
        q.requires_grad_(False)
    return net


def nchw(x):
    import torch
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


def nhwc(t):
    return np.ascontiguousarray(t.detach().cpu().numpy().transpose(0, 2, 3, 1))


def check_same_logits(f, tnet, x, log):
    import torch
    with torch.no_grad():
        lt = tnet(nchw(x)).numpy()
    lj = np.asarray(f(jnp.asarray(x)))
    gap = float(np.max(np.abs(lt - lj)))
    assert gap <= 1e-4, f"torch and robustjax logits differ by {gap} (> 1e-4)"
    same_pred = float(np.mean(lt.argmax(1) == lj.argmax(1)))
    log(f"  torch vs robustjax logits on {len(x)} test images: max |diff| {gap:.2e}, same argmax {same_pred:.4f}")
    return gap


# ------------------------------------------------------------------------------------- re-verification

def logits_np(f, x, bs=500):
    return np.concatenate([np.asarray(f(jnp.asarray(x[i:i + bs]))) for i in range(0, len(x), bs)])


def lp(d, p):
    d = np.asarray(d, np.float64).reshape(len(d), -1)
    return np.max(np.abs(d), 1) if p == INF else np.sqrt(np.sum(d * d, 1))


def verify(f, x, y, x_adv, p, eps=None, rel_tol=1e-5):
    """Re-verifies candidate points with robustjax's float32 model: clipped to [0, 1], within eps (relative
    tolerance rel_tol) when eps is given, argmax != label, and the clean point correctly classified.
    Returns (broken [n] bool, distance [n]: 0 where misclassified clean, inf where not broken, out-of-box count)."""
    x = np.asarray(x, np.float32)
    x_adv = np.asarray(x_adv, np.float32)
    outside = int(np.sum(np.any(((x_adv < 0) | (x_adv > 1)).reshape(len(x), -1), 1)))
    xa = np.clip(x_adv, 0.0, 1.0)
    correct = logits_np(f, x).argmax(1) == y
    adv = logits_np(f, xa).argmax(1) != y
    d = lp(xa - x, p)
    ok = correct & adv
    if eps is not None:
        ok &= d <= eps * (1 + rel_tol)
    dist = np.where(ok, d, np.where(correct, np.inf, 0.0))
    return ok, dist, outside


def agreement(a, b, correct):
    """Per point over the correctly classified points: both broken, both robust, only a, only b, and the
    exact two-sided binomial (McNemar) p-value of the discordant split under 'equally strong'."""
    from scipy.stats import binomtest
    a, b = a[correct], b[correct]
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    disc = only_a + only_b
    pv = float(binomtest(only_a, disc, 0.5).pvalue) if disc else 1.0
    return dict(both_broken=int(np.sum(a & b)), both_robust=int(np.sum(~a & ~b)), only_ours=only_a,
                only_theirs=only_b, mcnemar_p=pv)


# ------------------------------------------------------------------------------------------- runners

# the warm-up points (set in run_net): "wrong", test images the net misclassifies (the budget attacks stop
# at once there: compilation only); "right", correctly classified held-out test images (indices 5000+),
# for the targeted cascades, which skip misclassified points
WARM = {}


def run_ours(fn, f, x, y, *, bs, warm=True, warm_kw=None, warm_on="wrong", **kw):
    """(result, seconds, compile seconds inside the timed call): a warm-up call on m = min(bs, N) WARM points
    with batch_size=m, so that the timed call (batch_size=m too) reuses the compiled programs.
    warm_kw: options replacing kw in the warm-up (e.g. n_targets=1: the same compiled program)."""
    m = min(bs, len(x))
    if warm:
        xw, yw = WARM[warm_on]
        fn(f, xw[:m], yw[:m], batch_size=m, **dict(kw, **(warm_kw or {})))
    c0 = _COMPILE[0]
    t0 = time.perf_counter()
    r = fn(f, x, y, batch_size=m, **kw)
    dt = time.perf_counter() - t0
    return r, dt, _COMPILE[0] - c0


def run_torch(atk, x, y):
    import torch
    xt, yt = nchw(x), torch.from_numpy(np.asarray(y, np.int64))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adv = atk(xt, yt)
    dt = time.perf_counter() - t0
    with torch.no_grad():
        claimed = atk.model(adv).argmax(1).numpy() != np.asarray(y)
    return nhwc(adv), dt, claimed


def run_art(attack, x, y):
    import torch
    np.random.seed(0)
    torch.manual_seed(0)
    xn = np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adv = attack.generate(xn, np.asarray(y, np.int64))
    dt = time.perf_counter() - t0
    return np.ascontiguousarray(adv.transpose(0, 2, 3, 1)), dt


def art_classifier(tnet):
    from art.estimators.classification import PyTorchClassifier
    import torch
    return PyTorchClassifier(model=tnet, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                             clip_values=(0.0, 1.0), device_type="cpu")


def norm_name(p):
    return "Linf" if p == INF else "L2"


def pn(p):
    return "inf" if p == INF else "2"


def calibrate(f, data, p, n, bs, log):
    """eps of EPS_GRID[p] where our APGD-CE (100 steps) leaves robust accuracy closest to 50 % on n
    held-out test points; returns (eps, {eps: robust accuracy})."""
    (_, _), (xte, yte) = data
    x, y = xte[CALIBRATION_START:CALIBRATION_START + n], yte[CALIBRATION_START:CALIBRATION_START + n]
    m = min(bs, n)
    table = {}
    for e in EPS_GRID[p]:
        r = apgd(f, x, y, p=p, eps=e, key=jax.random.key(123), steps=100, batch_size=m)
        table[e] = float(np.mean(~r.success))
    eps = min(table, key=lambda e: (abs(table[e] - 0.5), e))
    log(f"  l{pn(p)} calibration (our APGD-CE, {n} held-out points): " +
        ", ".join(f"{e}: {a:.2f}" for e, a in table.items()) + f" -> eps {eps}")
    return eps, table


# ---------------------------------------------------------------------------------------- comparisons

def budget_compare(name, f, tnet, x, y, p, eps, args, log, *, ours_fn, ours_kw, theirs, seed1=True, warm_kw=None,
                   warm_on="wrong"):
    """One budget attack: ours (seed 0, seed 1) and each reference; robust accuracy, agreement, time."""
    n = len(x)
    correct = logits_np(f, x).argmax(1) == y
    key0, key1 = jax.random.key(0), jax.random.key(1)
    rows = {}
    r, dt, comp = run_ours(ours_fn, f, x, y, bs=args.batch, p=p, eps=eps, key=key0, warm_kw=warm_kw, warm_on=warm_on,
                           **ours_kw)
    ok, _, outside = verify(f, x, y, r.x_adv, p, eps)
    rows["robustjax"] = dict(broken=ok, seconds=dt, compile_in_timed=comp, outside_box=outside,
                             claimed_not_verified=int(np.sum(r.success & ~r.misclassified & ~ok)))
    if seed1 and not args.no_seed1:
        r1, dt1, _ = run_ours(ours_fn, f, x, y, bs=args.batch, warm=False, p=p, eps=eps, key=key1, **ours_kw)
        ok1, _, _ = verify(f, x, y, r1.x_adv, p, eps)
        rows["robustjax seed 1"] = dict(broken=ok1, seconds=dt1)
    for label, make in theirs:
        atk = make()
        if label.startswith("ART"):
            adv, dt = run_art(atk, x, y)
            claimed = None
        else:
            adv, dt, claimed = run_torch(atk, x, y)
        ok, _, outside = verify(f, x, y, adv, p, eps)
        rows[label] = dict(broken=ok, seconds=dt, outside_box=outside)
        if claimed is not None:
            rows[label]["claimed_not_verified"] = int(np.sum(claimed & correct & ~ok))
    out = dict(attack=name, norm=norm_name(p), eps=eps, n=n, n_correct=int(correct.sum()), frameworks={})
    ours = rows["robustjax"]
    for label, row in rows.items():
        rec = dict(robust_accuracy=float(np.mean(correct & ~row["broken"])), seconds=row["seconds"],
                   ms_per_point=1e3 * row["seconds"] / n,
                   **{k: v for k, v in row.items() if k not in ("broken", "seconds")},
                   broken=np.flatnonzero(row["broken"]).tolist())
        if label != "robustjax":
            rec["agreement_with_ours"] = agreement(ours["broken"], row["broken"], correct)
            rec["time_ratio_ours_over_this"] = ours["seconds"] / row["seconds"]
        out["frameworks"][label] = rec
    log(f"  {name:8s} l{pn(p)} eps {eps}: " + "; ".join(
        f"{k} RA {v['robust_accuracy']:.3f} {v['ms_per_point']:.1f} ms/pt" +
        (f" [{v['agreement_with_ours']['only_ours']}/{v['agreement_with_ours']['only_theirs']}]"
         if "agreement_with_ours" in v else "") for k, v in out["frameworks"].items()))
    return out


def fab_compare(f, tnet, x, y, p, args, log):
    import torchattacks
    n = len(x)
    correct = logits_np(f, x).argmax(1) == y
    kw = dict(steps=SETTINGS["fab"]["steps"], restarts=1, alpha_max=0.1, eta=1.05, beta=0.9)
    r, dt, comp = run_ours(fab, f, x, y, bs=args.batch, p=p, key=jax.random.key(0), **kw)
    ok_o, d_o, out_o = verify(f, x, y, r.x_adv, p)
    atk = torchattacks.FAB(tnet, norm=norm_name(p), eps=1e6, steps=kw["steps"], n_restarts=1, alpha_max=0.1,
                           eta=1.05, beta=0.9, seed=0, multi_targeted=False, n_classes=10)
    adv, dt_t, claimed = run_torch(atk, x, y)
    ok_t, d_t, out_t = verify(f, x, y, adv, p)
    both = ok_o & ok_t & (d_t > 0) & (d_o > 0)
    ratio = d_o[both] / d_t[both]
    stats = dict(n_both=int(both.sum()), median=float(np.median(ratio)) if both.any() else None,
                 q10=float(np.quantile(ratio, 0.1)) if both.any() else None,
                 q90=float(np.quantile(ratio, 0.9)) if both.any() else None,
                 share_ours_larger_1pct=float(np.mean(ratio > 1.01)) if both.any() else None,
                 share_ours_smaller_1pct=float(np.mean(ratio < 0.99)) if both.any() else None)
    # "at most equal": float32 rounding differs between the frameworks (~1e-7 relative), hence the 1e-4
    stats["at_most_equal_in_median"] = bool(stats["median"] is not None and stats["median"] <= 1.0 + FAB_TOL)
    out = dict(attack="fab", norm=norm_name(p), n=n, n_correct=int(correct.sum()), ratio=stats,
               robustjax=dict(success=float(np.mean(ok_o[correct])), median_distance=float(np.median(d_o[correct])),
                              seconds=dt, ms_per_point=1e3 * dt / n, compile_in_timed=comp, outside_box=out_o,
                              found_not_verified=int(np.sum(r.success & ~r.misclassified & ~ok_o)),
                              distance=[None if not np.isfinite(v) else round(float(v), 6) for v in d_o]),
               torchattacks=dict(success=float(np.mean(ok_t[correct])),
                                 median_distance=float(np.median(d_t[correct])), seconds=dt_t,
                                 ms_per_point=1e3 * dt_t / n, outside_box=out_t,
                                 claimed_not_verified=int(np.sum(claimed & correct & ~ok_t)),
                                 distance=[None if not np.isfinite(v) else round(float(v), 6) for v in d_t]),
               only_ours_found=int(np.sum(correct & ok_o & ~ok_t)), only_theirs_found=int(np.sum(correct & ~ok_o & ok_t)),
               time_ratio_ours_over_theirs=dt / dt_t)
    log(f"  fab      l{pn(p)}: ours success {out['robustjax']['success']:.3f} median d {out['robustjax']['median_distance']:.4f} "
        f"{out['robustjax']['ms_per_point']:.1f} ms/pt; torchattacks success {out['torchattacks']['success']:.3f} "
        f"median d {out['torchattacks']['median_distance']:.4f} {out['torchattacks']['ms_per_point']:.1f} ms/pt "
        f"(claimed, not verified: {out['torchattacks']['claimed_not_verified']}); ratio median {stats['median']}")
    return out


def autoattack_compare(f, tnet, x, y, p, eps, args, log):
    import torchattacks
    n = len(x)
    correct = logits_np(f, x).argmax(1) == y
    s = SETTINGS["autoattack"]
    m = min(args.batch, n)
    kw = dict(p=p, eps=eps, apgd_steps=s["apgd_steps"], n_targets=s["n_targets"], fab_steps=s["fab_steps"],
              n_queries=args.n_queries, restarts=1)
    # warm-up: each attack of the cascade once with the cascade's options on m misclassified points
    # (n_targets=1: the targeted runs share one compiled program), so that the timed run reuses the
    # compiled programs, and the cascade itself once on the first m points with 1 APGD-CE step (its eager
    # checks: gradients, margins)
    key = jax.random.key(0)
    xw, yw = WARM["wrong"][0][:m], WARM["wrong"][1][:m]
    xr, yr = WARM["right"][0][:m], WARM["right"][1][:m]
    apgd(f, xw, yw, p=p, eps=eps, key=key, loss="ce", steps=s["apgd_steps"], restarts=1, batch_size=m)
    apgd_targeted(f, xr, yr, p=p, eps=eps, key=key, n_targets=1, steps=s["apgd_steps"], batch_size=m)
    from robustjax.attacks import fab_targeted
    fab_targeted(f, xr, yr, p=p, eps=eps, key=key, n_targets=1, steps=s["fab_steps"], batch_size=m)
    square(f, xw, yw, p=p, eps=eps, key=key, n_queries=args.n_queries, batch_size=m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        standard_evaluation(f, x[:m], y[:m], key=0, batch_size=m, **dict(kw, attacks=("apgd-ce",), apgd_steps=1))
    c0 = _COMPILE[0]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = standard_evaluation(f, x, y, key=0, batch_size=m, **kw)
    dt = time.perf_counter() - t0
    comp = _COMPILE[0] - c0
    ok_o, _, out_o = verify(f, x, y, ev.x_adv, p, eps)
    rows = {"robustjax": dict(broken=ok_o, seconds=dt, compile_in_timed=comp, outside_box=out_o,
                              not_verified=int(np.sum(correct & ~ev.robust & ~ok_o)),
                              time_per_attack={k: float(v) for k, v in ev.time_s.items()},
                              robust_accuracy_after=ev.robust_accuracy_after)}
    # torchattacks.AutoAttack(version='standard') as shipped: its APGD, APGD-T and FAB keep the classes'
    # default steps=10 (the published standard version uses 100)
    variants = [("torchattacks AutoAttack (as shipped: 10 steps)",
                 lambda: torchattacks.AutoAttack(tnet, norm=norm_name(p), eps=eps, version="standard", n_classes=10,
                                                 seed=0))]
    if not args.no_aa_matched:
        variants.append(("torchattacks MultiAttack (published settings: 100 steps)",
                         lambda: torchattacks.MultiAttack([
                             torchattacks.APGD(tnet, norm=norm_name(p), eps=eps, steps=s["apgd_steps"], n_restarts=1,
                                               loss="ce", seed=0),
                             torchattacks.APGDT(tnet, norm=norm_name(p), eps=eps, steps=s["apgd_steps"], n_restarts=1,
                                                n_classes=10, seed=0),
                             torchattacks.FAB(tnet, norm=norm_name(p), eps=eps, steps=s["fab_steps"], n_restarts=1,
                                              multi_targeted=True, n_classes=10, seed=0),
                             torchattacks.Square(tnet, norm=norm_name(p), eps=eps, n_queries=args.n_queries,
                                                 n_restarts=1, seed=0)])))
    for label, make in variants:
        adv, dt_t, claimed = run_torch(make(), x, y)
        ok, _, outside = verify(f, x, y, adv, p, eps)
        rows[label] = dict(broken=ok, seconds=dt_t, outside_box=outside,
                           claimed_not_verified=int(np.sum(claimed & correct & ~ok)))
    out = dict(attack="autoattack-standard", norm=norm_name(p), eps=eps, n=n, n_correct=int(correct.sum()),
               frameworks={})
    for label, row in rows.items():
        rec = dict(robust_accuracy=float(np.mean(correct & ~row["broken"])), seconds=row["seconds"],
                   ms_per_point=1e3 * row["seconds"] / n,
                   **{k: v for k, v in row.items() if k not in ("broken", "seconds")},
                   broken=np.flatnonzero(row["broken"]).tolist())
        if label != "robustjax":
            rec["agreement_with_ours"] = agreement(rows["robustjax"]["broken"], row["broken"], correct)
            rec["time_ratio_ours_over_this"] = dt / row["seconds"]
        out["frameworks"][label] = rec
    log(f"  AA-std   l{pn(p)} eps {eps}: " + "; ".join(
        f"{k} RA {v['robust_accuracy']:.3f} {v['seconds']:.1f} s" for k, v in out["frameworks"].items()))
    return out


def run_net(name, f, tnet, data, args, log):
    import torchattacks
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
    (_, _), (xte, yte) = data
    wrong = np.flatnonzero(logits_np(f, xte).argmax(1) != yte)
    right = 5000 + np.flatnonzero(logits_np(f, xte[5000:5000 + 4 * args.batch]).argmax(1) ==
                                  yte[5000:5000 + 4 * args.batch])
    WARM.update(wrong=(xte[wrong[:args.batch]], yte[wrong[:args.batch]]),
                right=(xte[right[:args.batch]], yte[right[:args.batch]]))
    frac = args.cnn_fraction if name == "cnn" else 1.0
    slow = lambda k: max(1, int(round(frac * getattr(args, k))))  # noqa: E731
    res = dict(eps={}, calibration={}, budget=[], fab=[], autoattack=[],
               n=dict(apgd_ce=args.n_apgd, apgd_t=slow("n_apgd_t"), square=slow("n_square"), fab=slow("n_fab"),
                      autoattack=slow("n_aa") if args.n_aa else 0))
    for p in (INF, 2.0):
        eps, table = calibrate(f, data, p, args.n_calibrate, args.batch, log)
        res["eps"][pn(p)] = eps
        res["calibration"][pn(p)] = {str(k): v for k, v in table.items()}
        nm = norm_name(p)
        art_clf = None if args.no_art else art_classifier(tnet)
        # APGD-CE
        n = args.n_apgd
        theirs = [("torchattacks", lambda: torchattacks.APGD(tnet, norm=nm, eps=eps, steps=100, n_restarts=1,
                                                             seed=0, loss="ce", rho=0.75))]
        if art_clf is not None:
            theirs.append(("ART", lambda: AutoProjectedGradientDescent(
                art_clf, norm=p, eps=eps, eps_step=2 * eps, max_iter=100, targeted=False, nb_random_init=1,
                batch_size=n, loss_type="cross_entropy", verbose=False)))
        res["budget"].append(budget_compare("apgd-ce", f, tnet, xte[:n], yte[:n], p, eps, args, log, ours_fn=apgd,
                                            ours_kw=dict(loss="ce", steps=100, restarts=1), theirs=theirs))
        # APGD-T (ART's APGD takes one given target per point: no top-9 cascade, left out)
        n = res["n"]["apgd_t"]
        theirs = [("torchattacks", lambda: torchattacks.APGDT(tnet, norm=nm, eps=eps, steps=100, n_restarts=1,
                                                              seed=0, rho=0.75, n_classes=10))]
        res["budget"].append(budget_compare("apgd-t", f, tnet, xte[:n], yte[:n], p, eps, args, log,
                                            ours_fn=apgd_targeted,
                                            ours_kw=dict(loss="dlr", n_targets=9, steps=100, restarts=1),
                                            theirs=theirs, seed1=False, warm_kw=dict(n_targets=1),
                                            warm_on="right"))
        # Square
        n = res["n"]["square"]
        theirs = [("torchattacks", lambda: torchattacks.Square(tnet, norm=nm, eps=eps, n_queries=args.n_queries,
                                                               n_restarts=1, p_init=0.8, loss="margin",
                                                               resc_schedule=True, seed=0))]
        if art_clf is not None and not args.no_art_square:
            theirs.append(("ART", lambda: SquareAttack(art_clf, norm=p, eps=eps, max_iter=args.n_queries, p_init=0.8,
                                                       nb_restarts=1, batch_size=n, verbose=False)))
        res["budget"].append(budget_compare("square", f, tnet, xte[:n], yte[:n], p, eps, args, log, ours_fn=square,
                                            ours_kw=dict(n_queries=args.n_queries, p_init=0.8), theirs=theirs))
        # FAB (minimal norm)
        n = res["n"]["fab"]
        res["fab"].append(fab_compare(f, tnet, xte[:n], yte[:n], p, args, log))
        # AutoAttack standard
        n = res["n"]["autoattack"]
        if n:
            res["autoattack"].append(autoattack_compare(f, tnet, xte[:n], yte[:n], p, eps, args, log))
    return res


# --------------------------------------------------------------------------------------------- report

def add_ratios(rep):
    """Time ratios ours / theirs with our residual compile time (compile_in_timed: programs for shapes the
    warm-up did not see, e.g. the model on all N points at once) taken out of our time: the robustjax rows
    get seconds_excl_compile and ms_per_point from it; seconds stays the raw wall time."""
    for net in rep["results"].values():
        for comp in net["budget"] + net["autoattack"]:
            fw = comp["frameworks"]
            ours = fw["robustjax"]
            ours["seconds_excl_compile"] = ours["seconds"] - ours.get("compile_in_timed", 0.0)
            ours["ms_per_point"] = 1e3 * ours["seconds_excl_compile"] / comp["n"]
            for label, v in fw.items():
                if label != "robustjax":
                    v["time_ratio_ours_over_this"] = ours["seconds_excl_compile"] / v["seconds"]
        for fb in net["fab"]:
            o = fb["robustjax"]
            o["seconds_excl_compile"] = o["seconds"] - o.get("compile_in_timed", 0.0)
            o["ms_per_point"] = 1e3 * o["seconds_excl_compile"] / fb["n"]
            fb["time_ratio_ours_over_theirs"] = o["seconds_excl_compile"] / fb["torchattacks"]["seconds"]
    return rep


def fmt_agree(a):
    return (f"{a['both_broken']} / {a['both_robust']} / {a['only_ours']} / {a['only_theirs']} "
            f"(p = {a['mcnemar_p']:.2g})")


def markdown(rep) -> str:
    L = [f"# robustjax attacks vs torchattacks and ART, per point on the same weights ({rep['date']})", "",
         f"Machine: {rep['machine']}; torch {rep['versions']['torch']} (CPU, {rep['torch_threads']} thread(s)); XLA "
         f"{'1 thread (--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1)' if rep['args']['threads'] == 1 else 'default threads'}; "
         f"torchattacks {rep['versions']['torchattacks']}, ART {rep['versions']['art']}. "
         f"1-minute load average {rep['load_start']:.2f} at the start, {rep['load_end']:.2f} at the end "
         f"(2 cores shared with other jobs: times are noisy). Wall time {rep['wall_s']:.0f} s. "
         f"Command: `{rep['command']}`.", "",
         "Nets (trained with robustjax.train.fit, Adam 1e-3, batch 128, constant rate; test accuracy on all "
         "10k test images): " + "; ".join(f"{k}: {v['model']} {v['config']}, {v['epochs']} epochs, accuracy "
                                          f"{v['accuracy']:.4f}, torch/robustjax max |logit diff| "
                                          f"{v['logit_gap']:.1e} on 256 test images"
                                          for k, v in rep["nets"].items()) + ".", "",
         "Points: the first N MNIST test images (misclassified ones included and counted as broken for "
         "everyone). Every returned point, ours and theirs, is re-verified with robustjax's float32 model: "
         "clipped to [0, 1], inside the eps ball (relative tolerance 1e-5), argmax != label. eps: per net "
         f"and norm, the value of the grid {json.dumps({pn(k): v for k, v in EPS_GRID.items()})} where our "
         f"APGD-CE (100 steps) leaves robust accuracy closest to 50 % on {rep['args']['n_calibrate']} held-out "
         f"test points (indices {CALIBRATION_START}+; table in the JSON).", "",
         "Time: wall seconds of one call per framework on all N points (torch and ART take the whole batch; "
         f"ours runs in batches of {rep['args']['batch']} points). Ours excludes compilation: a warm-up call "
         f"with the same options and batch size on {rep['args']['batch']} test images the net misclassifies (the "
         "budget attacks stop at once there; untargeted FAB runs its fixed steps), or for the targeted cascades APGD-T and FAB-T (which skip "
         "misclassified points) on correctly classified held-out test images (indices 5000+) with one target, "
         "compiles the programs the timed call reuses; `compile in timed call` is the compile time JAX still "
         "reported inside the timed call (the listener of jax.monitoring); it is taken out of our time (ms / point, "
         "total s and ratio; the JSON keeps the raw `seconds`). Ratio = our time / theirs (< 1: ours faster). "
         "Both frameworks run on one CPU thread: with torch's "
         "default 2 threads a small MLP's gradient step took 110-140 ms instead of 3.5 ms with 1 thread at load 9 "
         "on this machine (OpenMP oversubscription), which would measure the machine, not the attack.", "",
         "Agreement columns: over the correctly classified points, both broken / both robust / only ours broke "
         "/ only theirs broke, with the exact two-sided binomial (McNemar) p-value of the discordant split "
         "(small p: one side is stronger beyond the points' randomness). `robustjax seed 1` is our attack "
         "with another key, the yardstick for run-to-run randomness.", "",
         "Settings (every framework, unless noted): " + json.dumps(rep["settings"]) + ".", "",
         "Framework-specific: torchattacks APGD/APGDT(steps=100, n_restarts=1, rho=0.75, seed=0), "
         "Square(n_queries, p_init=0.8, loss='margin', resc_schedule=True, seed=0), FAB(eps=1e6, steps=100, "
         "n_restarts=1, alpha_max=0.1, eta=1.05, beta=0.9, multi_targeted=False); ART "
         "AutoProjectedGradientDescent(eps_step=2 eps (its initial step), max_iter=100, nb_random_init=1, "
         "loss_type='cross_entropy'), SquareAttack(max_iter=n_queries, p_init=0.8, nb_restarts=1). ART has no "
         "FAB and no top-k targeted APGD cascade; its AutoAttack is a different cascade (APGD-CE and APGD-DLR "
         "with 5 restarts, DeepFool, Square with 5 restarts) and imports the `multiprocess` package, which "
         "is not installed here: not run.", ""]
    for name, net in rep["results"].items():
        L += [f"## {name}", "", f"eps: l_inf {net['eps']['inf']}, l2 {net['eps']['2']} (calibration: our APGD-CE "
              "robust accuracy per eps on the held-out points: l_inf " +
              ", ".join(f"{k}: {v:.2f}" for k, v in net["calibration"]["inf"].items()) + "; l2 " +
              ", ".join(f"{k}: {v:.2f}" for k, v in net["calibration"]["2"].items()) + "). Points N: " +
              ", ".join(f"{k} {v}" for k, v in net["n"].items()) + ".", "",
              "### Budget attacks: robust accuracy, agreement, time", "",
              "| attack | norm | eps | N | framework | robust acc. | agreement with ours | ms / point | "
              "time ratio ours / this | notes |", "|---|---|---|---|---|---|---|---|---|---|"]
        for b in net["budget"]:
            for label, v in b["frameworks"].items():
                notes = []
                if v.get("claimed_not_verified"):
                    notes.append(f"{v['claimed_not_verified']} claimed, not verified")
                if v.get("outside_box"):
                    notes.append(f"{v['outside_box']} outside [0,1]")
                if v.get("compile_in_timed"):
                    notes.append(f"{v['compile_in_timed']:.2f} s residual compile taken out")
                L.append(f"| {b['attack']} | {b['norm']} | {b['eps']} | {b['n']} | {label} | {v['robust_accuracy']:.3f} | "
                         + (fmt_agree(v["agreement_with_ours"]) if "agreement_with_ours" in v else "-") + " | "
                         f"{v['ms_per_point']:.1f} | "
                         + (f"{v['time_ratio_ours_over_this']:.2f}" if "time_ratio_ours_over_this" in v else "-")
                         + " | " + "; ".join(notes) + " |")
        L += ["", "### FAB (minimal norm, untargeted): distance ratio ours / torchattacks", "",
              "Over the correctly classified points both found (distance > 0); 'at most equal in median': median "
              f"ratio <= 1 + {FAB_TOL:g} (the frameworks' float32 rounding differs by ~1e-7 relative).", "",
              "| norm | N (correct) | success ours / theirs | median distance ours / theirs | both found | "
              "median ratio | 10 % | 90 % | ours larger by > 1 % | ours smaller by > 1 % | at most equal in median | "
              "found only by ours / theirs | ms / point ours / theirs (ratio) | theirs claimed, not verified | "
              "our residual compile taken out |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for fb in net["fab"]:
            r, o, t = fb["ratio"], fb["robustjax"], fb["torchattacks"]
            f3 = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
            L.append(f"| {fb['norm']} | {fb['n']} ({fb['n_correct']}) | {o['success']:.3f} / {t['success']:.3f} | "
                     f"{o['median_distance']:.4f} / {t['median_distance']:.4f} | {r['n_both']} | {f3(r['median'])} | "
                     f"{f3(r['q10'])} | {f3(r['q90'])} | {f3(r['share_ours_larger_1pct'])} | "
                     f"{f3(r['share_ours_smaller_1pct'])} | {'yes' if r['at_most_equal_in_median'] else 'NO'} | "
                     f"{fb['only_ours_found']} / {fb['only_theirs_found']} | {o['ms_per_point']:.1f} / "
                     f"{t['ms_per_point']:.1f} ({fb['time_ratio_ours_over_theirs']:.2f}) | "
                     f"{t['claimed_not_verified']} | {o.get('compile_in_timed', 0.0):.2f} s |")
        if net["autoattack"]:
            L += ["", "### AutoAttack, standard version: robust accuracy, agreement, total time", "",
                  "| norm | eps | N | framework | robust acc. | agreement with ours | total s | "
                  "time ratio ours / this | notes |", "|---|---|---|---|---|---|---|---|---|"]
            for a in net["autoattack"]:
                for label, v in a["frameworks"].items():
                    notes = []
                    if v.get("claimed_not_verified"):
                        notes.append(f"{v['claimed_not_verified']} claimed, not verified")
                    if v.get("not_verified"):
                        notes.append(f"{v['not_verified']} broken by ours, not verified")
                    if v.get("time_per_attack"):
                        notes.append("per attack s: " + ", ".join(f"{k} {s:.1f}" for k, s in v["time_per_attack"].items()))
                    if v.get("compile_in_timed"):
                        notes.append(f"{v['compile_in_timed']:.2f} s residual compile taken out")
                    L.append(f"| {a['norm']} | {a['eps']} | {a['n']} | {label} | {v['robust_accuracy']:.3f} | "
                             + (fmt_agree(v["agreement_with_ours"]) if "agreement_with_ours" in v else "-") +
                             f" | {v.get('seconds_excl_compile', v['seconds']):.1f} | "
                             + (f"{v['time_ratio_ours_over_this']:.2f}" if "time_ratio_ours_over_this" in v else "-")
                             + " | " + "; ".join(notes) + " |")
        L.append("")
    L += rep.get("notes", [])
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="10 points, 1 epoch on 10k images, 1000 Square queries")
    ap.add_argument("--nets", default="mlp,cnn")
    ap.add_argument("--n-apgd", type=int, default=200)
    ap.add_argument("--n-apgd-t", type=int, default=200)
    ap.add_argument("--n-square", type=int, default=100)
    ap.add_argument("--n-fab", type=int, default=100)
    ap.add_argument("--n-aa", type=int, default=200)
    ap.add_argument("--cnn-fraction", type=float, default=0.5,
                    help="the CNN runs APGD-T, Square, FAB and AutoAttack on this fraction of the N points")
    ap.add_argument("--n-calibrate", type=int, default=200)
    ap.add_argument("--n-queries", type=int, default=SETTINGS["square"]["n_queries"])
    ap.add_argument("--batch", type=int, default=50, help="our batch size (= the warm-up size)")
    ap.add_argument("--no-art", action="store_true")
    ap.add_argument("--no-art-square", action="store_true", help="skip ART's (slow) Square")
    ap.add_argument("--no-seed1", action="store_true", help="skip our second-seed runs")
    ap.add_argument("--no-aa-matched", action="store_true", help="skip torchattacks' 100-step AutoAttack cascade")
    ap.add_argument("--threads", type=int, default=THREADS, help="CPU threads for torch and XLA (1 or the default)")
    ap.add_argument("--out", default="reference_attacks")
    ap.add_argument("--note", action="append", default=[], help="a line for the notes section")
    ap.add_argument("--render", action="store_true",
                    help="rewrite the markdown (and ratios) from results/<out>.json, adding the --note lines")
    args = ap.parse_args()
    if args.render:
        path = RESULTS / f"{args.out}.json"
        rep = json.loads(path.read_text())
        rep["notes"] = rep.get("notes", []) + args.note
        path.write_text(json.dumps(add_ratios(rep), indent=1, default=float))
        (HERE / f"{args.out}.md").write_text(markdown(rep))
        return
    if args.quick:
        args.n_apgd = args.n_apgd_t = args.n_square = args.n_fab = args.n_aa = 10
        args.n_calibrate, args.batch, args.n_queries, args.cnn_fraction = 50, 10, 1000, 1.0
        args.out += "_quick"
    import torch
    import torchattacks
    import art
    torch.manual_seed(0)
    if args.threads == 1:
        torch.set_num_threads(1)
    load_start = loadavg()
    t_start = time.perf_counter()

    def log(s):
        print(s, flush=True)

    log(f"load at start {load_start:.2f}")
    data = (load("mnist", "train"), load("mnist", "test"))
    rep = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), machine=machine(),
               versions=dict(torch=torch.__version__, torchattacks=torchattacks.__version__, art=art.__version__,
                             jax=jax.__version__),
               torch_threads=torch.get_num_threads(), load_start=load_start,
               command="nice -n 10 python benchmarks/bench_reference_attacks.py " + ("--quick " if args.quick else "")
                       + f"--nets {args.nets} --n-apgd {args.n_apgd} --n-apgd-t {args.n_apgd_t} --n-square "
                         f"{args.n_square} --n-fab {args.n_fab} --n-aa {args.n_aa} --cnn-fraction {args.cnn_fraction} --n-calibrate {args.n_calibrate} "
                         f"--n-queries {args.n_queries} --batch {args.batch} --threads {args.threads}"
                       + "".join(f" --{k.replace('_', '-')}" for k in ("no_art", "no_art_square", "no_seed1",
                                                                      "no_aa_matched") if getattr(args, k)),
               args=vars(args), settings=dict(SETTINGS, square=dict(SETTINGS["square"], n_queries=args.n_queries),
                             autoattack=dict(SETTINGS["autoattack"], n_queries=args.n_queries)),
               nets={}, results={}, notes=list(args.note))
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.nets.split(","):
        f, variables, acc, t_train, cfg = train_net(name, data, log, quick=args.quick)
        tnet = torch_net(name, variables)
        gap = check_same_logits(f, tnet, data[1][0][:256], log)
        rep["nets"][name] = dict(model=cfg.model, config=cfg.model_config, epochs=cfg.epochs, accuracy=acc,
                                 train_seconds=t_train, logit_gap=gap)
        rep["results"][name] = run_net(name, f, tnet, data, args, log)
        rep["load_end"], rep["wall_s"] = loadavg(), time.perf_counter() - t_start
        (RESULTS / f"{args.out}.json").write_text(json.dumps(add_ratios(rep), indent=1, default=float))
        (HERE / f"{args.out}.md").write_text(markdown(rep))
    log(f"load at end {rep['load_end']:.2f}; total {rep['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
