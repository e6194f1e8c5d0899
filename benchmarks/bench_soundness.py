"""Soundness of the certificates near the decision boundary (certificate half): counts, over random (net,
point) pairs, certified radii that exceed the true minimal l2 distance (must be 0).

Families: linear, one-hidden-layer softplus(alpha=10) / sigmoid / tanh nets and Gaussian kernel machines;
float32 (x64 off, as users run it) and float64. Each point is placed at a fraction tau in 1e-2 ... 1e-6 of
its margin: x = x_b + tau (x0 - x_b), x_b the closest boundary point of a random x0 (exact for linear
models; for the others DeepFool from robustjax.attacks gives an adversarial point and a float64 bisection
along the segment finds the crossing), then x is cast to the dtype. References, independent of
robustjax.certify:
  * linear: the exact distance min_j (f_c - f_j)(x) / ||w_c - w_j||, compared in exact rational arithmetic
    (fractions) with the radius;
  * the others: the distance of an adversarial example on the segment from x through x_b, found by
    bisection in float64 and re-verified with the same weights in float64 numpy with a generous error bound
    (f_j(y) - f_c(y) > 1e-10 (|terms| + 1), so it is adversarial in exact arithmetic).
Both `certified_radius` and `global_lipschitz_radius` are checked.

    python benchmarks/bench_soundness.py   (writes soundness.json and soundness.md next to this file)
"""
from __future__ import annotations

import json
import platform
import time
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
FAMILIES = ("linear", "softplus", "sigmoid", "tanh", "kernel")
FRACTIONS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
DTYPES = ("float32", "float64")
BIG = 1e3


# ----------------------------------------------------------------------------- random models (float64 numpy)

def random_model(family, rng, d=10, m=16, K=4, R=12):
    """Weights as float64 numpy; `cast(dtype)` of the result gives the weights the certificate sees."""
    if family == "linear":
        return {"W": rng.normal(size=(d, K + 1)), "b": rng.normal(size=K + 1)}
    if family == "kernel":
        return {"C": rng.uniform(size=(R, d)), "A": rng.normal(size=(R, K)), "gamma": 2.0}
    scale = 3.0
    return {"U": scale * rng.normal(size=(d, m)) / np.sqrt(d), "W": scale * rng.normal(size=(m, K)) / np.sqrt(m)}


def cast(model, dtype):
    return {k: (np.asarray(v, dtype).astype(np.float64) if k != "gamma" else float(np.asarray(v, dtype)))
            for k, v in model.items()}


ALPHA = 10.0


def _act(family, z):
    if family == "softplus":
        return np.logaddexp(ALPHA * z, 0.0) / ALPHA
    if family == "sigmoid":
        return 0.5 * (1 + np.tanh(z / 2))
    return np.tanh(z)


def logits64(family, w, x):
    """float64 logits and a per-logit bound on the magnitude of the terms summed, x `[n, d]`."""
    if family == "linear":
        return x @ w["W"] + w["b"], np.abs(x) @ np.abs(w["W"]) + np.abs(w["b"])
    if family == "kernel":
        sq = np.sum((x[:, None, :] - w["C"][None]) ** 2, -1)
        k = np.exp(-w["gamma"] * sq)
        return k @ w["A"], (1 + w["gamma"] * sq) * k @ np.abs(w["A"])
    z = x @ w["U"]
    h = _act(family, z)
    return h @ w["W"], (np.abs(h) + np.abs(x) @ np.abs(w["U"])) @ np.abs(w["W"])


def verified_class(family, w, x, c):
    """True where every f_j < f_c (certainly c) resp. some f_j > f_c (certainly not c) in exact arithmetic,
    from float64 with a 1e-10 relative error allowance (float64 rounding is below 1e-13 here)."""
    f, mag = logits64(family, w, x)
    fc, magc = np.take_along_axis(f, c[:, None], 1), np.take_along_axis(mag, c[:, None], 1)
    slack = 1e-10 * (mag + magc + 1.0)
    other = np.arange(f.shape[1])[None] != c[:, None]
    is_c = np.all(~other | (fc - f > slack), 1)
    not_c = np.any(other & (f - fc > slack), 1)
    return is_c, not_c


