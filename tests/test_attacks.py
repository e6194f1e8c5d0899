"""Attacks: one call shape and one matrix of invariants over every attack (minimal and budget, l_p and
spatial, per-example boxes, empty batches, the same key), exact distances on affine classifiers (closed
form with the box inactive, an exact float64 solver where the box binds), successes that hold in float64,
input errors, projections, plots, and Foolbox 3 as an independent implementation on the same model and
points."""
from __future__ import annotations

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import losses
from robustjax.attacks import (Box, adversarial_training, apgd, apgd_targeted, best_of, cw, ddn, deepfool, fab,
                               fab_targeted, finalize, keep_best, linearized, lp_norm, pgd, pgd_minimal,
                               plot_adversarial_examples, plot_robust_accuracy, region, spatial_first_order,
                               spatial_grid, square)
from robustjax.attacks import steps as S
from robustjax.attacks.result import default_min_margin
from robustjax.geometry import as_box, dual

INF = np.inf


# ------------------------------------------------------------------------------- helpers

def linear_model(d=64, k=5, scale=0.3, seed=0, bias=0.1):
    w = np.asarray(jax.random.normal(jax.random.key(seed), (d, k))) * scale
    b = np.asarray(jax.random.normal(jax.random.key(seed + 1), (k,))) * bias
    wj, bj = jnp.asarray(w), jnp.asarray(b)
    return (lambda x: x.reshape(x.shape[0], -1) @ wj + bj), w, b


def _bisect_scale(fun, m, iters=200):
    """Smallest s >= 0 with fun(s) >= m for a non-decreasing fun (None if unreachable)."""
    lo, hi = 0.0, 1.0
    while fun(hi) < m and hi < 1e8:
        hi *= 2
    if fun(hi) < m:
        return None
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if fun(mid) >= m else (mid, hi)
    return hi


def linear_exact(w, b, x, c, p, lo, hi):
    """Exact min ||delta||_p with argmax (x + delta) @ w + b != c and lo <= x + delta <= hi, float64.

    Per class j: the halfspace a.delta >= m (a = w_j - w_c, m = f_c - f_j). With box constraints the
    minimizers are delta = clip(s a) (p = 2), clip(s sign a) (p = inf) and the greedy fill of the
    coordinates with largest |a_i| up to their box capacity (p = 1). The answer is the min over j.
    """
    x = np.asarray(x, np.float64).ravel()
    f = x @ w + b
    lo_d, hi_d = lo - x, hi - x
    best = np.inf
    for j in range(w.shape[1]):
        if j == c:
            continue
        a, m = w[:, j] - w[:, c], f[c] - f[j]
        if p == 2:
            s = _bisect_scale(lambda t: a @ np.clip(t * a, lo_d, hi_d), m)
            d = None if s is None else np.linalg.norm(np.clip(s * a, lo_d, hi_d))
        elif p == INF:
            d = _bisect_scale(lambda t: a @ np.clip(t * np.sign(a), lo_d, hi_d), m)
        else:
            cap = np.where(a > 0, hi_d, -lo_d)
            total, d = 0.0, 0.0
            for i in np.argsort(-np.abs(a)):
                gain = abs(a[i]) * cap[i]
                if total + gain >= m:
                    d, total = d + (m - total) / abs(a[i]), m
                    break
                total, d = total + gain, d + cap[i]
            d = d if total >= m else None
        if d is not None:
            best = min(best, d)
    return best


def closed_form(w, b, x, c, p):
    """Box inactive: min_j |f_c - f_j| / ||w_c - w_j||_q (Theorem 2.1 for affine f)."""
    f = np.asarray(x, np.float64).reshape(-1) @ w + b
    q = {1: INF, 2: 2, INF: 1}[p]
    return min(abs(f[c] - f[j]) / np.linalg.norm(w[:, c] - w[:, j], ord=q) for j in range(w.shape[1]) if j != c)


# attack name -> (function, norms, options used in the tests)
ATTACKS = {
    "deepfool": (deepfool, (2, INF), dict(overshoot=1e-4)),
    "cw": (cw, (2,), dict(steps=300, binary_search_steps=8, initial_const=0.1)),
    "ddn": (ddn, (2,), dict(steps=200, loss="margin")),
    "pgd_minimal": (pgd_minimal, (1, 2, INF), dict(steps=50, search_steps=14)),
}
MATRIX = [(name, p) for name, (_, norms, _) in ATTACKS.items() for p in norms]


