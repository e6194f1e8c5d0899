"""Standard CNN architectures in Flax, defined layer by layer so that the width table of the talk
("Are practical networks that wide?") is computed from the models, not typed in.

Every model takes NHWC images `[batch, H, W, C]` and returns logits `[batch, num_classes]`. Each
activated layer goes through an `Act` module named after the layer (e.g. "conv1", "mixed_5b/b5x5_2"):
`robustjax.landscape.layer_widths` finds the layers by capturing the outputs of `Act` modules under
`jax.eval_shape`, so nothing is computed. All layers live in the root scope (blocks are helper
functions, not submodules), so the captured order is the call order.

What is kept and what is not:
- Kept: every convolution, its kernel, stride, padding and channel count; pooling; concatenations;
  residual additions; the classifier. These fix the layer widths n_k = H_k * W_k * C_k.
- Left out (they change no width): batch normalization, LRN and dropout, except that DenseNet can use
  GroupNorm (`norm="group"`) because it is trained in the skip experiments; auxiliary classifiers
  (GoogLeNet, Inception v3); ENet's decoder (ENet is a segmentation net; the width table uses its
  encoder with a pooled classifier).
- The activation is a field (`act`, default "relu" as in the original papers) so the same net can
  be built with the analytic activations the wide-layer theorems need.

Input resolutions of the original papers are in `IMAGENET_INPUT` (SqueezeNet v1.0's Caffe model takes
227 x 227, ENet 512 x 512, the Inception family and Xception 299 x 299, the rest 224 x 224).

Sources: VGG (Simonyan & Zisserman 2015, Table 1 configs A-E), GoogLeNet (Szegedy et al. 2015,
Table 1), Inception v3 (Szegedy et al. 2016, as in torchvision/Keras), Inception v4 (Szegedy et al.
2017, Figs. 3-9), ResNet (He et al. 2016, Table 1), Xception (Chollet 2017, Fig. 5), SqueezeNet v1.0
(Iandola et al. 2016, Table 1), ENet (Paszke et al. 2016, Table 1), DenseNet (Huang et al. 2017,
Table 1; the CIFAR stem is a 3x3 conv without pooling).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from robustjax.models import activations

IMAGENET_INPUT: dict[str, tuple[int, int, int, int]] = {
    "vgg11": (1, 224, 224, 3), "vgg13": (1, 224, 224, 3), "vgg16c": (1, 224, 224, 3),
    "vgg16": (1, 224, 224, 3), "vgg19": (1, 224, 224, 3),
    "inception_v3": (1, 299, 299, 3), "inception_v4": (1, 299, 299, 3),
    "squeezenet": (1, 227, 227, 3), "enet": (1, 512, 512, 3), "googlenet": (1, 224, 224, 3),
    "resnet18": (1, 224, 224, 3), "resnet50": (1, 224, 224, 3), "xception": (1, 299, 299, 3),
    "densenet121": (1, 224, 224, 3),
}


class Act(nn.Module):
    """An activated layer: sigma applied elementwise. Its output is what `layer_widths` counts.

    fn: the activation name (robustjax.models.activations); alpha: softplus slope.
    """
    fn: str = "relu"
    alpha: float = 1.0

    def __call__(self, x):
        return activations.get(self.fn, alpha=self.alpha).fn(x)


def _pair(k):
    return (k, k) if isinstance(k, int) else tuple(k)


def conv_act(x, features: int, kernel, name: str, *, act: str, alpha: float = 1.0, strides=1,
             padding="SAME", norm: str = "none", use_bias: bool = True, activate: bool = True):
    """conv -> [GroupNorm] -> Act(name). Called inside a compact method, so it adds to that module."""
    x = nn.Conv(features, _pair(kernel), _pair(strides), padding=padding, use_bias=use_bias,
                name=f"{name}/conv")(x)
    if norm == "group":
        x = nn.GroupNorm(num_groups=_groups(features), name=f"{name}/norm")(x)
    elif norm != "none":
        raise ValueError(f"norm must be 'none' or 'group', got {norm!r}")
    return Act(act, alpha, name=name)(x) if activate else x


def _groups(c: int) -> int:
    for g in (8, 4, 2):
        if c % g == 0:
            return g
    return 1


def max_pool(x, k=3, s=2, padding="VALID"):
    return nn.max_pool(x, _pair(k), _pair(s), padding=padding)


def avg_pool(x, k=3, s=1, padding="SAME"):
    return nn.avg_pool(x, _pair(k), _pair(s), padding=padding, count_include_pad=False)


def _scale(c: int, width_mult: float) -> int:
    return max(1, int(round(c * width_mult)))


# ----------------------------------------------------------------------------- VGG

VGG_CONFIGS: dict[str, tuple] = {
    # int = 3x3 conv with that many channels; (c, 1) = 1x1 conv (config C); "M" = 2x2 max-pool.
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "C": (64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M",
          512, 512, (512, 1), "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"),
}


def vgg_layers(x, config: str, *, act: str, alpha: float, width_mult: float, norm: str = "none"):
    """The conv part of VGG; returns (x after the last pool, [(name, activated output)])."""
    if config not in VGG_CONFIGS:
        raise ValueError(f"unknown VGG config {config!r}; known: {sorted(VGG_CONFIGS)}")
    layers = []
    i = 0
    for item in VGG_CONFIGS[config]:
        if item == "M":
            x = max_pool(x, 2, 2)
            continue
        c, k = (item, 3) if isinstance(item, int) else item
        i += 1
        x = conv_act(x, _scale(c, width_mult), k, f"conv{i}", act=act, alpha=alpha, norm=norm)
        layers.append((f"conv{i}", x))
    return x, layers


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman 2015): config "A" (VGG11), "B" (13), "C" (16 with 1x1 convs),
    "D" (16), "E" (19). `classifier` are the hidden dense widths ((4096, 4096) on ImageNet); on
    CIFAR-10 one uses e.g. (512, 512). `width_mult` scales every conv's channels (narrow nets for CPU).
    """
    config: str = "A"
    num_classes: int = 1000
    act: str = "relu"
    alpha: float = 1.0
    width_mult: float = 1.0
    classifier: Sequence[int] = (4096, 4096)
    norm: str = "none"

    @nn.compact
    def __call__(self, x, train: bool = False):
        x, _ = vgg_layers(x, self.config, act=self.act, alpha=self.alpha, width_mult=self.width_mult,
                          norm=self.norm)
        x = x.reshape((x.shape[0], -1))
        for j, w in enumerate(self.classifier):
            x = Act(self.act, self.alpha, name=f"fc{j + 1}")(nn.Dense(w, name=f"fc{j + 1}/dense")(x))
        return nn.Dense(self.num_classes, name="out")(x)


