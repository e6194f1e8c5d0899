"""Name -> model constructor, so that scripts and configs build models from data."""
from __future__ import annotations

import inspect
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from robustjax.models.cnn import LeNet, MMRCNN, ResNet
from robustjax.models.kernel import GaussianKernelMachine
from robustjax.models.mlp import MLP, OneHiddenLayer
from robustjax.models.skip import SKIP
from robustjax.models.zoo import ZOO

REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "one_hidden_layer": OneHiddenLayer,
    "lenet": LeNet,
    "mmr_cnn": MMRCNN,
    "resnet": ResNet,
    "gaussian_kernel": GaussianKernelMachine,
    **ZOO,   # ImageNet architectures for the width table (models/zoo.py)
    **SKIP,  # VGG/DenseNet with skip connections to the output (models/skip.py)
}


def register(name: str, ctor: Callable[..., nn.Module]) -> None:
    """Adds a model constructor under `name` (later issues register zoo and skip networks)."""
    if name in REGISTRY and REGISTRY[name] is not ctor:
        raise ValueError(f"model name {name!r} is already registered")
    REGISTRY[name] = ctor


def build(name: str, **config) -> nn.Module:
    """The model registered as `name`, configured by keyword fields; unknown fields are an error."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {sorted(REGISTRY)}")
    ctor = REGISTRY[name]
    fields = getattr(ctor, "__dataclass_fields__", None)
    allowed = set(fields) - {"parent", "name"} if fields else set(inspect.signature(ctor).parameters)
    bad = set(config) - allowed
    if bad:
        raise ValueError(f"model {name!r} has no field(s) {sorted(bad)}; fields: {sorted(allowed)}")
    return ctor(**config)


def init(model: nn.Module, key, input_shape, **kwargs):
    """Variables of `model` for inputs of shape `[batch, ...]` (use batch 1)."""
    return model.init(key, jnp.zeros(input_shape, jnp.float32), **kwargs)


def logits_fn(model: nn.Module, variables) -> Callable[[jax.Array], jax.Array]:
    """The plain batched function x `[batch, ...]` -> logits `[batch, K]` that downstream code takes."""
    def f(x):
        return model.apply(variables, x)
    return f
