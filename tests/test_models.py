"""Model shapes, initialization, float64 references, activations, registry errors."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import models
from robustjax.models import activations


@pytest.mark.parametrize("name,config,shape", [
    ("mlp", {"widths": (32, 16), "act": "tanh"}, (28, 28, 1)),
    ("mlp", {"widths": (8,), "act": "softplus", "alpha": 5.0, "use_bias": False}, (5,)),
    ("one_hidden_layer", {}, (28, 28, 1)),
    ("lenet", {}, (28, 28, 1)),
    ("mmr_cnn", {}, (28, 28, 1)),
    ("mmr_cnn", {}, (32, 32, 3)),
    ("resnet", {"blocks": 1}, (32, 32, 3)),
])
def test_shapes(name, config, shape, key):
    m = models.build(name, **config)
    v = models.init(m, key, (1,) + shape)
    out = models.logits_fn(m, v)(jnp.ones((3,) + shape))
    chex.assert_shape(out, (3, 10))
    assert bool(jnp.all(jnp.isfinite(out)))


def test_logits_fns_of_equal_modules_share_an_attack_program():
    """models.logits_fn is a Partial over the variables: an attack on two separately built but equal modules with
    different weights compiles once, and each call uses its own weights (its distances equal a closure's)."""
    import importlib
    deepfool = importlib.import_module("robustjax.attacks.deepfool")
    x = jax.random.uniform(jax.random.key(3), (4, 6))
    core = deepfool._deepfool.jitted
    n0 = core._cache_size()
    for seed in range(2):
        m = models.build("mlp", widths=(8,), num_classes=3)
        v = models.init(m, jax.random.key(seed), (1, 6))
        f = models.logits_fn(m, v)
        labels = np.asarray(jnp.argmax(f(x), -1))
        r = deepfool.deepfool(f, x, labels, p=2)
        ref = deepfool.deepfool(lambda z, m=m, v=v: m.apply(v, z), x, labels, p=2)
        np.testing.assert_allclose(r.distance, ref.distance, rtol=1e-5)
    assert core._cache_size() == n0 + 1 + 2


def test_mmr_cnn_layers(key):
    v = models.init(models.build("mmr_cnn"), key, (1, 28, 28, 1))
    p = v["params"]
    assert p["conv_0"]["kernel"].shape == (4, 4, 1, 16)
    assert p["conv_1"]["kernel"].shape == (4, 4, 16, 32)
    assert p["dense_0"]["kernel"].shape == (7 * 7 * 32, 100)


def test_one_hidden_layer_matches_float64_numpy(key):
    m = models.build("one_hidden_layer")
    v = models.init(m, key, (1, 28, 28, 1))
    x = jax.random.uniform(jax.random.key(1), (5, 28, 28, 1))
    out = np.asarray(m.apply(v, x), np.float64)
    U = np.asarray(v["params"]["U"], np.float64)
    W = np.asarray(v["params"]["W"], np.float64)
    z = 10.0 * (np.asarray(x, np.float64).reshape(5, -1) @ U)
    ref = (np.logaddexp(0.0, z) / 10.0) @ W
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-6)
    w = m.weights(v)
    np.testing.assert_allclose(np.asarray(w.logits(x)), out, rtol=1e-5, atol=1e-6)
    assert set(v["params"]) == {"U", "W"}  # no biases


def test_one_hidden_layer_init_variances(key):
    m = models.build("one_hidden_layer")
    v = models.init(m, key, (1, 784))
    U, W = v["params"]["U"], v["params"]["W"]
    assert U.shape == (784, 1024) and W.shape == (1024, 10)
    np.testing.assert_allclose(float(jnp.var(U)), 1 / (784 * 1024), rtol=0.02)
    np.testing.assert_allclose(float(jnp.var(W)), 1 / (10 * 1024), rtol=0.05)
    assert abs(float(jnp.mean(U))) < 3 * np.sqrt(1 / (784 * 1024) / U.size)


