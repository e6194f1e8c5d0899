"""A graph as a function whose weights are jit arguments: `split` separates a Graph's arrays (the weights) from
its structure (layer kinds, shapes, strides, wiring: hashable), `join` puts them back, and `as_function` gives
the graph's logits_fn as a `jax.tree_util.Partial` with the weights as its pytree leaves.

Passed to a jitted function as an argument (robustjax's attacks take their logits_fn so), such a function
compiles once per structure and array shapes: a second net of the same architecture reuses the program.
A closure over the weights instead bakes them into the program as constants and compiles anew for every net.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from robustjax.network.evaluate import evaluate
from robustjax.network.graph import Graph, as_graph

_ARRAY = (np.ndarray, np.generic, jax.Array)


@dataclasses.dataclass(frozen=True)
class Structure:
    """A Graph without its arrays: the treedef of the graph and its leaves, None where an array was."""
    treedef: Any
    static: tuple


def split(graph) -> tuple[Structure, list]:
    """(structure, arrays): the graph's array leaves (weights, biases, scales) in pytree order, and the rest.
    Structures of two graphs compare equal exactly when the graphs differ at most in those arrays (values and
    shapes: jit keys on the shapes as argument shapes, so equal structures and shapes share a program)."""
    leaves, treedef = jax.tree.flatten(as_graph(graph))
    arrays = [a for a in leaves if isinstance(a, _ARRAY)]
    static = tuple(None if isinstance(a, _ARRAY) else a for a in leaves)
    return Structure(treedef, static), arrays


def join(structure: Structure, arrays) -> Graph:
    """The Graph of `split`'s (structure, arrays); the arrays may be tracers (inside jit, vmap, grad)."""
    it = iter(arrays)
    return jax.tree.unflatten(structure.treedef, [next(it) if s is None else s for s in structure.static])


def floating_as(arrays, dtype) -> list:
    """`split`'s arrays with the floating ones as jax arrays of dtype (float64 needs `jax.enable_x64`), the
    others as they are: the weights as a jitted program of `join` takes them."""
    return [jax.numpy.asarray(a, dtype) if np.issubdtype(np.asarray(a).dtype, np.floating) else a for a in arrays]


@dataclasses.dataclass(frozen=True)
class _Evaluate:
    structure: Structure

    def __call__(self, arrays, x):
        return evaluate(join(self.structure, arrays), x)


def as_function(graph) -> jax.tree_util.Partial:
    """The graph's logits_fn, x `[batch, *input_shape]` -> output (`evaluate`, traceable), as a Partial whose
    leaves are the graph's arrays: equal structures give equal pytree definitions (one compilation)."""
    structure, arrays = split(graph)
    return jax.tree_util.Partial(_Evaluate(structure), list(arrays))