class VGG11(VGG):
    config: str = "A"


class VGG13(VGG):
    config: str = "B"


class VGG16C(VGG):
    config: str = "C"


class VGG16(VGG):
    config: str = "D"


class VGG19(VGG):
    config: str = "E"


# ----------------------------------------------------------------------------- GoogLeNet

def _inception_v1(x, name, c1, c3r, c3, c5r, c5, cp, kw):
    b1 = conv_act(x, c1, 1, f"{name}/b1x1", **kw)
    b2 = conv_act(conv_act(x, c3r, 1, f"{name}/b3x3_reduce", **kw), c3, 3, f"{name}/b3x3", **kw)
    b3 = conv_act(conv_act(x, c5r, 1, f"{name}/b5x5_reduce", **kw), c5, 5, f"{name}/b5x5", **kw)
    b4 = conv_act(max_pool(x, 3, 1, "SAME"), cp, 1, f"{name}/pool_proj", **kw)
    return jnp.concatenate([b1, b2, b3, b4], -1)


class GoogLeNet(nn.Module):
    """GoogLeNet / Inception v1 (Szegedy et al. 2015, Table 1), without LRN and auxiliary heads."""
    num_classes: int = 1000
    act: str = "relu"
    alpha: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(act=self.act, alpha=self.alpha)
        x = conv_act(x, 64, 7, "conv1", strides=2, **kw)
        x = max_pool(x, 3, 2, "SAME")
        x = conv_act(x, 64, 1, "conv2_reduce", **kw)
        x = conv_act(x, 192, 3, "conv2", **kw)
        x = max_pool(x, 3, 2, "SAME")
        x = _inception_v1(x, "3a", 64, 96, 128, 16, 32, 32, kw)
        x = _inception_v1(x, "3b", 128, 128, 192, 32, 96, 64, kw)
        x = max_pool(x, 3, 2, "SAME")
        for name, cfg in (("4a", (192, 96, 208, 16, 48, 64)), ("4b", (160, 112, 224, 24, 64, 64)),
                          ("4c", (128, 128, 256, 24, 64, 64)), ("4d", (112, 144, 288, 32, 64, 64)),
                          ("4e", (256, 160, 320, 32, 128, 128))):
            x = _inception_v1(x, name, *cfg, kw)
        x = max_pool(x, 3, 2, "SAME")
        x = _inception_v1(x, "5a", 256, 160, 320, 32, 128, 128, kw)
        x = _inception_v1(x, "5b", 384, 192, 384, 48, 128, 128, kw)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="out")(x)