def test_gaussian_kernel_matches_float64_numpy(key):
    rng = np.random.default_rng(0)
    centers = rng.uniform(size=(6, 4))
    x = rng.uniform(size=(3, 4))
    m = models.build("gaussian_kernel", num_centers=6, gamma=0.7, num_classes=3)
    v = m.init(key, jnp.zeros((1, 4)), centers=jnp.asarray(centers, jnp.float32))
    alpha = rng.normal(size=(6, 3))
    v = {"params": {"alpha": jnp.asarray(alpha, jnp.float32)}, "constants": v["constants"]}
    k = np.exp(-0.7 * ((x[:, None, :] - centers[None]) ** 2).sum(-1))
    np.testing.assert_allclose(np.asarray(m.apply(v, jnp.asarray(x, jnp.float32))), k @ alpha, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(m.weights(v).logits(jnp.asarray(x, jnp.float32))), k @ alpha, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,alpha", [("softplus", 10.0), ("softplus", 1.0), ("sigmoid", 1.0), ("tanh", 1.0), ("relu", 1.0)])
def test_activation_derivatives(name, alpha):
    a = activations.get(name, alpha=alpha)
    t = jnp.linspace(-3, 3, 101)
    np.testing.assert_allclose(np.asarray(jax.vmap(jax.grad(a.fn))(t)), np.asarray(a.grad(t)), atol=1e-6)
    if a.max_abs_grad is not None:
        lo = jnp.array([-2.0, -0.5, 0.3, -3.0])
        hi = jnp.array([-1.0, 0.5, 2.0, 3.0])
        grid = lo[:, None] + (hi - lo)[:, None] * jnp.linspace(0, 1, 2001)[None]
        sampled = jnp.max(jnp.abs(a.grad(grid)), axis=1)
        bound = a.max_abs_grad(lo, hi)
        assert bool(jnp.all(bound >= sampled - 1e-7))
        np.testing.assert_allclose(np.asarray(bound), np.asarray(sampled), rtol=1e-3)


def test_softplus_formula():
    a = activations.get("softplus", alpha=10.0)
    t = np.linspace(-2, 2, 9)
    np.testing.assert_allclose(np.asarray(a.fn(jnp.asarray(t))), np.log1p(np.exp(10 * t)) / 10, rtol=1e-5, atol=1e-7)
    assert a.analytic and a.strictly_increasing and a.smooth
    r = activations.get("relu")
    assert not (r.analytic or r.smooth)


def test_dropout_only_in_training(key):
    m = models.build("one_hidden_layer", hidden=64, dropout_input=0.1, dropout_hidden=0.5)
    v = models.init(m, key, (1, 20))
    x = jnp.ones((2, 20))
    np.testing.assert_array_equal(np.asarray(m.apply(v, x)), np.asarray(m.apply(v, x)))
    a = m.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})
    b = m.apply(v, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(np.asarray(a), np.asarray(b))


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown model 'vgg99'"):
        models.build("vgg99")
    with pytest.raises(ValueError, match="no field"):
        models.build("mlp", widths=(3,), depth=4)
    with pytest.raises(ValueError, match="unknown activation 'swishy'; known: relu"):
        models.init(models.MLP(widths=(3,), act="swishy"), jax.random.key(0), (1, 4))
    with pytest.raises(ValueError, match="already registered"):
        models.register("mlp", models.LeNet)


@pytest.mark.parametrize("name,config,message", [
    ("mlp", {"widths": (-4,)}, r"widths must be a sequence of positive integers, got \(-4,\)"),
    ("mlp", {"widths": (8, 0)}, r"widths must be a sequence of positive integers, got \(8, 0\)"),
    ("mlp", {"widths": 16}, "widths must be a sequence of positive integers, got 16"),
    ("mlp", {"widths": "64"}, "widths must be a sequence of positive integers, got '64'"),
    ("mlp", {"widths": (2.5,)}, "widths must be a sequence of positive integers"),
    ("mlp", {}, r"model 'mlp' needs field\(s\) \['widths'\]"),
    ("mlp", {"widths": (4,), "act": "swish"}, "act must be one of .*'softplus'.*, got 'swish'"),
    ("mlp", {"widths": (4,), "num_classes": 0}, "num_classes must be > 0, got 0"),
    ("mlp", {"widths": (4,), "alpha": -1.0}, "alpha must be > 0, got -1.0"),
    ("mlp", {"widths": (4,), "dropout_hidden": 1.0}, r"dropout_hidden must be a drop rate in \[0, 1\), got 1.0"),
    ("mlp", {"widths": (4,), "use_bias": "yes"}, "use_bias must be True or False"),
    ("one_hidden_layer", {"hidden": 0}, "hidden must be > 0, got 0"),
    ("one_hidden_layer", {"hidden": 3.5}, "hidden must be an integer, got 3.5"),
    ("gaussian_kernel", {"num_centers": 4, "gamma": 0.0}, "gamma must be > 0, got 0.0"),
    ("gaussian_kernel", {"num_centers": 4}, r"needs field\(s\) \['gamma'\]"),
    ("lenet", {"features": (32, -1)}, "features must be a sequence of positive integers"),
    ("resnet", {"blocks": 0}, "blocks must be > 0, got 0"),
    ("resnet", {"widths": ()}, None),
    ("resnet", {"norm": "batch"}, "norm must be one of \\['group', 'none'\\], got 'batch'"),
    ("resnet50", {"depth": 42}, "depth must be one of \\[18, 34, 50, 101, 152\\], got 42"),
    ("vgg11", {"config": "Z"}, "config must be one of \\['A', 'B', 'C', 'D', 'E'\\], got 'Z'"),
    ("vgg11", {"width_mult": 0}, "width_mult must be > 0, got 0"),
    ("vgg11_skip", {"skip_units": -3}, "skip_units must be > 0, got -3"),
    ("densenet121", {"blocks": (6, 0)}, "blocks must be a non-empty sequence of positive integers"),
    ("densenet121", {"stem": "tiny"}, "stem must be one of"),
])
def test_build_rejects_bad_config(name, config, message):
    if message is None:                       # passes the field check, caught by the module at init
        with pytest.raises(ValueError, match="widths must be a non-empty sequence"):
            models.init(models.build(name, **config), jax.random.key(0), (1, 8, 8, 3))
        return
    with pytest.raises(ValueError, match=message):
        models.build(name, **config)


def test_build_normalizes_valid_config():
    m = models.build("mlp", widths=[np.int64(8), 4], num_classes=np.int32(3), alpha=10)
    assert m.widths == (8, 4) and type(m.num_classes) is int and m.alpha == 10.0
    assert models.build("vgg11_skip", skip_units=None).skip_units is None
    assert models.build("densenet121", blocks=[1, 1]).blocks == (1, 1)
