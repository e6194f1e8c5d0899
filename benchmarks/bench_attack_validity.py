"""Are the adversarial examples the attacks return valid outside the model's own float32 arithmetic?

Every attack x norm runs on random small nets (ReLU, softplus with slopes 10 and 1, tanh; one and two hidden
layers) over random points in [0, 1]^d; every success (not counting inputs the model already misclassifies)
is re-checked in float64 numpy with the same weights: the point must lie in the box and be misclassified.
Each configuration runs twice, with the default `min_margin` (a few ulps of the logits' scale, see
robustjax/attacks/result.py) and with min_margin=0 (argmax only, the behaviour before the margin existed).

    nice -n 10 python benchmarks/bench_attack_validity.py [--quick]

Writes benchmarks/results/attack_validity.json and benchmarks/attack_validity.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import attacks, losses

HERE = Path(__file__).resolve().parent
INF = np.inf

# (name, attack, p, options); every attack in its documented call shape
ATTACKS = [
    ("deepfool", attacks.deepfool, 2, {}),
    ("deepfool", attacks.deepfool, INF, {}),
    ("cw", attacks.cw, 2, dict(steps=100, binary_search_steps=5, initial_const=1.0, learning_rate=0.05)),
    ("ddn", attacks.ddn, 2, dict(steps=100)),
    ("pgd_minimal", attacks.pgd_minimal, 1, dict(steps=20, search_steps=8)),
    ("pgd_minimal", attacks.pgd_minimal, 2, dict(steps=20, search_steps=8)),
    ("pgd_minimal", attacks.pgd_minimal, INF, dict(steps=20, search_steps=8)),
    ("linearized", attacks.linearized, 2, {}),
    ("pgd", attacks.pgd, 2, dict(eps=1.0, steps=20)),
    ("spatial_grid", attacks.spatial_grid, None, dict(num_angles=9, num_shifts=3, max_shift=1.0)),
]

# (activation, slope, hidden widths, classes)
NETS = [("relu", 1.0, (24,), 4), ("softplus", 10.0, (24,), 4), ("softplus", 1.0, (32,), 5),
        ("softplus", 10.0, (16, 16), 3), ("tanh", 1.0, (24,), 4), ("relu", 1.0, (16, 16), 5)]
SHAPE = (4, 4, 1)


def make_net(seed: int, act: str, slope: float, hidden, k: int):
    """(float32 JAX logits_fn, float64 numpy logits) with the same (float32-representable) weights."""
    rng = np.random.default_rng(seed)
    sizes = (int(np.prod(SHAPE)),) + tuple(hidden) + (k,)
    ws = [(rng.normal(size=(a, b)) / np.sqrt(a), 0.3 * rng.normal(size=b)) for a, b in zip(sizes[:-1], sizes[1:])]
    ws = [(w.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)) for w, b in ws]
    wj = [(jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)) for w, b in ws]
    a32 = {"relu": jax.nn.relu, "tanh": jnp.tanh,
           "softplus": lambda h: jax.nn.softplus(slope * h) / slope}[act]
    a64 = {"relu": lambda h: np.maximum(h, 0.0), "tanh": np.tanh,
           "softplus": lambda h: np.logaddexp(0.0, slope * h) / slope}[act]

    def f(z):
        h = 4.0 * (z.reshape(z.shape[0], -1) - 0.5)         # [0, 1] -> [-2, 2]
        for i, (w, b) in enumerate(wj):
            h = h @ w + b
            h = a32(h) if i < len(wj) - 1 else h
        return h

    def f64(z):
        h = 4.0 * (np.asarray(z, np.float64).reshape(len(z), -1) - 0.5)
        for i, (w, b) in enumerate(ws):
            h = h @ w + b
            h = a64(h) if i < len(ws) - 1 else h
        return h
    return jax.jit(f), f64


def recheck(res, f, f64, x, y) -> dict:
    """Counts of successes (beyond misclassified inputs) and of those not adversarial in float64."""
    ok = res.success & ~res.misclassified
    xa = res.x_adv[ok]
    in_box = bool(np.all((xa >= 0) & (xa <= 1)))
    logits64 = f64(xa)
    invalid = int(np.sum(np.argmax(logits64, -1) == y[ok])) if ok.any() else 0
    m32 = np.asarray(losses.margin(logits=f(jnp.asarray(xa)), labels=jnp.asarray(y[ok]))) if ok.any() else np.zeros(0)
    return dict(successes=int(ok.sum()), invalid_float64=invalid, in_box=in_box,
                min_margin_float32=float(m32.min()) if m32.size else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    ap.add_argument("--points", type=int, default=60)
    args = ap.parse_args()
    n_points = 8 if args.quick else args.points
    nets = NETS[:2] if args.quick else NETS
    load_start = os.getloadavg()
    rows, t0 = [], time.perf_counter()
    for i, (act, slope, hidden, k) in enumerate(nets):
        f, f64 = make_net(100 + i, act, slope, hidden, k)
        x = np.asarray(jax.random.uniform(jax.random.key(i), (n_points,) + SHAPE))
        y = np.asarray(jnp.argmax(f(jnp.asarray(x)), -1))
        net = f"{act}{'' if act != 'softplus' else f'(alpha={slope:g})'} {'-'.join(map(str, hidden))} K={k}"
        for name, attack, p, opts in ATTACKS:
            norm = "none" if p is None else ("inf" if p == INF else int(p))
            row = dict(net=net, attack=name, p=norm, points=n_points)
            for label, mm in (("default", None), ("zero", 0.0)):
                res = attack(f, x, y, p=p, key=jax.random.key(7 + i), min_margin=mm, **opts)
                row[label] = recheck(res, f, f64, x, y)
            rows.append(row)
            print(row, flush=True)
    runs = sum(2 * r["points"] for r in rows)
    total = {label: dict(successes=sum(r[label]["successes"] for r in rows),
                         invalid_float64=sum(r[label]["invalid_float64"] for r in rows),
                         all_in_box=all(r[label]["in_box"] for r in rows)) for label in ("default", "zero")}
    out = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               machine=f"{platform.node()}: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}",
               jax=jax.__version__, backend=jax.default_backend(),
               loadavg_start=load_start, loadavg_end=os.getloadavg(),
               note="the machine was shared with other jobs (load averages above); timings are not the point here",
               attack_runs=runs, attack_runs_per_setting=runs // 2, wall_s=time.perf_counter() - t0,
               total=total, rows=rows, quick=args.quick)
    if not args.quick:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "attack_validity.json").write_text(json.dumps(out, indent=1))
        (HERE / "attack_validity.md").write_text(render(out))
    print(json.dumps(total))


def render(out: dict) -> str:
    t = out["total"]
    lines = [
        "# Attack validity in float64",
        "",
        f"{out['date']}, {out['machine']}, jax {out['jax']} ({out['backend']}). Load average "
        f"{out['loadavg_start'][0]:.1f} at the start and {out['loadavg_end'][0]:.1f} at the end: other jobs were "
        f"running on this machine. Generated by `benchmarks/bench_attack_validity.py` "
        f"(`results/attack_validity.json`), {out['wall_s']:.0f} s.",
        "",
        f"{out['attack_runs_per_setting']} attack runs (one example each) per setting: {len(ATTACKS)} attack x "
        f"norm configurations x {len(NETS)} random small nets x {out['rows'][0]['points']} random points in "
        "[0, 1]^16, each run twice, with the default `min_margin` and with `min_margin=0`. Every success (inputs "
        "the model already misclassifies aside) is re-evaluated in float64 numpy with the same weights.",
        "",
        "| setting | successes | not adversarial in float64 | all in the box |",
        "|---|---|---|---|",
        f"| default min_margin | {t['default']['successes']} | {t['default']['invalid_float64']} | "
        f"{t['default']['all_in_box']} |",
        f"| min_margin = 0 (argmax only) | {t['zero']['successes']} | {t['zero']['invalid_float64']} | "
        f"{t['zero']['all_in_box']} |",
        "",
        "Per configuration (successes / invalid in float64 / smallest float32 margin max_{j != y} f_j - f_y "
        "of a success):",
        "",
        "| net | attack | p | default | min_margin = 0 |",
        "|---|---|---|---|---|",
    ]
    fmt = lambda c: (f"{c['successes']} / {c['invalid_float64']} / "  # noqa: E731
                     + ("-" if c["min_margin_float32"] is None else f"{c['min_margin_float32']:.2g}"))
    for r in out["rows"]:
        lines.append(f"| {r['net']} | {r['attack']} | {r['p']} | {fmt(r['default'])} | {fmt(r['zero'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
