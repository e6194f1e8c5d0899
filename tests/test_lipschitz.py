"""Theorem 2.1 for deep smooth nets, tried hard: the gradient-difference bound is never below sampled or
gradient-ascent maxima over the ball, PGD inside the certified ball never changes the class, the radius is
below the attack distance, and non-smooth layers are refused."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import attacks, bounds
from robustjax.bounds import crown, lipschitz, propagate
from robustjax.network import Activation, Dense, Flatten, ReLU, as_graph, evaluate


def _net(seed, d, widths, K, act):
    rng = np.random.default_rng(seed)
    layers, n = [Flatten()], d
    for w in widths:
        layers += [Dense(rng.normal(size=(n, w)) / np.sqrt(n), 0.3 * rng.normal(size=w)), Activation(act)]
        n = w
    layers.append(Dense(rng.normal(size=(n, K)) * 2 / np.sqrt(n), 0.3 * rng.normal(size=K)))
    return as_graph(layers, (d,))


def _grad_diff_norm(g, c, j):
    f = lambda v: (lambda o: o[0, c] - o[0, j])(evaluate(g, v[None]))  # noqa: E731
    return jax.jit(lambda v: jnp.linalg.norm(jax.grad(f)(v)))


@pytest.mark.parametrize("act", ["softplus", "tanh", "sigmoid"])
def test_gradient_difference_bound_dominates_sampled_and_ascended_maxima(act):
    g = _net(["softplus", "tanh", "sigmoid"].index(act), 6, (10, 10), 3, act)
    rng = np.random.default_rng(1)
    x = rng.uniform(0.3, 0.7, (2, 6))
    y = bounds.predict_float64(g, x)
    R = 0.3
    with jax.enable_x64(True):
        s = propagate.input_set(x, R, 2, None)
        shapes = crown.node_shapes(g, g.input_shape)
        L = np.asarray(lipschitz.gradient_difference_bound(g, s, jnp.asarray(propagate.margin_specs(y, 3)), shapes))
    for i in range(2):
        for j in range(3):
            if j == y[i]:
                continue
            norm = _grad_diff_norm(g, int(y[i]), j)
            z = rng.normal(size=(300, 6))
            z *= (R * rng.uniform(0, 1, (300, 1)) ** (1 / 6)) / np.linalg.norm(z, axis=1, keepdims=True)
            pts = np.clip(x[i] + z, 0, 1)
            sampled = max(float(norm(jnp.asarray(p, jnp.float32))) for p in pts[:100])
            v = jnp.asarray(x[i], jnp.float32)
            for _ in range(30):                       # ascend the gradient-difference norm inside the ball
                v = v + 0.05 * jax.grad(lambda u: norm(u))(v)
                d = v - x[i]
                v = jnp.clip(x[i] + d * jnp.minimum(1.0, R / (jnp.linalg.norm(d) + 1e-12)), 0, 1)
            ascended = float(norm(v))
            assert L[i, j] >= max(sampled, ascended) * (1 - 1e-5), (act, i, j, L[i, j], sampled, ascended)


def test_certified_ball_survives_pgd_and_lies_below_the_attack_distance():
    g = _net(7, 6, (12, 12), 3, "softplus")
    rng = np.random.default_rng(2)
    x = rng.uniform(0.2, 0.8, (8, 6)).astype(np.float32)
    y = bounds.predict_float64(g, x)
    cert = lipschitz.theorem21_radius(g, x, y)
    assert np.all(cert.radius >= 0) and np.any(cert.radius > 0)
    f = lambda v: evaluate(g, v)  # noqa: E731
    attack = attacks.ddn(f, x, y, p=2, key=jax.random.key(0), box=(0.0, 1.0))
    ok = attack.success & ~attack.misclassified
    assert np.all(cert.radius[ok] <= attack.distance[ok])
    r = np.maximum(cert.radius, 1e-9)
    pgd = attacks.pgd(f, x, y, p=2, eps=r * (1 - 1e-6), key=jax.random.key(1), box=(0.0, 1.0), steps=100, restarts=3)
    assert not np.any(pgd.success & (cert.radius > 0))
    crown_cert = bounds.certified_radius(g, x, y, p=2, method="crown")
    assert np.all(np.isfinite(crown_cert.radius))


def test_non_smooth_networks_are_refused():
    g = as_graph([Flatten(), Dense(np.ones((3, 4)), np.zeros(4)), ReLU(), Dense(np.ones((4, 2)), np.zeros(2))], (3,))
    with pytest.raises(ValueError, match="continuously differentiable"):
        lipschitz.theorem21_radius(g, np.full((1, 3), 0.5), [0])
