"""Small convolutional nets: LeNet-like, the MMR paper's CNN, and a small ResNet for CIFAR-10.

All take NHWC images `[batch, H, W, C]` and return logits `[batch, num_classes]`. With act="relu" and
max-pooling they are piecewise affine (the region attack's setting). Normalization is GroupNorm or
none (no batch statistics), so every model is a pure function of (variables, x).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from robustjax.models import activations


class LeNet(nn.Module):
    """conv 5x5x32 - maxpool 2 - conv 5x5x64 - maxpool 2 - dense 1024 - dense K (SAME padding)."""
    num_classes: int = 10
    act: str = "relu"
    alpha: float = 1.0
    features: Sequence[int] = (32, 64)
    hidden: int = 1024
    dropout_hidden: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        sigma = activations.get(self.act, alpha=self.alpha).fn
        for i, f in enumerate(self.features):
            x = sigma(nn.Conv(f, (5, 5), padding="SAME", name=f"conv_{i}")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = sigma(nn.Dense(self.hidden, name="dense_0")(x))
        x = nn.Dropout(self.dropout_hidden, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="out")(x)


class MMRCNN(nn.Module):
    """Croce, Andriushchenko, Hein (AISTATS 2019): conv 4x4x16 s2 - conv 4x4x32 s2 - FC 100 - K."""
    num_classes: int = 10
    act: str = "relu"
    alpha: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        sigma = activations.get(self.act, alpha=self.alpha).fn
        x = sigma(nn.Conv(16, (4, 4), strides=(2, 2), padding="SAME", name="conv_0")(x))
        x = sigma(nn.Conv(32, (4, 4), strides=(2, 2), padding="SAME", name="conv_1")(x))
        x = x.reshape((x.shape[0], -1))
        x = sigma(nn.Dense(100, name="dense_0")(x))
        return nn.Dense(self.num_classes, name="out")(x)


class _ResBlock(nn.Module):
    features: int
    strides: int
    act: str
    alpha: float
    norm: str

    @nn.compact
    def __call__(self, x):
        sigma = activations.get(self.act, alpha=self.alpha).fn
        norm = (lambda name: nn.GroupNorm(num_groups=min(8, self.features), name=name)) \
            if self.norm == "group" else (lambda name: (lambda t: t))
        y = nn.Conv(self.features, (3, 3), (self.strides, self.strides), padding="SAME", use_bias=False)(x)
        y = sigma(norm("norm_0")(y))
        y = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False)(y)
        y = norm("norm_1")(y)
        if x.shape[-1] != self.features or self.strides != 1:
            x = nn.Conv(self.features, (1, 1), (self.strides, self.strides), use_bias=False, name="proj")(x)
        return sigma(x + y)


class ResNet(nn.Module):
    """A small CIFAR ResNet: stem conv, `blocks` residual blocks per stage, global average pool.

    widths (16, 32, 64) and blocks 3 give ResNet-20 (the CEDA/ACET `resnet_small` shape).
    """
    num_classes: int = 10
    widths: Sequence[int] = (16, 32, 64)
    blocks: int = 3
    act: str = "relu"
    alpha: float = 1.0
    norm: str = "group"

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.norm not in ("group", "none"):
            raise ValueError(f"norm must be 'group' or 'none', got {self.norm!r}")
        if not self.widths:
            raise ValueError(f"widths must be a non-empty sequence of stage widths, got {self.widths!r}")
        sigma = activations.get(self.act, alpha=self.alpha).fn
        x = sigma(nn.Conv(self.widths[0], (3, 3), padding="SAME", name="stem")(x))
        for s, w in enumerate(self.widths):
            for b in range(self.blocks):
                x = _ResBlock(w, 2 if (b == 0 and s > 0) else 1, self.act, self.alpha, self.norm,
                              name=f"stage{s}_block{b}")(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="out")(x)
