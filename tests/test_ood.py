"""Confidence far from the data: metrics against brute force, noise generators, Theorem 3.1, CEDA/ACET."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from robustjax import ood, regularizers, train


# ----------------------------------------------------------------------------- metrics

def _auroc_brute(a, b):
    a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None, :]
    return float(np.mean((a > b) + 0.5 * (a == b)))


def _fpr_brute(a, b, tpr=0.95):
    """Scan every candidate threshold: the largest t with mean(a >= t) >= tpr, then mean(b >= t)."""
    ts = np.unique(np.concatenate([a, b]))[::-1]
    for t in ts:
        if np.mean(a >= t) >= tpr:
            return float(np.mean(b >= t))
    raise AssertionError("unreachable")


@pytest.mark.parametrize("seed", range(4))
def test_auroc_and_fpr_match_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 12, size=rng.integers(5, 60)).astype(float)    # many ties, within and across sets
    b = rng.integers(-3, 9, size=rng.integers(5, 60)).astype(float)
    assert ood.auroc(a, b) == pytest.approx(_auroc_brute(a, b), abs=1e-12)
    assert ood.fpr_at_tpr(a, b) == pytest.approx(_fpr_brute(a, b), abs=1e-12)


def test_auroc_and_fpr_edge_cases():
    assert ood.auroc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert ood.auroc([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert ood.auroc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5
    assert ood.fpr_at_tpr(np.arange(100.0), np.arange(100.0)) == pytest.approx(0.95)
    m = ood.ood_metrics(np.log([0.9, 0.99]), np.log([0.1, 0.3]))
    assert m == {"mmc": pytest.approx(0.2), "auroc": 1.0, "fpr95": 0.0}
    with pytest.raises(ValueError):
        ood.auroc([], [1.0])
    with pytest.raises(ValueError):
        ood.auroc([np.nan], [1.0])
    with pytest.raises(ValueError, match="fpr_at_tpr scores contain NaN"):
        ood.fpr_at_tpr([np.nan, 0.5, 0.2], [0.3])
    with pytest.raises(ValueError, match="log_conf_in must be log-confidences"):
        ood.ood_metrics([0.9, 0.95], [0.5, 0.6])


def test_log_confidence_is_stable_and_exact():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10)) * np.array([[1.0], [30.0], [1e4], [1e30], [0.0]]).repeat(10, 0)
    with jax.enable_x64(True):
        ref = np.max(jax.nn.log_softmax(jnp.asarray(logits, jnp.float64)), -1)
    got = np.asarray(ood.log_confidence(jnp.asarray(logits, jnp.float32)))
    assert np.all(np.isfinite(got)) and np.all(got <= 0)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    tiny = np.asarray(ood.log_confidence(jnp.asarray([[0.0, -40.0, -50.0]])))   # 1 - conf ~ 4e-18
    assert tiny[0] == pytest.approx(-np.exp(-40.0) - np.exp(-50.0), rel=1e-5)
    np.testing.assert_allclose(np.asarray(ood.confidence(jnp.zeros((3, 4)))), 0.25, rtol=1e-6)


# ----------------------------------------------------------------------------- noise

def test_noise_generators(key):
    x = jnp.asarray(np.random.default_rng(0).random((4, 6, 5, 3)).astype(np.float32))
    u = ood.uniform_noise(key, x)
    assert u.shape == x.shape and float(u.min()) >= 0 and float(u.max()) <= 1
    p = np.asarray(ood.permuted_pixels(key, x))
    for i in range(4):       # the same pixels (rows of C channel values), in another order
        a = np.asarray(x[i]).reshape(-1, 3)
        b = p[i].reshape(-1, 3)
        np.testing.assert_array_equal(a[np.lexsort(a.T)], b[np.lexsort(b.T)])
        assert not np.array_equal(a, b)
    z = np.asarray(ood.lowpass_noise(key, x))
    assert z.shape == x.shape
    np.testing.assert_allclose(z.reshape(4, -1).min(1), 0.0, atol=1e-6)
    np.testing.assert_allclose(z.reshape(4, -1).max(1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="NHWC"):
        ood.permuted_pixels(key, x.reshape(4, -1))
    with pytest.raises(ValueError, match="unknown noise"):
        ood.ceda(noise="pink")


@pytest.mark.parametrize("sigma", [1.0, 1.7, 2.5])
def test_gaussian_blur_matches_scipy(sigma):
    x = np.random.default_rng(1).random((2, 20, 17, 2))
    got = np.asarray(ood.gaussian_blur(jnp.asarray(x, jnp.float32), jnp.full((2,), sigma), kernel_size=15))
    ref = np.stack([scipy.ndimage.gaussian_filter(xi, (sigma, sigma, 0), mode="constant", truncate=7 / sigma)
                    for xi in x])
    np.testing.assert_allclose(got, ref, atol=1e-5)


# ----------------------------------------------------------------------------- Theorem 3.1

def test_relu_net_confidence_tends_to_one_along_rays(relu_mlp_mnist, key):
    """Theorem 3.1 (Hein et al. 2019): a ReLU net gets arbitrarily confident on alpha * x."""
    f = relu_mlp_mnist.logits_fn
    x = ood.uniform_noise(key, jnp.zeros((40, 28, 28, 1)))
    conf = ood.scaled_confidence(f, x, [1.0, 1e2, 1e4, 1e8])
    assert conf.shape == (4, 40)
    assert np.all(conf[-1] > 0.9999) and np.mean(conf[-1]) > np.mean(conf[0])
    alpha = ood.alpha_for_confidence(f, x, target=0.999)
    assert np.all(np.isfinite(alpha)) and np.all(alpha >= 1)
    at = ood.max_confidence(f, alpha.astype(np.float32)[:, None, None, None] * x)
    assert np.all(at >= 0.999 - 1e-4)
    below = ood.max_confidence(f, (alpha / 1.5).astype(np.float32)[:, None, None, None] * x)
    assert np.sum(below < 0.999) >= np.sum(alpha > 1.0) - 2      # mostly the first crossing (grid 8/decade)
    proj = ood.scaled_confidence(f, x, [1.0, 10.0, 1e6], project=True)
    assert np.all((proj >= 0.1 - 1e-6) & (proj <= 1.0))
    np.testing.assert_allclose(proj[0], conf[0], rtol=1e-5)          # alpha = 1 is already in the box
    np.testing.assert_allclose(proj[2], proj[2][0], rtol=1e-4)       # clip(1e6 x) = all-ones image


def test_adversarial_noise_stays_in_the_ball_and_raises_confidence(relu_mlp_mnist, key):
    f = relu_mlp_mnist.logits_fn
    z = ood.lowpass_noise(key, jnp.zeros((16, 28, 28, 1)))
    u = ood.adversarial_noise(f, z, jax.random.key(3), eps=0.3, steps=10, step_size=0.05, restarts=2)
    assert float(jnp.max(jnp.abs(u - z))) <= 0.3 + 1e-6 and float(u.min()) >= 0 and float(u.max()) <= 1
    before, after = ood.max_log_confidence(f, z), ood.max_log_confidence(f, u)
    assert np.all(after >= before - 1e-6) and np.mean(np.exp(after)) > np.mean(np.exp(before)) + 0.05


# ----------------------------------------------------------------------------- CEDA / ACET

def test_ceda_term_is_the_mean_log_confidence_of_the_noise(relu_mlp_mnist, mnist_small, key):
    (xtr, ytr), _ = mnist_small
    x, y = jnp.asarray(xtr[:32]), jnp.asarray(ytr[:32])
    model, variables = relu_mlp_mnist.model, relu_mlp_mnist.variables
    apply_fn = lambda params, xx: model.apply({"params": params}, xx)  # noqa: E731
    term = ood.ceda(0.5)
    val = jax.jit(lambda p: term(p, x, y, apply_fn=apply_fn, key=key))(variables["params"])
    z = ood.lowpass_noise(jax.random.split(key)[0], x)
    ref = 0.5 * np.mean(ood.max_log_confidence(relu_mlp_mnist.logits_fn, z))
    assert float(val) == pytest.approx(ref, rel=1e-5)
    assert -0.5 * np.log(10) - 1e-5 <= float(val) <= 0
    g = jax.jit(jax.grad(lambda p: term(p, x, y, apply_fn=apply_fn, key=key)))(variables["params"])
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(g))
    assert sum(float(jnp.sum(jnp.abs(leaf))) for leaf in jax.tree.leaves(g)) > 0
    acet = ood.acet(0.5, steps=5, step_size=0.1)
    acet_val = jax.jit(lambda p: acet(p, x, y, apply_fn=apply_fn, key=key))(variables["params"])
    assert float(acet_val) >= float(val) - 1e-6            # the worst case around the same noise
    assert type(regularizers.REGULARIZERS["acet"](1.0)) is type(acet) and "ceda" in regularizers.REGULARIZERS


def test_acet_lowers_noise_confidence_on_a_small_run(relu_mlp_mnist, mnist_small, key):
    """Same net and data as the plain `relu_mlp_mnist` fixture (4 epochs), 2 epochs with ACET (3 PGD
    steps): the confidence on uniform and low-pass noise drops, the test accuracy stays."""
    (xtr, ytr), (xte, yte) = mnist_small
    cfg = train.TrainConfig(model="mlp", model_config={"widths": (64,), "act": "relu"}, optimizer="adam",
                            learning_rate=3e-3, schedule="piecewise", epochs=1, progress=False)
    state = train.fit(cfg, (xtr, ytr), regularizer=ood.acet(1.0, steps=3, step_size=0.15))
    acc = train.evaluate(state, xte, yte)["accuracy"]
    k1, k2 = jax.random.split(key)
    noise = {"uniform": ood.uniform_noise(k1, jnp.zeros((200, 28, 28, 1))),
             "lowpass": ood.lowpass_noise(k2, jnp.asarray(xte[:200]))}
    for name, z in noise.items():
        plain = ood.max_confidence(relu_mlp_mnist.logits_fn, z).mean()
        acet = ood.max_confidence(state.logits_fn(), z).mean()
        assert acet < 0.3 and acet < plain - 0.25, (name, plain, acet)
    assert acc > 0.85          # 1 epoch of ACET vs 4 plain epochs (about 0.92); the benchmark compares equal budgets


def test_gradient_norm_is_zero_exactly_where_the_net_is_flat(key):
    """A ReLU layer whose units are all dead for inputs with mean > 0.5: gradient exactly 0 there."""
    w = jnp.ones((28 * 28, 10)) / (28 * 28)

    def f(x):
        h = jax.nn.relu(0.5 - x.reshape(x.shape[0], -1) @ w)          # dead when the pixel mean > 0.5
        return h * jnp.arange(10.0)
    x = jnp.concatenate([jnp.full((3, 28, 28, 1), 0.8), jnp.full((3, 28, 28, 1), 0.2)])
    g = ood.log_confidence_gradient_norm(f, x)
    np.testing.assert_array_equal(g[:3], 0.0)
    assert np.all(g[3:] > 0)


# ----------------------------------------------------------------------------- bad input, empty batches

def _linear(x):
    return x.reshape(x.shape[0], -1)[:, :3] * jnp.asarray([3.0, -1.0, 0.5])


def test_non_finite_or_unbatched_images_are_refused(key):
    x = np.random.default_rng(0).random((4, 6, 5, 1)).astype(np.float32)
    bad = x.copy()
    bad[1, 2, 3, 0] = np.nan
    calls = {"max_confidence": lambda v: ood.max_confidence(_linear, v),
             "max_log_confidence": lambda v: ood.max_log_confidence(_linear, v),
             "gradient_norm": lambda v: ood.log_confidence_gradient_norm(_linear, v),
             "scaled_confidence": lambda v: ood.scaled_confidence(_linear, v, [1.0, 2.0]),
             "alpha_for_confidence": lambda v: ood.alpha_for_confidence(_linear, v),
             "uniform_noise": lambda v: ood.uniform_noise(key, v),
             "permuted_pixels": lambda v: ood.permuted_pixels(key, v),
             "lowpass_noise": lambda v: ood.lowpass_noise(key, v),
             "gaussian_blur": lambda v: ood.gaussian_blur(v, 1.5)}
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"^x contains NaN or inf \(1 entries\)"):
            call(bad)
        with pytest.raises(ValueError, match=r"^x must be batched"):
            call(x[0, :, :, 0].ravel())
        with pytest.raises(ValueError, match="x must be floating point"):
            call((x * 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"^z contains NaN"):
        ood.adversarial_noise(_linear, bad, key)
    for kw, msg in ((dict(eps=-0.1), "eps must be >= 0"), (dict(steps=2.5), "steps must be an integer"),
                    (dict(restarts=0), "restarts must be > 0"), (dict(step_size=0.0), "step_size must be > 0")):
        with pytest.raises(ValueError, match=msg):
            ood.adversarial_noise(_linear, x, key, **kw)
    with pytest.raises(ValueError, match="key must be a jax.random key"):
        ood.uniform_noise(None, x)
    with pytest.raises(ValueError, match="box must have lo <= hi"):
        ood.uniform_noise(key, x, box=(1.0, 0.0))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        ood.gaussian_blur(x, 0.0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        ood.gaussian_kernel_matrix(5, 0.0)              # not a matrix of NaN
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ood.lowpass_noise(key, x, kernel_size=4)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        ood.ceda(-1.0)
    with pytest.raises(ValueError, match="eps must be finite"):
        ood.acet(eps=np.nan)


def test_empty_batch_gives_empty_results(key):
    e = np.zeros((0, 6, 5, 1), np.float32)
    assert ood.max_confidence(_linear, e).shape == (0,)
    assert ood.max_log_confidence(_linear, e).shape == (0,)
    assert ood.log_confidence_gradient_norm(_linear, e).shape == (0,)
    assert ood.scaled_confidence(_linear, e, [1.0, 2.0, 3.0], project=True).shape == (3, 0)
    assert ood.alpha_for_confidence(_linear, e).shape == (0,)
    for z in (ood.uniform_noise(key, e), ood.permuted_pixels(key, e), ood.lowpass_noise(key, e),
              ood.adversarial_noise(_linear, e, key, steps=2)):
        assert z.shape == e.shape


def test_per_example_boxes(key):
    """A box per example: noise and projected scaling stay inside each example's own box."""
    x = np.random.default_rng(3).random((3, 6, 5, 1)).astype(np.float32)
    lo = np.asarray([0.0, 0.2, 0.5], np.float32)[:, None, None, None] * np.ones_like(x)
    box = (lo, lo + 0.1)
    u = np.asarray(ood.uniform_noise(key, x, box=box))
    assert np.all(u >= lo) and np.all(u <= lo + 0.1 + 1e-7) and np.all(u.reshape(3, -1).std(1) > 0.01)
    z = np.asarray(ood.lowpass_noise(key, x, box=box)).reshape(3, -1)      # rescaled onto each box exactly
    np.testing.assert_allclose(z.min(1), lo[:, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(z.max(1), lo[:, 0, 0, 0] + 0.1, atol=1e-6)
    conf = ood.scaled_confidence(_linear, x, [1e6], project=True, box=box, batch_size=2)
    ref = ood.max_confidence(_linear, np.asarray(lo + 0.1))                  # clip(1e6 x) = the upper corner
    np.testing.assert_allclose(conf[0], ref, rtol=1e-5)
    u = np.asarray(ood.adversarial_noise(_linear, np.asarray(lo + 0.05), key, eps=0.3, steps=5, box=box))
    assert np.all(u >= lo - 1e-6) and np.all(u <= lo + 0.1 + 1e-6)
