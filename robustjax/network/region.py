"""Linear regions of a piecewise-affine graph (ReLU, max-pool and affine layers).

A switch is a quantity whose sign selects the piece of a piecewise-affine layer: a ReLU's input, and for a
max-pool window entry a_i - max(window). The activation pattern of a point is the sign of every switch; its
linear region is Q(z) = {z' : sign(s_j(z)) s_j(z') >= 0 for every j with s_j(z) != 0}. On Q(z) the switches
and the logits are affine in z' (`region_map`).
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from robustjax.network.evaluate import JAX, NUMPY, interpret, pool_windows
from robustjax.network.graph import (AFFINE_KINDS, Activation, Graph, MaxPool, ReLU, as_graph, linear_part)


def _relu_switch(xp, layer, inp, out):
    return xp.reshape(inp, (inp.shape[0], -1))


def _pool_switch(xp, layer, inp, out):
    flat, valid, _ = pool_windows(inp.shape[1:], layer.window, layer.strides, layer.padding)
    b = inp.shape[0]
    diff = xp.reshape(inp, (b, -1))[:, flat] - xp.reshape(out, (b, -1))[:, :, None]
    return xp.reshape(xp.where(valid, diff, 0.0), (b, -1))


_SWITCHES = {ReLU: _relu_switch, MaxPool: _pool_switch}


def _switch_values(graph, values, xp):
    out = []
    for k, node in enumerate(graph.nodes):
        fn = _SWITCHES.get(type(node.layer))
        if fn is not None:
            out.append(fn(xp, node.layer, values[node.inputs[0]], values[k + 1]))
    b = values[0].shape[0]
    return xp.concatenate(out, axis=1) if out else xp.zeros((b, 0), values[-1].dtype)


def switches(graph: Graph, x):
    """(logits `[batch, K]`, switches `[batch, n]`) in JAX (traceable: jit, vmap, jvp, vjp apply).
    Switches are ordered by node, then row-major within a node; a padded max-pool entry is 0."""
    graph = as_graph(graph)
    values = interpret(graph, JAX, jnp.asarray(x))
    return values[-1], _switch_values(graph, values, jnp)


def pattern(graph: Graph, x) -> np.ndarray:
    """The activation pattern, sign of every switch, int8 `[batch, n]` (float64 evaluation)."""
    graph = as_graph(graph)
    values = interpret(graph, NUMPY, np.asarray(x, np.float64))
    return np.sign(_switch_values(graph, values, np)).astype(np.int8)


class RegionMap(NamedTuple):
    """The affine maps of one linear region, float64, for flattened inputs z `[d]`.

    Switches on the region: z @ S + s0 (`S [d, n]`, `s0 [n]`); logits: z @ F + f0 (`F [d, K]`, `f0 [K]`).
    sign `[n]`: the pattern at the point; the region is {z : sign * (z @ S + s0) >= 0} (rows with sign 0
    are constant on it).
    """
    S: np.ndarray
    s0: np.ndarray
    F: np.ndarray
    f0: np.ndarray
    sign: np.ndarray

    def halfspaces(self) -> tuple[np.ndarray, np.ndarray]:
        """(G `[m, d]`, h `[m]`) with the region = {z : G z >= h} (the rows with sign != 0)."""
        live = self.sign != 0
        return (self.sign[live, None] * self.S[:, live].T), -(self.sign[live] * self.s0[live])


def _affine_tangent(layer, *ins):
    f = NUMPY[type(layer)]
    return f(layer, *[v for v, _ in ins]), f(linear_part(layer), *[t for _, t in ins])


def _relu_tangent(layer, inp):
    v, t = inp
    return np.maximum(v, 0.0), t * (v > 0)


def _pool_tangent(layer, inp):
    v, t = inp
    flat, valid, out_shape = pool_windows(v.shape[1:], layer.window, layer.strides, layer.padding)
    vals = np.where(valid, v.reshape(1, -1)[:, flat], -np.inf)[0]
    arg = flat[np.arange(len(flat)), np.argmax(vals, -1)]
    return vals.max(-1).reshape((1,) + out_shape), t.reshape(t.shape[0], -1)[:, arg].reshape((t.shape[0],) + out_shape)


def _not_piecewise(layer, *ins):
    raise ValueError(f"region_map: {type(layer).__name__}({getattr(layer, 'kind', '')}) is not piecewise affine; "
                     "a network with smooth activations has no linear regions")


#: (value `[1, ...]`, tangent `[d, ...]`) handlers: the value at the point and the derivative of the layer's
#: output with respect to the flattened input, exact on the point's linear region.
TANGENT = {**{k: _affine_tangent for k in AFFINE_KINDS}, ReLU: _relu_tangent, MaxPool: _pool_tangent,
           Activation: _not_piecewise}


def region_map(graph: Graph, z) -> RegionMap:
    """The linear region of the point z (one example: `[*input_shape]` or `[d]`), float64.

    Exact: for every z' in the region, the graph's logits equal z' @ F + f0 and its switches z' @ S + s0
    (up to float64 rounding). ValueError for graphs with smooth activations.
    """
    graph = as_graph(graph)
    z = np.asarray(z, np.float64)
    d = z.size
    shape = graph.input_shape if graph.input_shape is not None else z.shape
    if int(np.prod(shape)) != d:
        raise ValueError(f"z has {d} entries; the graph's input shape is {tuple(shape)}")
    v0 = z.reshape((1,) + tuple(shape))
    pairs = interpret(graph, TANGENT, (v0, np.eye(d).reshape((d,) + tuple(shape))))
    values = [v for v, _ in pairs]
    tangents = [t for _, t in pairs]
    s = _switch_values(graph, values, np)[0]
    S = _switch_values(graph, tangents, np) if s.size else np.zeros((d, 0))
    zf = z.reshape(-1)
    out, F = values[-1].reshape(-1), tangents[-1].reshape(d, -1)
    return RegionMap(S, s - zf @ S, F, out - zf @ F, np.sign(s))