# ----------------------------------------------------------------------------- Inception v3

def _chain(x, specs, name, kw):
    """Sequential conv_act layers; specs = [(features, kernel, strides, padding), ...]."""
    for j, (c, k, s, p) in enumerate(specs):
        x = conv_act(x, c, k, f"{name}_{j + 1}", strides=s, padding=p, **kw)
    return x


def _v3_a(x, name, pool_features, kw):
    b1 = conv_act(x, 64, 1, f"{name}/b1x1", **kw)
    b2 = _chain(x, [(48, 1, 1, "SAME"), (64, 5, 1, "SAME")], f"{name}/b5x5", kw)
    b3 = _chain(x, [(64, 1, 1, "SAME"), (96, 3, 1, "SAME"), (96, 3, 1, "SAME")], f"{name}/b3x3dbl", kw)
    b4 = conv_act(avg_pool(x), pool_features, 1, f"{name}/pool", **kw)
    return jnp.concatenate([b1, b2, b3, b4], -1)


def _v3_b(x, name, kw):
    b1 = conv_act(x, 384, 3, f"{name}/b3x3", strides=2, padding="VALID", **kw)
    b2 = _chain(x, [(64, 1, 1, "SAME"), (96, 3, 1, "SAME"), (96, 3, 2, "VALID")], f"{name}/b3x3dbl", kw)
    return jnp.concatenate([b1, b2, max_pool(x)], -1)


def _v3_c(x, name, c7, kw):
    b1 = conv_act(x, 192, 1, f"{name}/b1x1", **kw)
    b2 = _chain(x, [(c7, 1, 1, "SAME"), (c7, (1, 7), 1, "SAME"), (192, (7, 1), 1, "SAME")],
                f"{name}/b7x7", kw)
    b3 = _chain(x, [(c7, 1, 1, "SAME"), (c7, (7, 1), 1, "SAME"), (c7, (1, 7), 1, "SAME"),
                    (c7, (7, 1), 1, "SAME"), (192, (1, 7), 1, "SAME")], f"{name}/b7x7dbl", kw)
    b4 = conv_act(avg_pool(x), 192, 1, f"{name}/pool", **kw)
    return jnp.concatenate([b1, b2, b3, b4], -1)


def _v3_d(x, name, kw):
    b1 = _chain(x, [(192, 1, 1, "SAME"), (320, 3, 2, "VALID")], f"{name}/b3x3", kw)
    b2 = _chain(x, [(192, 1, 1, "SAME"), (192, (1, 7), 1, "SAME"), (192, (7, 1), 1, "SAME"),
                    (192, 3, 2, "VALID")], f"{name}/b7x7x3", kw)
    return jnp.concatenate([b1, b2, max_pool(x)], -1)


