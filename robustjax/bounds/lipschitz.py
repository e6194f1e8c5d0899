"""Theorem 2.1 of Hein & Andriushchenko (NeurIPS 2017) for deep smooth networks.

The theorem certifies the l2 radius min(R, min_j (f_c(x) - f_j(x)) / L_cj(R)) for any R, where
L_cj(R) >= max over y in B_2(x, R) of ||grad f_c(y) - grad f_j(y)||_2. For a one-hidden-layer net
`robustjax.certify` has closed forms; here L_cj(R) is bounded for any graph of affine layers and C^1
activations (sigmoid, tanh, softplus) by propagating bounds through the backward pass: on B_2(x, R) (in the
box) every pre-activation lies in an interval (CROWN), so every sigma'(z) lies in [min sigma', max sigma'] of
that interval, and the gradient of f_c - f_j, W_1^T D_1 W_2^T ... D_{L-1} W_L^T (e_c - e_j), lies in the box
obtained by interval arithmetic (center and radius through each transposed affine layer, interval products
through each D). Its largest l2 norm bounds L_cj(R). The radius is the largest R (bisection) with
margin_j / L_cj(R) >= R for all j; the margin is a lower bound that also holds in float32 arithmetic.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import geometry, validate
from robustjax.bounds import crown, propagate, relaxations
from robustjax.network.evaluate import JAX
from robustjax.network.function import Structure, floating_as, join, split
from robustjax.network.graph import AFFINE_KINDS, Activation, Affine, Conv, Dense, Graph


def _abs_layer(layer):
    if isinstance(layer, Dense):
        return layer._replace(W=jnp.abs(layer.W), b=np.zeros(()))
    if isinstance(layer, Conv):
        return layer._replace(kernel=jnp.abs(layer.kernel), bias=np.zeros(()))
    if isinstance(layer, Affine):
        return layer._replace(scale=jnp.abs(layer.scale), shift=np.zeros(()))
    return layer


def _transpose(layer, V, in_shapes, dtype):
    """V `[B, m, *out]` through the transpose of the layer's linear part: per-input `[B, m, *in]`."""
    B, m = V.shape[:2]
    f = JAX[type(layer)]
    zeros = [jnp.zeros((B * m,) + tuple(s), dtype) for s in in_shapes]
    _, vjp = jax.vjp(lambda *xs: f(layer, *xs), *zeros)
    return [c.reshape((B, m) + tuple(s)) for c, s in zip(vjp(V.reshape((B * m,) + V.shape[2:])), in_shapes)]


def _check_smooth(graph: Graph):
    for node in graph.nodes:
        layer = node.layer
        if isinstance(layer, AFFINE_KINDS):
            continue
        if isinstance(layer, Activation) and layer.kind in ("sigmoid", "tanh", "softplus"):
            continue
        raise ValueError(f"Theorem 2.1 needs a continuously differentiable network; layer "
                         f"{type(layer).__name__}{'(' + layer.kind + ')' if isinstance(layer, Activation) else ''} "
                         "is not supported (use bounds.certified_radius for ReLU / max-pool networks)")


def gradient_difference_bound(graph: Graph, s: crown.InputSet, C, shapes):
    """Upper bounds `[B, m]` of max over the set of ||grad (C f)(y)||_2 for rows C `[B, m, K]` (float64)."""
    bounds, _, _ = crown.intermediate_bounds(graph, s, shapes, method="crown")
    dtype = s.center.dtype
    acc = {len(graph.nodes): (C.astype(dtype), jnp.zeros_like(C, dtype))}
    for k in range(len(graph.nodes), 0, -1):
        cr = acc.pop(k, None)
        if cr is None:
            continue
        c, r = cr
        node = graph.nodes[k - 1]
        layer = node.layer
        if isinstance(layer, AFFINE_KINDS):
            ins = [shapes[i] for i in node.inputs]
            cs = _transpose(layer, c, ins, dtype)
            rs = _transpose(_abs_layer(layer), r, ins, dtype)
            for i, ci, ri in zip(node.inputs, cs, rs):
                acc[i] = (acc[i][0] + ci, acc[i][1] + ri) if i in acc else (ci, ri)
            continue
        pre = bounds[node.inputs[0]]
        a, b = relaxations.get(layer.kind).slope_range(pre.lo, pre.hi)
        a, b = a[:, None], b[:, None]
        lo, hi = c - r, c + r
        prods = jnp.stack([a * lo, a * hi, b * lo, b * hi])
        plo, phi = prods.min(0), prods.max(0)
        z = node.inputs[0]
        new = (0.5 * (plo + phi), 0.5 * (phi - plo))
        acc[z] = (acc[z][0] + new[0], acc[z][1] + new[1]) if z in acc else new
    c, r = acc[0]
    B, m = c.shape[:2]
    g = jnp.maximum(jnp.abs(c - r), jnp.abs(c + r)).reshape(B, m, -1)
    norm = jnp.sqrt(jnp.sum(g * g, -1))
    return norm * (1 + 1e-9) + 1e-300


