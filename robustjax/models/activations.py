"""Activations by name. `softplus` has a slope alpha: (1/alpha) log(1 + exp(alpha t)).

Each entry also carries its derivative and, where it exists, the maximum of |sigma'| over an
interval [lo, hi], which certify.py's closed forms need.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class Activation(NamedTuple):
    """An activation with its derivative.

    name: registry name.
    fn: sigma(t), elementwise.
    grad: sigma'(t), elementwise.
    max_abs_grad: (lo, hi) -> max over t in [lo, hi] of |sigma'(t)| (elementwise), or None if unknown.
    analytic: real-analytic on R (the wide-layer theorems need it).
    strictly_increasing: sigma' > 0 everywhere.
    smooth: continuously differentiable (Theorem 2.1 needs it).
    """
    name: str
    fn: Callable
    grad: Callable
    max_abs_grad: Callable | None
    analytic: bool
    strictly_increasing: bool
    smooth: bool


def _softplus(t, alpha):
    return jax.nn.softplus(alpha * t) / alpha


def _softplus_grad(t, alpha):
    return jax.nn.sigmoid(alpha * t)


def _increasing_grad_max(grad, lo, hi):
    return grad(hi)


def _bell_max(grad, lo, hi):
    """max |sigma'| over [lo, hi] for a derivative that is even, peaked at 0 and decreasing in |t|."""
    at_zero = (lo <= 0) & (hi >= 0)
    nearest = jnp.where(at_zero, 0.0, jnp.minimum(jnp.abs(lo), jnp.abs(hi)))
    return grad(nearest)


def _sigmoid_grad(t):
    s = jax.nn.sigmoid(t)
    return s * (1 - s)


def _tanh_grad(t):
    return 1 - jnp.tanh(t) ** 2


def _relu_grad(t):
    return (t > 0).astype(jnp.result_type(t))


def get(name: str, *, alpha: float = 1.0) -> Activation:
    """Activation by name: relu, softplus (slope alpha), sigmoid, tanh, identity."""
    if name == "softplus":
        g = functools.partial(_softplus_grad, alpha=alpha)
        return Activation(f"softplus(alpha={alpha:g})", functools.partial(_softplus, alpha=alpha), g,
                          functools.partial(_increasing_grad_max, g), True, True, True)
    if name == "sigmoid":
        return Activation("sigmoid", jax.nn.sigmoid, _sigmoid_grad,
                          functools.partial(_bell_max, _sigmoid_grad), True, True, True)
    if name == "tanh":
        return Activation("tanh", jnp.tanh, _tanh_grad, functools.partial(_bell_max, _tanh_grad),
                          True, True, True)
    if name == "relu":
        return Activation("relu", jax.nn.relu, _relu_grad, None, False, False, False)
    if name == "identity":
        one = lambda t: jnp.ones_like(t)  # noqa: E731
        return Activation("identity", lambda t: t, one, lambda lo, hi: jnp.ones_like(lo), True, True, True)
    raise ValueError(f"unknown activation {name!r}; known: relu, softplus, sigmoid, tanh, identity")


NAMES = ("relu", "softplus", "sigmoid", "tanh", "identity")