def _v3_e(x, name, kw):
    b1 = conv_act(x, 320, 1, f"{name}/b1x1", **kw)
    t = conv_act(x, 384, 1, f"{name}/b3x3_1", **kw)
    b2 = jnp.concatenate([conv_act(t, 384, (1, 3), f"{name}/b3x3_2a", **kw),
                          conv_act(t, 384, (3, 1), f"{name}/b3x3_2b", **kw)], -1)
    t = _chain(x, [(448, 1, 1, "SAME"), (384, 3, 1, "SAME")], f"{name}/b3x3dbl", kw)
    b3 = jnp.concatenate([conv_act(t, 384, (1, 3), f"{name}/b3x3dbl_3a", **kw),
                          conv_act(t, 384, (3, 1), f"{name}/b3x3dbl_3b", **kw)], -1)
    b4 = conv_act(avg_pool(x), 192, 1, f"{name}/pool", **kw)
    return jnp.concatenate([b1, b2, b3, b4], -1)


def _inception_stem_convs(x, kw):
    """The three stem convs shared by Inception v3 and v4 (299 -> 149 -> 147 -> 147)."""
    x = conv_act(x, 32, 3, "conv1", strides=2, padding="VALID", **kw)
    x = conv_act(x, 32, 3, "conv2", padding="VALID", **kw)
    return conv_act(x, 64, 3, "conv3", **kw)


class InceptionV3(nn.Module):
    """Inception v3 (Szegedy et al. 2016), module layout as in torchvision/Keras, no aux head."""
    num_classes: int = 1000
    act: str = "relu"
    alpha: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(act=self.act, alpha=self.alpha)
        x = max_pool(_inception_stem_convs(x, kw))
        x = conv_act(x, 80, 1, "conv4", padding="VALID", **kw)
        x = conv_act(x, 192, 3, "conv5", padding="VALID", **kw)
        x = max_pool(x)
        for name, pf in (("mixed_5b", 32), ("mixed_5c", 64), ("mixed_5d", 64)):
            x = _v3_a(x, name, pf, kw)
        x = _v3_b(x, "mixed_6a", kw)
        for name, c7 in (("mixed_6b", 128), ("mixed_6c", 160), ("mixed_6d", 160), ("mixed_6e", 192)):
            x = _v3_c(x, name, c7, kw)
        x = _v3_d(x, "mixed_7a", kw)
        x = _v3_e(x, "mixed_7b", kw)
        x = _v3_e(x, "mixed_7c", kw)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="out")(x)


# ----------------------------------------------------------------------------- Inception v4

def _v4_a(x, name, kw):
    b1 = conv_act(avg_pool(x), 96, 1, f"{name}/pool", **kw)
    b2 = conv_act(x, 96, 1, f"{name}/b1x1", **kw)
    b3 = _chain(x, [(64, 1, 1, "SAME"), (96, 3, 1, "SAME")], f"{name}/b3x3", kw)
    b4 = _chain(x, [(64, 1, 1, "SAME"), (96, 3, 1, "SAME"), (96, 3, 1, "SAME")], f"{name}/b3x3dbl", kw)
    return jnp.concatenate([b1, b2, b3, b4], -1)


def _v4_b(x, name, kw):
    b1 = conv_act(avg_pool(x), 128, 1, f"{name}/pool", **kw)
    b2 = conv_act(x, 384, 1, f"{name}/b1x1", **kw)
    b3 = _chain(x, [(192, 1, 1, "SAME"), (224, (1, 7), 1, "SAME"), (256, (7, 1), 1, "SAME")],
                f"{name}/b7x7", kw)
    b4 = _chain(x, [(192, 1, 1, "SAME"), (192, (1, 7), 1, "SAME"), (224, (7, 1), 1, "SAME"),
                    (224, (1, 7), 1, "SAME"), (256, (7, 1), 1, "SAME")], f"{name}/b7x7dbl", kw)
    return jnp.concatenate([b1, b2, b3, b4], -1)


