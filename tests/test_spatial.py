"""Spatial attacks: exact transformations, planted worst cases, the result contract."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax.attacks import AttackResult, Box, best_of, robust_accuracy_curve
from robustjax.attacks import spatial as S


def _rng_image(h=8, w=8, c=2, seed=0):
    return np.random.default_rng(seed).random((h, w, c)).astype(np.float32)


# ----------------------------------------------------------------------------- the transformation

def test_identity_and_integer_shifts_are_exact():
    img = _rng_image()
    out = S.rotate_translate(jnp.asarray(img), 0.0, jnp.zeros(2))
    np.testing.assert_array_equal(np.asarray(out), img)
    ref = np.zeros_like(img)
    ref[2:, :7] = img[:6, 1:]                       # down 2, left 1, zero fill
    out = S.rotate_translate(jnp.asarray(img), 0.0, jnp.asarray([2.0, -1.0]))
    np.testing.assert_array_equal(np.asarray(out), ref)
    edge = np.pad(img, ((2, 0), (0, 1), (0, 0)), mode="edge")[:8, 1:]
    out = S.rotate_translate(jnp.asarray(img), 0.0, jnp.asarray([2.0, -1.0]), padding="edge")
    np.testing.assert_array_equal(np.asarray(out), edge)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_quarter_turns_are_rot90(k):
    img = _rng_image(7, 7, 3, seed=k)
    out = S.rotate_translate(jnp.asarray(img), 90.0 * k, jnp.zeros(2))
    np.testing.assert_allclose(np.asarray(out), np.rot90(img, k, axes=(0, 1)), atol=1e-5)


def test_half_pixel_shift_is_the_average_of_neighbours():
    img = _rng_image()
    out = np.asarray(S.rotate_translate(jnp.asarray(img), 0.0, jnp.asarray([0.0, 0.5])))
    np.testing.assert_allclose(out[:, 1:], 0.5 * (img[:, :-1] + img[:, 1:]), atol=1e-6)
    np.testing.assert_allclose(out[:, 0], 0.5 * img[:, 0], atol=1e-6)      # zero padding on the left


def test_gradient_in_the_parameters_matches_finite_differences():
    with jax.enable_x64(True):
        img = jnp.asarray(_rng_image(10, 10, 1).astype(np.float64))
        w = jnp.asarray(np.random.default_rng(1).normal(size=(10, 10, 1)))

        @jax.jit
        def f(q):
            return jnp.sum(w * S.rotate_translate(img, q[0], q[1:]))
        q = jnp.asarray([13.3, 0.37, -0.81])          # away from the kinks at integer coordinates
        g = jax.grad(f)(q)
        h = 1e-6
        fd = jnp.asarray([(f(q + h * e) - f(q - h * e)) / (2 * h) for e in jnp.eye(3)])
        np.testing.assert_allclose(np.asarray(g), np.asarray(fd), rtol=1e-5, atol=1e-8)


def test_grid_has_the_engstrom_shape_and_magnitudes():
    g = S.transformation_grid(max_angle=30, max_shift=3, num_angles=31, num_shifts=5)
    assert g.shape == (31 * 25, 3)
    m = np.asarray(S.magnitude(jnp.asarray(g[:, 0]), jnp.asarray(g[:, 1:]), max_angle=30, max_shift=3))
    assert m.max() == pytest.approx(1.0) and m.min() == 0.0
    assert S.transformation_grid(max_angle=0, max_shift=2, num_angles=9, num_shifts=5).shape == (25, 3)


# ----------------------------------------------------------------------------- planted worst case

ANGLE_A, SHIFT_A = 18.0, (2.0, -1.0)     # magnitude max(18/30, 2/3) = 2/3
ANGLE_B, SHIFT_B = -6.0, (0.0, 1.0)      # magnitude max(6/30, 1/3) = 1/3


def _planted_model(x0, *, strength_a=2.0, strength_b=1.0):
    """Label 0 everywhere except within a tiny l2 ball around T_A(x0) or T_B(x0), where class 1 wins;
    class 1 wins by more at T_A (lower margin there)."""
    ta = S.rotate_translate(x0, ANGLE_A, jnp.asarray(SHIFT_A))
    tb = S.rotate_translate(x0, ANGLE_B, jnp.asarray(SHIFT_B))

    def logits_fn(x):
        da = jnp.sum((x - ta) ** 2, axis=(1, 2, 3))
        db = jnp.sum((x - tb) ** 2, axis=(1, 2, 3))
        f1 = jnp.maximum(strength_a - 100.0 * da, strength_b - 100.0 * db)
        return jnp.stack([jnp.zeros_like(f1), f1], axis=-1)
    return logits_fn


@pytest.fixture(scope="module")
def digits(mnist_small):
    (_, _), (xte, yte) = mnist_small
    return jnp.asarray(xte[:3]), yte[:3]


@pytest.fixture(scope="module")
def planted(digits):
    """One planted model for all tests (jit caches compile per model function)."""
    return _planted_model(digits[0][0])


def test_grid_finds_the_planted_smallest_transformation(digits, planted):
    x, _ = digits
    labels = jnp.zeros(3, jnp.int32)
    f = planted
    res = S.spatial_grid(f, x[:1], labels[:1], num_angles=11, num_shifts=7)
    assert isinstance(res, AttackResult) and res.p is None
    assert bool(res.success[0]) and res.label_adv[0] == 1
    assert res.info["angle"][0] == pytest.approx(ANGLE_B) and tuple(res.info["shift"][0]) == SHIFT_B
    assert res.distance[0] == pytest.approx(1 / 3)
    np.testing.assert_allclose(res.x_adv[0], S.rotate_translate(x[0], ANGLE_B, jnp.asarray(SHIFT_B)), atol=1e-6)
    assert res.model_calls[0] == 11 * 49
    np.testing.assert_array_equal(robust_accuracy_curve(res.distance, [0.0, 0.3, 1 / 3 - 1e-6, 0.34, 1.0]),
                                  [1, 1, 1, 0, 0])
    # "margin": the transformation of lowest margin is the planted A
    res_m = S.spatial_grid(f, x[:1], labels[:1], num_angles=11, num_shifts=7, criterion="margin")
    assert res_m.info["angle"][0] == pytest.approx(ANGLE_A) and tuple(res_m.info["shift"][0]) == SHIFT_A
    assert res_m.distance[0] == pytest.approx(2 / 3) and res_m.info["margin"][0] == pytest.approx(-2.0, abs=1e-3)


def test_grid_respects_the_range_and_other_examples(digits, planted):
    """The other two digits are not near the planted images: no success, distance inf, x_adv = x; a
    range that excludes B but includes A finds A; a range excluding both finds nothing."""
    x, _ = digits
    labels = jnp.zeros(3, jnp.int32)
    f = planted
    res = S.spatial_grid(f, x, labels, num_angles=11, num_shifts=7, batch_size=1)
    assert list(res.success) == [True, False, False]
    assert np.all(np.isinf(res.distance[1:]))
    np.testing.assert_array_equal(res.x_adv[1:], np.asarray(x[1:]))
    grid = S.transformation_grid(max_angle=30, max_shift=3, num_angles=11, num_shifts=7)
    no_b = grid[~((grid[:, 0] == ANGLE_B) & (grid[:, 1] == SHIFT_B[0]) & (grid[:, 2] == SHIFT_B[1]))]
    res = S.spatial_grid(f, x[:1], labels[:1], grid=no_b)
    assert res.info["angle"][0] == pytest.approx(ANGLE_A) and res.distance[0] == pytest.approx(2 / 3)
    res = S.spatial_grid(f, x[:1], labels[:1], max_angle=30, max_shift=0, num_angles=11)
    assert not res.success[0] and np.isinf(res.distance[0])


def test_already_misclassified_gets_distance_zero(digits, planted):
    x, _ = digits
    f = planted
    res = S.spatial_grid(f, x[:2], jnp.asarray([1, 0], jnp.int32), num_angles=11, num_shifts=7, batch_size=1)
    assert res.success[0] and res.distance[0] == 0 and res.misclassified[0]
    np.testing.assert_array_equal(res.x_adv[0], np.asarray(x[0]))
    assert res.info["angle"][0] == 0 and np.all(res.info["shift"][0] == 0)


def _blob(h=28, w=28):
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    b = np.exp(-0.5 * (((ii - 13.5) / 2.0) ** 2 + ((jj - 13.5) / 6.0) ** 2))   # centered, elongated
    return jnp.asarray(b[..., None].astype(np.float32))


def test_first_order_finds_a_planted_transformation_on_a_smooth_model():
    x0 = _blob()
    target = S.rotate_translate(x0, 17.0, jnp.asarray([1.5, -2.0]))
    d_ref = float(jnp.sum((x0 - target) ** 2))

    def f(x):                      # class 1 wins within a small l2 ball around the planted image
        d = jnp.sum((x - target) ** 2, axis=(1, 2, 3))
        return jnp.stack([jnp.zeros_like(d), 0.003 * d_ref - d], -1)

    res = S.spatial_first_order(f, x0[None], jnp.zeros(1, jnp.int32), key=jax.random.key(0), num_steps=60,
                                restarts=4, step_size=0.02, line_search=0)
    assert bool(res.success[0])
    assert res.info["angle"][0] == pytest.approx(17.0, abs=1.0)
    np.testing.assert_allclose(res.info["shift"][0], [1.5, -2.0], atol=0.2)


def test_first_order_and_grid_on_a_trained_net_keep_the_contract(relu_mlp_mnist, mnist_small):
    (_, _), (xte, yte) = mnist_small
    x, y = jnp.asarray(xte[:24]), jnp.asarray(yte[:24])
    f = relu_mlp_mnist.logits_fn
    grid = S.spatial_grid(f, x, y, num_angles=11, num_shifts=5, batch_size=16)
    fo = S.spatial_first_order(f, x, y, key=jax.random.key(1), num_steps=10, restarts=1, line_search=4,
                               batch_size=16)
    for res in (grid, fo):
        pred = np.asarray(jnp.argmax(f(jnp.asarray(res.x_adv)), -1))
        assert np.all((pred != np.asarray(y))[res.success])
        assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
        ok = res.success & ~res.misclassified
        x_t = S.transform_images(x, jnp.asarray(res.info["angle"]), jnp.asarray(res.info["shift"]))
        np.testing.assert_allclose(res.x_adv[ok], np.asarray(x_t)[ok], atol=1e-5)   # jit vs eager rounding
        assert np.all(res.distance[ok] <= 1 + 1e-6) and np.all(np.isinf(res.distance[~res.success]))
        assert np.all(np.abs(res.info["angle"]) <= 30 + 1e-4) and np.all(np.abs(res.info["shift"]) <= 3 + 1e-4)
    clean = np.mean(np.asarray(jnp.argmax(f(x), -1)) == np.asarray(y))
    assert robust_accuracy_curve(grid.distance, [0.0])[0] == pytest.approx(clean)
    assert grid.success.sum() >= grid.misclassified.sum() + 5   # a plain MLP is fooled by small shifts and turns
    both = best_of([grid, fo])
    np.testing.assert_array_equal(both.distance, np.minimum(grid.distance, fo.distance))
    pick = np.where(fo.distance < grid.distance, fo.info["angle"], grid.info["angle"])
    np.testing.assert_array_equal(both.info["angle"], pick)          # info rows follow the chosen result


def test_bad_inputs_raise(digits, planted):
    x, _ = digits
    f = planted
    y = jnp.zeros(3, jnp.int32)
    with pytest.raises(ValueError, match="no l_p norm"):
        S.spatial_grid(f, x, y, p=2)
    with pytest.raises(ValueError, match="padding"):
        S.spatial_grid(f, x, y, padding="reflect")
    with pytest.raises(ValueError, match="empty"):
        S.spatial_grid(f, x, y, max_angle=0, max_shift=0)
    with pytest.raises(ValueError, match="outside the range"):
        S.spatial_grid(f, x, y, max_angle=10, grid=np.asarray([[20.0, 0, 0]]))
    with pytest.raises(ValueError, match="grid contains NaN or inf"):
        S.spatial_grid(f, x, y, grid=np.asarray([[np.nan, 0, 0], [0.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="max_angle must be a number"):
        S.spatial_grid(f, x, y, max_angle=None)
    with pytest.raises(ValueError, match="max_shift must be finite"):
        S.spatial_first_order(f, x, y, key=jax.random.key(0), max_shift=np.inf)
    with pytest.raises(ValueError, match="NHWC"):
        S.spatial_grid(lambda z: jnp.zeros((z.shape[0], 2)), x.reshape(3, -1), y)
    with pytest.raises(ValueError, match="key"):
        S.spatial_first_order(f, x, y, key=None)
    with pytest.raises(ValueError, match="restarts"):
        S.spatial_first_order(f, x, y, key=jax.random.key(0), restarts=0)
    with pytest.raises(ValueError, match=r"num_angles must be >= 2 for a range of \+-30 .*got 1"):
        S.transformation_grid(num_angles=1)               # would try -30 degrees only
    with pytest.raises(ValueError, match="num_shifts must be an integer"):
        S.transformation_grid(num_shifts=2.5)
    assert S.transformation_grid(max_angle=0, num_angles=1, num_shifts=3).shape == (9, 3)
    with pytest.raises(ValueError, match="unknown loss"):
        S.spatial_first_order(f, x, y, key=jax.random.key(0), loss="hinge")
    with pytest.raises(ValueError, match="box"):
        S.spatial_grid(f, x + 2.0, y)


def test_first_order_cross_entropy_is_maximized(digits):
    """loss="cross_entropy" climbs the loss like "margin" does: on a model whose class 1 wins far from the
    identity, both find the fooling transformation (a minimized cross-entropy would stay at the start)."""
    x0 = _blob()
    target = S.rotate_translate(x0, 20.0, jnp.asarray([0.0, 0.0]))

    def f(x):                      # class 1 grows with the overlap with the rotated blob
        s = jnp.sum(x * target, axis=(1, 2, 3)) / jnp.sum(target * target)
        return jnp.stack([jnp.full_like(s, 0.97), s], -1) * 50.0

    for loss in ("margin", "cross_entropy"):
        res = S.spatial_first_order(f, x0[None], jnp.zeros(1, jnp.int32), key=jax.random.key(0), num_steps=30,
                                    restarts=1, step_size=0.05, line_search=0, loss=loss, max_shift=0.0)
        assert bool(res.success[0]), loss


def test_boxes_per_pixel_and_per_example(digits):
    """The transformed image is clipped to the box, whatever its shape: one box per example (a different cap
    on each digit) and one per-pixel box (the top rows pinned to 0), on a model that any visible change of a
    digit fools."""
    x, _ = digits
    refs = jnp.asarray(x)

    def f(z):                       # class 1 iff z is not (nearly) one of the three digits
        d = jnp.min(jnp.sum((z[:, None] - refs[None]) ** 2, axis=(2, 3, 4)), axis=1)
        return jnp.stack([jnp.zeros_like(d), d - 1e-2], -1)

    labels = jnp.zeros(3, jnp.int32)
    caps = np.array([0.3, 0.5, 0.7], np.float32)[:, None, None, None]
    hi = np.maximum(np.asarray(x), caps)
    res = S.spatial_grid(f, x, labels, num_angles=11, num_shifts=7, box=Box(0.0, hi))
    assert res.success.all() and np.all(res.x_adv <= hi)
    raw = np.asarray(S.transform_images(x, jnp.asarray(res.info["angle"]), jnp.asarray(res.info["shift"])))
    assert np.any(raw > hi), "the box should bind here"
    lo_p, hi_p = np.zeros(x.shape[1:], np.float32), np.ones(x.shape[1:], np.float32)
    hi_p[:4] = 0.0
    xz = jnp.asarray(x).at[:, :4].set(0.0)
    res = S.spatial_first_order(f, xz, labels, key=jax.random.key(0), num_steps=3, restarts=1, box=(lo_p, hi_p))
    assert np.all(res.x_adv[:, :4] == 0.0)
