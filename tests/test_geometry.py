"""The ground floor: boxes, norms, margins, halfspace-box steps, batching, input checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import batching, geometry, validate
from robustjax.geometry import Box


def test_as_box_broadcasts_scalar_example_and_per_example():
    x = np.zeros((3, 2, 2), np.float32)
    for lo in (0.0, np.zeros((2, 2)), np.zeros((3, 2, 2)), np.zeros((2, 1))):
        b = geometry.as_box(Box(lo, 1.0), x)
        assert b.lo.shape == x.shape and b.hi.shape == x.shape and b.lo.dtype == np.float32
    assert geometry.as_box((0.0, 2.0), x).hi.max() == 2.0
    assert geometry.as_box(None, x).hi.max() == 1.0


@pytest.mark.parametrize("box, match", [(Box(1.0, 0.0), "lo <= hi"), (Box(np.nan, 1.0), "NaN"),
                                        (Box(np.zeros((4,)), 1.0), "shape"), ("01", "Box")])
def test_as_box_rejects_bad_boxes(box, match):
    with pytest.raises(ValueError, match=match):
        geometry.as_box(box, np.zeros((3, 2, 2), np.float32))


def test_norms_and_duals_agree_with_numpy():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(5, 3, 4))
    for p in (1, 2, np.inf):
        np.testing.assert_allclose(np.asarray(geometry.lp_norm(jnp.asarray(d), p)),
                                   np.linalg.norm(d.reshape(5, -1), ord=p, axis=1), rtol=1e-6)
        w = rng.normal(size=12)
        # the dual norm is the support function of the unit ball: attained by the steepest step
        step = geometry.halfspace_box_step(w, 1.0, np.zeros(12), -1e3 * np.ones(12), 1e3 * np.ones(12), p)
        assert abs(float(w @ step) - 1.0) < 1e-9
        assert abs(geometry.vector_norm(step, p) - 1.0 / geometry.dual_norm(w, p)) < 1e-9
    with pytest.raises(ValueError, match="p must be 1, 2 or inf"):
        geometry.check_norm(3)


def test_margin_sign_and_runner_up():
    logits = jnp.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    y = jnp.array([0, 2])
    np.testing.assert_allclose(np.asarray(geometry.margin(logits, y)), [1.0, -4.0])
    np.testing.assert_array_equal(np.asarray(geometry.runner_up(logits, y)), [2, 1])


def test_margin_gradient_under_jit_equals_eager():
    """The margin's gradient through a rotation of an image, under jit and eagerly: jnp.min's own gradient
    compares its operand with the result bitwise, and XLA, computing the two in different fusions, made it
    NaN (suite's XLA flags) or 0 (XLA's defaults, the min written out) here; take_min / take_max gather."""
    from robustjax.attacks.spatial import transform_images
    ii, jj = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
    x0 = jnp.asarray(np.exp(-0.5 * (((ii - 13.5) / 2.0) ** 2 + ((jj - 13.5) / 6.0) ** 2))[None, ..., None],
                     jnp.float32)
    target = transform_images(x0, jnp.asarray([20.0]), jnp.zeros((1, 2)))
    labels = jnp.zeros(1, jnp.int32)

    def logits(q):
        s = jnp.sum(transform_images(x0, q[:, 0], q[:, 1:]) * target, axis=(1, 2, 3)) / jnp.sum(target * target)
        return jnp.stack([jnp.full_like(s, 0.97), s], -1) * 50.0

    for fn in (lambda q: geometry.margin(logits(q), labels),
               lambda q: geometry.take_min(jnp.where(jnp.asarray([True, False]), jnp.inf,
                                                     logits(q)[:, :1] - logits(q)), -1),
               lambda q: -geometry.take_max(jnp.where(jnp.asarray([True, False]), -jnp.inf,
                                                      logits(q) - logits(q)[:, :1]), -1)):
        for angle in (5.0, 10.0):
            q = jnp.asarray([[angle, 0.0, 0.0]])
            g = jax.jit(jax.grad(lambda v: jnp.sum(fn(v))))(q)
            np.testing.assert_allclose(g, jax.grad(lambda v: jnp.sum(fn(v)))(q), rtol=1e-3, atol=1e-5)
            assert abs(float(g[0, 0])) > 0.01
    v = jnp.asarray([[1.0, 3.0, 3.0, -2.0]])
    assert float(geometry.take_max(v)[0]) == 3.0 and float(geometry.take_min(v)[0]) == -2.0
    np.testing.assert_array_equal(jax.grad(lambda u: geometry.take_max(u)[0])(v), [[0.0, 1.0, 0.0, 0.0]])


@pytest.mark.parametrize("p", [1, 2, np.inf])
def test_halfspace_box_step_is_optimal_against_lp(p):
    """The closed form equals the LP / QP optimum (scipy) and the jitted distance measures it."""
    from scipy.optimize import linprog, minimize
    rng = np.random.default_rng(int(p if p != np.inf else 3))
    for _ in range(5):
        d = 6
        x = rng.uniform(0.2, 0.8, d)
        w = rng.normal(size=d)
        r = 0.3 * float(np.abs(w) @ np.maximum(1 - x, x))
        lo, hi = np.zeros(d), np.ones(d)
        step = geometry.halfspace_box_step(w, r, x, lo, hi, p)
        assert w @ step >= r - 1e-9 and np.all(x + step >= lo - 1e-12) and np.all(x + step <= hi + 1e-12)
        dist = float(geometry.halfspace_box_distance(jnp.asarray(w), r, jnp.asarray(x), jnp.asarray(lo),
                                                     jnp.asarray(hi), p))
        assert abs(dist - geometry.vector_norm(step, p)) < 1e-5
        if p == 2:
            ref = minimize(lambda v: v @ v, np.zeros(d), constraints=[{"type": "ineq", "fun": lambda v: w @ v - r}],
                           bounds=list(zip(lo - x, hi - x))).fun ** 0.5
        elif p == 1:      # delta = u - v, u, v >= 0
            ref = linprog(np.ones(2 * d), A_ub=-np.concatenate([w, -w])[None], b_ub=[-r],
                          bounds=[(0, h) for h in hi - x] + [(0, -l) for l in lo - x]).fun
        else:             # variables (delta, t): min t, |delta_i| <= t
            A = np.block([[np.eye(d), -np.ones((d, 1))], [-np.eye(d), -np.ones((d, 1))], [-w[None], np.zeros((1, 1))]])
            ref = linprog(np.r_[np.zeros(d), 1.0], A_ub=A, b_ub=np.r_[np.zeros(2 * d), -r],
                          bounds=list(zip(lo - x, hi - x)) + [(0, None)]).fun
        assert abs(geometry.vector_norm(step, p) - ref) < 1e-5 * max(1, ref)
    assert geometry.halfspace_box_step(np.ones(3), 10.0, np.zeros(3), np.zeros(3), np.ones(3), p) is None


def test_map_batches_pads_folds_keys_and_handles_empty():
    x = np.arange(10, dtype=np.float32)[:, None]
    calls = []

    def fn(xb, kb, mask):
        calls.append(xb.shape)
        return xb * 2, jnp.sum(mask).repeat(xb.shape[0])
    out, count = batching.map_batches(fn, [x], batch_size=4, key=jax.random.key(0), with_mask=True)
    np.testing.assert_array_equal(out[:, 0], 2 * np.arange(10))
    assert set(calls) == {(4, 1)} and list(count) == [4] * 8 + [2] * 2
    empty = batching.map_batches(lambda xb: xb.sum(1), [x[:0]], batch_size=4)
    assert empty.shape == (0,)
    with pytest.raises(ValueError, match="batch_size"):
        batching.map_batches(fn, [x], batch_size=-1)


def test_validate_names_the_argument():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        validate.labels(np.full(3, 7), 3, 5)
    with pytest.raises(ValueError, match="labels must have shape"):
        validate.labels(np.zeros(2, int), 3, 5)
    with pytest.raises(ValueError, match="x contains NaN"):
        validate.batch(np.array([[np.nan]]))
    with pytest.raises(ValueError, match=r"x must have shape \[batch, 20\]"):
        validate.batch(np.zeros((2, 21)), example_shape=(20,))
    with pytest.raises(ValueError, match="epochs must be > 0"):
        validate.positive_int(-1, "epochs")
    with pytest.raises(ValueError, match="key must be a jax.random key"):
        validate.key(None)
    validate.key(jax.random.key(0))
    validate.key(jax.random.PRNGKey(0))