def _v4_c(x, name, kw):
    b1 = conv_act(avg_pool(x), 256, 1, f"{name}/pool", **kw)
    b2 = conv_act(x, 256, 1, f"{name}/b1x1", **kw)
    t = conv_act(x, 384, 1, f"{name}/b3x3_1", **kw)
    b3 = jnp.concatenate([conv_act(t, 256, (1, 3), f"{name}/b3x3_2a", **kw),
                          conv_act(t, 256, (3, 1), f"{name}/b3x3_2b", **kw)], -1)
    t = _chain(x, [(384, 1, 1, "SAME"), (448, (3, 1), 1, "SAME"), (512, (1, 3), 1, "SAME")],
               f"{name}/b3x3dbl", kw)
    b4 = jnp.concatenate([conv_act(t, 256, (1, 3), f"{name}/b3x3dbl_4a", **kw),
                          conv_act(t, 256, (3, 1), f"{name}/b3x3dbl_4b", **kw)], -1)
    return jnp.concatenate([b1, b2, b3, b4], -1)


class InceptionV4(nn.Module):
    """Inception v4 (Szegedy et al. 2017): stem (Fig. 3), 4 x A, reduction A (k,l,m,n = 192,224,256,384),
    7 x B, reduction B, 3 x C, average pool, classifier."""
    num_classes: int = 1000
    act: str = "relu"
    alpha: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(act=self.act, alpha=self.alpha)
        x = _inception_stem_convs(x, kw)
        x = jnp.concatenate([max_pool(x), conv_act(x, 96, 3, "stem1/conv", strides=2, padding="VALID", **kw)], -1)
        a = _chain(x, [(64, 1, 1, "SAME"), (96, 3, 1, "VALID")], "stem2/a", kw)
        b = _chain(x, [(64, 1, 1, "SAME"), (64, (7, 1), 1, "SAME"), (64, (1, 7), 1, "SAME"),
                       (96, 3, 1, "VALID")], "stem2/b", kw)
        x = jnp.concatenate([a, b], -1)
        x = jnp.concatenate([conv_act(x, 192, 3, "stem3/conv", strides=2, padding="VALID", **kw),
                             max_pool(x)], -1)
        for i in range(4):
            x = _v4_a(x, f"inception_a{i + 1}", kw)
        x = jnp.concatenate([max_pool(x), conv_act(x, 384, 3, "reduction_a/b3x3", strides=2, padding="VALID", **kw),
                             _chain(x, [(192, 1, 1, "SAME"), (224, 3, 1, "SAME"), (256, 3, 2, "VALID")],
                                    "reduction_a/b3x3dbl", kw)], -1)
        for i in range(7):
            x = _v4_b(x, f"inception_b{i + 1}", kw)
        x = jnp.concatenate([max_pool(x),
                             _chain(x, [(192, 1, 1, "SAME"), (192, 3, 2, "VALID")], "reduction_b/b3x3", kw),
                             _chain(x, [(256, 1, 1, "SAME"), (256, (1, 7), 1, "SAME"), (320, (7, 1), 1, "SAME"),
                                        (320, 3, 2, "VALID")], "reduction_b/b7x7x3", kw)], -1)
        for i in range(3):
            x = _v4_c(x, f"inception_c{i + 1}", kw)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="out")(x)


# ----------------------------------------------------------------------------- SqueezeNet

