"""Interval bound propagation (IBP) over a `robustjax.network.Graph`: one handler per layer kind.

`interval_bounds(graph, lo, hi)` returns elementwise bounds `[batch, *shape]` of every node's value over the
box lo <= x <= hi. Every affine handler pads its result outward by a rigorous bound on its own floating-point
rounding (gamma_n times the summed magnitudes), every activation by a few ulps, so the bounds hold for the
network in exact arithmetic on the given weights. Run it in float64 (`robustjax.bounds` does).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax.bounds import relaxations
from robustjax.network.evaluate import JAX, NUMPY, evaluate_numpy, interpret, pool_windows
from robustjax.network.graph import (Activation, Add, Affine, Concatenate, Conv, Dense, Flatten, Graph, MaxPool,
                                     ReLU, Reshape, Transpose, as_graph)


class Interval(NamedTuple):
    """Elementwise bounds lo <= value <= hi, `[batch, *shape]` each."""
    lo: jax.Array
    hi: jax.Array


def _gamma(n, dtype):
    u = jnp.finfo(dtype).eps
    return (n + 2) * u / (1 - (n + 2) * u)


def _affine_interval(apply, apply_abs, fan_in, x: Interval) -> Interval:
    """Interval through y = apply(x) (affine) with |linear part| = apply_abs (no offset)."""
    c, r = 0.5 * (x.lo + x.hi), 0.5 * (x.hi - x.lo)
    yc = apply(c)
    yr = apply_abs(r)
    pad = _gamma(fan_in + 2, yc.dtype) * (apply_abs(jnp.abs(c)) + yr + jnp.abs(yc))
    return Interval(yc - yr - pad, yc + yr + pad)


def _dense(layer: Dense, x: Interval) -> Interval:
    W = jnp.asarray(layer.W, x.lo.dtype)
    b = jnp.asarray(layer.b, x.lo.dtype)
    return _affine_interval(lambda v: v @ W + b, lambda v: v @ jnp.abs(W), W.shape[0], x)


def _conv(layer: Conv, x: Interval) -> Interval:
    absl = layer._replace(kernel=jnp.abs(jnp.asarray(layer.kernel, x.lo.dtype)), bias=jnp.zeros((), x.lo.dtype))
    fan_in = int(np.size(layer.kernel))          # >= the true fan-in in any kernel layout
    return _affine_interval(lambda v: JAX[Conv](layer, v), lambda v: JAX[Conv](absl, v), fan_in, x)


def _affine(layer: Affine, x: Interval) -> Interval:
    s = jnp.asarray(layer.scale, x.lo.dtype)
    t = jnp.asarray(layer.shift, x.lo.dtype)
    return _affine_interval(lambda v: v * s + t, lambda v: v * jnp.abs(s), 1, x)


def _monotone(fn):
    def handler(layer, x: Interval) -> Interval:
        return Interval(fn(layer, x.lo), fn(layer, x.hi))
    return handler


def _activation(layer: Activation, x: Interval) -> Interval:
    act = relaxations.get(layer.kind) if layer.kind in ("sigmoid", "tanh", "softplus") else None
    if act is None:
        raise ValueError(f"bound propagation does not support activation {layer.kind!r} "
                         "(supported: relu, sigmoid, tanh, softplus)")
    return Interval(*relaxations.interval(act, x.lo, x.hi))


def _add(layer: Add, a: Interval, b: Interval) -> Interval:
    lo, hi = a.lo + b.lo, a.hi + b.hi
    pad = _gamma(2, lo.dtype) * jnp.maximum(jnp.abs(lo), jnp.abs(hi))
    return Interval(lo - pad, hi + pad)


def _structural(layer_type):
    f = JAX[layer_type]

    def handler(layer, *xs: Interval) -> Interval:
        return Interval(f(layer, *[x.lo for x in xs]), f(layer, *[x.hi for x in xs]))
    return handler


#: IBP handlers by layer kind: handler(layer, *input_intervals) -> Interval.
IBP = {
    Dense: _dense,
    Conv: _conv,
    Affine: _affine,
    ReLU: _monotone(lambda l, v: jnp.maximum(v, 0.0)),
    Activation: _activation,
    MaxPool: _monotone(JAX[MaxPool]),
    Reshape: _structural(Reshape),
    Flatten: _structural(Flatten),
    Transpose: _structural(Transpose),
    Concatenate: _structural(Concatenate),
    Add: _add,
}


def interval_bounds(graph: Graph, lo, hi) -> list:
    """`[Interval of the input, of node 1, ..., of the output]` over the box lo <= x <= hi `[batch, ...]`."""
    return interpret(as_graph(graph), IBP, Interval(jnp.asarray(lo), jnp.asarray(hi)))
