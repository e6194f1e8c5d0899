"""APGD, Square, FAB and the AutoAttack-style standard evaluation: FAB's exact hyperplane-box projections
against the ground floor's numpy step, FAB's distances against the exact minimum (closed form on affine
models, MILP on a small ReLU net), APGD at least as strong as PGD, the DLR losses, and the standard
evaluation's cascade, JSON record and warnings on masked gradients, probabilities and randomized models.
(The shared invariants of every attack run in tests/test_attacks.py, whose EVERY matrix lists these.)"""
from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import losses, verify
from robustjax.attacks import apgd, apgd_targeted, fab, fab_targeted, lp_norm, pgd, square, standard_evaluation
from robustjax.attacks.apgd import checkpoints, top_targets
from robustjax.batching import bucket
from robustjax.attacks.fab import project_hyperplane_box
from robustjax.attacks.square import fraction, phases, pseudo_gaussian
from robustjax.geometry import halfspace_box_step
from robustjax.network import Dense, Flatten, ReLU
from test_attacks import check_result, closed_form, linear_model

INF = np.inf


@pytest.fixture(scope="module")
def net():
    """A 16-24-4 ReLU net on 4x4x1 images (float32-representable weights, also as verify layers) and 32
    points it classifies as labelled."""
    rng = np.random.default_rng(0)
    w1 = (rng.normal(size=(16, 24)) / 4.0).astype(np.float32)
    b1 = (0.1 * rng.normal(size=24)).astype(np.float32)
    w2 = (rng.normal(size=(24, 4)) / np.sqrt(24)).astype(np.float32)
    b2 = np.zeros(4, np.float32)

    def logits(z):
        return jax.nn.relu(z.reshape(z.shape[0], -1) @ w1 + b1) @ w2 + b2
    x = jnp.asarray(rng.uniform(size=(32, 4, 4, 1)).astype(np.float32))
    y = jnp.argmax(logits(x), -1)
    layers = [Flatten(), Dense(w1.astype(np.float64), b1.astype(np.float64)), ReLU(),
              Dense(w2.astype(np.float64), b2.astype(np.float64))]
    return logits, jax.jit(logits), x, y, layers


# ----------------------------------------------------------------------------- pieces

def test_schedules_and_losses():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]     # p_j of the paper, times 100
    assert fraction(0.8, 5, 10000) == 0.8 and fraction(0.8, 11, 10000) == 0.4
    assert fraction(0.8, 9000, 10000) == 0.8 / 512
    assert fraction(0.8, 100, 1000) == fraction(0.8, 1000, 10000)     # rescaled to n_queries
    ph = phases(0.8, 1000, 28, 28)
    assert ph[0][0] == 1 and ph[-1][1] == 1000 and all(a[1] == b[0] for a, b in zip(ph, ph[1:]))
    assert np.isclose(np.linalg.norm(pseudo_gaussian(5, 5)), 1.0)
    np.testing.assert_array_equal(bucket([3, 5, 6], 10), [3, 5, 6, 6])
    np.testing.assert_array_equal(bucket([3], 10, 4), [3, 3, 3, 3])
    logits = jnp.array([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.5]])
    labels = jnp.array([0, 0])
    np.testing.assert_allclose(losses.get("dlr")(logits=logits, labels=labels), [-2.0 / 3.0, 2.0 / 1.5], rtol=1e-6)
    # shift and scale invariant
    np.testing.assert_allclose(losses.dlr(logits=5 * logits + 2, labels=labels),
                               losses.dlr(logits=logits, labels=labels), rtol=1e-5)
    t = jnp.array([3, 1])
    np.testing.assert_allclose(losses.dlr_targeted(logits=logits, labels=labels, target=t),
                               [-4.0 / (3.0 + 0.5), 2.0 / (2.0 - 0.25)], rtol=1e-6)
    np.testing.assert_array_equal(top_targets(logits, labels, 2), [[1, 1], [2, 2]])


@pytest.mark.parametrize("p", [1, 2, INF])
def test_hyperplane_box_projection_is_exact(p):
    """project_hyperplane_box against geometry.halfspace_box_step (numpy) on both sides of the hyperplane;
    where the box misses it, the box corner along w."""
    rng = np.random.default_rng(1)
    n, d = 40, 9
    w = rng.normal(size=(n, d)) * (rng.uniform(size=(n, d)) > 0.2)
    x = rng.uniform(size=(n, d))
    r = rng.normal(size=n)
    r[:3] = [0.0, 50.0, -50.0]
    got = np.asarray(project_hyperplane_box(jnp.asarray(w, jnp.float32), jnp.asarray(r, jnp.float32),
                                            jnp.asarray(x, jnp.float32), jnp.zeros((n, d)), jnp.ones((n, d)), p))
    for i in range(n):
        s = 1.0 if r[i] >= 0 else -1.0
        ref = halfspace_box_step(s * w[i], abs(r[i]), x[i], np.zeros(d), np.ones(d), p)
        if ref is None:
            ref = np.sign(s * w[i]) * np.maximum(np.where(s * w[i] > 0, 1 - x[i], x[i]), 0.0)
        else:
            assert abs(w[i] @ got[i] - r[i]) < 1e-4 * max(1.0, abs(r[i]))          # on the hyperplane
        np.testing.assert_allclose(got[i], ref, atol=2e-5)
        assert np.all(x[i] + got[i] >= -1e-6) and np.all(x[i] + got[i] <= 1 + 1e-6)


