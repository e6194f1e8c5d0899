"""Networks with skip connections to the output (Nguyen, Mukkamala & Hein, ICLR 2019).

f(x) = W_L^T f_{L-1}(x) + b + V^T psi(x), where psi(x) `[M]` gathers M hidden units from the first
layers and feeds them straight to the K outputs (Dense "skip", no bias), next to the usual output layer
(Dense "out" on the penultimate features f_{L-1}). With sigma analytic, strictly increasing and
sigma(-inf) = 0 (sigmoid, softplus) and M >= N, the paper shows that there is no suboptimal strict
local minimum of the cross-entropy or squared loss, and psi(X) `[N, M]` has rank N for almost all
hidden weights, so the output layer alone can fit any labels ("rand", robustjax.landscape.lstsq).

Which units: `skip_layers` first hidden layers (VGG: conv1, conv2, ...; DenseNet: the stem conv's
activated output, then the dense layers' activations), flattened (NHWC order) and concatenated; of
those, `skip_units` evenly spaced units (all of them if None). On CIFAR-10 (N = 50,000) VGG's conv1
alone has 32 * 32 * 64 = 65,536 units; the paper's exact choice of units was not retrievable
(methods.md section 3), so this layout is ours.

`model.apply(v, x, return_features=True)` returns (logits, psi `[B, M]`, f_{L-1} `[B, p]`), which is
what the least-squares fit of the output layer needs.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from robustjax.models.zoo import Act, densenet_layers, vgg_layers


def gather_skip_units(layers, skip_layers: int, skip_units: int | None):
    """psi `[B, M]` from the first `skip_layers` of [(name, output `[B, ...]`)] layers."""
    if skip_layers < 1 or skip_layers > len(layers):
        raise ValueError(f"skip_layers must be in [1, {len(layers)}], got {skip_layers}")
    flat = jnp.concatenate([a.reshape((a.shape[0], -1)) for _, a in layers[:skip_layers]], -1)
    total = flat.shape[-1]
    if skip_units is None or skip_units == total:
        return flat
    if not 1 <= skip_units <= total:
        raise ValueError(f"skip_units = {skip_units} but the first {skip_layers} layer(s) have only "
                         f"{total} units; raise skip_layers or lower skip_units")
    idx = np.linspace(0, total - 1, skip_units).round().astype(np.int32)
    return flat[:, idx]


class VGGSkip(nn.Module):
    """VGG ("A" = VGG11, "D" = VGG16) with M skip units from the first conv layers to the output.

    Fields as `zoo.VGG`, plus skip_units (M; None = all units of the first `skip_layers` layers).
    CIFAR-10 defaults: classifier (512, 512).
    """
    config: str = "A"
    num_classes: int = 10
    act: str = "softplus"
    alpha: float = 1.0
    width_mult: float = 1.0
    classifier: Sequence[int] = (512, 512)
    norm: str = "none"
    skip_layers: int = 1
    skip_units: int | None = None

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        x, layers = vgg_layers(x, self.config, act=self.act, alpha=self.alpha, width_mult=self.width_mult,
                               norm=self.norm)
        psi = gather_skip_units(layers, self.skip_layers, self.skip_units)
        h = x.reshape((x.shape[0], -1))
        for j, w in enumerate(self.classifier):
            h = Act(self.act, self.alpha, name=f"fc{j + 1}")(nn.Dense(w, name=f"fc{j + 1}/dense")(h))
        logits = nn.Dense(self.num_classes, name="out")(h) + \
            nn.Dense(self.num_classes, use_bias=False, name="skip")(psi)
        return (logits, psi, h) if return_features else logits


class VGG11Skip(VGGSkip):
    config: str = "A"


class VGG16Skip(VGGSkip):
    config: str = "D"


class DenseNetSkip(nn.Module):
    """DenseNet-BC (121: blocks (6, 12, 24, 16)) with CIFAR stem, GroupNorm, and M skip units from
    its first activated layers to the output. Fields as `zoo.DenseNet` plus skip_layers, skip_units."""
    num_classes: int = 10
    act: str = "softplus"
    alpha: float = 1.0
    blocks: Sequence[int] = (6, 12, 24, 16)
    growth: int = 32
    stem: str = "cifar"
    norm: str = "group"
    skip_layers: int = 1
    skip_units: int | None = None

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        x, layers = densenet_layers(x, blocks=self.blocks, growth=self.growth, stem=self.stem, act=self.act,
                                    alpha=self.alpha, norm=self.norm)
        psi = gather_skip_units(layers, self.skip_layers, self.skip_units)
        h = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes, name="out")(h) + \
            nn.Dense(self.num_classes, use_bias=False, name="skip")(psi)
        return (logits, psi, h) if return_features else logits


class DenseNet121Skip(DenseNetSkip):
    blocks: Sequence[int] = (6, 12, 24, 16)


SKIP: dict[str, type] = {"vgg11_skip": VGG11Skip, "vgg16_skip": VGG16Skip, "densenet121_skip": DenseNet121Skip}