def check_result(r, f, x, labels, p, box=None, eps=None):
    """The invariants every AttackResult must satisfy (p None: a spatial result, distance in [0, 1])."""
    x, labels = np.asarray(x), np.asarray(labels)
    n = x.shape[0]
    box = as_box(box, x)
    for field in ("distance", "success", "label_adv", "model_calls", "time_s"):
        assert getattr(r, field).shape == (n,), field
    assert r.x_adv.shape == x.shape
    assert r.p == (None if p is None else float(p))
    if n == 0:
        return
    assert np.all(r.x_adv >= box.lo) and np.all(r.x_adv <= box.hi), "x_adv left the box"
    logits_adv = f(jnp.asarray(r.x_adv))
    pred_adv = np.asarray(jnp.argmax(logits_adv, -1))
    pred_clean = np.asarray(jnp.argmax(f(jnp.asarray(x)), -1))
    np.testing.assert_array_equal(r.label_adv, pred_adv)
    # success <=> misclassified at x_adv, re-checked here in another batch: still adversarial
    assert np.all(pred_adv[r.success] != labels[r.success]), "an invalid example was returned as adversarial"
    if p is None:
        assert np.all((r.distance[r.success] >= 0) & (r.distance[r.success] <= 1 + 1e-6))
    else:
        dist = np.asarray(lp_norm(jnp.asarray(r.x_adv - x), p))
        np.testing.assert_allclose(r.distance[r.success], dist[r.success], rtol=1e-5, atol=1e-6)
    assert np.all(np.isinf(r.distance[~r.success]))
    np.testing.assert_array_equal(r.x_adv[~r.success], x[~r.success])
    # misclassified inputs: distance 0, x_adv = x
    wrong = pred_clean != labels
    assert np.all(r.success[wrong]) and np.all(r.distance[wrong] == 0)
    np.testing.assert_array_equal(r.x_adv[wrong], x[wrong])
    np.testing.assert_array_equal(r.misclassified, wrong)
    assert np.all(r.distance[~wrong] > 0)
    if eps is not None:
        assert np.all(r.distance[r.success] <= eps * (1 + 1e-5) + 1e-6)
    assert np.all(r.model_calls >= 0) and np.all(np.isfinite(r.time_s))


# ------------------------------------------------------------ one call shape, every attack

# name -> (attack, p, options): minimal attacks take (logits_fn, x, labels, *, p, key, box), budget attacks
# also eps; options keep each case to a fraction of a second on a tiny net
EVERY = {
    "deepfool-l2": (deepfool, 2, {}),
    "deepfool-linf": (deepfool, INF, {}),
    "cw-l2": (cw, 2, dict(steps=30, binary_search_steps=3, initial_const=1.0, learning_rate=0.05)),
    "ddn-l2": (ddn, 2, dict(steps=30)),
    "pgd_minimal-l1": (pgd_minimal, 1, dict(steps=10, search_steps=5)),
    "pgd_minimal-l2": (pgd_minimal, 2, dict(steps=10, search_steps=5)),
    "pgd_minimal-linf": (pgd_minimal, INF, dict(steps=10, search_steps=5)),
    "pgd-l2": (pgd, 2, dict(eps=0.5, steps=10, restarts=2)),
    "pgd-linf": (pgd, INF, dict(eps=0.15, steps=10)),
    "linearized-l2": (linearized, 2, dict(n_grow=6, n_bisect=4)),
    "region-l2": (region, 2, dict(n_regions=2)),
    "spatial_grid": (spatial_grid, None, dict(num_angles=5, num_shifts=3, max_shift=1.0)),
    "spatial_first_order": (spatial_first_order, None, dict(num_steps=3, restarts=1, line_search=2, max_shift=1.0)),
    "apgd-linf": (apgd, INF, dict(eps=0.15, steps=10)),
    "apgd-l2": (apgd, 2, dict(eps=0.5, steps=10, loss="dlr")),
    "apgd_targeted-linf": (apgd_targeted, INF, dict(eps=0.15, steps=10, n_targets=2)),
    "square-linf": (square, INF, dict(eps=0.15, n_queries=30)),
    "square-l2": (square, 2, dict(eps=0.5, n_queries=30)),
    "fab-l1": (fab, 1, dict(steps=10)),
    "fab-linf": (fab, INF, dict(steps=10, restarts=2)),
    "fab_targeted-l2": (fab_targeted, 2, dict(steps=10, n_targets=2)),
}