# ------------------------------------------------------------------------- FAB, exact

@pytest.mark.parametrize("p", [1, 2, INF])
def test_fab_reaches_the_closed_form_on_affine_models(p):
    f, w, b = linear_model(d=16, k=4)
    x = 0.5 + 0.05 * jax.random.normal(jax.random.key(7), (8, 16))
    y = jnp.argmax(f(x), -1)
    r = fab(f, x, y, p=p, key=jax.random.key(0), box=(-3.0, 4.0), steps=20)
    exact = np.array([closed_form(w, b, x[i], int(y[i]), p) for i in range(len(y))])
    assert r.success.all()
    assert np.all(r.distance >= exact * (1 - 1e-4)), "FAB beat the exact minimum"
    assert np.median(r.distance / exact) < 1.01
    if p == 2:
        t = fab_targeted(f, x, y, p=p, key=jax.random.key(0), box=(-3.0, 4.0), steps=20, n_targets=3)
        assert np.all(t.distance >= exact * (1 - 1e-4)) and np.median(t.distance / exact) < 1.01


@pytest.mark.parametrize("p", [INF])
def test_fab_near_the_milp_minimum_on_a_relu_net(p, net):
    """On a small ReLU net the MILP minimum (verify.min_adversarial_milp, float64) bounds FAB from below, and
    FAB with restarts lands within 5 % of it in the median."""
    _, f, x, y, layers = net
    x, y = x[:8], y[:8]
    r = fab(f, x, y, p=p, key=jax.random.key(0), steps=40, restarts=3)
    exact = np.array([verify.min_adversarial_milp(layers, np.asarray(x[i], np.float64), int(y[i]), p=p,
                                                  time_limit=30).distance for i in range(len(y))])
    assert r.success.all() and np.all(np.isfinite(exact))
    assert np.all(r.distance >= exact * (1 - 1e-4)), "FAB beat the exact minimum"
    assert np.median(r.distance / exact) < 1.05, np.round(r.distance / exact, 3)


# ----------------------------------------------------------------------- budget attacks

@pytest.mark.parametrize("p,eps", [(INF, 0.1)])
def test_apgd_at_least_as_strong_as_pgd(p, eps, net):
    """Same net, eps, steps, seed and loss (cross-entropy; DLR against PGD's margin loss): APGD leaves at
    most PGD's robust accuracy."""
    _, f, x, y, _ = net
    key = jax.random.key(0)
    a = apgd(f, x, y, p=p, eps=eps, key=key, steps=20)
    check_result(a, f, x, y, p, eps=eps)
    assert 0 < a.success.mean() < 1
    assert a.success.mean() >= pgd(f, x, y, p=p, eps=eps, key=key, steps=20, loss="cross_entropy").success.mean()
    d = apgd(f, x, y, p=p, eps=eps, key=key, steps=20, loss="dlr")
    assert d.success.mean() >= pgd(f, x, y, p=p, eps=eps, key=key, steps=20).success.mean()


def test_bad_options():
    f, _, _ = linear_model(d=16, k=3)
    x, y = jnp.full((2, 16), 0.5), jnp.zeros(2, jnp.int32)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="p = 2 or inf"):
        apgd(f, x, y, p=1, eps=1.0, key=key)
    with pytest.raises(ValueError, match="at least 4 classes"):
        apgd_targeted(f, x, y, p=2, eps=1.0, key=key)
    with pytest.raises(ValueError, match="loss must be one of"):
        apgd(f, x, y, p=2, eps=1.0, key=key, loss="margin")
    with pytest.raises(ValueError, match="p_init"):
        square(f, x, y, p=2, eps=1.0, key=key, p_init=2.0)
    with pytest.raises(ValueError, match="beta"):
        fab(f, x, y, p=2, key=key, beta=1.5)
    with pytest.raises(ValueError, match="target must lie"):
        fab(f, x, y, p=2, key=key, target=jnp.array([5, 5]))
    for attack, kw in ((fab, {}), (apgd, dict(eps=1.0))):       # a target equal to the label cannot succeed
        with pytest.raises(ValueError, match=r"target must differ from labels; equal at 1 rows \(first: row 1\)"):
            attack(f, x, y, p=2, key=key, target=jnp.array([1, 0]), **kw)
    with pytest.raises(ValueError, match="min_margin must be finite"):
        apgd(f, x, y, p=2, eps=1.0, key=key, min_margin=float("nan"))
    with pytest.raises(ValueError, match="min_margin must be >= 0"):
        fab(f, x, y, p=2, key=key, min_margin=-1.0)
    with pytest.raises(ValueError, match="attacks must be"):
        standard_evaluation(f, x, y, p=2, eps=1.0, key=0, attacks=("apgd-ce", "nope"))
    with pytest.raises(ValueError, match=r"attacks \['apgd-t'\] need at least 4 classes, the model has 3"):
        standard_evaluation(f, x, y, p=2, eps=1.0, key=0)           # before any attack runs


