"""One traversal of a network graph, `interpret(graph, handlers, x)`, and the two evaluation tables it runs:
`JAX` (traceable: jit, vmap, grad apply) and `NUMPY` (float64). Other tables (linear regions, bounds) plug
into the same traversal: a handler is `handler(layer, *input_values) -> output_value`.
"""
from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from robustjax.network.graph import (Activation, Add, Affine, Concatenate, Conv, Dense, Flatten, Graph, MaxPool,
                                     ReLU, Reshape, Transpose, as_graph)


def interpret(graph: Graph, handlers: Mapping[type, Callable], x) -> list:
    """The value of every node for input x: `[x, node_1, ..., node_n]` (the last is the output).

    handlers maps each layer type to `handler(layer, *inputs)`; a layer type without a handler is a
    ValueError naming it.
    """
    graph = as_graph(graph)
    values = [x]
    for node in graph.nodes:
        handler = handlers.get(type(node.layer))
        if handler is None:
            raise ValueError(f"no handler for layer {type(node.layer).__name__} in this table "
                             f"(handles {', '.join(sorted(t.__name__ for t in handlers))})")
        values.append(handler(node.layer, *[values[i] for i in node.inputs]))
    return values


def pool_windows(in_shape, window, strides, padding):
    """For a max-pool over an example of shape in_shape: (flat indices `[n_out, n_window]` into the example,
    validity mask `[n_out, n_window]` (False on padding), output example shape)."""
    in_shape, window, strides = tuple(in_shape), tuple(window), tuple(strides)
    out_shape = tuple((n + lo + hi - w) // s + 1 for n, (lo, hi), w, s in zip(in_shape, padding, window, strides))
    out_idx = np.stack(np.meshgrid(*[np.arange(o) for o in out_shape], indexing="ij"), -1).reshape(-1, len(in_shape))
    win_idx = np.stack(np.meshgrid(*[np.arange(w) for w in window], indexing="ij"), -1).reshape(-1, len(in_shape))
    pos = out_idx[:, None, :] * np.asarray(strides) + win_idx[None, :, :] - np.asarray([p[0] for p in padding])
    valid = np.all((pos >= 0) & (pos < np.asarray(in_shape)), axis=-1)
    flat = np.ravel_multi_index(tuple(np.clip(pos, 0, np.asarray(in_shape) - 1).transpose(2, 0, 1)), in_shape)
    return flat, valid, out_shape


def _np_sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


_JAX_ACT = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "softplus": jax.nn.softplus, "silu": jax.nn.silu,
            "gelu": jax.nn.gelu, "elu": jax.nn.elu}
_NP_ACT = {"tanh": np.tanh, "sigmoid": _np_sigmoid, "softplus": lambda x: np.logaddexp(x, 0.0),
           "silu": lambda x: x * _np_sigmoid(x),
           "gelu": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))),
           "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))}


def _conv(xp, x, layer: Conv):
    out = lax.conv_general_dilated(x, xp.asarray(layer.kernel, x.dtype), layer.window_strides, layer.padding,
                                   layer.lhs_dilation, layer.rhs_dilation, layer.dimension_numbers,
                                   layer.feature_group_count)
    return out + xp.asarray(layer.bias, x.dtype)


def _np_conv(layer: Conv, x):
    with jax.enable_x64(True):
        out = _conv(jnp, jnp.asarray(x, jnp.float64), layer)
        return np.asarray(out, np.float64)


def _jax_max_pool(layer: MaxPool, x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1,) + tuple(layer.window), (1,) + tuple(layer.strides),
                             ((0, 0),) + tuple(map(tuple, layer.padding)))


def _np_max_pool(layer: MaxPool, x):
    flat, valid, out_shape = pool_windows(x.shape[1:], layer.window, layer.strides, layer.padding)
    vals = np.where(valid, x.reshape(x.shape[0], -1)[:, flat], -np.inf)
    return vals.max(-1).reshape((x.shape[0],) + out_shape)


def _table(xp, conv, max_pool, acts, cast) -> dict:
    return {
        Dense: lambda l, x: x @ cast(l.W, x) + cast(l.b, x),
        Conv: conv,
        Affine: lambda l, x: x * cast(l.scale, x) + cast(l.shift, x),
        ReLU: lambda l, x: xp.maximum(x, 0.0),
        Activation: lambda l, x: acts[l.kind](x),
        MaxPool: max_pool,
        Reshape: lambda l, x: xp.reshape(x, (x.shape[0],) + tuple(l.shape)),
        Flatten: lambda l, x: xp.reshape(x, (x.shape[0], -1)),
        Transpose: lambda l, x: xp.transpose(x, (0,) + tuple(a + 1 for a in l.perm)),
        Add: lambda l, a, b: a + b,
        Concatenate: lambda l, *xs: xp.concatenate(xs, axis=l.axis + 1),
    }


#: Evaluation in JAX, in the input's dtype (parameters are cast to it).
JAX = _table(jnp, lambda l, x: _conv(jnp, x, l), _jax_max_pool, _JAX_ACT, lambda a, x: jnp.asarray(a, x.dtype))
#: Evaluation in float64 numpy.
NUMPY = _table(np, _np_conv, _np_max_pool, _NP_ACT, lambda a, x: np.asarray(a, np.float64))


def evaluate(graph: Graph, x) -> jax.Array:
    """The graph's output for a batch x `[batch, *input_shape]`, in JAX (traceable)."""
    return interpret(graph, JAX, jnp.asarray(x))[-1]


def evaluate_numpy(graph: Graph, x) -> np.ndarray:
    """The graph's output for a batch x `[batch, *input_shape]`, in float64 numpy."""
    return interpret(graph, NUMPY, np.asarray(x, np.float64))[-1]