@pytest.fixture(scope="module")
def tiny_images():
    """A ReLU net on 4x4x1 images (4 classes), 10 images, the first two labels wrong, and one box per
    example: a different radius around each image, and one pixel frozen (lo = hi = x) in every box."""
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    w1 = jax.random.normal(k1, (16, 24)) / 4.0
    b1 = 0.1 * jax.random.normal(k2, (24,))
    w2 = jax.random.normal(k3, (24, 4)) / np.sqrt(24)
    f = jax.jit(lambda z: jax.nn.relu(z.reshape(z.shape[0], -1) @ w1 + b1) @ w2)
    x = np.array(jax.random.uniform(jax.random.key(4), (10, 4, 4, 1)))
    y = np.array(jnp.argmax(f(jnp.asarray(x)), -1))
    y[:2] = (y[:2] + 1) % 4
    r = (0.2 + 0.05 * np.arange(10))[:, None, None, None]
    lo, hi = np.clip(x - r, 0, 1), np.clip(x + r, 0, 1)
    lo[:, 1, 2], hi[:, 1, 2] = x[:, 1, 2], x[:, 1, 2]
    return f, jnp.asarray(x), jnp.asarray(y), Box(lo, hi)


@pytest.mark.parametrize("name", list(EVERY))
def test_every_attack_one_call_shape_and_the_invariants(name, tiny_images):
    """Every attack in the documented call shape, with one box per example: inside that box exactly (the
    frozen pixel untouched), every success re-verified with the model, failures at distance inf with
    x_adv = x, misclassified inputs at distance 0, the same key giving the same result, an empty batch
    an empty result, and (lo, hi) tuples accepted as boxes."""
    f, x, y, box = tiny_images
    attack, p, opts = EVERY[name]
    key = jax.random.key(5)
    r = attack(f, x, y, p=p, key=key, box=box, **opts)
    check_result(r, f, x, y, p, box, eps=opts.get("eps"))
    np.testing.assert_array_equal(r.x_adv[:, 1, 2], np.asarray(x)[:, 1, 2])
    assert r.success.sum() > 2, "nothing found beyond the misclassified inputs"
    again = attack(f, x, y, p=p, key=key, box=(box.lo, box.hi), **opts)
    np.testing.assert_array_equal(r.x_adv, again.x_adv)
    np.testing.assert_array_equal(r.distance, again.distance)
    empty = attack(f, x[:0], y[:0], p=p, key=key, **opts)
    check_result(empty, f, x[:0], y[:0], p)
    assert empty.x_adv.shape == (0, 4, 4, 1)


def test_per_pixel_box_and_unit_default(tiny_images):
    """A box of one example's shape broadcasts over the batch; pixels with lo = hi never move."""
    f, x, y, _ = tiny_images
    lo, hi = np.zeros((4, 4, 1), np.float32), np.ones((4, 4, 1), np.float32)
    lo[0], hi[0] = 0.5, 0.5                 # the first row of every image pinned to 0.5
    xp = jnp.asarray(np.asarray(x)).at[:, 0].set(0.5)
    for name in ("deepfool-l2", "pgd_minimal-linf", "cw-l2"):
        attack, p, opts = EVERY[name]
        r = attack(f, xp, y, p=p, key=jax.random.key(0), box=Box(lo, hi), **opts)
        check_result(r, f, xp, y, p, Box(lo, hi))
        assert np.all(r.x_adv[:, 0] == 0.5) and r.success.sum() > 2


@pytest.fixture(scope="module")
def mnist_points(relu_mlp_mnist, mnist_small):
    """24 test points; two labels replaced by a wrong class so that they count as misclassified."""
    _, (xte, yte) = mnist_small
    x, y = jnp.asarray(xte[:24]), np.array(yte[:24])
    pred = np.asarray(jnp.argmax(relu_mlp_mnist.logits_fn(x), -1))
    y[:2] = (pred[:2] + 1) % 10
    return jax.jit(relu_mlp_mnist.logits_fn), x, jnp.asarray(y)


# -------------------------------------------------------------------------------- matrix

@pytest.mark.parametrize("name,p", MATRIX, ids=[f"{a}-l{p}" for a, p in MATRIX])
def test_matrix_invariants_on_mnist(name, p, mnist_points):
    f, x, y = mnist_points
    attack, _, _ = ATTACKS[name]
    fast = {"cw": dict(steps=60, binary_search_steps=4, initial_const=1.0, learning_rate=0.05), "ddn": dict(steps=60),
            "pgd_minimal": dict(steps=20, search_steps=8), "deepfool": {}}[name]
    r = attack(f, x, y, p=p, key=jax.random.key(0), **fast)
    check_result(r, f, x, y, p, Box())
    assert r.success.mean() > 0.8, f"{name} l{p} found too few adversarial examples"
    r2 = attack(f, x, y, p=p, key=jax.random.key(0), **fast)
    np.testing.assert_array_equal(r.x_adv, r2.x_adv)      # the same key gives the same result