# -------------------------------------------------------------------- standard evaluation

SMALL = dict(apgd_steps=10, n_targets=3, fab_steps=10, n_queries=40, batch_size=16)


def test_standard_evaluation_cascade_and_json(net):
    _, f, x, y, _ = net
    eps = 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # a plain net gives no warning
        ev = standard_evaluation(f, x, y, p=INF, eps=eps, key=3, **SMALL)
    assert ev.clean_accuracy == 1.0 and 0 < ev.robust_accuracy < 1
    after = [ev.robust_accuracy_after[a] for a in ev.attacks]
    assert after == sorted(after, reverse=True) and after[-1] == ev.robust_accuracy
    alone = apgd(f, x, y, p=INF, eps=eps, key=jax.random.fold_in(jax.random.key(3), 0), steps=10, batch_size=16)
    np.testing.assert_array_equal(ev.broken_by == "apgd-ce", alone.success)    # the first stage is APGD-CE
    broken = ~ev.robust
    pred = np.asarray(jnp.argmax(f(jnp.asarray(ev.x_adv)), -1))
    assert np.all(pred[broken] != np.asarray(y)[broken])
    assert np.all(np.asarray(lp_norm(jnp.asarray(ev.x_adv - np.asarray(x)), INF))[broken] <= eps * (1 + 1e-5))
    assert np.all(ev.margin[broken] < 0) and np.all(ev.margin[ev.robust] > 0)
    assert not any(v for v in ev.flags.values())
    js = json.loads(json.dumps(ev.to_json()))
    for field in ("clean_accuracy", "robust_accuracy", "eps", "norm", "attacks", "seed", "points",
                  "robust_accuracy_after", "flags", "warnings"):
        assert field in js, field
    assert js["norm"] == "Linf" and js["seed"] == 3 and js["attacks"] == list(ev.attacks)
    assert len(js["points"]) == len(y) and {"broken_by", "margin", "robust"} <= set(js["points"][0])
    assert sum(pt["robust"] for pt in js["points"]) == round(js["robust_accuracy"] * len(y))


def test_standard_evaluation_flags_masked_gradients(net):
    """A quantized input layer (zero gradient almost everywhere): the zero-gradient check fires, and
    Square breaks points APGD-CE could not (the gradient-masking warning)."""
    logits, _, x, _, _ = net
    q = jax.jit(lambda z: logits(jnp.round(z * 4) / 4))
    y = jnp.argmax(q(x), -1)
    with pytest.warns(UserWarning) as record:
        ev = standard_evaluation(q, x, y, p=INF, eps=0.15, key=0, attacks=("apgd-ce", "square"),
                                 **dict(SMALL, n_queries=100))
    assert ev.flags["zero_gradients"] == len(y)
    assert ev.flags["square_after_white_box"] > 0
    text = " ".join(str(w.message) for w in record)
    assert "gradient of the margin is exactly zero" in text and "gradient masking" in text


def test_standard_evaluation_flags_probabilities_and_randomness(net):
    logits, _, x, y, _ = net
    probs = jax.jit(lambda z: jax.nn.softmax(logits(z)))
    with pytest.warns(UserWarning, match="look like probabilities") as record:
        ev = standard_evaluation(probs, x, y, p=INF, eps=0.1, key=0, attacks=("square",), **dict(SMALL, n_queries=5))
    assert ev.flags["probabilities"] and sum("probabilities" in str(w.message) for w in record) == 1
    rng = np.random.default_rng(0)
    noisy = lambda z: logits(z) + 0.01 * rng.normal(size=(z.shape[0], 4)).astype(np.float32)  # noqa: E731
    with pytest.warns(UserWarning, match="randomized"):
        ev = standard_evaluation(noisy, x, y, p=INF, eps=0.1, key=0, attacks=("square",), **dict(SMALL, n_queries=5))
    assert ev.flags["randomized"]