class SqueezeNet(nn.Module):
    """SqueezeNet v1.0 (Iandola et al. 2016, Table 1; Caffe model, 227 x 227 input). A fire module's
    two expand convs are activated together as one layer (ReLU is elementwise, so this is the same)."""
    num_classes: int = 1000
    act: str = "relu"
    alpha: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(act=self.act, alpha=self.alpha)
        x = conv_act(x, 96, 7, "conv1", strides=2, padding="VALID", **kw)
        x = max_pool(x)
        fires = ((2, 16, 64), (3, 16, 64), (4, 32, 128), "M", (5, 32, 128), (6, 48, 192), (7, 48, 192),
                 (8, 64, 256), "M", (9, 64, 256))
        for f in fires:
            if f == "M":
                x = max_pool(x)
                continue
            i, s, e = f
            x = conv_act(x, s, 1, f"fire{i}/squeeze", **kw)
            e1 = nn.Conv(e, (1, 1), name=f"fire{i}/expand1x1")(x)
            e3 = nn.Conv(e, (3, 3), padding="SAME", name=f"fire{i}/expand3x3")(x)
            x = Act(self.act, self.alpha, name=f"fire{i}/expand")(jnp.concatenate([e1, e3], -1))
        x = conv_act(x, self.num_classes, 1, "conv10", padding="VALID", **kw)
        return jnp.mean(x, axis=(1, 2))


# ----------------------------------------------------------------------------- ENet (encoder)

def _enet_bottleneck(x, name, out, kw, *, kind="regular", dilation=1, downsample=False):
    internal = max(1, out // 4)
    if downsample:
        t = conv_act(x, internal, 2, f"{name}/proj", strides=2, padding="VALID", use_bias=False, **kw)
        main = max_pool(x, 2, 2)
        main = jnp.pad(main, ((0, 0), (0, 0), (0, 0), (0, out - main.shape[-1])))
    else:
        t = conv_act(x, internal, 1, f"{name}/proj", use_bias=False, **kw)
        main = x
    if kind == "asymmetric":
        t = nn.Conv(internal, (5, 1), padding="SAME", use_bias=False, name=f"{name}/conv5x1")(t)
        t = conv_act(t, internal, (1, 5), f"{name}/conv", **kw)
    else:
        t = nn.Conv(internal, (3, 3), padding="SAME", kernel_dilation=(dilation, dilation),
                    name=f"{name}/conv/conv")(t)
        t = Act(kw["act"], kw["alpha"], name=f"{name}/conv")(t)
    t = nn.Conv(out, (1, 1), use_bias=False, name=f"{name}/expand")(t)
    return Act(kw["act"], kw["alpha"], name=name)(main + t)


class ENet(nn.Module):
    """ENet's encoder (Paszke et al. 2016, Table 1: initial block, stages 1-3; 512 x 512 input)
    with a global-average-pool classifier in place of the segmentation decoder."""
    num_classes: int = 1000
    act: str = "relu"
    alpha: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(act=self.act, alpha=self.alpha)
        conv = nn.Conv(13, (3, 3), (2, 2), padding=((1, 1), (1, 1)), name="initial/conv")(x)
        x = Act(self.act, self.alpha, name="initial")(jnp.concatenate([conv, max_pool(x, 2, 2)], -1))
        x = _enet_bottleneck(x, "bottleneck1.0", 64, kw, downsample=True)
        for i in range(1, 5):
            x = _enet_bottleneck(x, f"bottleneck1.{i}", 64, kw)
        x = _enet_bottleneck(x, "bottleneck2.0", 128, kw, downsample=True)
        plan = (("regular", 1), ("dilated", 2), ("asymmetric", 1), ("dilated", 4), ("regular", 1),
                ("dilated", 8), ("asymmetric", 1), ("dilated", 16))
        for stage in (2, 3):
            for i, (kind, d) in enumerate(plan):
                x = _enet_bottleneck(x, f"bottleneck{stage}.{i + 1}", 128, kw, kind=kind, dilation=d)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="out")(x)


# ----------------------------------------------------------------------------- ResNet

