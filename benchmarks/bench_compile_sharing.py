"""What passing the network as jit arguments buys and costs, measured as ratios in one run.

1. Fresh nets of one architecture (NETS random 784-W-W-10 ReLU MLPs, N(0, 1/fan_in) weights): wall time of
   each method on net 1 (compiles) and on nets 2..NETS, once with the net as a closure (`lambda x:
   network.evaluate(graph, x)`: a new program per net) and once as `network.as_function(graph)` (a Partial
   whose leaves are the weights: one program per architecture). Methods: DeepFool (l2), DDN (l2), the region
   attack (l_inf, 10 regions), CROWN margin bounds (`bounds.margin_bounds`, eps 0.01 l_inf) and
   branch-and-bound batches (`complete._BaB.bound` on 2 x 8 subdomains of an l_inf box of 0.02).
   Each mode runs in a process of its own (no program of one mode serves the other). The bounds and BaB take
   the Graph itself, so they are timed in the partial process only: first net against the others.
2. The hot path: one 784-1024-10 net, warm, the same call repeated: closure vs Partial (the weights as
   constants against the weights as arguments). Ratio Partial / closure; distances must agree.

    .venv/bin/python benchmarks/bench_compile_sharing.py        # writes compile_sharing.md / results JSON
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import bounds, complete, network, report
from robustjax.attacks import ddn, deepfool, region

ROOT = Path(__file__).resolve().parents[1]


def random_graph(seed: int, widths) -> network.Graph:
    rng = np.random.default_rng(seed)
    layers, n = [network.Flatten()], 784
    for i, w in enumerate(widths):
        layers.append(network.Dense((rng.normal(size=(n, w)) / np.sqrt(n)).astype(np.float32),
                                    (0.1 * rng.normal(size=w)).astype(np.float32)))
        if i < len(widths) - 1:
            layers.append(network.ReLU())
        n = w
    return network.as_graph(layers, (28, 28, 1))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    jax.block_until_ready(jax.tree.leaves(out))
    return time.perf_counter() - t0, out


def attacks(f, x, y, key):
    return {
        "deepfool l2": lambda: deepfool(f, x, y, p=2).distance,
        "ddn l2": lambda: ddn(f, x, y, steps=100).distance,
        "region l_inf": lambda: region(f, x, y, p=np.inf, key=key, n_regions=10, restarts=0).distance,
    }


def fresh_nets(mode: str, nets: int, width: int, points: int, log):
    """One mode's rows; run in a process of its own (`main`), so that neither mode reuses the other's programs."""
    rows = []
    x = jax.random.uniform(jax.random.key(1), (points, 28, 28, 1))
    key = jax.random.key(0)
    for mode in (mode,):
        times = {}
        for seed in range(nets):
            g = random_graph(100 + seed, (width, width, 10))
            f = network.as_function(g) if mode == "partial" else (lambda z, g=g: network.evaluate(g, z))
            y = np.asarray(jnp.argmax(f(x), -1))
            for name, call in attacks(f, x, y, key).items():
                times.setdefault(name, []).append(timed(call)[0])
            if mode == "partial":
                times.setdefault("crown margin bounds", []).append(timed(
                    lambda: bounds.margin_bounds(g, np.asarray(x), y, eps=0.01, method="crown"))[0])
                lo, hi = np.clip(np.asarray(x[0]).ravel() - 0.02, 0, 1), np.clip(np.asarray(x[0]).ravel() + 0.02, 0, 1)
                prop = complete.as_property((lo, hi), int(y[0]), 10)
                with jax.enable_x64(True):
                    shape = (1, 28, 28, 1)
                    _, root = complete._root_bounds(g, np.asarray(x[:1], np.float64),
                                                    (lo.reshape(shape), hi.reshape(shape)), complete._spec(prop)[0], 0)
                    bab = complete._BaB(g, prop, root, 8, steps=5)
                    z0, k0 = bab.root_domain()
                    times.setdefault("BaB batch (2 x 8)", []).append(timed(lambda: bab.bound([z0] * 16, [k0] * 16))[0])
            log(f"{mode} net {seed + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
        for name, t in times.items():
            rows.append(dict(section="fresh nets", mode=mode, method=name, first_s=round(t[0], 3),
                             later_median_s=round(float(np.median(t[1:])), 3),
                             later_over_first=round(float(np.median(t[1:]) / t[0]), 3)))
    return rows


def hot_path(points: int, repeats: int, log):
    g = random_graph(7, (1024, 10))
    x = jax.random.uniform(jax.random.key(2), (points, 28, 28, 1))
    key = jax.random.key(0)
    fns = {"closure": lambda z: network.evaluate(g, z), "partial": network.as_function(g)}
    y = np.asarray(jnp.argmax(fns["partial"](x), -1))
    rows = []
    for name in attacks(fns["partial"], x, y, key):
        best, dist = {}, {}
        for mode, f in fns.items():
            call = attacks(f, x, y, key)[name]
            call()                                     # compile
            ts = []
            for _ in range(repeats):
                t, d = timed(call)
                ts.append(t)
            best[mode], dist[mode] = min(ts), np.asarray(d)
        same = bool(np.allclose(dist["closure"], dist["partial"], rtol=1e-5, equal_nan=True))
        rows.append(dict(section="hot path", method=name, closure_s=round(best["closure"], 4),
                         partial_s=round(best["partial"], 4),
                         partial_over_closure=round(best["partial"] / best["closure"], 3), same_distances=same))
        log(f"hot path {name}: closure {best['closure']:.3f} s, partial {best['partial']:.3f} s, same {same}")
    return rows


def write(rows, meta, out_json: Path, out_md: Path):
    out_json.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    lines = [f"# Networks as jit arguments: compile sharing and the hot path ({meta['date']})", "",
             f"{meta['machine']}; 1-minute load {meta['load_start']} at the start, {meta['load_end']} at the end; "
             f"nothing else of mine running. Command: `.venv/bin/python benchmarks/bench_compile_sharing.py`"
             f" (nets {meta['nets']}, width {meta['width']}, points {meta['points']}).", "",
             "## Fresh nets of one architecture (784-W-W-10 ReLU, random weights)", "",
             "Wall time on the first net (compiles) and the median over the later nets. closure: the net as a Python "
             "closure (a program per net); partial: `network.as_function` (a program per architecture). Bounds "
             "and BaB take the Graph itself (weights as arguments since this change).", "",
             "| mode | method | first net s | later nets (median) s | later / first |", "|---|---|---|---|---|"]
    for r in rows:
        if r["section"] == "fresh nets":
            lines.append(f"| {r['mode']} | {r['method']} | {r['first_s']} | {r['later_median_s']} | "
                         f"{r['later_over_first']} |")
    lines += ["", "## The hot path: one 784-1024-10 net, warm, best of the repeats", "",
              "| method | closure s | partial s | partial / closure | same distances |", "|---|---|---|---|---|"]
    for r in rows:
        if r["section"] == "hot path":
            lines.append(f"| {r['method']} | {r['closure_s']} | {r['partial_s']} | {r['partial_over_closure']} | "
                         f"{r['same_distances']} |")
    out_md.write_text("\n".join(lines) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", type=int, default=4)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compile_sharing.json"))
    ap.add_argument("--md", default=str(ROOT / "benchmarks" / "compile_sharing.md"))
    ap.add_argument("--fresh-only", choices=("closure", "partial"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.nets < 2:
        raise SystemExit(f"--nets must be at least 2 (a first net and later ones), got {args.nets}")
    if args.fresh_only:
        rows = fresh_nets(args.fresh_only, args.nets, args.width, args.points, lambda m: print(m, flush=True))
        Path(args.out).write_text(json.dumps(rows))
        return
    meta = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=report.machine(),
                load_start=report.load1(), nets=args.nets, width=args.width, points=args.points, repeats=args.repeats)
    log = lambda m: print(m, flush=True)  # noqa: E731
    rows = []
    for mode in ("closure", "partial"):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rows.json"
            subprocess.run([sys.executable, __file__, "--fresh-only", mode, "--nets", str(args.nets), "--width",
                            str(args.width), "--points", str(args.points), "--out", str(out)], check=True)
            rows += json.loads(out.read_text())
    rows += hot_path(args.points, args.repeats, log)
    meta["load_end"] = report.load1()
    write(rows, meta, Path(args.out), Path(args.md))
    log(f"wrote {args.out} and {args.md}")


if __name__ == "__main__":
    main()