def _tiny_relu_net(key, d=12, h=16, k=4):
    k1, k2, k3 = jax.random.split(key, 3)
    w1 = jax.random.normal(k1, (d, h)) / np.sqrt(d)
    b1 = 0.1 * jax.random.normal(k2, (h,))
    w2 = jax.random.normal(k3, (h, k)) / np.sqrt(h)
    return jax.jit(lambda x: jax.nn.relu(x.reshape(x.shape[0], -1) @ w1 + b1) @ w2)


@pytest.mark.parametrize("name,p", MATRIX, ids=[f"{a}-l{p}" for a, p in MATRIX])
def test_never_invalid_over_seeds(name, p):
    """A random ReLU net, five seeds of inputs, labels and keys: every result passes the
    invariants (in the box, the reported distance is that of x_adv, every success really
    misclassified, inf otherwise, misclassified inputs at distance 0)."""
    attack, _, _ = ATTACKS[name]
    opts = {"cw": dict(steps=40, binary_search_steps=3, initial_const=1.0, learning_rate=0.05),
            "ddn": dict(steps=40), "pgd_minimal": dict(steps=10, search_steps=6), "deepfool": {}}[name]
    f = _tiny_relu_net(jax.random.key(0))
    for seed in range(5):
        k = jax.random.key(seed)
        x = jax.random.uniform(jax.random.fold_in(k, 1), (16, 12))
        y = jax.random.randint(jax.random.fold_in(k, 2), (16,), 0, 4)   # some already misclassified
        r = attack(f, x, y, p=p, key=k, **opts)
        check_result(r, f, x, y, p, Box())


@pytest.mark.parametrize("p", [1, 2, INF])
def test_fixed_eps_pgd_invariants(p, mnist_points):
    f, x, y = mnist_points
    eps = {1: 8.0, 2: 1.0, INF: 0.08}[p]
    r1 = pgd(f, x, y, p=p, eps=eps, key=jax.random.key(0), steps=20, restarts=2)
    check_result(r1, f, x, y, p, Box(), eps=eps)
    r2 = pgd(f, x, y, p=p, eps=eps, key=jax.random.key(0), steps=20, restarts=2)
    np.testing.assert_array_equal(r1.x_adv, r2.x_adv)         # same key, same result
    # a larger radius breaks at least as many points, eps = 0 only the misclassified ones
    r0 = pgd(f, x, y, p=p, eps=0.0, key=jax.random.key(0), steps=20, restarts=2)   # same compiled program
    wrong = np.asarray(jnp.argmax(f(x), -1)) != np.asarray(y)
    np.testing.assert_array_equal(r0.success, wrong)
    assert np.all(r0.distance[r0.success] == 0)
    rbig = pgd(f, x, y, p=p, eps=2 * eps, key=jax.random.key(0), steps=20, restarts=2)
    assert rbig.success.sum() >= r1.success.sum()


def test_minimal_attacks_agree_and_best_of(mnist_points):
    f, x, y = mnist_points
    rs = [a(f, x, y, p=2, key=jax.random.key(0), **o) for a, o in
          ((deepfool, {}), (ddn, dict(steps=60)), (pgd_minimal, dict(steps=20, search_steps=8)))]
    best = best_of(rs)
    assert np.all(best.distance <= np.min([r.distance for r in rs], axis=0))
    ok = np.all([r.success for r in rs], axis=0) & (best.distance > 0)
    # strong attacks land near each other on a small ReLU net (within a factor 1.5 in the median)
    for r in rs:
        assert np.median(r.distance[ok] / best.distance[ok]) < 1.5, r.method


# ----------------------------------------------------------------------- exact distances

@pytest.mark.parametrize("name,p", MATRIX, ids=[f"{a}-l{p}" for a, p in MATRIX])
def test_linear_exact_box_inactive(name, p):
    """Box far away: every attack reaches the closed form |f_c - f_j| / ||w_c - w_j||_q."""
    f, w, b = linear_model()
    x = 0.5 + 0.05 * jax.random.normal(jax.random.key(7), (12, 8, 8, 1))
    y = jnp.argmax(f(x), -1)
    box = Box(-3.0, 4.0)      # l1 distances here stay below 2, so no coordinate reaches the box
    attack, _, opts = ATTACKS[name]
    r = attack(f, x, y, p=p, key=jax.random.key(0), box=box, **opts)
    exact = np.array([closed_form(w, b, x[i], int(y[i]), p) for i in range(len(y))])
    assert r.success.all()
    assert np.all(r.distance >= exact * (1 - 1e-4)), "an attack beat the exact minimum"
    np.testing.assert_allclose(r.distance, exact, rtol=5e-3)


