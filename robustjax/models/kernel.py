"""Gaussian kernel machine f_j(x) = sum_r alpha_jr exp(-gamma ||x - x_r||^2) with fixed centers."""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


class GaussianKernelWeights(NamedTuple):
    """centers `[R, d]`, alpha `[R, K]`, gamma scalar: the structure certify.py and regularizers.py use."""
    centers: jax.Array
    alpha: jax.Array
    gamma: float

    def logits(self, x):
        return gaussian_kernel(x.reshape(x.shape[0], -1), self.centers, self.gamma) @ self.alpha


def gaussian_kernel(x, centers, gamma):
    """k(x_i, c_r) = exp(-gamma ||x_i - c_r||^2); x `[n, d]`, centers `[R, d]` -> `[n, R]`."""
    sq = (jnp.sum(x * x, -1)[:, None] + jnp.sum(centers * centers, -1)[None, :] - 2 * x @ centers.T)
    return jnp.exp(-gamma * jax.nn.relu(sq))          # relu: a gradient that compares sq with 0, not with max


class GaussianKernelMachine(nn.Module):
    """x `[batch, ...]` -> `[batch, num_classes]`.

    The centers live in the non-trainable 'constants' collection; `init` needs them passed as
    `centers` (`[R, d]`); only alpha (`[R, K]`, zero-initialized) is a parameter.
    """
    num_centers: int
    gamma: float
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False, centers=None):
        x = x.reshape((x.shape[0], -1))
        c = self.variable("constants", "centers",
                          lambda: jnp.zeros((self.num_centers, x.shape[-1]), x.dtype)
                          if centers is None else jnp.asarray(centers, x.dtype))
        alpha = self.param("alpha", nn.initializers.zeros, (self.num_centers, self.num_classes))
        return gaussian_kernel(x, c.value, self.gamma) @ alpha

    def weights(self, variables) -> GaussianKernelWeights:
        return GaussianKernelWeights(variables["constants"]["centers"], variables["params"]["alpha"],
                                     self.gamma)
