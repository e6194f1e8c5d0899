"""The authors' linearized l2 attack: the exact box-constrained linear step, exactness on linear models,
re-verified results on a trained MNIST net, and its consistency with the certified radius."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from robustjax import certify
from robustjax.attacks import Box, linearized
from robustjax.attacks.linearized import halfspace_box_step_l2
from robustjax.geometry import halfspace_box_distance, halfspace_box_step


def test_halfspace_step_matches_a_qp_solver_and_the_numpy_ground_floor():
    rng = np.random.default_rng(0)
    d = 7
    for _ in range(6):
        w, x = rng.normal(size=d), rng.uniform(size=d)
        reach = np.sum(np.abs(w) * np.where(w > 0, 1 - x, x))     # the largest w . delta in the box
        r = reach * rng.uniform(0.05, 0.95)
        delta, feasible = halfspace_box_step_l2(jnp.asarray(w), r, jnp.asarray(x), jnp.zeros(d), jnp.ones(d))
        delta = np.asarray(delta, np.float64)
        assert bool(feasible)
        np.testing.assert_allclose(w @ delta, r, rtol=1e-4, atol=1e-5)
        assert np.all(x + delta >= -1e-6) and np.all(x + delta <= 1 + 1e-6)
        ref = minimize(lambda z: z @ z, np.zeros(d), jac=lambda z: 2 * z, method="SLSQP",
                       constraints=[{"type": "ineq", "fun": lambda z: w @ z - r, "jac": lambda z: w}],
                       bounds=[(-a, 1 - a) for a in x], options={"ftol": 1e-12, "maxiter": 500})
        np.testing.assert_allclose(np.linalg.norm(delta), np.linalg.norm(ref.x), rtol=1e-4)
        np.testing.assert_allclose(delta, halfspace_box_step(w, r, x, np.zeros(d), np.ones(d), 2), atol=1e-5)
        dist = halfspace_box_distance(jnp.asarray(w), r, jnp.asarray(x), jnp.zeros(d), jnp.ones(d), 2)
        np.testing.assert_allclose(np.linalg.norm(delta), float(dist), rtol=1e-4)
    # r <= 0: no step; out of reach: the fully clipped step, infeasible
    w, x = np.array([-1.0, 2.0]), np.array([0.5, 0.5])
    delta, feasible = halfspace_box_step_l2(jnp.asarray(w), -1.0, jnp.asarray(x), jnp.zeros(2), jnp.ones(2))
    np.testing.assert_array_equal(delta, [0.0, 0.0])
    delta, feasible = halfspace_box_step_l2(jnp.asarray(w), 10.0, jnp.asarray(x), jnp.zeros(2), jnp.ones(2))
    np.testing.assert_allclose(delta, [-0.5, 0.5], atol=1e-6)
    assert not bool(feasible)


def test_exact_on_linear_models():
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        d, K, B = 10, 4, 32
        W, b = 0.3 * rng.normal(size=(d, K)), 0.1 * rng.normal(size=K)
        x = rng.uniform(0.3, 0.7, size=(B, d))
        lin = certify.LinearWeights(jnp.asarray(W), jnp.asarray(b))
        y = np.asarray(jnp.argmax(lin.logits(jnp.asarray(x)), -1))
        exact = certify.certified_radius(lin, jnp.asarray(x), y).radius     # the exact distance (tested there)
        res = linearized(jax.jit(lin.logits), x, y, key=jax.random.key(0), box=Box(-100.0, 100.0))
        assert res.success.all()
        assert np.all(res.distance >= exact * (1 - 1e-9))
        np.testing.assert_allclose(res.distance, exact, rtol=2e-3)           # t bisected to 1.2 / 2^10


def test_mnist_results_verified_and_above_certificate(softplus_1hl_mnist, mnist_small):
    net = softplus_1hl_mnist
    (_, _), (xte, yte) = mnist_small
    x, y = xte[:60], yte[:60].copy()
    y[:3] = (y[:3] + 1) % 10                                   # force some misclassified points
    res = linearized(net.logits_fn, x, y, key=jax.random.key(0))
    pred = np.asarray(jnp.argmax(net.logits_fn(x), -1))
    wrong = pred != y
    assert np.all(res.distance[wrong] == 0) and res.misclassified[wrong].all()
    assert res.success[~wrong].mean() > 0.9
    adv = res.success & ~wrong
    pred_adv = np.asarray(jnp.argmax(net.logits_fn(res.x_adv), -1))
    assert np.all(pred_adv[adv] != y[adv])
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    d = np.linalg.norm((res.x_adv - x).reshape(60, -1), axis=1)
    np.testing.assert_allclose(d[adv], res.distance[adv], rtol=1e-5)
    cert = certify.certified_radius(net.model.weights(net.variables), x, y)
    assert np.all(cert.radius <= res.distance)
    assert np.all(res.model_calls > 0) and res.method == "linearized"


def test_bad_input():
    f = lambda x: x.reshape(x.shape[0], -1)[:, :3]  # noqa: E731
    x = np.full((2, 4), 0.5, np.float32)
    with pytest.raises(ValueError, match="l2"):
        linearized(f, x, np.zeros(2, np.int32), p=np.inf, key=jax.random.key(0))
    with pytest.raises(ValueError, match="box"):
        linearized(f, x + 2, np.zeros(2, np.int32), key=jax.random.key(0))
    with pytest.raises(ValueError, match="multiplier must be > 1"):
        linearized(f, x, np.zeros(2, np.int32), multiplier=1.0)


def test_per_example_boxes_bind(softplus_1hl_mnist, mnist_small):
    """One box per example, a different l_inf radius around each point: x_adv stays inside its own box, and
    the tightest boxes leave points robust that the unit box does not."""
    net = softplus_1hl_mnist
    (_, _), (xte, yte) = mnist_small
    x, y = xte[:8], yte[:8]
    r = np.linspace(0.02, 0.3, 8, dtype=np.float32)[:, None, None, None]
    box = Box(np.clip(x - r, 0, 1), np.clip(x + r, 0, 1))
    res = linearized(net.logits_fn, x, y, box=box)
    assert np.all(res.x_adv >= box.lo) and np.all(res.x_adv <= box.hi)
    free = linearized(net.logits_fn, x, y)
    assert free.success.all() and not res.success.all()
