"""Theorem 2.1 certificates: exactness on linear models, soundness tests that try to break the bounds
(sampled and maximized gradient differences over the ball, attacks confined to the certified ball),
and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import certify
from robustjax.certify import LinearWeights
from robustjax.models import activations
from robustjax.models.kernel import GaussianKernelWeights
from robustjax.models.mlp import OneHiddenLayerWeights

from _nets import load_benchmark  # noqa: E402  (tests/ is on sys.path under pytest)

ACTS = {"softplus": 10.0, "sigmoid": 1.0, "tanh": 1.0}


def _random_1hl(seed, act, d=6, m=12, K=4, scale=2.0, dtype=jnp.float64):
    k1, k2 = jax.random.split(jax.random.key(seed))
    U = scale * jax.random.normal(k1, (d, m), dtype) / np.sqrt(d)
    W = scale * jax.random.normal(k2, (m, K), dtype) / np.sqrt(m)
    return OneHiddenLayerWeights(U, W, activations.get(act, alpha=ACTS[act]))


def _random_kernel(seed, d=6, R=10, K=4, gamma=0.8, dtype=jnp.float64):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return GaussianKernelWeights(jax.random.uniform(k1, (R, d), dtype), jax.random.normal(k2, (R, K), dtype), gamma)


def _ball_samples(key, x, R, n):
    """n points per example in B_2(x_i, R_i): half on the sphere, half inside. x `[B, d]` -> `[B, n, d]`."""
    k1, k2 = jax.random.split(key)
    u = jax.random.normal(k1, (x.shape[0], n, x.shape[1]), x.dtype)
    u = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
    r = jax.random.uniform(k2, (x.shape[0], n, 1), x.dtype) ** (1 / x.shape[1])
    r = r.at[:, : n // 2].set(1.0)
    return x[:, None] + R[:, None, None] * r * u


def _grad_diff_norms(logits, y, c):
    """||grad f_c(y) - grad f_j(y)||_2 for all j; y `[d]`, c int -> `[K]`."""
    J = jax.jacrev(lambda z: logits(z[None])[0])(y)
    return jnp.linalg.norm(J[c] - J, axis=-1)


def _max_grad_diff(logits, x, R, c, key, n_samples=200, ascent_steps=40):
    """Sampled maximum plus projected gradient ascent of ||grad f_c - grad f_j||^2 over the ball: `[B, K]`."""
    ys = _ball_samples(key, x, R, n_samples)
    norms = jax.vmap(lambda yb, cb: jax.vmap(lambda yy: _grad_diff_norms(logits, yy, cb))(yb))(ys, c)  # [B, n, K]
    best = jnp.max(norms, 1)
    K = norms.shape[-1]
    # projected gradient ascent per class j, from the best sample
    def ascend(x0, Ri, ci, j, y0):
        def obj(y):
            J = jax.jacrev(lambda z: logits(z[None])[0])(y)
            return jnp.sum((J[ci] - J[j]) ** 2)

        def step(_, y):
            g = jax.grad(obj)(y)
            y = y + 0.05 * Ri * g / (jnp.linalg.norm(g) + 1e-30)
            dlt = y - x0
            nrm = jnp.linalg.norm(dlt)
            return x0 + dlt * jnp.minimum(1.0, Ri / jnp.maximum(nrm, 1e-30))
        y = jax.lax.fori_loop(0, ascent_steps, step, y0)
        return jnp.sqrt(obj(y))

    idx = jnp.argmax(norms, 1)                                                   # [B, K]
    y0 = jax.vmap(lambda yb, ib: yb[ib])(ys, idx)                                # [B, K, d]
    asc = jax.vmap(lambda x0, Ri, ci, y0b: jax.vmap(lambda j, yy: ascend(x0, Ri, ci, j, yy))(jnp.arange(K), y0b))(
        x, R, c, y0)
    return jnp.maximum(best, asc)


def test_linear_radius_is_exact_distance():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        d, K, B = 8, 5, 64
        W, b = rng.normal(size=(d, K)), rng.normal(size=K)
        x = rng.normal(size=(B, d))
        logits = x @ W + b
        c = logits.argmax(1)
        res = certify.certified_radius(LinearWeights(jnp.asarray(W), jnp.asarray(b)), jnp.asarray(x), c)
        exact = np.empty(B)
        for i in range(B):                                       # reference: distance to each hyperplane
            dist = [(logits[i, c[i]] - logits[i, j]) / np.linalg.norm(W[:, c[i]] - W[:, j])
                    for j in range(K) if j != c[i]]
            exact[i] = min(dist)
        np.testing.assert_allclose(res.radius, exact, rtol=1e-6)
        assert not res.misclassified.any()
        # just beyond the radius along the closest hyperplane's normal the class changes
        j = res.closest_class
        n = (W[:, c] - W[:, j]).T
        n = n / np.linalg.norm(n, axis=1, keepdims=True)
        beyond = x - (exact * (1 + 1e-6))[:, None] * n
        assert np.all((beyond @ W + b).argmax(1) != c)


@pytest.mark.parametrize("act", list(ACTS))
def test_1hl_bound_above_sampled_and_maximized_gradient_differences(act):
    with jax.enable_x64(True):
        s = _random_1hl(1, act)
        x = jax.random.uniform(jax.random.key(2), (6, 6), jnp.float64)
        R = jnp.asarray([0.01, 0.05, 0.2, 0.5, 1.0, 3.0])
        c = jnp.argmax(s.logits(x), -1)
        emp = _max_grad_diff(s.logits, x, R, c, jax.random.key(3), n_samples=64, ascent_steps=20)
        other = ~jax.nn.one_hot(c, 4, dtype=bool)
        for tight in (None, 1, 0):     # interval bound for all / one / no class (spectral-eigen bound)
            L = certify.cross_lipschitz_bound(s, x, R, num_tight_classes=tight)
            assert bool(jnp.all(jnp.where(other, emp <= L * (1 + 1e-9), True))), (tight, emp, L)
            assert bool(jnp.all(jnp.isfinite(jnp.where(other, L, 0.0))))
        # at R = 0 the interval bound is the exact gradient difference
        L0 = certify.cross_lipschitz_bound(s, x, jnp.zeros(6))
        exact0 = jax.vmap(lambda xx, cc: _grad_diff_norms(s.logits, xx, cc))(x, c)
        np.testing.assert_allclose(np.where(other, L0, 0), np.where(other, exact0, 0), rtol=1e-9, atol=1e-12)


def test_kernel_bound_above_sampled_and_maximized_gradient_differences():
    with jax.enable_x64(True):
        s = _random_kernel(4)
        x = jax.random.uniform(jax.random.key(5), (5, 6), jnp.float64)
        R = jnp.asarray([0.02, 0.1, 0.3, 0.8, 2.0])
        c = jnp.argmax(s.logits(x), -1)
        L = certify.cross_lipschitz_bound(s, x, R)
        emp = _max_grad_diff(s.logits, x, R, c, jax.random.key(6), n_samples=64, ascent_steps=20)
        other = ~jax.nn.one_hot(c, 4, dtype=bool)
        assert bool(jnp.all(jnp.where(other, emp <= L * (1 + 1e-9), True)))


def _pgd_in_ball(logits, x, c, R, key, steps=60, restarts=4):
    """Strongest-effort attack confined to B_2(x, R): maximize max_{j != c} f_j - f_c. Returns True where
    some iterate changed the class."""
    B, d = x.shape
    K = logits(x[:1]).shape[1]

    def margin(z, ci):
        f = logits(z[None])[0]
        return jnp.max(jnp.where(jnp.arange(K) == ci, -jnp.inf, f)) - f[ci]

    def run(k):
        u = jax.random.normal(k, x.shape, x.dtype)
        z0 = x + 0.5 * R[:, None] * u / jnp.linalg.norm(u, axis=1, keepdims=True)

        def step(i, carry):
            z, flipped = carry
            g = jax.vmap(jax.grad(margin))(z, c)
            z = z + 0.2 * R[:, None] * g / (jnp.linalg.norm(g, axis=1, keepdims=True) + 1e-30)
            dlt = z - x
            nrm = jnp.linalg.norm(dlt, axis=1, keepdims=True)
            z = x + dlt * jnp.minimum(1.0, R[:, None] / jnp.maximum(nrm, 1e-30))
            return z, flipped | (jnp.argmax(logits(z), -1) != c)
        return jax.lax.fori_loop(0, steps, step, (z0, jnp.zeros(B, bool)))[1]
    return jnp.any(jax.vmap(run)(jax.random.split(key, restarts)), 0)


@pytest.mark.parametrize("act", list(ACTS))
def test_attack_confined_to_certified_ball_never_flips_random_nets(act):
    with jax.enable_x64(True):
        s = _random_1hl(10, act, scale=3.0)
        x = jax.random.uniform(jax.random.key(20), (64, 6), jnp.float64)
        c = jnp.argmax(s.logits(x), -1)
        res = certify.certified_radius(s, x, np.asarray(c))
        assert np.all(res.radius > 0)
        R = jnp.asarray(res.radius)
        # one call: the certified balls (must never flip) and balls 3x larger + 0.5 (the attack is able to flip)
        flipped = _pgd_in_ball(s.logits, jnp.concatenate([x, x]), jnp.concatenate([c, c]),
                               jnp.concatenate([R, 3 * R + 0.5]), jax.random.key(1))
        assert not bool(jnp.any(flipped[:64]))
        assert bool(jnp.any(flipped[64:]))


def test_returned_radius_satisfies_theorem_condition_and_converges():
    with jax.enable_x64(True):
        s = _random_1hl(30, "softplus", d=8, m=16, K=5)
        x = jax.random.uniform(jax.random.key(31), (40, 8), jnp.float64)
        c = np.asarray(jnp.argmax(s.logits(x), -1))
        res = certify.certified_radius(s, x, c, num_tight_classes=4)
        ref = certify.certified_radius(s, x, c, num_tight_classes=4, steps=60, cheap_steps=60)
        L = certify.cross_lipschitz_bound(s, x, jnp.asarray(res.radius))
        logits = s.logits(x)
        margins = jnp.take_along_axis(logits, jnp.asarray(c)[:, None], 1) - logits
        g = jnp.min(jnp.where(jnp.isinf(L), jnp.inf, margins / L), -1)
        assert np.all(np.asarray(g) >= res.radius)                 # min{g(R), R} = R: Theorem 2.1 applies
        np.testing.assert_allclose(res.radius, ref.radius, rtol=2e-3)
        assert np.all(res.radius <= ref.radius * (1 + 1e-12))
        glob = certify.global_lipschitz_radius(s, x, c)
        assert np.all(glob.radius <= res.radius * (1 + 1e-9)) and np.median(res.radius / glob.radius) > 1.2


def test_kernel_certificate_sound_under_attack():
    with jax.enable_x64(True):
        s = _random_kernel(40, gamma=2.0)
        x = jax.random.uniform(jax.random.key(41), (32, 6), jnp.float64)
        c = jnp.argmax(s.logits(x), -1)
        res = certify.certified_radius(s, x, np.asarray(c))
        assert np.all(res.radius > 0)
        assert not bool(jnp.any(_pgd_in_ball(s.logits, x, c, jnp.asarray(res.radius), jax.random.key(42))))
        glob = certify.global_lipschitz_radius(s, x, np.asarray(c))
        assert np.all(glob.radius <= res.radius * (1 + 1e-9))


def test_trained_mnist_net_certificates_sound(softplus_1hl_mnist, mnist_small):
    net = softplus_1hl_mnist
    s = net.model.weights(net.variables)
    (_, _), (xte, yte) = mnist_small
    x, y = xte[:50], yte[:50]
    res = certify.certified_radius(s, x, y)
    assert res.radius.shape == (50,)
    np.testing.assert_array_equal(res.misclassified, np.asarray(jnp.argmax(net.logits_fn(x), -1)) != y)
    assert np.all(res.radius[res.misclassified] == 0)
    ok = ~res.misclassified
    assert np.median(res.radius[ok]) > 0.05
    xf = jnp.asarray(x.reshape(50, -1))
    flipped = _pgd_in_ball(s.logits, xf[ok], jnp.asarray(y[ok]), jnp.asarray(res.radius[ok]), jax.random.key(7),
                           steps=25, restarts=2)
    assert not bool(jnp.any(flipped))
    # (certified radius <= linearized-attack distance on this net: tests/test_linearized.py)
    # the sampled and maximized gradient differences stay below the bound on the real net too
    R = jnp.asarray(res.radius[ok][:3])
    c = jnp.asarray(res.predicted[ok][:3])
    L = certify.cross_lipschitz_bound(s, xf[ok][:3], R)
    emp = _max_grad_diff(s.logits, xf[ok][:3], R, c, jax.random.key(8), n_samples=16, ascent_steps=8)
    assert bool(jnp.all(jnp.where(jnp.isinf(L), True, emp <= L * (1 + 1e-4))))


def test_bad_input_and_misclassified_points():
    s = _random_1hl(50, "softplus", dtype=jnp.float32)
    x = jax.random.uniform(jax.random.key(51), (8, 6))
    c = np.asarray(jnp.argmax(s.logits(x), -1))
    relu = OneHiddenLayerWeights(s.U, s.W, activations.get("relu"))
    with pytest.raises(ValueError, match="continuously differentiable"):
        certify.certified_radius(relu, x, c)
    with pytest.raises(ValueError, match="structure"):
        certify.certified_radius(s.logits, x, c)
    with pytest.raises(ValueError, match="p=2"):
        certify.certified_radius(s, x, c, p=np.inf)
    with pytest.raises(ValueError, match="labels"):
        certify.certified_radius(s, x, c[:3])
    with pytest.raises(ValueError, match=r"OneHiddenLayerWeights needs U \[d, m\] and W \[m, K\]; got U \(6, \d+\), W"):
        certify.certified_radius(OneHiddenLayerWeights(s.U, s.W[1:], s.act), x, c)
    with pytest.raises(ValueError, match=r"LinearWeights needs W \[d, K\] and b \[K\]"):
        certify.certified_radius(LinearWeights(jnp.ones((6, 3)), jnp.ones(4)), x, c % 3)
    with pytest.raises(ValueError, match=r"GaussianKernelWeights needs centers \[R, d\] and alpha \[R, K\]"):
        certify.certified_radius(GaussianKernelWeights(jnp.ones((2, 6)), jnp.ones((3, 3)), 1.0), x, c % 3)
    for radius, message in ((-1.0, "radius must be >= 0"), (np.array([np.nan] * 8), "radius must be finite"),
                            (np.ones(3), r"radius must be a scalar or have shape \(8,\)")):
        with pytest.raises(ValueError, match=message):
            certify.cross_lipschitz_bound(s, x, radius)
    wrong = (c + 1) % 4
    res = certify.certified_radius(s, x, wrong)
    assert res.misclassified.all() and np.all(res.radius == 0)
    mixed = c.copy()
    mixed[:4] = wrong[:4]
    res = certify.certified_radius(s, x, mixed)
    np.testing.assert_array_equal(res.misclassified, np.arange(8) < 4)
    assert np.all(res.radius[4:] > 0) and not res.uncertain.any()


@pytest.mark.parametrize("fn", [certify.certified_radius, certify.global_lipschitz_radius])
def test_rejects_bad_labels_shapes_and_nan_and_accepts_empty_batch(fn):
    rng = np.random.default_rng(3)
    lin = LinearWeights(jnp.asarray(rng.normal(size=(20, 5)), jnp.float32), jnp.zeros(5, jnp.float32))
    x = jnp.asarray(rng.uniform(size=(8, 20)), jnp.float32)
    y = np.asarray(jnp.argmax(lin.logits(x), -1))
    for bad in (np.full(8, 7), np.full(8, -1)):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
            fn(lin, x, bad)
    with pytest.raises(ValueError, match="x must have 20 features"):
        fn(lin, jnp.ones((8, 21)), y)
    with pytest.raises(ValueError, match="x contains NaN"):
        fn(lin, x.at[2, 3].set(jnp.nan), y)
    empty = fn(lin, x[:0], y[:0])
    for f in ("radius", "misclassified", "predicted", "closest_class", "uncertain"):
        assert getattr(empty, f).shape == (0,), f
    assert empty.radius.dtype == np.float32
    # images [batch, 4, 5] with 20 entries per row are fine
    np.testing.assert_array_equal(fn(lin, x.reshape(8, 4, 5), y).radius, fn(lin, x, y).radius)


def test_margin_within_rounding_error_is_uncertain_with_radius_zero():
    """float32 points on the boundary of a linear model (exactly, in rational arithmetic: two identical
    class columns but one bias a float32 ulp larger) get radius 0 and uncertain=True."""
    W = np.random.default_rng(4).normal(size=(16, 3)).astype(np.float32)
    W[:, 1] = W[:, 0]
    b = np.array([1.0, np.nextafter(np.float32(1.0), np.float32(2.0)), -5.0], np.float32)
    s = LinearWeights(jnp.asarray(W), jnp.asarray(b))
    x = jnp.asarray(np.random.default_rng(5).uniform(size=(6, 16)), jnp.float32)
    res = certify.certified_radius(s, x, np.ones(6, np.int32))     # class 1 wins by one ulp of the bias
    assert np.all(res.uncertain | res.misclassified) and np.all(res.radius == 0)


def test_float64_inputs_with_x64_off_are_certified_around_the_float64_point():
    """x64 off: a float64 x is rounded to float32; the radius is reduced by ||x - x32||, so it holds around
    the x that was passed (exact check in float64 against the linear model's closed form)."""
    rng = np.random.default_rng(6)
    W = rng.normal(size=(30, 4)).astype(np.float32)
    s = LinearWeights(jnp.asarray(W), jnp.zeros(4, jnp.float32))
    x = rng.uniform(size=(64, 30)) * 1000                         # large |x|: rounding matters
    y = (x @ W.astype(np.float64)).argmax(1)
    r = certify.certified_radius(s, x, y).radius.astype(np.float64)
    r32 = certify.certified_radius(s, x.astype(np.float32), y).radius.astype(np.float64)
    dx = np.linalg.norm(x - x.astype(np.float32).astype(np.float64), axis=1)
    assert np.all(r <= np.maximum(r32 - dx, 0) * (1 + 1e-6)) and np.all(r < r32)
    f = x @ W.astype(np.float64)
    V = W.astype(np.float64)[:, y].T[:, :, None] - W.astype(np.float64)[None]
    dist = np.where(np.arange(4) == y[:, None], np.inf, (np.take_along_axis(f, y[:, None], 1) - f)
                    / np.maximum(np.linalg.norm(V, axis=1), 1e-300)).min(1)
    assert np.all(r <= dist)


_ACT_REF = {"softplus": (lambda t: np.logaddexp(10 * t, 0) / 10, lambda t: 0.5 * (1 + np.tanh(5 * t))),
            "sigmoid": (lambda t: 0.5 * (1 + np.tanh(t / 2)), lambda t: 0.25 / np.cosh(t / 2) ** 2),
            "tanh": (np.tanh, lambda t: 1 / np.cosh(t) ** 2)}


@pytest.mark.parametrize("act", list(ACTS))
def test_activation_and_exp_errors_within_the_certificates_budget(act):
    """The rounding model of the certificates: jnp's float32 sigma within ACT_ULPS u (|sigma| + sup|sigma'|
    |t|), sigma' within ACT_ULPS u sup|sigma'|, exp within ACT_ULPS u |exp| (asserted with 2x to spare)."""
    rng = np.random.default_rng(7)
    t = np.concatenate([rng.normal(size=20000) * sc for sc in (1e-3, 0.1, 1, 3, 10, 30)]
                       + [np.linspace(-90, 90, 40001)]).astype(np.float32)
    t64, u = t.astype(np.float64), 2.0 ** -24
    a = activations.get(act, alpha=ACTS[act])
    sup = certify._sup_grad(a)
    ref_f, ref_g = _ACT_REF[act]
    with np.errstate(over="ignore"):
        f = np.asarray(jax.jit(a.fn)(jnp.asarray(t)), np.float64)
        g = np.asarray(jax.jit(a.grad)(jnp.asarray(t)), np.float64)
        e_f = np.max(np.abs(f - ref_f(t64)) / (u * (np.abs(f) + sup * np.abs(t64)) + 1e-300))
        e_g = np.max(np.abs(g - ref_g(t64)) / (u * sup))
    tx = t64[np.abs(t64) < 80]
    e_x = np.max(np.abs(np.asarray(jnp.exp(jnp.asarray(tx, jnp.float32)), np.float64) - np.exp(tx)) / (u * np.exp(tx)))
    assert max(e_f, e_g, e_x) <= certify.ACT_ULPS / 2, (e_f, e_g, e_x)


@pytest.mark.parametrize("family", ["linear", "softplus", "sigmoid", "tanh", "kernel"])
def test_no_certificate_exceeds_the_true_distance_near_the_boundary(family):
    """The small version of benchmarks/bench_soundness.py: points at 1e-2 ... 1e-6 of their margin, float32
    and float64; every local and global radius <= the exact distance (linear, rational arithmetic) or <= the
    distance of a float64-verified adversarial example. The float32 certificates before the rigorous error
    bounds failed this (e.g. 6 of 15 linear radii at 1e-3 exceeded the exact distance)."""
    rows = load_benchmark("bench_soundness").run(n_nets=2, n_points=4, seed=11, families=(family,))
    pairs = sum(r["pairs"] for r in rows)
    assert pairs >= 60
    assert sum(r["local_violations"] + r["global_violations"] for r in rows) == 0, rows
    # far from the boundary (tau = 1e-2) the float32 certificates stay useful; float64 ones are never zero
    for r in rows:
        if r["dtype"] == "float64":
            assert r["zero"] == 0, r
        elif r["tau"] == 1e-2:
            assert r["zero"] <= r["pairs"] // 4 and (r["median_ratio"] is None or r["median_ratio"] > 0.5), r
