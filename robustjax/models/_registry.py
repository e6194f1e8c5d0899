"""Name -> model constructor, so that scripts and configs build models from data; `build` checks every
field it is given against the table `FIELD_CHECKS` (ValueError naming the field, what it takes and what
came), so a bad config fails at build time, not deep inside a trace."""
from __future__ import annotations

import dataclasses
import inspect
import numbers
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from robustjax import validate
from robustjax.models import activations
from robustjax.models.cnn import LeNet, MMRCNN, ResNet
from robustjax.models.kernel import GaussianKernelMachine
from robustjax.models.mlp import MLP, OneHiddenLayer
from robustjax.models.skip import SKIP
from robustjax.models.zoo import RESNET_BLOCKS, VGG_CONFIGS, ZOO

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


def _sizes(*, empty: bool) -> Callable[[Any, str], tuple]:
    """A checker for a sequence of positive integers (layer widths, channel counts)."""
    def check(v, name):
        items = None if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__") else tuple(v)
        ok = items is not None and (empty or items) and all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) and i > 0 for i in items)
        if not ok:
            raise ValueError(f"{name} must be a {'' if empty else 'non-empty '}sequence of positive integers, "
                             f"got {v!r}")
        return tuple(int(i) for i in items)
    return check


def _one_of(options) -> Callable[[Any, str], Any]:
    def check(v, name):
        if v not in options:
            raise ValueError(f"{name} must be one of {sorted(options)}, got {v!r}")
        return v
    return check


def _positive_int(v, name):
    return validate.positive_int(v, name)


def _positive_float(v, name):
    return validate.positive_float(v, name)


def _rate(v, name):
    r = validate.positive_float(v, name, allow_zero=True)
    if r >= 1:
        raise ValueError(f"{name} must be a drop rate in [0, 1), got {v!r}")
    return r


def _blocks(v, name):
    return _positive_int(v, name) if isinstance(v, numbers.Number) else _sizes(empty=False)(v, name)


def _skip_units(v, name):
    return None if v is None else _positive_int(v, name)


def _flag(v, name):
    if not isinstance(v, bool):
        raise ValueError(f"{name} must be True or False, got {v!r}")
    return v


FIELD_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "widths": _sizes(empty=True), "classifier": _sizes(empty=True), "features": _sizes(empty=True),
    "blocks": _blocks, "num_classes": _positive_int, "hidden": _positive_int, "num_centers": _positive_int,
    "growth": _positive_int, "skip_layers": _positive_int, "middle_blocks": _positive_int,
    "skip_units": _skip_units, "alpha": _positive_float, "gamma": _positive_float, "width_mult": _positive_float,
    "dropout_input": _rate, "dropout_hidden": _rate, "use_bias": _flag,
    "act": _one_of(activations.NAMES), "norm": _one_of(("none", "group")), "stem": _one_of(("cifar", "imagenet")),
    "config": _one_of(VGG_CONFIGS), "depth": _one_of(RESNET_BLOCKS),
}


def build(name: str, **config) -> nn.Module:
    """The model registered as `name`, configured by keyword fields.

    Raises ValueError for an unknown name (listing the known ones), unknown or missing fields, and any
    field value `FIELD_CHECKS` rejects (e.g. widths=(-4,), act="swish", dropout_hidden=1.0).
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {sorted(REGISTRY)}")
    ctor = REGISTRY[name]
    fields = getattr(ctor, "__dataclass_fields__", None)
    allowed = set(fields) - {"parent", "name"} if fields else set(inspect.signature(ctor).parameters)
    bad = set(config) - allowed
    if bad:
        raise ValueError(f"model {name!r} has no field(s) {sorted(bad)}; fields: {sorted(allowed)}")
    if fields:
        missing = [f for f in sorted(allowed) if f not in config and fields[f].default is dataclasses.MISSING
                   and fields[f].default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"model {name!r} needs field(s) {missing}")
    config = {k: FIELD_CHECKS[k](v, k) if k in FIELD_CHECKS else v for k, v in config.items()}
    return ctor(**config)


def init(model: nn.Module, key, input_shape, **kwargs):
    """Variables of `model` for inputs of shape `[batch, ...]` (use batch 1)."""
    return model.init(key, jnp.zeros(input_shape, jnp.float32), **kwargs)


def logits_fn(model: nn.Module, variables) -> Callable[[jax.Array], jax.Array]:
    """The plain batched function x `[batch, ...]` -> logits `[batch, K]` that downstream code takes, as a
    `jax.tree_util.Partial` over the variables (a jit argument for the attacks, `attacks/model_arg.py`): equal
    modules (Flax compares their fields) share one program per shapes."""
    return jax.tree_util.Partial(Apply(model), variables)


@dataclasses.dataclass(frozen=True)
class Apply:
    """model.apply(variables, x, **kwargs), equal and equally hashed for equal modules (a bound `model.apply`
    compares by the module's identity)."""
    model: nn.Module

    def __call__(self, variables, x, **kwargs):
        return self.model.apply(variables, x, **kwargs)