# ----------------------------------------------------------------------------- structures for robustjax

def structure(family, w, dtype, certify=None):
    from robustjax.models import activations
    if certify is None:
        from robustjax import certify
    LinearWeights, GaussianKernelWeights = certify.LinearWeights, certify.GaussianKernelWeights
    OneHiddenLayerWeights = certify.OneHiddenLayerWeights
    a = lambda v: jnp.asarray(np.asarray(v, dtype))  # noqa: E731
    if family == "linear":
        return LinearWeights(a(w["W"]), a(w["b"]))
    if family == "kernel":
        return GaussianKernelWeights(a(w["C"]), a(w["A"]), w["gamma"])
    act = activations.get(family, alpha=ALPHA) if family == "softplus" else activations.get(family)
    return OneHiddenLayerWeights(a(w["U"]), a(w["W"]), act)


# ----------------------------------------------------------------------------- placing points near the boundary

def _bisect_crossing(family, w, a, b, c, iters=60):
    """Per row, a point on the segment [a, b] (a classified c, b not) within 2^-iters of the crossing."""
    lo, hi = np.zeros(len(a)), np.ones(len(a))
    for _ in range(iters):
        t = (lo + hi) / 2
        f, _ = logits64(family, w, a + t[:, None] * (b - a))
        still = f.argmax(1) == c
        lo, hi = np.where(still, t, lo), np.where(still, hi, t)
    return a + ((lo + hi) / 2)[:, None] * (b - a)


def _linear_boundary(w, x0):
    f, _ = logits64("linear", w, x0)
    c = f.argmax(1)
    V = w["W"][:, c].T[:, :, None] - w["W"][None]                # [n, d, K]
    m = np.take_along_axis(f, c[:, None], 1) - f
    nrm = np.linalg.norm(V, axis=1)
    dist = np.where(np.arange(f.shape[1])[None] == c[:, None], np.inf, m / np.where(nrm > 0, nrm, 1))
    j = dist.argmin(1)
    v = V[np.arange(len(c)), :, j]
    return x0 - (m[np.arange(len(c)), j] / np.sum(v * v, 1))[:, None] * v


def _stacked_logits(family, models):
    """One float32 logits_fn for points of several models (one compilation of the attack for all): the
    last input coordinate is the model's index (no gradient flows into it, so attacks leave it alone)."""
    st = {k: jnp.asarray(np.stack([mdl[k] for mdl in models]), jnp.float32) for k in models[0] if k != "gamma"}

    def split(x):
        return x[:, :-1], jnp.round(jax.lax.stop_gradient(x[:, -1])).astype(jnp.int32)
    if family == "kernel":
        g = models[0]["gamma"]

        def kernel(x):
            x, i = split(x)
            k = jnp.exp(-g * jnp.sum((x[:, None] - st["C"][i]) ** 2, -1))
            return jnp.einsum("br,brk->bk", k, st["A"][i])
        return kernel
    act = structure(family, models[0], np.float32).act

    def net(x):
        x, i = split(x)
        return jnp.einsum("bm,bmk->bk", act.fn(jnp.einsum("bd,bdm->bm", x, st["U"][i])), st["W"][i])
    return net


def boundary_points(family, models, x0):
    """(x_b, ok) per model: points on (within 1e-16 of) the decision boundary near each x0 `[n, d]`; exact
    closest points for linear models, else DeepFool (l2, robustjax.attacks) then float64 bisection."""
    if family == "linear":
        return [(_linear_boundary(w, x0), np.ones(len(x0), bool)) for w in models]
    from robustjax import attacks
    n = len(x0)
    rows = np.repeat(np.arange(len(models)), n)
    xs = np.concatenate([np.tile(x0, (len(models), 1)), rows[:, None]], 1)
    c = np.concatenate([logits64(family, w, x0)[0].argmax(1) for w in models]).astype(np.int32)
    res = attacks.deepfool(_stacked_logits(family, models), xs.astype(np.float32), c, p=2, box=(-BIG, BIG))
    out = []
    for i, w in enumerate(models):
        sl = slice(i * n, (i + 1) * n)
        xa = np.asarray(res.x_adv[sl, :-1], np.float64)
        _, not_c = verified_class(family, w, xa, c[sl])
        ok = np.asarray(res.success[sl]) & not_c
        out.append((_bisect_crossing(family, w, x0, np.where(ok[:, None], xa, x0), c[sl]), ok))
    return out


