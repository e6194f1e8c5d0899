"""Linear relaxations of activations: valid on the whole interval for any slope, tight where exact."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax.bounds import relaxations as rx



@pytest.fixture(autouse=True)
def _float64():
    """float64 for this module only (a global switch would leak into every later test)."""
    with jax.enable_x64(True):
        yield

ACTS = [("relu", 1.0), ("sigmoid", 1.0), ("tanh", 1.0), ("softplus", 1.0), ("softplus", 10.0), ("identity", 1.0)]


def _intervals(rng, n=400):
    c = rng.normal(scale=3.0, size=n)
    w = np.abs(rng.normal(scale=2.0, size=n)) * rng.choice([1e-9, 1e-3, 1.0, 5.0], size=n)
    return jnp.asarray(c - w * rng.uniform(0, 1, n)), jnp.asarray(c + w * rng.uniform(0, 1, n))


@pytest.mark.parametrize("name, alpha", ACTS)
@pytest.mark.parametrize("slopes", ["default", "random"])
def test_lines_bound_the_activation_on_the_whole_interval(name, alpha, slopes):
    rng = np.random.default_rng(hash((name, alpha, slopes)) % 2**32)
    act = rx.get(name, alpha=alpha)
    l, u = _intervals(rng)
    kw = {}
    if slopes == "random":   # any slope must give a valid line, including ones outside sigma' ranges
        kw = dict(lower_slope=jnp.asarray(rng.uniform(-0.5, 1.5, l.shape)),
                  upper_slope=jnp.asarray(rng.uniform(-0.5, 1.5, l.shape)))
    r = rx.relax(act, l, u, name=name, **kw)
    t = jnp.linspace(0.0, 1.0, 2001)[:, None]
    z = l + t * (u - l)
    f = act.fn(z)
    assert bool(jnp.all(r.lower_slope * z + r.lower_bias <= f)), name
    assert bool(jnp.all(f <= r.upper_slope * z + r.upper_bias)), name
    if slopes == "default":   # tight: the lines touch sigma (up to the ulp padding) somewhere on [l, u]
        gap_lo = jnp.min(f - (r.lower_slope * z + r.lower_bias), 0)
        gap_up = jnp.min(r.upper_slope * z + r.upper_bias - f, 0)
        tol = 1e-6 * jnp.maximum(1.0, u - l) ** 2           # the touching point may fall between samples
        assert bool(jnp.all(gap_lo < tol)) and bool(jnp.all(gap_up < tol))


def test_relu_relaxation_is_crowns():
    l, u = jnp.array([-2.0, 1.0, -3.0, -1.0]), jnp.array([1.0, 2.0, -1.0, 3.0])
    r = rx.relax(rx.relu(), l, u, name="relu")
    np.testing.assert_allclose(np.asarray(r.upper_slope), [1 / 3, 1, 0, 0.75])
    np.testing.assert_allclose(np.asarray(r.upper_bias), [2 / 3, 0, 0, 0.75], atol=1e-12)
    np.testing.assert_allclose(np.asarray(r.lower_slope), [0, 1, 0, 1])


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "softplus"])
def test_slope_range_contains_the_derivative(name):
    act = rx.get(name)
    rng = np.random.default_rng(1)
    l, u = _intervals(rng)
    lo, hi = act.slope_range(l, u)
    z = l + jnp.linspace(0, 1, 501)[:, None] * (u - l)
    g = act.grad(z)
    assert bool(jnp.all(g >= lo - 1e-15)) and bool(jnp.all(g <= hi + 1e-15))


def test_interval_is_outward():
    act = rx.sigmoid()
    l, u = jnp.array([-1.0, 0.0]), jnp.array([1.0, 0.0])
    lo, hi = rx.interval(act, l, u)
    assert bool(jnp.all(lo < jax.nn.sigmoid(l))) and bool(jnp.all(hi > jax.nn.sigmoid(u)))


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="gelu"):
        rx.get("gelu")
