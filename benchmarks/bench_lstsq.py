"""Least-squares "rand" fit: time and peak memory of the minimum-norm output-layer solve for N = 5,000 and
20,000 points, per method (robustjax/landscape/lstsq.py: "cholesky" = dual normal equations,
"qr" = Householder QR of Phi^T, "cg" = matrix-free conjugate gradients on Phi Phi^T).

Features: real ones. Phi = [psi, 1] with psi = P - 1 evenly spaced units of conv1 of a random
VGG11-skip (softplus, width 1/2: conv1 has 32*32*32 = 32,768 units) on the first N CIFAR-10 training
images (the skip features of the talk's "rand"; the classifier features are left out to keep the
feature pass cheap), P = ceil(1.05 N) columns, float32. Each (method, N) runs in its own subprocess,
which loads Phi and then measures the fit alone: wall time, tracemalloc peak (numpy buffers) and the
growth of the process's peak RSS (getrusage ru_maxrss) over the RSS before the fit.

    nice -n 10 python benchmarks/bench_lstsq.py --out benchmarks/results
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _status_bytes(field: str) -> int:
    """VmRSS / VmHWM of this process from /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    """Resets VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs). Needed because the peak
    RSS that getrusage reports survives fork + exec, so a child would inherit its parent's peak."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(path: str, n: int, method: str, cg_maxiter: int) -> dict:
    import tracemalloc
    from robustjax.landscape import lstsq
    Phi = np.load(path.replace(".npy", f"_{n}.npy"))
    P = Phi.shape[1]
    y = np.load(path.replace(".npy", "_y.npy"))[:n]
    Y = lstsq.one_hot(y, 10)
    _reset_peak_rss()
    rss0 = _status_bytes("VmRSS")
    tracemalloc.start()
    t0 = time.perf_counter()
    W, info = lstsq.min_norm_fit(Phi, Y, method=method, cg_maxiter=cg_maxiter)
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    maxrss = _status_bytes("VmHWM")
    acc = float(np.mean(np.argmax(Phi.astype(np.float64) @ W, 1) == y))
    return dict(N=n, P=P, method=method, seconds=round(dt, 2), tracemalloc_peak_gb=round(peak / 1e9, 3),
                rss_growth_gb=round(max(maxrss - rss0, 0) / 1e9, 3), phi_gb=round(Phi.nbytes / 1e9, 3),
                residual=info.residual, iterations=info.iterations, train_accuracy=acc)


def make_features(path: Path, sizes) -> None:
    import jax
    from robustjax.data import load
    from robustjax.landscape import rank
    from robustjax.models import zoo
    os.environ.setdefault("ROBUSTJAX_DATA", str(ROOT.parent / "shared" / "data"))
    x, y = load("cifar10", "train")
    n_max = max(sizes)
    m = zoo.VGG11(act="softplus", width_mult=0.5, classifier=(64,), num_classes=10)
    v = jax.jit(m.init)(jax.random.key(0), x[:1])
    conv1 = rank.feature_matrix(m, v, x[:n_max], "conv1", batch_size=500)
    for n in sizes:
        P = int(np.ceil(1.05 * n))
        idx = np.linspace(0, conv1.shape[1] - 1, P - 1).round().astype(int)
        np.save(str(path).replace(".npy", f"_{n}.npy"),
                np.concatenate([conv1[:n, idx], np.ones((n, 1), np.float32)], 1))
    np.save(str(path).replace(".npy", "_y.npy"), y[:n_max])


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--sizes", default="5000,20000")
    p.add_argument("--tmp", default="/tmp/robustjax_bench_lstsq")
    p.add_argument("--cg-maxiter", type=int, default=300)
    p.add_argument("--max-n-slow", type=int, default=5000, help="run qr and cg only up to this N")
    p.add_argument("--budget-s", type=float, default=3600.0, help="stop starting/finishing fits after this")
    p.add_argument("--child", nargs=3, metavar=("PATH", "N", "METHOD"))
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], int(a.child[1]), a.child[2], a.cg_maxiter)))
        return
    sizes = [int(s) for s in a.sizes.split(",")]
    tmp = Path(a.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    feat = tmp / "phi.npy"
    t0 = time.perf_counter()
    if not (tmp / f"phi_{max(sizes)}.npy").exists():
        make_features(feat, sizes)
    feat_s = time.perf_counter() - t0
    rows = []
    load0 = os.getloadavg()
    t_end = time.time() + a.budget_s
    outdir = Path(a.out)
    outdir.mkdir(parents=True, exist_ok=True)
    for n in sizes:
        for method in ("cholesky", "cg", "qr"):
            if n > a.max_n_slow and method != "cholesky":
                rows.append(dict(N=n, method=method, skipped=f"not run: N > {a.max_n_slow} (--max-n-slow); "
                                                             "the shared CPU had no time for it"))
                print(rows[-1], flush=True)
                continue
            need_gb = {"cholesky": 8 * n * n, "qr": 2 * 8 * 1.05 * n * n, "cg": 8 * 1.05 * n * n}[method] / 1e9
            free_gb = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9
            left = t_end - time.time()
            if need_gb > 0.6 * free_gb:
                rows.append(dict(N=n, method=method, skipped=f"needs ~{need_gb:.1f} GB beyond Phi, "
                                                             f"{free_gb:.1f} GB free on the shared machine"))
            elif left < 30:
                rows.append(dict(N=n, method=method, skipped="not run: the --budget-s time was used up"))
            else:
                try:
                    out = subprocess.run([sys.executable, __file__, "--child", str(feat), str(n), method,
                                          "--cg-maxiter", str(a.cg_maxiter)], capture_output=True, text=True,
                                         timeout=left)
                    if out.returncode != 0:
                        err = out.stderr.strip().splitlines() or [f"exit code {out.returncode}"]
                        rows.append(dict(N=n, method=method, error=err[-1]))
                    else:
                        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                except subprocess.TimeoutExpired:
                    rows.append(dict(N=n, method=method,
                                     skipped=f"stopped after {left:.0f} s (the run's --budget-s) without finishing"))
            print(rows[-1], flush=True)
            write(outdir, rows, load0, feat_s)


def write(outdir: Path, rows, load0, feat_s) -> None:
    res = dict(machine=f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), shared with "
                       f"other jobs during measurement (load average {load0[0]:.1f} at start, "
                       f"{os.getloadavg()[0]:.1f} at the last row)",
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), feature_seconds=round(feat_s, 1),
               features="Phi = [psi, 1], psi = evenly spaced conv1 units of a random VGG11 (softplus, width 1/2) "
                        "on CIFAR-10, P = ceil(1.05 N), float32", rows=rows)
    (outdir / "bench_lstsq.json").write_text(json.dumps(res, indent=1))
    lines = ["# Least-squares fit of the output layer (rand)\n", f"{res['machine']}; {res['date']}.",
             f"{res['features']}. Time and memory of the solve alone (features precomputed).", "",
             "| N | P | method | time (s) | tracemalloc peak (GB) | peak RSS growth (GB) | Phi (GB) | max residual | "
             "train acc | CG iters |", "|---|---|---|---|---|---|---|---|---|---|"]
    names = {"cholesky": "normal equations (dual, Cholesky)", "qr": "QR of Phi^T", "cg": "CG on Phi Phi^T (iterative)"}
    for r in rows:
        if "seconds" in r:
            lines.append(f"| {r['N']:,} | {r['P']:,} | {names[r['method']]} | {r['seconds']} | {r['tracemalloc_peak_gb']} | "
                         f"{r['rss_growth_gb']} | {r['phi_gb']} | {r['residual']:.2e} | {r['train_accuracy']:.4f} | "
                         f"{r['iterations'] or '-'} |")
        else:
            lines.append(f"| {r['N']:,} | - | {names[r['method']]} | {r.get('skipped') or r.get('error')} | | | | | | |")
    (outdir / "bench_lstsq.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