def adversarial_distance(family, w, x, label, xb):
    """Distance from x to a float64-verified adversarial point on the ray from x through xb (inf if none)."""
    d = xb - x
    n = np.linalg.norm(d, axis=1)
    u = d / np.where(n > 0, n, 1)[:, None]
    hi = 2 * n + 1e-12
    for _ in range(20):                                          # grow until verified adversarial
        _, bad = verified_class(family, w, x + hi[:, None] * u, label)
        if bad.all():
            break
        hi = np.where(bad, hi, 2 * hi)
    _, found = verified_class(family, w, x + hi[:, None] * u, label)
    lo = np.zeros_like(hi)
    for _ in range(80):
        t = (lo + hi) / 2
        _, bad = verified_class(family, w, x + t[:, None] * u, label)
        lo, hi = np.where(bad, lo, t), np.where(bad, t, hi)
    y = x + hi[:, None] * u
    _, bad = verified_class(family, w, y, label)
    return np.where(found & bad, np.linalg.norm(y - x, axis=1), np.inf)


def exact_linear_ok(w, x, label, radius):
    """Exact check radius <= min_j (f_c - f_j)(x) / ||w_c - w_j|| (and radius 0 unless label is the exact
    argmax), in rational arithmetic on the float64 values."""
    W = [[Fraction(v) for v in row] for row in w["W"].T]          # [K][d]
    b = [Fraction(v) for v in w["b"]]
    out = np.zeros(len(x), bool)
    for i in range(len(x)):
        r = Fraction(float(radius[i]))
        if r == 0:
            out[i] = True
            continue
        xi = [Fraction(v) for v in x[i]]
        f = [sum(wk * xk for wk, xk in zip(Wk, xi)) + bk for Wk, bk in zip(W, b)]
        c = int(label[i])
        ok = True
        for j in range(len(f)):
            if j == c:
                continue
            mj = f[c] - f[j]
            v2 = sum((a - bb) ** 2 for a, bb in zip(W[c], W[j]))
            if mj <= 0 or r * r * v2 > mj * mj:
                ok = False
                break
        out[i] = ok
    return out


# ----------------------------------------------------------------------------- the experiment

def _pad(a, n):
    return np.concatenate([a, np.repeat(a[:1], n - len(a), 0)]) if len(a) < n else a


