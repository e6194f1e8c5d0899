"""A network as a small typed graph of layers: what tracing a logits_fn produces and what evaluation, linear
regions, the MILP and bound propagation read.

Every layer acts on a batch `[batch, ...]`; its parameters have per-example shapes (no batch axis). A `Graph`
is a tuple of `Node(layer, inputs)`: node ids count from 0 = the graph's input, node k = nodes[k - 1]; the last
node is the output. A plain sequence of layers is the chain graph (`as_graph`).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np


class Dense(NamedTuple):
    """y = x @ W + b on the last axis; W `[n_in, n_out]`, b broadcastable to the output's example shape."""
    W: np.ndarray
    b: np.ndarray


class Conv(NamedTuple):
    """y = lax.conv_general_dilated(x, kernel, ...) + bias, with jax.lax's argument names and meaning;
    padding explicit `((lo, hi), ...)`, dimension_numbers a `lax.ConvDimensionNumbers`, bias broadcastable to
    the output's example shape."""
    kernel: np.ndarray
    bias: np.ndarray
    window_strides: tuple
    padding: tuple
    lhs_dilation: tuple
    rhs_dilation: tuple
    dimension_numbers: Any
    feature_group_count: int = 1


class Affine(NamedTuple):
    """y = x * scale + shift elementwise (normalization, a bias, a constant factor); scale and shift
    broadcastable to the example shape."""
    scale: np.ndarray
    shift: np.ndarray


class ReLU(NamedTuple):
    """y = max(x, 0) elementwise."""


class Activation(NamedTuple):
    """A smooth elementwise activation by name: 'tanh', 'sigmoid', 'softplus', 'silu', 'gelu', 'elu'."""
    kind: str


class MaxPool(NamedTuple):
    """Max over windows of the example axes (lax.reduce_window_max without the batch axis): window, strides
    and padding `((lo, hi), ...)` per example axis; padding counts as -inf."""
    window: tuple
    strides: tuple
    padding: tuple


class Reshape(NamedTuple):
    """x reshaped to `[batch, *shape]`."""
    shape: tuple


class Flatten(NamedTuple):
    """x reshaped to `[batch, d]`."""


class Transpose(NamedTuple):
    """The example axes permuted by perm (0 = the first example axis)."""
    perm: tuple


class Add(NamedTuple):
    """The sum of the node's two inputs (a residual connection)."""


class Concatenate(NamedTuple):
    """The node's inputs concatenated along example axis `axis` (0 = the first example axis)."""
    axis: int


Layer = Dense | Conv | Affine | ReLU | Activation | MaxPool | Reshape | Flatten | Transpose | Add | Concatenate

#: Layers that are affine maps of their input(s).
AFFINE_KINDS = (Dense, Conv, Affine, Reshape, Flatten, Transpose, Add, Concatenate)
#: Layers that are piecewise affine, with a switch pattern selecting the piece.
PIECEWISE_KINDS = (ReLU, MaxPool)
ACTIVATIONS = ("tanh", "sigmoid", "softplus", "silu", "gelu", "elu")


class Node(NamedTuple):
    """One layer applied to the outputs of earlier nodes (ids: 0 the graph input, k the k-th node)."""
    layer: Layer
    inputs: tuple


class Graph(NamedTuple):
    """The nodes in evaluation order; input_shape the example shape (without batch), or None if unknown."""
    nodes: tuple
    input_shape: tuple | None = None

    @property
    def layers(self) -> list:
        return [n.layer for n in self.nodes]

    def is_chain(self) -> bool:
        """Every node reads exactly the node before it."""
        return all(n.inputs == (k,) for k, n in enumerate(self.nodes))

    def is_piecewise_affine(self) -> bool:
        return all(isinstance(n.layer, AFFINE_KINDS + PIECEWISE_KINDS) for n in self.nodes)


def as_graph(net, input_shape: Sequence[int] | None = None) -> Graph:
    """A Graph, or a sequence of layers as the chain graph; ValueError for anything else."""
    if isinstance(net, Graph):
        return net
    if isinstance(net, (list, tuple)) and all(isinstance(l, Layer.__args__) for l in net):
        return Graph(tuple(Node(l, (k,)) for k, l in enumerate(net)),
                     None if input_shape is None else tuple(input_shape))
    raise ValueError(f"net must be a robustjax.network.Graph or a sequence of network layers, got "
                     f"{type(net).__name__}")


def linear_part(layer: Layer) -> Layer:
    """An affine layer with its constant term removed (the map of differences); ValueError otherwise."""
    if isinstance(layer, Dense):
        return layer._replace(b=np.zeros((), np.asarray(layer.W).dtype))
    if isinstance(layer, Conv):
        return layer._replace(bias=np.zeros((), np.asarray(layer.kernel).dtype))
    if isinstance(layer, Affine):
        return layer._replace(shift=np.zeros((), np.asarray(layer.scale).dtype))
    if isinstance(layer, AFFINE_KINDS):
        return layer
    raise ValueError(f"{type(layer).__name__} is not an affine layer")