@pytest.mark.parametrize("name,p", MATRIX, ids=[f"{a}-l{p}" for a, p in MATRIX])
def test_linear_exact_box_active(name, p):
    """Inputs near the corners of [0, 1]: the box binds; compare with the exact float64 solver.

    The problem is a union of one convex set per class, so a gradient attack may settle on a class
    that is not the closest once the box binds: most (not all) rows must reach the optimum."""
    f, w, b = linear_model(scale=0.05, seed=3, bias=1.0)
    u = jax.random.uniform(jax.random.key(8), (12, 64))
    x = jnp.where(u < 0.5, 0.02 * u, 1 - 0.02 * u)
    y = jnp.argmax(f(x), -1)
    attack, _, opts = ATTACKS[name]
    r = attack(f, x, y, p=p, key=jax.random.key(0), **opts)
    exact = np.array([linear_exact(w, b, np.asarray(x[i]), int(y[i]), p, 0.0, 1.0) for i in range(len(y))])
    free = np.array([closed_form(w, b, x[i], int(y[i]), p) for i in range(len(y))])
    assert np.median(exact / free) > 1.05, "the box should matter in this case"
    assert r.success.all()
    assert np.all(r.distance >= exact * (1 - 1e-4)), "an attack beat the exact minimum"
    ratio = r.distance / exact
    assert np.median(ratio) < 1.01 and np.mean(ratio < 1.02) >= 0.75, np.round(ratio, 4)


# ----------------------------------------------------------------------------- bad input

def test_errors_and_warnings(mnist_points):
    f, x, y = mnist_points
    x, y = x[:4], y[:4]
    key = jax.random.key(0)
    probs = lambda z: jax.nn.softmax(f(z))  # noqa: E731
    with pytest.warns(UserWarning, match="probabilities"):   # the shared check_inputs warns for all
        deepfool(probs, x, y, p=2, steps=2)
    for attack, p in ((deepfool, 2), (cw, 2), (ddn, 2), (pgd_minimal, INF), (pgd_minimal, 1), (linearized, 2)):
        with pytest.raises(ValueError, match="NaN"):
            attack(f, x.at[0, 0, 0, 0].set(jnp.nan), y, p=p, key=key)
        with pytest.raises(ValueError, match="outside the box"):
            attack(f, x + 1.5, y, p=p, key=key)
        with pytest.raises(ValueError, match="lo <= hi"):          # not "x outside the box"
            attack(f, x, y, p=p, key=key, box=Box(1.0, 0.0))
        with pytest.raises(ValueError, match="box.lo has shape"):
            attack(f, x, y, p=p, key=key, box=Box(np.zeros((3, 3)), 1.0))
    with pytest.raises(ValueError, match="p = 2 or inf"):
        deepfool(f, x, y, p=1)
    with pytest.raises(ValueError, match="p = 2"):
        cw(f, x, y, p=INF)
    with pytest.raises(ValueError, match="p must be 1, 2 or inf"):
        pgd(f, x, y, p=3, eps=0.1, key=key)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        pgd(f, x, y, p=2, eps=-1.0, key=key)
    with pytest.raises(ValueError, match="restarts must be > 0"):      # restarts counts PGD runs
        pgd(f, x, y, p=2, eps=10.0, key=key, restarts=0)
    for attack, kw in ((pgd, dict(eps=0.1)), (pgd_minimal, {}), (spatial_first_order, {})):
        with pytest.raises(ValueError, match="key must be a jax.random key"):
            attack(f, x, y, p=None if attack is spatial_first_order else 2, key=None, **kw)
    with pytest.raises(ValueError, match="labels"):
        ddn(f, x, y[:2], p=2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        deepfool(f, x, y + 10, p=2)
    r2 = deepfool(f, x, y, p=2, steps=2)
    with pytest.raises(ValueError, match="results must be on the same points"):
        best_of([r2, deepfool(f, x[:2], y[:2], p=2, steps=2)])
    nan_model = lambda z: f(z) * jnp.nan  # noqa: E731
    with pytest.raises(ValueError, match="NaN"):
        deepfool(nan_model, x, y, p=2)


def test_a_model_failing_on_x_is_named():
    """A conv net initialized on images, given flat input: the attacks say logits_fn failed on x of that
    shape (not a flax traceback), with the model's own error chained."""
    class Net(nn.Module):
        @nn.compact
        def __call__(self, z):
            z = nn.relu(nn.Conv(4, (3, 3))(z))
            return nn.Dense(3)(z.reshape(z.shape[0], -1))
    net = Net()
    params = net.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)))
    f = lambda z: net.apply(params, z)  # noqa: E731
    flat = jnp.full((2, 36), 0.5)
    for attack in (deepfool, spatial_grid):
        with pytest.raises(ValueError, match=r"logits_fn failed on x of shape \(2, 36\)") as err:
            attack(f, flat, jnp.zeros(2, jnp.int32), p=None if attack is spatial_grid else 2)
        assert err.value.__cause__ is not None


