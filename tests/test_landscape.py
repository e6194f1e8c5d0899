"""robustjax.landscape: wide-layer check, feature-map rank and the rank lemma, least-squares "rand"
fits (zero training error on real CIFAR-10 images), and the single neuron with many local minima."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import models
from robustjax.landscape import (distinct_inputs, distinct_patches, layer_widths, lstsq, rank, single_neuron,
                                 wide_layer_check, widths)
from robustjax.models import skip, zoo


@pytest.fixture(scope="module")
def cifar_small():
    """150 real CIFAR-10 images (test split, the smaller file) and their labels."""
    from robustjax.data import load
    x, y = load("cifar10", "test")
    return x[:150], y[:150]


# ----------------------------------------------------------------------------- widths and checks

def test_layer_widths_of_an_mlp_and_lenet():
    lay = layer_widths(models.MLP(widths=(100, 50)), (1, 784))
    assert [(x.units, x.kind) for x in lay] == [(100, "dense"), (50, "dense"), (10, "output")]
    lay = layer_widths(models.LeNet(), (7, 28, 28, 1))   # batch size is ignored
    assert [x.units for x in lay] == [28 * 28 * 32, 14 * 14 * 64, 1024, 10]


def test_one_hot_refuses_what_is_not_a_label():
    from robustjax.landscape.lstsq import one_hot
    np.testing.assert_array_equal(one_hot(np.array([2.0, 0.0]), 3), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match="labels must be integers, got dtype float"):
        one_hot(np.array([0.5, 1.0]), 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        one_hot(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="labels must be \\[N\\]"):
        one_hot(np.zeros((2, 1), int), 3)


def test_layer_widths_rejects_bad_shapes():
    with pytest.raises(ValueError, match="input_shape"):
        layer_widths(models.MLP(widths=(4,)), (784,))


def test_wide_layer_check_refuses_relu():
    report = wide_layer_check(models.MLP(widths=(64, 32), act="relu"), (1, 20), 50)
    failed = {c.what: c.reason for c in report.failures()}
    assert "sigma analytic" in failed and "not analytic" in failed["sigma analytic"]
    assert "sigma strictly increasing" in failed
    assert not report.applies and not report.lemma_applies


def test_wide_layer_check_passes_for_a_wide_pyramidal_softplus_mlp():
    x = np.asarray(jax.random.normal(jax.random.key(0), (50, 20)))
    report = wide_layer_check(models.MLP(widths=(64, 32), act="softplus"), (1, 20), 50, x=x)
    assert report.applies, report.summary()
    assert [c.layer.k for c in report.wide] == [1]
    # N larger than every layer: no wide layer, with the reason
    r2 = wide_layer_check(models.MLP(widths=(64, 32), act="softplus"), (1, 20), 100)
    assert r2.failures()[0].what == "wide layer n_k >= N" and "64 at k = 1" in r2.failures()[0].reason


def test_wide_layer_check_not_pyramidal_and_duplicates():
    x = np.array(jax.random.normal(jax.random.key(0), (40, 20)))
    x[7] = x[3]
    report = wide_layer_check(models.MLP(widths=(40, 30, 35), act="sigmoid"), (1, 20), 40, x=x)
    failed = {c.what.split(" from")[0]: c.reason for c in report.failures()}
    assert "n_3 = 35" in failed["pyramidal"]
    assert report.lemma_applies is False
    assert "[3, 7]" in failed["distinct training points"]


def test_vgg_check_for_imagenet():
    """VGG16 at ImageNet size: wide (n_1 = 3.2M >= N), pyramidal from k = 1, but layer 2 is a conv
    (the CNN theorem wants k+1 fully connected) and ReLU is not analytic."""
    report = wide_layer_check(zoo.VGG16(), (1, 224, 224, 3), widths.IMAGENET_N)
    assert report.widest.units == 3_211_264 and [c.layer.k for c in report.wide] == [1, 2, 3, 4]
    what = {c.what: c.ok for c in report.checks}
    assert what["pyramidal from k = 1"] is True
    assert what["layer k+1 = 2 fully connected"] is False
    assert what["sigma analytic"] is False


def test_activation_growth_condition():
    ok = {a: widths.activation_checks(a)[2].ok for a in ("sigmoid", "tanh", "softplus", "identity")}
    assert ok == {"sigmoid": True, "tanh": True, "softplus": True, "identity": False}


def test_distinct_patches_on_real_images():
    """MNIST digits share their all-zero border patches: the ICML 2018 patch assumption fails, with
    the reason; whole images are distinct."""
    from robustjax.data import load
    x, _ = load("mnist", "test")
    x = x[:20]
    assert distinct_inputs(x).ok
    c = distinct_patches(x, (3, 3))
    assert c.ok is False and "all zero" in c.reason
    rng = np.random.default_rng(0)
    c2 = distinct_patches(rng.random((5, 6, 6, 1)).astype(np.float32), (3, 3), padding="VALID")
    assert c2.ok is True


# ----------------------------------------------------------------------------- rank

def test_numerical_rank_exact_cases():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((30, 8)) @ rng.standard_normal((8, 50))   # rank 8
    r = rank.numerical_rank(A.astype(np.float32))
    assert r.rank == 8 and not r.full and "eps" in r.rule
    assert rank.numerical_rank(rng.standard_normal((30, 50)).astype(np.float32)).full
    with pytest.raises(ValueError):
        rank.numerical_rank(np.zeros((3,)))
    for tol, message in ((-1.0, "tol must be >= 0"), (np.nan, "tol must be finite")):
        with pytest.raises(ValueError, match=message):
            rank.numerical_rank(A, tol=tol)


@pytest.mark.parametrize("act", ["sigmoid", "softplus"])
def test_rank_lemma_on_random_wide_mlp(act):
    """Random parameters, n_1 = 80 >= N = 60 > d = 10: F_1 has full rank N (not just d + 1, the
    rank of the pre-activations); with a repeated point it cannot (rank N - 1)."""
    x = np.array(jax.random.normal(jax.random.key(0), (60, 10)))
    mlp = models.MLP(widths=(80, 20), act=act)
    c = rank.check_rank_lemma(mlp, x, 1, jax.random.key(1))
    assert c.n_k == 80 and c.holds and c.rank.rank == 60
    x[5] = x[9]
    assert rank.check_rank_lemma(mlp, x, 1, jax.random.key(1)).rank.rank == 59


def test_rank_lemma_on_a_random_wide_conv_layer(cifar_small):
    """Real CIFAR-10 images, VGG conv3 with n_k = 8 * 8 * 4 = 256 >= N = 60 (sigmoid): full rank."""
    xc = cifar_small[0][:60]
    vgg = zoo.VGG(config="A", act="sigmoid", width_mult=1 / 64, classifier=(4,), num_classes=3)
    c = rank.check_rank_lemma(vgg, xc, "conv3", jax.random.key(2))   # 8 * 8 * 4 = 256 >= 60
    assert c.n_k == 256 and c.holds, c.rank
    with pytest.raises(ValueError, match="n_k = 32 < N"):
        rank.check_rank_lemma(vgg, xc, "conv7", jax.random.key(2))   # 2 * 2 * 8


# ----------------------------------------------------------------------------- least squares

def test_min_norm_fit_methods_agree_with_pinv():
    rng = np.random.default_rng(0)
    Phi = rng.standard_normal((40, 70)).astype(np.float32)
    Y = rng.standard_normal((40, 3))
    ref = np.linalg.pinv(Phi.astype(np.float64)) @ Y
    for m in lstsq.METHODS:
        W, info = lstsq.min_norm_fit(Phi, Y, method=m, block=16)
        np.testing.assert_allclose(W, ref, atol=1e-6, err_msg=m)
        assert info.residual < 1e-5 and info.P == 70
    with pytest.raises(ValueError, match="P = 30 features < N = 40"):
        lstsq.min_norm_fit(Phi[:, :30], Y)
    with pytest.raises(ValueError, match="NaN"):
        lstsq.min_norm_fit(np.full_like(Phi, np.nan), Y)
    for kw, message in ((dict(Y=np.full_like(Y, np.nan)), "Y contains NaN"), (dict(ridge=-1.0), "ridge must be >= 0"),
                        (dict(ridge=np.nan), "ridge must be finite"), (dict(block=0), "block must be > 0")):
        with pytest.raises(ValueError, match=message):
            lstsq.min_norm_fit(Phi, **{"Y": Y, **kw})


@pytest.mark.parametrize("act", ["sigmoid"])   # softplus: same code path, covered by scripts/landscape.py
def test_rand_fit_zero_training_error_on_cifar(act, cifar_small):
    """Random hidden weights + least-squares output layer: 100 % training accuracy on 150 real
    CIFAR-10 images, verified by re-running the model; M = 200 >= N skip units."""
    x, y = cifar_small
    m = skip.VGG11Skip(act=act, width_mult=1 / 16, classifier=(8,), skip_units=200)
    rng = np.random.default_rng(0)      # LeCun-normal kernels, zero biases, as init draws them (whose compiled
    v = jax.tree_util.tree_map_with_path(  # truncated normals would cost ~10 s)
        lambda path, a: jnp.asarray(rng.normal(0.0, 1.0 / np.sqrt(np.prod(a.shape[:-1])), a.shape)
                                    if path[-1].key == "kernel" else np.zeros(a.shape), a.dtype),
        jax.eval_shape(m.init, jax.random.key(0), x[:1]))
    fit = lstsq.rand_fit(m, v, x, y)
    assert fit.zero_train_error and fit.train_accuracy == 1.0
    assert fit.train_residual < 0.1
    assert fit.info.P == 200 + 8 + 1


# ----------------------------------------------------------------------------- single neuron

def test_single_neuron_has_product_many_verified_minima():
    X, y = single_neuron.auer_examples(per_dim=4, dim=2, ratio=10.0)
    mins = single_neuron.local_minima(X, y, per_dim=4)
    assert mins.per_axis == (3, 3) and len(mins.points) == 9
    assert np.all(mins.grad_norms < 1e-9) and np.all(mins.min_hessian_eig > 0)
    assert len(np.unique(np.round(mins.losses, 6))) > 1   # minima at different heights: not all global
    for per_dim in (2, 5):
        with pytest.raises(ValueError, match=f"per_dim must be len\\(X\\) / dim = 4 .* got {per_dim}"):
            single_neuron.local_minima(X, y, per_dim=per_dim)
    with pytest.raises(ValueError, match="axis-separable"):
        single_neuron.local_minima(X + 0.1, y, per_dim=4)


# ----------------------------------------------------------------------------- module hygiene, bad input

def test_no_landscape_module_imports_private_names():
    """Shared helpers are public (landscape/capture.py); no module reaches into another's _private names."""
    import ast
    from pathlib import Path
    import robustjax
    root = Path(robustjax.__file__).parent
    for path in sorted((root / "landscape").glob("*.py")) + [root / "ood.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("robustjax"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"


def test_feature_matrix_matches_a_hand_computed_layer_and_handles_empty_input():
    x = np.asarray(jax.random.normal(jax.random.key(0), (7, 5)), np.float32)
    mlp = models.MLP(widths=(6, 3), act="tanh")
    v = models.init(mlp, jax.random.key(1), (1, 5))
    p = v["params"]
    ref = np.tanh(np.tanh(x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"]) @ p["dense_1"]["kernel"]
                  + p["dense_1"]["bias"])
    np.testing.assert_allclose(rank.feature_matrix(mlp, v, x, 2, batch_size=3), ref, rtol=1e-5, atol=1e-6)
    assert rank.feature_matrix(mlp, v, x[:0], 1).shape == (0, 6)
    bad = x.copy()
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"^x contains NaN or inf"):
        rank.feature_matrix(mlp, v, bad, 1)
    with pytest.raises(ValueError, match="empty batch"):
        rank.check_rank_lemma(mlp, x[:0], 1, jax.random.key(0))


def test_rand_fit_checks_labels():
    m = skip.VGG11Skip(act="sigmoid", width_mult=1 / 16, classifier=(8,), skip_units=20)
    x = np.zeros((4, 32, 32, 3), np.float32)
    v = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(m.init, jax.random.key(0), x[:1]))
    with pytest.raises(ValueError, match=r"y must lie in \[0, 10\)"):
        lstsq.rand_fit(m, v, x, np.array([0, 1, 2, 10]))
    with pytest.raises(ValueError, match=r"y must have shape \(4,\)"):
        lstsq.rand_fit(m, v, x, np.array([0, 1]))
