"""Certified radii of any network by bound propagation: the largest eps, found by bisection, at which the
margin lower bound over the l_p ball (in the box) is positive for every other class.

Only radii that were actually verified are reported (the search keeps the last verified eps: it divides the
upper end by 16 until one holds, then bisects), so the result is sound whether or not the bound is monotone
in eps. With dtype float32 (the default) a radius also
holds for the network evaluated in float32; a correctly classified point whose margin lies within that
rounding error gets radius 0 and `uncertain` True.
"""
from __future__ import annotations

import time

import numpy as np

from robustjax import geometry, validate
from robustjax.bounds import propagate


def certificate_result(**fields):
    """A `certify.CertificateResult` from keyword fields."""
    from robustjax.certify import CertificateResult
    have = CertificateResult._fields
    return CertificateResult(**{k: v for k, v in fields.items() if k in have})


def certified_radius(net, x, labels, *, p=np.inf, box=None, method: str = "crown", steps: int = 20,
                     upper=None, alpha_steps: int = 20, dtype=np.float32, progress: bool = False):
    """Per example, a radius R such that every x' with ||x' - x||_p <= R in the box is classified as the label.

    x `[B, ...]`, labels `[B]`; upper: optional `[B]` or scalar starting upper end of the bisection (e.g. an
    attack's distances; default the l_p diameter of the box). Returns a `certify.CertificateResult` (bound =
    the method's name); radius 0 where the point is misclassified (in float64) or uncertain.
    """
    propagate.check_method(method)
    p = geometry.check_norm(p)
    x = validate.batch(x, "x")
    graph = propagate.as_network(net, x.shape[1:])
    n = x.shape[0]
    steps = validate.positive_int(steps, "steps")
    b = geometry.as_box(box, np.asarray(x))
    pred = propagate.predict_float64(graph, x) if n else np.zeros((0,), np.int32)
    K = propagate.crown.node_shapes(graph, graph.input_shape)[-1][0]
    y = validate.labels(labels, n, K)
    if n == 0:
        z = np.zeros((0,))
        return certificate_result(radius=z, misclassified=z.astype(bool), predicted=z.astype(np.int32),
                       closest_class=z.astype(np.int32), bound=method, uncertain=z.astype(bool))
    wrong = pred != y
    diam = geometry.vector_norm((np.asarray(b.hi, np.float64) - np.asarray(b.lo, np.float64)).reshape(n, -1), p)
    hi = diam if upper is None else np.minimum(validate.per_example(upper, n, "upper", allow_inf=True), diam)
    kw = dict(p=p, box=b, method=method, alpha_steps=alpha_steps, dtype=dtype)

    def ok(eps):
        m = propagate.margin_bounds(graph, x, y, eps=eps, **kw)
        return np.min(m, -1) > 0, m
    t0 = time.perf_counter()
    centre_ok, m0 = ok(np.zeros(n))
    uncertain = ~wrong & ~centre_ok
    lo = np.zeros(n)
    top_ok, m_hi = ok(hi)
    best_m = np.where(top_ok[:, None], m_hi, m0)
    lo = np.where(top_ok, hi, lo)
    active = centre_ok & ~top_ok & ~wrong
    for s in range(steps):
        if not active.any():
            break
        mid = np.where(active, np.where(lo > 0, 0.5 * (lo + hi), hi / 16), lo)   # fast descent until one holds
        good, m = ok(mid)
        good &= active
        best_m = np.where(good[:, None], m, best_m)
        lo = np.where(good, mid, lo)
        hi = np.where(active & ~good, mid, hi)
        if progress:
            print(f"bounds.certified_radius[{method}]: bisection step {s + 1}/{steps}, "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
    radius = np.where(wrong | ~centre_ok, 0.0, lo)
    closest = np.argmin(best_m, -1).astype(np.int32)
    return certificate_result(radius=radius, misclassified=wrong, predicted=pred, closest_class=closest, bound=method,
                   uncertain=uncertain)


def verified(net, x, labels, *, eps, p=np.inf, box=None, method: str = "crown", alpha_steps: int = 20,
             dtype=np.float32) -> np.ndarray:
    """`[B]` bool: every x' in the eps-ball (in the box) is provably classified as the label."""
    m = propagate.margin_bounds(net, x, labels, eps=eps, p=p, box=box, method=method, alpha_steps=alpha_steps,
                                dtype=dtype)
    return np.min(m, -1) > 0 if len(m) else np.zeros((0,), bool)