# --------------------------------------------------------------------------- projections

@pytest.mark.parametrize("p", [1, 2, INF])
def test_projections_onto_balls(p):
    key = jax.random.key(1)
    delta = jax.random.normal(key, (6, 30)) * jnp.arange(1, 7)[:, None]
    eps = jnp.array([0.0, 0.5, 1.0, 3.0, 100.0, 2.0])
    out = np.asarray(S.project_ball(p)(delta, eps), np.float64)
    norms = np.asarray(lp_norm(jnp.asarray(out), p))
    np.testing.assert_array_less(norms, np.asarray(eps) * (1 + 1e-5) + 1e-6)
    inside = np.asarray(lp_norm(delta, p)) <= np.asarray(eps)
    np.testing.assert_allclose(out[inside], np.asarray(delta)[inside], rtol=1e-6)
    if p == 1:   # Euclidean projection: soft-thresholding with the theta found by float64 bisection
        for i in np.where(~inside)[0]:
            v = np.asarray(delta[i], np.float64)
            lo, hi = 0.0, np.abs(v).max()
            for _ in range(200):
                th = 0.5 * (lo + hi)
                lo, hi = (th, hi) if np.maximum(np.abs(v) - th, 0).sum() > float(eps[i]) else (lo, th)
            ref = np.sign(v) * np.maximum(np.abs(v) - hi, 0)
            np.testing.assert_allclose(out[i], ref, atol=2e-5)


@pytest.mark.parametrize("p", [1, 2, INF])
def test_steepest_ascent_steps(p):
    g = jax.random.normal(jax.random.key(2), (5, 40))
    s = np.asarray(S.steepest(g, p, sparsity=1 - 1 / 40))
    np.testing.assert_allclose(np.asarray(lp_norm(jnp.asarray(s), p)), 1.0, rtol=1e-5)
    # <g, s> = ||g||_q, the dual norm: s is the steepest direction of unit lp norm
    q = dual(p)
    np.testing.assert_allclose(np.sum(np.asarray(g) * s, -1), np.asarray(lp_norm(g, q)), rtol=1e-5)
    zero = S.steepest(jnp.zeros((2, 40)), p, 0.99)
    assert not np.any(np.isnan(np.asarray(zero)))


def test_line_search_and_margin():
    f, w, b = linear_model()
    x = 0.5 + 0.05 * jax.random.normal(jax.random.key(7), (6, 64))
    y = jnp.argmax(f(x), -1)
    far = deepfool(f, x, y, p=2, overshoot=1.0, box=Box(-3.0, 4.0))
    ls = S.line_search(f, x, y, jnp.asarray(far.x_adv), jnp.asarray(far.success), 30)
    d = np.asarray(lp_norm(ls.x_adv - x, 2))
    assert np.all(d < far.distance) and np.all(np.asarray(S.is_adversarial(f(ls.x_adv), y)))
    exact = np.array([closed_form(w, b, x[i], int(y[i]), 2) for i in range(6)])
    np.testing.assert_allclose(d, exact, rtol=2e-4)
    logits = jnp.array([[1.0, 3.0, 2.0]])
    np.testing.assert_allclose(losses.margin(logits=logits, labels=jnp.array([1])), [-1.0])   # misclassified > 0
    np.testing.assert_allclose(losses.get("margin")(logits=logits, labels=jnp.array([0])), [2.0])


# ----------------------------------------------------------------- adversarial training

def test_adversarial_training_term(relu_mlp_mnist, mnist_small):
    (xtr, ytr), _ = mnist_small
    model, variables = relu_mlp_mnist.model, relu_mlp_mnist.variables
    apply = lambda params, z: model.apply({**variables, "params": params}, z)  # noqa: E731
    x, y = jnp.asarray(xtr[:32]), jnp.asarray(ytr[:32])
    term = adversarial_training(1.0, p=INF, eps=0.1, steps=3)
    value, grads = jax.jit(jax.value_and_grad(lambda prm: term(prm, x, y, apply_fn=apply, key=jax.random.key(0))))(
        variables["params"])
    clean = float(jnp.mean(losses.get("cross_entropy")(logits=apply(variables["params"], x), labels=y)))
    assert np.isfinite(float(value)) and float(value) > clean    # the adversarial loss is larger
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
    weak = adversarial_training(1.0, p=INF, eps=0.0, steps=3)     # eps = 0: the clean loss, exactly
    np.testing.assert_allclose(float(weak(variables["params"], x, y, apply_fn=apply, key=jax.random.key(0))), clean,
                               rtol=1e-5)


