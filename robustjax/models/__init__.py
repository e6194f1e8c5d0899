"""Flax linen models, used as pure functions `model.apply(variables, x) -> logits`.

`build(name, **config)` makes a model from its registry name; `logits_fn(model, variables)` binds
the variables into the plain batched function that certify, attacks and landscape take.
"""
from robustjax.models import activations, skip, zoo
from robustjax.models._registry import REGISTRY, Apply, build, init, logits_fn, register
from robustjax.models.cnn import LeNet, MMRCNN, ResNet
from robustjax.models.kernel import GaussianKernelMachine, GaussianKernelWeights, gaussian_kernel
from robustjax.models.mlp import MLP, OneHiddenLayer, OneHiddenLayerWeights

__all__ = [
    "activations", "skip", "zoo", "REGISTRY", "Apply", "build", "init", "logits_fn", "register",
    "LeNet", "MMRCNN", "ResNet", "GaussianKernelMachine", "GaussianKernelWeights", "gaussian_kernel",
    "MLP", "OneHiddenLayer", "OneHiddenLayerWeights",
]