RESNET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class ResNetImageNet(nn.Module):
    """ResNet-18/34 (basic blocks) or -50/101/152 (bottleneck, stride on the 3x3 conv), He et al. 2016."""
    depth: int = 50
    num_classes: int = 1000
    act: str = "relu"
    alpha: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        blocks = RESNET_BLOCKS
        if self.depth not in blocks:
            raise ValueError(f"depth must be one of {sorted(blocks)}, got {self.depth}")
        bottleneck = self.depth >= 50
        kw = dict(act=self.act, alpha=self.alpha)
        x = conv_act(x, 64, 7, "conv1", strides=2, use_bias=False, **kw)
        x = max_pool(x, 3, 2, "SAME")
        for s, (n, w) in enumerate(zip(blocks[self.depth], (64, 128, 256, 512))):
            for b in range(n):
                name = f"conv{s + 2}_{b + 1}"
                stride = 2 if (b == 0 and s > 0) else 1
                out = 4 * w if bottleneck else w
                if bottleneck:
                    t = conv_act(x, w, 1, f"{name}/a", use_bias=False, **kw)
                    t = conv_act(t, w, 3, f"{name}/b", strides=stride, use_bias=False, **kw)
                    t = nn.Conv(out, (1, 1), use_bias=False, name=f"{name}/c")(t)
                else:
                    t = conv_act(x, w, 3, f"{name}/a", strides=stride, use_bias=False, **kw)
                    t = nn.Conv(out, (3, 3), padding="SAME", use_bias=False, name=f"{name}/b")(t)
                if x.shape[-1] != out or stride != 1:
                    x = nn.Conv(out, (1, 1), (stride, stride), use_bias=False, name=f"{name}/proj")(x)
                x = Act(self.act, self.alpha, name=name)(x + t)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="out")(x)


class ResNet18(ResNetImageNet):
    depth: int = 18


class ResNet50(ResNetImageNet):
    depth: int = 50


# ----------------------------------------------------------------------------- Xception

def _sep_conv(x, features, name):
    """Depthwise 3x3 then pointwise 1x1 (no activation in between, as in Chollet 2017)."""
    c = x.shape[-1]
    x = nn.Conv(c, (3, 3), padding="SAME", feature_group_count=c, use_bias=False, name=f"{name}/depthwise")(x)
    return nn.Conv(features, (1, 1), use_bias=False, name=f"{name}/pointwise")(x)


class Xception(nn.Module):
    """Xception (Chollet 2017, Fig. 5; layer names as in Keras). Each separable conv's output is
    followed by an activation (before the next separable conv or the block's pooling), and that
    activated output is counted as a layer; the entry block's last separable conv feeds the pooling
    directly, as in the paper."""
    num_classes: int = 1000
    act: str = "relu"
    alpha: float = 1.0
    middle_blocks: int = 8

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(act=self.act, alpha=self.alpha)
        act = lambda name: Act(self.act, self.alpha, name=name)  # noqa: E731
        x = conv_act(x, 32, 3, "block1_conv1", strides=2, padding="VALID", use_bias=False, **kw)
        x = conv_act(x, 64, 3, "block1_conv2", padding="VALID", use_bias=False, **kw)
        for b, w in ((2, 128), (3, 256), (4, 728)):
            short = nn.Conv(w, (1, 1), (2, 2), padding="SAME", use_bias=False, name=f"block{b}_shortcut")(x)
            t = x if b == 2 else act(f"block{b}_in")(x)
            t = act(f"block{b}_sepconv1")(_sep_conv(t, w, f"block{b}_sepconv1"))
            t = _sep_conv(t, w, f"block{b}_sepconv2")
            x = max_pool(t, 3, 2, "SAME") + short
        for b in range(5, 5 + self.middle_blocks):
            t = x
            for j in range(1, 4):
                t = _sep_conv(act(f"block{b}_sepconv{j}_in")(t), 728, f"block{b}_sepconv{j}")
            x = x + t
        b = 5 + self.middle_blocks
        short = nn.Conv(1024, (1, 1), (2, 2), padding="SAME", use_bias=False, name=f"block{b}_shortcut")(x)
        t = _sep_conv(act(f"block{b}_sepconv1_in")(x), 728, f"block{b}_sepconv1")
        t = _sep_conv(act(f"block{b}_sepconv2_in")(t), 1024, f"block{b}_sepconv2")
        x = max_pool(t, 3, 2, "SAME") + short
        x = act(f"block{b + 1}_sepconv1")(_sep_conv(x, 1536, f"block{b + 1}_sepconv1"))
        x = act(f"block{b + 1}_sepconv2")(_sep_conv(x, 2048, f"block{b + 1}_sepconv2"))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="out")(x)


