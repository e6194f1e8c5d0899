"""Floating-point rounding as bounded perturbations, so that bounds also hold for the network evaluated in a
given dtype (float32, as models run).

The value a layer computes in floating point is the exact operation on its (already rounded) inputs plus a
local error delta_k with |delta_k| <= e_k: for a dot product of length n, e = gamma_n (|W|^T |h| + |b|) with
gamma_n = n u / (1 - n u) and u the unit roundoff (Higham, "Accuracy and stability of numerical algorithms",
2002, ch. 3), whatever the summation order; for an activation, 64 ulps of its largest output (room for XLA's
approximations of tanh and exp); ReLU, max-pool and the structural layers are exact. `local_errors` gives e_k
for every node from bounds of its inputs; CROWN subtracts sum_k |Lambda_k| . e_k (and IBP widens by e_k), so the
errors enter linearly at each layer instead of compounding through |W|.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from robustjax.bounds import relaxations
from robustjax.bounds.ibp import Interval
from robustjax.network.evaluate import JAX
from robustjax.network.graph import Activation, Add, Affine, Concatenate, Conv, Dense, Graph

_ACT_ULPS = 64


def unit_roundoff(dtype) -> float:
    return float(np.finfo(dtype).eps) / 2


def _mag(b: Interval):
    return jnp.maximum(jnp.abs(b.lo), jnp.abs(b.hi))


def _gamma(n, u):
    return n * u / (1 - n * u)


def local_error(layer, ins: list, dtype):
    """e `[B, *out]` bounding the rounding error of this layer alone in dtype, given bounds of its inputs;
    None where the layer is exact."""
    u = unit_roundoff(dtype)
    if isinstance(layer, Dense):
        W = jnp.abs(jnp.asarray(layer.W, ins[0].lo.dtype))
        return _gamma(W.shape[0] + 2, u) * (_mag(ins[0]) @ W + jnp.abs(jnp.asarray(layer.b, W.dtype)))
    if isinstance(layer, Conv):
        dt = ins[0].lo.dtype
        absl = layer._replace(kernel=jnp.abs(jnp.asarray(layer.kernel, dt)), bias=jnp.zeros((), dt))
        return _gamma(int(np.size(layer.kernel)) + 2, u) * (JAX[Conv](absl, _mag(ins[0]))
                                                            + jnp.abs(jnp.asarray(layer.bias, dt)))
    if isinstance(layer, Affine):
        dt = ins[0].lo.dtype
        return _gamma(2, u) * (_mag(ins[0]) * jnp.abs(jnp.asarray(layer.scale, dt)) + jnp.abs(jnp.asarray(layer.shift, dt)))
    if isinstance(layer, Activation):
        lo, hi = relaxations.interval(relaxations.get(layer.kind), ins[0].lo, ins[0].hi)
        return _ACT_ULPS * u * (jnp.maximum(jnp.abs(lo), jnp.abs(hi)) + jnp.finfo(lo.dtype).tiny)
    if isinstance(layer, Add):
        return u * (_mag(ins[0]) + _mag(ins[1]))
    if isinstance(layer, Concatenate):
        return None
    return None


def node_errors(graph: Graph, bounds: list, dtype) -> dict:
    """{node id: e_k} for every node that rounds (see `local_error`); {} for dtype None."""
    if dtype is None:
        return {}
    out = {}
    for k, node in enumerate(graph.nodes, 1):
        e = local_error(node.layer, [bounds[i] for i in node.inputs], dtype)
        if e is not None:
            out[k] = e
    return out
