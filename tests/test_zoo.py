"""models/zoo.py and models/skip.py: layer widths from shape inference (no forward pass) against the
numbers derived from the papers' layer tables (methods.md section 3), registry entries, and small
real forward passes of the CIFAR variants."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import models
from robustjax.landscape import layer_widths, widest
from robustjax.models import skip, zoo

# (model, M = max_k n_k, k, layer name): derived by hand from the architectures' definitions
EXPECTED = {
    "vgg11": (224 * 224 * 64, 1, "conv1"),
    "vgg16": (224 * 224 * 64, 1, "conv1"),
    "inception_v3": (147 * 147 * 64, 3, "conv3"),
    "inception_v4": (147 * 147 * 64, 3, "conv3"),
    "squeezenet": (111 * 111 * 96, 1, "conv1"),
    "enet": (256 * 256 * 16, 1, "initial"),
    "googlenet": (112 * 112 * 64, 1, "conv1"),
    "resnet50": (112 * 112 * 64, 1, "conv1"),
    "xception": (147 * 147 * 128, 3, "block2_sepconv1"),
    "densenet121": (112 * 112 * 64, 1, "conv0_act"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_widest_layer_matches_the_architecture(name):
    layers = layer_widths(models.build(name), zoo.IMAGENET_INPUT[name])
    top = widest(layers)
    assert (top.units, top.k, top.name) == EXPECTED[name]
    assert layers[-1].kind == "output" and layers[-1].units == 1000


def test_vgg_and_resnet_conv1_widths():
    vgg = layer_widths(zoo.VGG16(), (1, 224, 224, 3))
    assert vgg[0].shape == (224, 224, 64) and vgg[0].units == 3_211_264
    assert [lay.name for lay in vgg[:13]] == [f"conv{i}" for i in range(1, 14)]
    assert [lay.units for lay in vgg[13:]] == [4096, 4096, 1000]
    res = layer_widths(zoo.ResNet50(), (1, 224, 224, 3))
    assert res[0].name == "conv1" and res[0].units == 802_816
    # stage outputs of ResNet-50: 56^2 * 256, 28^2 * 512, 14^2 * 1024, 7^2 * 2048
    outs = {lay.name: lay.units for lay in res}
    assert outs["conv2_3"] == 56 * 56 * 256 and outs["conv5_3"] == 7 * 7 * 2048


def test_xception_talk_700k_is_conv1():
    """The talk's 700K (k = 1) for Xception is conv1 = 149 * 149 * 32; conv2 and block 2 are wider."""
    lay = layer_widths(zoo.Xception(), (1, 299, 299, 3))
    assert lay[0].units == 149 * 149 * 32 == 710_432
    assert lay[1].units == 147 * 147 * 64 == 1_382_976


def test_squeezenet_input_size_matters():
    """SqueezeNet v1.0 at 227 x 227 (Caffe) gives the talk's 1180K; at 224 x 224 conv1 is 109^2 * 96."""
    assert widest(layer_widths(zoo.SqueezeNet(), (1, 224, 224, 3))).units == 109 * 109 * 96


def test_registry_has_zoo_and_skip_models():
    for name in list(zoo.ZOO) + list(skip.SKIP):
        assert name in models.REGISTRY
    with pytest.raises(ValueError, match="no field"):
        models.build("vgg11_skip", nonsense=1)


def test_skip_nets_forward_and_features():
    """logits = out(f_{L-1}) + skip(psi) exactly; psi takes evenly spaced units of the first layer
    (its first and last unit are both in psi)."""
    x = jax.random.uniform(jax.random.key(0), (3, 32, 32, 3))
    rng = np.random.default_rng(1)
    for m, first in ((skip.VGG11Skip(act="sigmoid", width_mult=0.125, classifier=(16,), skip_units=1000), "conv1"),
                     (skip.DenseNet121Skip(act="softplus", blocks=(1, 1), growth=4, skip_units=500), "conv0_act")):
        # any positive weights (batch-norm variances included) show the identity; compiling init's truncated
        # normals would cost ~10 s a model
        v = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.01, 0.1, a.shape), a.dtype),
                         jax.eval_shape(m.init, jax.random.key(1), x[:1]))

        @jax.jit
        def run(v, x, m=m, first=first):
            out, state = m.apply(v, x, return_features=True, capture_intermediates=lambda mdl, _: mdl.name == first,
                                 mutable=["intermediates"])
            return out, state["intermediates"][first]["__call__"][0].reshape(x.shape[0], -1)

        (logits, psi, h), layer1 = run(v, x)
        np.testing.assert_allclose(psi[:, 0], layer1[:, 0])
        np.testing.assert_allclose(psi[:, -1], layer1[:, -1])
        assert logits.shape == (3, 10) and np.all(np.isfinite(logits))
        assert psi.shape[1] == m.skip_units
        # logits are exactly out(h) + skip(psi)
        p = v["params"]
        ref = h @ p["out"]["kernel"] + p["out"]["bias"] + psi @ p["skip"]["kernel"]
        np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)


def test_skip_units_larger_than_available_is_an_error():
    m = skip.VGG11Skip(width_mult=0.125, skip_units=10 ** 6)
    with pytest.raises(ValueError, match="skip_units"):
        jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