# --------------------------------------------------------------------------------- plots

def test_plots(mnist_points, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    f, x, y = mnist_points
    rs = [deepfool(f, x, y, p=2), deepfool(f, x, y, p=INF),
          pgd_minimal(f, x, y, p=1, key=jax.random.key(0), steps=20, search_steps=8)]   # compiled by the matrix
    fig = plot_robust_accuracy({"deepfool": rs[0], "best": best_of([rs[0]])})
    fig.savefig(tmp_path / "curve.png")
    fig2 = plot_adversarial_examples(x, y, [rs[2], rs[0], rs[1]], indices=(2, 3))
    titles = [a.get_title() for a in fig2.axes]
    assert "l1 perturbation" in titles[1] and "linf perturbation" in titles[7]
    assert len(fig2.axes) == 2 * 3 * 3
    fig2.savefig(tmp_path / "examples.png")
    assert (tmp_path / "examples.png").stat().st_size > 1000


# ------------------------------------------------------- Foolbox 3 as a second implementation

def test_matches_foolbox_deepfool_and_cw(mnist_points):
    """Foolbox 3.3 (EagerPy over JAX) DeepFool l2/l_inf and Carlini-Wagner l2 on the same model and
    points: same settings, same per-example distances (median ratio 1 within 1e-3)."""
    fb = pytest.importorskip("foolbox")
    f, x, y = mnist_points
    x, y = x[2:12], y[2:12]
    fmodel = fb.JAXModel(f, bounds=(0, 1))
    cases = [(fb.attacks.L2DeepFoolAttack(steps=50, overshoot=0.02), deepfool, 2, {}),
             (fb.attacks.LinfDeepFoolAttack(steps=50, overshoot=0.02), deepfool, INF, {}),
             (fb.attacks.L2CarliniWagnerAttack(binary_search_steps=2, steps=30, initial_const=1.0, stepsize=0.05,
                                               abort_early=False), cw, 2,
              dict(binary_search_steps=2, steps=30, initial_const=1.0, learning_rate=0.05, evaluate_last=False))]
    for fb_attack, ours, p, opts in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, clipped, success = fb_attack(fmodel, x, y, epsilons=None)
        d_fb = np.asarray(lp_norm(jnp.asarray(clipped) - x, p))
        ok_fb = np.asarray(success)
        r = ours(f, x, y, p=p, key=jax.random.key(0), **opts)
        both = ok_fb & r.success & (r.distance > 0)
        assert both.sum() >= 6
        ratio = r.distance[both] / d_fb[both]
        assert abs(np.median(ratio) - 1) < 1e-3, (type(fb_attack).__name__, ratio)
        if ours is cw:   # our default also checks the last Adam iterate of each c: never worse overall
            r2 = cw(f, x, y, p=2, **{**opts, "evaluate_last": True})
            assert np.median(r2.distance[both] / d_fb[both]) <= 1 + 1e-3


def test_finalize_pushes_unconfirmed_boundary_points_outward():
    """A candidate just short of the boundary (as when the model is evaluated at another precision than
    the attack's) is pushed out along x -> x_adv by the smallest factor that the model confirms."""
    f = lambda z: jnp.stack([z[:, 0] - z[:, 1], z[:, 1] - z[:, 0]], -1)   # noqa: E731  class 1 iff z1 > z0
    x = jnp.array([[0.6, 0.4], [0.7, 0.3], [0.5, 0.45]])
    labels = jnp.zeros(3, jnp.int32)
    x_adv = jnp.array([[0.5 + 2e-5, 0.5 - 2e-5],    # 1e-4 short: 1.0001 is not enough, 1.001 is
                       [0.3, 0.7],                  # adversarial already
                       [0.5, 0.45]])                # no candidate (x itself): stays a failure
    r = finalize(f, x, labels, x_adv, p=2)
    assert list(r.success) == [True, True, False] and np.isinf(r.distance[2])
    np.testing.assert_allclose(r.x_adv[0], x[0] + 1.001 * (x_adv[0] - x[0]), rtol=1e-6)
    np.testing.assert_allclose(r.distance[0], 1.001 * np.linalg.norm(x_adv[0] - x[0]), rtol=1e-5)
    assert int(np.argmax(f(jnp.asarray(r.x_adv[:1])))) == 1


def test_finalize_requires_the_margin_in_the_model_dtype():
    """success means argmax differs AND max_{j != y} f_j - f_y >= min_margin: a candidate a hair past the
    boundary (margin ~1e-7, adversarial only in this float32 evaluation) is pushed outward by default, taken
    as it is with min_margin=0, and refused where even the pushed points miss a large min_margin."""
    f = lambda z: jnp.stack([z[:, 0] - z[:, 1], z[:, 1] - z[:, 0]], -1)   # noqa: E731  class 1 iff z1 > z0
    x = jnp.array([[0.6, 0.4]])
    labels = jnp.zeros(1, jnp.int32)
    hair = jnp.array([[0.5 - 3e-8, 0.5 + 3e-8]], jnp.float32)
    assert float(losses.margin(logits=f(hair), labels=labels)[0]) > 0            # adversarial in float32
    assert float(losses.margin(logits=f(hair), labels=labels)[0]) < float(default_min_margin(f(hair))[0])
    exact = finalize(f, x, labels, hair, p=2, min_margin=0.0)
    np.testing.assert_array_equal(exact.x_adv, np.asarray(hair))
    r = finalize(f, x, labels, hair, p=2)
    assert r.success[0] and r.distance[0] > exact.distance[0]
    assert float(losses.margin(logits=f(jnp.asarray(r.x_adv)), labels=labels)[0]) >= \
        float(default_min_margin(f(jnp.asarray(r.x_adv)))[0])
    big = finalize(f, x, labels, hair, p=2, min_margin=0.5)
    assert not big.success[0] and np.isinf(big.distance[0])
    np.testing.assert_array_equal(big.x_adv, np.asarray(x))


def test_keep_best_takes_only_closer_valid_candidates():
    best_x, best_d = jnp.zeros((3, 2)), jnp.array([1.0, 1.0, jnp.inf])
    cand_x, cand_d = jnp.ones((3, 2)), jnp.array([0.5, 2.0, 3.0])
    ok = jnp.array([True, True, False])
    bx, bd = keep_best(best_x, best_d, cand_x, cand_d, ok)
    np.testing.assert_array_equal(bd, [0.5, 1.0, np.inf])
    np.testing.assert_array_equal(bx, [[1, 1], [0, 0], [0, 0]])


def _softplus_net(seed, sizes, alpha=10.0):
    """A random softplus (slope alpha) MLP on inputs rescaled from [0, 1] to [-2, 2]: the JAX float32
    logits_fn and the float64 numpy re-check use the same (float32-representable) weights."""
    rng = np.random.default_rng(seed)
    ws = [(rng.normal(size=(a, b)) / np.sqrt(a), 0.3 * rng.normal(size=b)) for a, b in zip(sizes[:-1], sizes[1:])]
    ws = [(w.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)) for w, b in ws]
    wj = [(jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)) for w, b in ws]

    def f(z):
        h = 4.0 * (z.reshape(z.shape[0], -1) - 0.5)
        for i, (w, b) in enumerate(wj):
            h = h @ w + b
            if i < len(wj) - 1:
                h = jax.nn.softplus(alpha * h) / alpha
        return h

    def f64(z):
        h = 4.0 * (np.asarray(z, np.float64).reshape(len(z), -1) - 0.5)
        for i, (w, b) in enumerate(ws):
            h = h @ w + b
            if i < len(ws) - 1:
                h = np.logaddexp(0.0, alpha * h) / alpha
        return h
    return jax.jit(f), f64


@pytest.mark.parametrize("name", ["cw-l2", "pgd_minimal-l1", "deepfool-l2", "ddn-l2"])
def test_successes_hold_in_float64(name):
    """Minimal attacks end on the boundary; with the default min_margin every success is still adversarial
    when the same net is re-evaluated in float64 (the small version of benchmarks/bench_attack_validity.py)."""
    attack, p, opts = EVERY[name]
    f, f64 = _softplus_net(1, (10, 12, 4))
    x = jax.random.uniform(jax.random.key(2), (40, 10))
    y = jnp.argmax(f(x), -1)
    r = attack(f, x, y, p=p, key=jax.random.key(0), **opts)
    assert r.success.sum() >= 30
    ok = r.success & ~r.misclassified
    logits = f64(r.x_adv[ok])
    assert np.all(np.argmax(logits, -1) != np.asarray(y)[ok])
