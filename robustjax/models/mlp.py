"""Fully connected networks: `MLP` with any widths, and the cross-Lipschitz paper's `OneHiddenLayer`."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robustjax.models import activations


class MLP(nn.Module):
    """x `[batch, ...]` (flattened) -> logits `[batch, num_classes]`.

    widths: hidden widths; act: activation name; alpha: softplus slope; use_bias: biases in every layer;
    dropout: (input keep-drop rate, hidden drop rate) applied when `train=True` (needs a 'dropout' rng).
    """
    widths: Sequence[int]
    num_classes: int = 10
    act: str = "relu"
    alpha: float = 1.0
    use_bias: bool = True
    dropout_input: float = 0.0
    dropout_hidden: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        sigma = activations.get(self.act, alpha=self.alpha).fn
        x = x.reshape((x.shape[0], -1))
        x = nn.Dropout(self.dropout_input, deterministic=not train)(x)
        for i, w in enumerate(self.widths):
            x = sigma(nn.Dense(w, use_bias=self.use_bias, name=f"dense_{i}")(x))
            x = nn.Dropout(self.dropout_hidden, deterministic=not train)(x)
        return nn.Dense(self.num_classes, use_bias=self.use_bias, name="out")(x)


class OneHiddenLayerWeights(NamedTuple):
    """Typed view of a one-hidden-layer net f(x) = W^T sigma(U^T x) (no biases).

    U: `[d, m]` first-layer weights; W: `[m, K]` output weights; act: the Activation.
    """
    U: jax.Array
    W: jax.Array
    act: activations.Activation

    def logits(self, x):
        """x `[batch, d]` -> `[batch, K]`."""
        return self.act.fn(x.reshape(x.shape[0], -1) @ self.U) @ self.W


def _normal_init(fan_in_times_width):
    std = 1.0 / np.sqrt(fan_in_times_width)

    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.normal(key, shape, dtype)
    return init


class OneHiddenLayer(nn.Module):
    """The cross-Lipschitz paper's `mlp1layer` (methods.md 1(d)).

    1024 hidden units, no bias, softplus with alpha = 10; init N(0, 1/(d m)) for U and N(0, 1/(K m))
    for W (variances). x `[batch, ...]` -> logits `[batch, num_classes]`.
    """
    hidden: int = 1024
    num_classes: int = 10
    act: str = "softplus"
    alpha: float = 10.0
    dropout_input: float = 0.0
    dropout_hidden: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        d = x.shape[-1]
        sigma = activations.get(self.act, alpha=self.alpha).fn
        x = nn.Dropout(self.dropout_input, deterministic=not train)(x)
        U = self.param("U", _normal_init(d * self.hidden), (d, self.hidden))
        W = self.param("W", _normal_init(self.num_classes * self.hidden), (self.hidden, self.num_classes))
        h = sigma(x @ U)
        h = nn.Dropout(self.dropout_hidden, deterministic=not train)(h)
        return h @ W

    def weights(self, params) -> OneHiddenLayerWeights:
        """The typed (U, W, activation) view of `params` for the closed forms."""
        p = params["params"] if "params" in params else params
        return OneHiddenLayerWeights(p["U"], p["W"], activations.get(self.act, alpha=self.alpha))