@functools.lru_cache(maxsize=16)
def _bound_program(structure: Structure, shapes: tuple):
    """`gradient_difference_bound` jitted with the weights as arguments: one program per architecture."""
    return jax.jit(lambda weights, c, e, l, h, C: gradient_difference_bound(join(structure, weights),
                                                                         crown.InputSet(c, e, l, h, 2.0), C, shapes))


def theorem21_radius(net, x, labels, *, box=None, steps: int = 16, upper=None, dtype=np.float32):
    """Certified l2 radius of Theorem 2.1 for a deep smooth network, per example (`certify.CertificateResult`,
    bound 'theorem2.1-deep'). Sound for the exact network; with dtype float32 also for its float32 evaluation
    (the margin used is a lower bound that includes the rounding error); misclassified or uncertain: 0."""
    x = validate.batch(x, "x")
    graph = propagate.as_network(net, x.shape[1:])
    _check_smooth(graph)
    shapes = crown.node_shapes(graph, graph.input_shape)
    K = shapes[-1][0]
    n = x.shape[0]
    y = validate.labels(labels, n, K)
    steps = validate.positive_int(steps, "steps")
    from robustjax.bounds.radius import certificate_result
    if n == 0:
        z = np.zeros((0,))
        return certificate_result(radius=z, misclassified=z.astype(bool), predicted=z.astype(np.int32),
                       closest_class=z.astype(np.int32), bound="theorem2.1-deep", uncertain=z.astype(bool))
    b = geometry.as_box(box, np.asarray(x))
    pred = propagate.predict_float64(graph, x)
    wrong = pred != y
    margin = propagate.margin_bounds(graph, x, y, eps=0.0, p=2, box=b, method="crown", dtype=dtype)
    uncertain = ~wrong & ~(np.min(margin, -1) > 0)
    m_safe = np.where(np.isfinite(margin), np.maximum(margin, 0.0), np.inf)
    C = propagate.margin_specs(y, K)
    diam = geometry.vector_norm((np.asarray(b.hi, np.float64) - np.asarray(b.lo, np.float64)).reshape(n, -1), 2)
    hi = diam if upper is None else np.minimum(validate.per_example(upper, n, "upper", allow_inf=True), diam)

    with jax.enable_x64(True):
        structure, arrays = split(graph)
        fn = functools.partial(_bound_program(structure, tuple(shapes)), floating_as(arrays, jnp.float64))
        s0 = propagate.input_set(x, 0.0, 2, b)
        Cj = jnp.asarray(C, jnp.float64)

        def certified_at(R):
            L = np.array(fn(s0.center, jnp.asarray(R), s0.lo, s0.hi, Cj))
            L[np.arange(n), y] = np.inf
            with np.errstate(invalid="ignore"):
                ratio = np.where(L > 0, m_safe / np.maximum(L, 1e-300), np.inf)
            ratio[np.arange(n), y] = np.inf
            return np.min(ratio, -1) >= R, ratio
        # every R certifies min(R, min_j ratio_j(R)) (the theorem); bisection on R for the largest such value
        active = ~wrong & ~uncertain
        best = np.zeros(n)
        best_ratio = np.full((n, K), np.inf)
        lo = np.zeros(n)
        for it in range(steps + 1):
            R = hi if it == 0 else 0.5 * (lo + hi)
            good, ratio = certified_at(R)
            value = np.minimum(R, np.min(ratio, -1))
            better = active & (value > best)
            best = np.where(better, value, best)
            best_ratio = np.where(better[:, None], ratio, best_ratio)
            if it == 0:
                active &= ~good
                continue
            lo = np.where(active & good, R, lo)
            hi = np.where(active & ~good, R, hi)
            if not active.any():
                break
    radius = np.where(wrong | uncertain, 0.0, best)
    return certificate_result(radius=radius, misclassified=wrong, predicted=pred, closest_class=np.argmin(best_ratio, -1).astype(np.int32),
                   bound="theorem2.1-deep", uncertain=uncertain)