# ----------------------------------------------------------------------------- DenseNet

def densenet_layers(x, *, blocks, growth: int, stem: str, act: str, alpha: float, norm: str,
                    bn_size: int = 4, compression: float = 0.5):
    """DenseNet-BC body (Huang et al. 2017). Returns (final activated features, [(name, output)]).

    stem "imagenet": 7x7/2 conv with 2*growth channels + 3x3/2 max-pool; "cifar": 3x3 conv, no pool.
    Each dense layer is norm-act-conv1x1(bn_size*growth)-norm-act-conv3x3(growth), concatenated
    to its input; transitions are norm-act-conv1x1(compression * channels)-avgpool 2.
    """
    layers = []

    def norm_act(t, name):
        if norm == "group":
            t = nn.GroupNorm(num_groups=_groups(t.shape[-1]), name=f"{name}/norm")(t)
        elif norm != "none":
            raise ValueError(f"norm must be 'none' or 'group', got {norm!r}")
        t = Act(act, alpha, name=name)(t)
        layers.append((name, t))
        return t

    if stem == "imagenet":
        x = nn.Conv(2 * growth, (7, 7), (2, 2), padding="SAME", use_bias=False, name="conv0")(x)
        x = max_pool(norm_act(x, "conv0_act"), 3, 2, "SAME")
    elif stem == "cifar":
        x = nn.Conv(2 * growth, (3, 3), padding="SAME", use_bias=False, name="conv0")(x)
        x = norm_act(x, "conv0_act")
    else:
        raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
    for bi, n in enumerate(blocks):
        for li in range(n):
            name = f"block{bi + 1}_layer{li + 1}"
            t = norm_act(x, f"{name}/in") if not (bi == 0 and li == 0) else x
            t = nn.Conv(bn_size * growth, (1, 1), use_bias=False, name=f"{name}/conv1")(t)
            t = norm_act(t, f"{name}/mid")
            t = nn.Conv(growth, (3, 3), padding="SAME", use_bias=False, name=f"{name}/conv2")(t)
            x = jnp.concatenate([x, t], -1)
        if bi < len(blocks) - 1:
            name = f"transition{bi + 1}"
            t = norm_act(x, f"{name}/in")
            t = nn.Conv(int(x.shape[-1] * compression), (1, 1), use_bias=False, name=f"{name}/conv")(t)
            x = nn.avg_pool(t, (2, 2), (2, 2))
    x = norm_act(x, "final")
    return x, layers


class DenseNet(nn.Module):
    """DenseNet-121 by default (blocks (6, 12, 24, 16), growth 32). `stem="cifar"` for 32 x 32 inputs;
    `norm="group"` (GroupNorm in place of batch norm, so the model stays a pure function) is what the
    CIFAR experiments use; a smaller `growth` gives the narrow nets for the CPU."""
    num_classes: int = 1000
    act: str = "relu"
    alpha: float = 1.0
    blocks: Sequence[int] = (6, 12, 24, 16)
    growth: int = 32
    stem: str = "imagenet"
    norm: str = "none"

    @nn.compact
    def __call__(self, x, train: bool = False):
        x, _ = densenet_layers(x, blocks=self.blocks, growth=self.growth, stem=self.stem, act=self.act,
                               alpha=self.alpha, norm=self.norm)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="out")(x)


class DenseNet121(DenseNet):
    blocks: Sequence[int] = (6, 12, 24, 16)


ZOO: dict[str, type] = {
    "vgg11": VGG11, "vgg13": VGG13, "vgg16c": VGG16C, "vgg16": VGG16, "vgg19": VGG19,
    "inception_v3": InceptionV3, "inception_v4": InceptionV4, "squeezenet": SqueezeNet, "enet": ENet,
    "googlenet": GoogLeNet, "resnet18": ResNet18, "resnet50": ResNet50, "xception": Xception,
    "densenet121": DenseNet121,
}