def run(n_nets=6, n_points=7, seed=0, families=FAMILIES, fractions=FRACTIONS, dtypes=DTYPES, certify=None):
    """Rows of violation counts per (family, dtype, tau), for certified_radius ("local") and
    global_lipschitz_radius ("global"). `certify` defaults to robustjax.certify."""
    if certify is None:
        from robustjax import certify
    rows = []
    rng = np.random.default_rng(seed)
    for family in families:
        for dtype in dtypes:
            dt = np.dtype(dtype)
            acc = {tau: {"pairs": 0, "local_violations": 0, "global_violations": 0, "uncertain": 0,
                         "zero": 0, "worst_ratio": 0.0, "ratios": []} for tau in fractions}
            models = [cast(random_model(family, rng), dt) for _ in range(n_nets)]
            d = {"linear": "W", "kernel": "C", "softplus": "U", "sigmoid": "U", "tanh": "U"}[family]
            d = models[0][d].shape[1 if family == "kernel" else 0]
            x0 = rng.uniform(size=(n_points, d))
            size = n_points * len(fractions)                    # one compiled certificate per family and dtype
            for w, (xb, ok) in zip(models, boundary_points(family, models, x0)):
                x0k, xb = x0[ok], xb[ok]
                if not len(x0k):
                    continue
                xs = np.concatenate([(xb + tau * (x0k - xb)).astype(dt) for tau in fractions])
                taus = np.repeat(fractions, len(x0k))
                x64 = xs.astype(np.float64)
                label = logits64(family, w, x64)[0].argmax(1).astype(np.int32)
                keep, _ = verified_class(family, w, x64, label)   # the exact class of x is known
                xs, x64, label, taus = xs[keep], x64[keep], label[keep], taus[keep]
                xbr = np.tile(xb, (len(fractions), 1))[keep]
                n = len(xs)
                with jax.enable_x64(dtype == "float64"):
                    s = structure(family, w, dt, certify)
                    xj, yj = jnp.asarray(_pad(xs, size)), _pad(label, size)
                    loc = certify.certified_radius(s, xj, yj)
                    glo = certify.global_lipschitz_radius(s, xj, yj)
                rl = np.asarray(loc.radius[:n], np.float64)
                rg = np.asarray(glo.radius[:n], np.float64)
                if family == "linear":
                    ok_l, ok_g = exact_linear_ok(w, x64, label, rl), exact_linear_ok(w, x64, label, rg)
                    ref = np.full(n, np.nan)
                else:
                    ref = adversarial_distance(family, w, x64, label, xbr)
                    ok_l, ok_g = rl <= ref, rg <= ref
                unc = getattr(loc, "uncertain", None)
                for tau in fractions:
                    sel = taus == tau
                    a = acc[tau]
                    a["pairs"] += int(sel.sum())
                    a["local_violations"] += int((~ok_l[sel]).sum())
                    a["global_violations"] += int((~ok_g[sel]).sum())
                    a["uncertain"] += int(unc[:n][sel].sum()) if unc is not None else 0
                    a["zero"] += int((rl[sel] == 0).sum())
                    if family != "linear":
                        fin = sel & np.isfinite(ref) & (ref > 0)
                        q = rl[fin] / ref[fin]
                        a["ratios"] += q.tolist()
                        a["worst_ratio"] = max(a["worst_ratio"], float(q.max()) if q.size else 0.0)
            for tau in fractions:
                a = acc[tau]
                q = np.asarray(a.pop("ratios"))
                a["median_ratio"] = float(np.median(q)) if q.size else None
                rows.append({"family": family, "dtype": dtype, "tau": tau, **a})
    return rows


def main():
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    t0 = time.perf_counter()
    rows = run()
    wall = time.perf_counter() - t0
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    total = sum(r["pairs"] for r in rows)
    viol = sum(r["local_violations"] + r["global_violations"] for r in rows)
    out = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{platform.machine()} CPU, {jax.device_count()} JAX device(s), jax {jax.__version__}",
           "load": {"before": load_before, "after": load_after,
                    "note": "1/5/15-min load averages; other jobs shared the 2 cores"},
           "wall_s": wall, "pairs": total, "violations": viol, "rows": rows}
    (HERE / "soundness.json").write_text(json.dumps(out, indent=1))
    lines = ["# Certificate soundness near the decision boundary", "",
             f"{out['date']}, {out['machine']}; load averages {' '.join(load_before)} before, "
             f"{' '.join(load_after)} after (other jobs shared the machine); {wall:.0f} s wall.", "",
             f"**{total} (net, point) pairs, {viol} violations** (certified radius above the exact distance "
             "(linear, exact rational comparison) or above the distance of a float64-verified adversarial "
             "example (the others); each pair checks `certified_radius` and `global_lipschitz_radius`).", "",
             "tau: the point's distance to the boundary as a fraction of the original point's; ratio: local "
             "radius / adversarial distance (nonlinear families); zero: radius 0 (uncertain or not provable).", "",
             "| family | dtype | tau | pairs | violations (local / global) | uncertain | zero | median ratio | max ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        med = "-" if r["median_ratio"] is None else f"{r['median_ratio']:.4f}"
        mx = "-" if r["family"] == "linear" else f"{r['worst_ratio']:.4f}"
        lines.append(f"| {r['family']} | {r['dtype']} | {r['tau']:.0e} | {r['pairs']} | {r['local_violations']} / "
                     f"{r['global_violations']} | {r['uncertain']} | {r['zero']} | {med} | {mx} |")
    (HERE / "soundness.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
