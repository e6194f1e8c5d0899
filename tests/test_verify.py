"""Exact references (robustjax/verify.py): closed forms on linear models, certificates that try to break
the MILP (infeasible just below the optimum, sampling inside the certified ball), 2-D region walk vs a grid."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from robustjax import models, network, verify
from robustjax.attacks import Box


from _nets import random_net  # noqa: E402  (tests/ is on sys.path under pytest)


def inner_points(d, seed, n=1):
    """`[n, d]` inputs drawn in [0.25, 0.75]^d."""
    return np.random.default_rng(seed).uniform(0.25, 0.75, size=(n, d))


def margin(layers, z, label):
    out = verify.forward(layers, np.asarray(z)[None])[0]
    return np.max(np.delete(out, label)) - out[label]


def test_dense_layers_match_flax_mlp():
    m = models.build("mlp", widths=(6, 5), act="relu", num_classes=3)
    v = models.init(m, jax.random.key(0), (1, 4))
    x = np.random.default_rng(0).uniform(size=(7, 4)).astype(np.float32)
    layers = verify.dense_layers(v)
    np.testing.assert_allclose(verify.forward(layers, x), np.asarray(m.apply(v, x)), atol=1e-5)
    with pytest.raises(ValueError, match="ReLU"):
        verify.dense_layers(v, act="softplus")


@pytest.mark.parametrize("p", [np.inf, 1])
def test_milp_linear_model_closed_form(p):
    """Linear model, box far away: min over t of (f_c - f_t)(x) / ||w_c - w_t||_q, q dual to p."""
    layers = random_net(1, [5, 3], bias=0.1)
    W, b = layers[1].W, layers[1].b
    x = np.full(5, 0.5)
    out = x @ W + b
    c = int(np.argmax(out))
    q = 1 if p == np.inf else np.inf
    ref = min((out[c] - out[t]) / np.linalg.norm(W[:, c] - W[:, t], ord=q) for t in range(3) if t != c)
    res = verify.min_adversarial_milp(layers, x, c, p=p, box=Box(-10.0, 10.0))
    assert res.status == "optimal"
    np.testing.assert_allclose(res.distance, ref, rtol=1e-6)


@pytest.mark.parametrize("p", [np.inf, 1])
def test_milp_certificate_holds(p):
    """On tiny random ReLU nets: the minimizer is (on) the boundary, within the reported distance; just
    below the optimum the MILP proves infeasibility; no sampled point in that ball is adversarial."""
    checked = 0
    for seed in range(6):
        layers = random_net(seed, [6, 10, 10, 3])
        x = inner_points(6, seed)[0]
        c = int(np.argmax(verify.forward(layers, x[None])))
        res = verify.min_adversarial_milp(layers, x, c, p=p, time_limit=20)
        if res.status == "infeasible":     # this net has no other class in the box
            continue
        assert res.status == "optimal"
        assert res.lower_bound <= res.distance <= res.upper_bound + 1e-12
        assert margin(layers, res.x_adv, c) >= -1e-6
        np.testing.assert_allclose(np.linalg.norm(res.x_adv - x, ord=p), res.distance, rtol=1e-6)
        assert np.all(res.x_adv >= 0) and np.all(res.x_adv <= 1)
        below = verify.min_adversarial_milp(layers, x, c, p=p, max_distance=0.995 * res.distance)
        assert below.status == "infeasible"
        above = verify.min_adversarial_milp(layers, x, c, p=p, max_distance=1.01 * res.distance)
        assert above.status == "optimal"
        np.testing.assert_allclose(above.distance, res.distance, rtol=1e-5)
        # soundness by sampling: random points in the ball of radius 0.99 * optimum keep the label
        rng = np.random.default_rng(seed)
        r = 0.99 * res.distance
        if p == np.inf:
            delta = rng.uniform(-r, r, size=(4000, 6))
        else:
            e = rng.exponential(size=(4000, 6)) * rng.choice([-1, 1], size=(4000, 6))
            delta = r * e / np.sum(np.abs(e), 1, keepdims=True) * rng.uniform(size=(4000, 1)) ** (1 / 6)
        z = np.clip(x + delta, 0, 1)
        assert np.all(np.argmax(verify.forward(layers, z), 1) == c)
        checked += 1
    assert checked >= 3


def test_milp_time_limit_reports_proved_bounds():
    layers = random_net(0, [40, 60, 60, 10], bias=0.1)
    x = np.random.default_rng(0).uniform(0.2, 0.8, size=40)
    c = int(np.argmax(verify.forward(layers, x[None])))
    res = verify.min_adversarial_milp(layers, x, c, p=np.inf, time_limit=0.05)
    assert res.status in ("time_limit", "optimal")
    assert 0.0 <= res.lower_bound <= res.upper_bound
    if res.x_adv is not None:
        assert margin(layers, res.x_adv, c) >= -1e-6
        np.testing.assert_allclose(np.max(np.abs(res.x_adv - x)), res.upper_bound, rtol=1e-6)


def test_milp_misclassified_and_errors():
    layers = random_net(2, [4, 6, 3])
    x = np.full(4, 0.5)
    c = int(np.argmax(verify.forward(layers, x[None])))
    res = verify.min_adversarial_milp(layers, x, (c + 1) % 3, p=np.inf)
    assert res.status == "misclassified" and res.distance == 0.0
    with pytest.raises(ValueError, match="p = inf and p = 1"):
        verify.min_adversarial_milp(layers, x, c, p=2)
    with pytest.raises(ValueError, match="outside the box"):
        verify.min_adversarial_milp(layers, x + 1.0, c, p=np.inf)
    with pytest.raises(ValueError, match="2-D"):
        verify.min_adversarial_l2_2d(layers, x, c)


def test_l2_2d_linear_closed_form():
    layers = random_net(3, [2, 4], bias=0.2)
    W, b = layers[1].W, layers[1].b
    x = np.array([0.1, -0.2])
    out = x @ W + b
    c = int(np.argmax(out))
    ref = min((out[c] - out[t]) / np.linalg.norm(W[:, c] - W[:, t]) for t in range(4) if t != c)
    res = verify.min_adversarial_l2_2d(layers, x, c, box=Box(-100.0, 100.0))
    np.testing.assert_allclose(res.distance, ref, rtol=1e-9)
    assert res.n_regions == 1


def test_l2_2d_matches_dense_grid():
    """Exact region walk vs a 601 x 601 grid of the box (the grid can only be farther, by < its spacing)."""
    g = np.stack(np.meshgrid(np.linspace(0, 1, 601), np.linspace(0, 1, 601)), -1).reshape(-1, 2)
    compared = 0
    for seed in range(4):
        layers = random_net(seed, [2, 8, 8, 3])
        pred = np.argmax(verify.forward(layers, g), 1)
        for x in np.random.default_rng(seed).uniform(size=(3, 2)):
            c = int(np.argmax(verify.forward(layers, x[None])))
            res = verify.min_adversarial_l2_2d(layers, x, c)
            other = pred != c
            if not other.any():
                assert not np.isfinite(res.distance)
                continue
            grid = np.min(np.linalg.norm(g[other] - x, axis=1))
            assert res.distance <= grid + 1e-9
            assert grid - res.distance <= np.sqrt(2) / 600
            assert margin(layers, res.x_adv, c) >= -1e-9
            np.testing.assert_allclose(np.linalg.norm(res.x_adv - x), res.distance, rtol=1e-9)
            compared += 1
    assert compared >= 6


def test_bad_inputs_are_value_errors():
    """NaN inputs, labels outside the classes, inverted boxes, non-chain or unsupported graphs: ValueError,
    never a silent 'misclassified' or a wrong distance."""
    layers = random_net(2, [4, 6, 3])
    x = np.full(4, 0.5)
    c = int(np.argmax(verify.forward(layers, x[None])))
    with pytest.raises(ValueError, match="NaN"):
        verify.min_adversarial_milp(layers, np.where(np.arange(4) == 1, np.nan, x), c, p=np.inf)
    with pytest.raises(ValueError, match="label"):
        verify.min_adversarial_milp(layers, x, 3, p=np.inf)
    with pytest.raises(ValueError, match="label"):
        verify.min_adversarial_milp(layers, x, -1, p=1)
    with pytest.raises(ValueError, match="lo <= hi"):
        verify.min_adversarial_milp(layers, x, c, p=np.inf, box=Box(0.6, 0.4))
    with pytest.raises(ValueError, match="label"):
        verify.min_adversarial_l2_2d(random_net(2, [2, 6, 3]), np.full(2, 0.5), 7)
    with pytest.raises(ValueError, match="labels must have shape"):
        verify.min_adversarial_milp_batch(layers, np.full((3, 4), 0.5), [0, 1], processes=1)
    with pytest.raises(ValueError, match="time_limit"):
        verify.min_adversarial_milp(layers, x, c, p=np.inf, time_limit=-1)
    m = models.build("lenet", features=(2, 2), hidden=4)
    graph = network.trace(models.logits_fn(m, models.init(m, jax.random.key(0), (1, 8, 8, 1))), (8, 8, 1))
    with pytest.raises(ValueError, match="Conv"):
        verify.min_adversarial_milp(graph, np.full(64, 0.5), 0, p=np.inf)
    assert verify.min_adversarial_milp_batch(layers, np.zeros((0, 4)), np.zeros(0, int), processes=1) == []


def test_traced_flax_mlp_is_the_same_network():
    """The graph traced from a Flax ReLU MLP and `dense_layers` of its variables give the same logits and the
    same MILP optimum; `region_affine` reproduces the logits on the region of its point."""
    m = models.build("mlp", widths=(8, 6), act="relu", num_classes=3)
    v = models.init(m, jax.random.key(1), (1, 5))
    traced = network.trace(models.logits_fn(m, v), (5,))
    layers = verify.dense_layers(v)
    x = inner_points(5, 3, n=20)
    np.testing.assert_allclose(verify.forward(traced, x), verify.forward(layers, x), rtol=1e-5, atol=1e-6)
    c = int(np.argmax(verify.forward(layers, x[:1])))
    a = verify.min_adversarial_milp(layers, x[0], c, p=np.inf, time_limit=20)
    b = verify.min_adversarial_milp(traced, x[0], c, p=np.inf, time_limit=20)
    assert a.status == b.status
    np.testing.assert_allclose(a.distance, b.distance, rtol=1e-4)
    S, s0, F, f0 = verify.region_affine(layers, x[0])
    sig = np.sign(x[0] @ S + s0)
    near = x[0] + 1e-3 * np.random.default_rng(0).normal(size=(50, 5))
    same = np.all(np.sign(near @ S + s0) == sig, axis=1)
    assert same.sum() >= 10
    np.testing.assert_allclose(near[same] @ F + f0, verify.forward(layers, near[same]), rtol=1e-10, atol=1e-10)


def test_milp_tightened_bounds_contain_every_sampled_value_and_tighten_crown():
    """tighten_bounds_milp's bounds of a hidden layer lie inside CROWN's, contain the layer's value at every
    sampled input of the box, and with time to prove optimality equal the sampled extremes' envelope from
    outside (no unit's bound is looser than CROWN's, some are tighter)."""
    layers = random_net(5, [6, 24, 24, 24, 3], bias=0.3)
    x = np.full(6, 0.5)
    lo, hi = x - 0.25, x + 0.25
    bounds = verify.layer_bounds(layers, x, lo, hi)
    k = [i for i, l in enumerate(layers) if isinstance(l, network.ReLU)][2] - 1
    L, U = verify.tighten_bounds_milp(layers, lo, hi, bounds, k, time_limit=10.0)
    assert np.all(L >= bounds[k][0]) and np.all(U <= bounds[k][1])
    pts = np.random.default_rng(0).uniform(lo, hi, (20000, 6))
    h = pts
    for layer in layers[:k + 1]:
        h = verify.forward([layer], h)
    assert np.all(h >= L[None] - 1e-9) and np.all(h <= U[None] + 1e-9)
    assert np.sum(L > bounds[k][0] + 1e-6) + np.sum(U < bounds[k][1] - 1e-6) > 0, "MILP tightened nothing"
