"""Regularization terms, composable (optax style).

A term is a function `term(params, x, y, *, logits_fn, key) -> scalar`, where `logits_fn(params, x)`
gives `[batch, K]` logits (the model with its constants bound). Terms that need only the weights
ignore the batch; terms that need the model and the batch (cross-Lipschitz) use both. `combine`
sums weighted terms; `from_spec` builds terms by name for configs. Dropout is a model field, not a
term here.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import jax
import jax.numpy as jnp


class Term(Protocol):
    def __call__(self, params, x, y, *, logits_fn: Callable, key) -> jax.Array: ...


def weight_decay(weight: float, *, include_biases: bool = False) -> Term:
    """weight * 1/2 sum ||W||^2 over weight matrices and kernels (leaves with ndim >= 2 unless
    include_biases), as `lambda * tf.nn.l2_loss(W)` in the cross-Lipschitz code."""
    def term(params, x, y, *, logits_fn, key):
        del x, y, logits_fn, key
        leaves = [p for p in jax.tree.leaves(params) if include_biases or p.ndim >= 2]
        return weight * 0.5 * sum(jnp.sum(p * p) for p in leaves)
    return term


def combine(*terms: Term) -> Term:
    """The sum of terms (each already weighted); keys are split between them."""
    def term(params, x, y, *, logits_fn, key):
        if not terms:
            return jnp.zeros((), jnp.float32)
        keys = jax.random.split(key, len(terms))
        return sum(t(params, x, y, logits_fn=logits_fn, key=k) for t, k in zip(terms, keys))
    return term


REGULARIZERS: dict[str, Callable[..., Term]] = {"weight_decay": weight_decay}


def register(name: str, factory: Callable[..., Term]) -> None:
    REGULARIZERS[name] = factory


def from_spec(spec: Sequence[tuple[str, float] | tuple[str, float, dict]]) -> Term:
    """Terms from `[(name, weight), (name, weight, {kwargs}), ...]`; an empty spec is zero."""
    terms = []
    for item in spec:
        name, weight, kw = (tuple(item) + ({},))[:3]
        if name not in REGULARIZERS:
            raise ValueError(f"unknown regularizer {name!r}; known: {sorted(REGULARIZERS)}")
        if weight:
            terms.append(REGULARIZERS[name](weight, **kw))
    return combine(*terms)
