"""The model as a jit argument: every attack's jitted core takes its logits_fn through `jit_model`.

A `jax.tree_util.Partial` logits_fn (`network.as_function(graph)`, `Partial(model.apply, params)`) is passed
as a pytree: its leaves (the weights) are arguments and its function is the cache key, so the attack compiles
once per function and array shapes: once per architecture for `network.as_function` (its function compares
by structure), once per module object for a Flax `model.apply` (modules compare by identity). Its arguments
must therefore be arrays or pytrees of arrays (they are traced; an int or a module among them is jit's "not a
valid JAX type" error). Any other callable, a
functools.partial included, is the cache key itself (hashed, compared by ==): the same object reuses the
program, a new closure compiles anew.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp


def as_pytree(logits_fn: Callable) -> jax.tree_util.Partial:
    """logits_fn as a Partial: itself if it is one, else a Partial without arguments (no leaves)."""
    return logits_fn if isinstance(logits_fn, jax.tree_util.Partial) else jax.tree_util.Partial(logits_fn)


def jit_model(static_argnames: Sequence[str] = ()) -> Callable:
    """Decorator: jax.jit of `core(logits_fn, *args, **static)` with logits_fn passed by `as_pytree`; the
    returned function's `jitted` is the jitted core (`jitted._cache_size()` counts its programs)."""
    def decorate(core: Callable) -> Callable:
        jitted = jax.jit(core, static_argnames=tuple(static_argnames))

        @functools.wraps(core)
        def call(logits_fn, *args, **kwargs):
            return jitted(as_pytree(logits_fn), *args, **kwargs)
        call.jitted = jitted
        return call
    return decorate


@jit_model()
def apply(logits_fn, x):
    """logits_fn(x) as a JAX array, one jitted program per model function and input shape."""
    return jnp.asarray(logits_fn(x))
