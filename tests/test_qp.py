"""robustjax.qp: the exact dual Newton QP against OSQP (the reference), closed forms, Farkas certificates of
infeasibility, padding, batching and warm starts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import qp
from robustjax.geometry import halfspace_box_distance
from robustjax.solvers import solve_min_norm

from _nets import polyhedron_problem as _problem  # noqa: E402  (tests/ is on sys.path under pytest)



@pytest.mark.parametrize("kind", ["feasible", "tight"])
def test_matches_osqp_and_is_feasible(kind):
    rng = np.random.default_rng(0)
    for d, m in ((30, 1), (30, 12), (200, 40), (200, 90)):
        x, G, h = _problem(rng, d, m, kind)
        z, lam, status = qp.solve(x, G, h, np.zeros(d), np.ones(d))
        assert status == qp.OPTIMAL
        ref = solve_min_norm(x, G, h, np.zeros(d), np.ones(d), 2, qp_solver="osqp")
        assert np.all(z >= 0) and np.all(z <= 1)                          # the box exactly (a clip)
        assert np.min(G @ z - h) >= -1e-8                                   # the rows to tol
        assert np.all(lam >= 0) and np.max(np.abs(lam * (G @ z - h))) <= 1e-7   # complementary
        dz, dref = np.linalg.norm(z - x), np.linalg.norm(ref - x)
        assert dz <= dref + 1e-6 and dz >= dref * (1 - 1e-5)


def test_single_halfspace_equals_the_closed_form():
    rng = np.random.default_rng(1)
    for _ in range(5):
        d = 25
        x = rng.uniform(size=d)
        w = rng.normal(size=d)
        r = rng.uniform(0.1, 1.0)
        z, _, status = qp.solve(x, (w / np.linalg.norm(w))[None], np.array([(r + w @ x) / np.linalg.norm(w)]),
                                np.zeros(d), np.ones(d))
        lb = float(halfspace_box_distance(jnp.asarray(w), r, jnp.asarray(x), jnp.zeros(d), jnp.ones(d), 2))
        assert status == qp.OPTIMAL
        np.testing.assert_allclose(np.linalg.norm(z - x), lb, rtol=1e-6)


def test_infeasible_problems_carry_a_farkas_certificate():
    rng = np.random.default_rng(2)
    for d, m in ((30, 3), (200, 40)):
        x, G, h = _problem(rng, d, m, "infeasible")
        z, lam, status = qp.solve(x, G, h, np.zeros(d), np.ones(d))
        assert status == qp.INFEASIBLE
        assert solve_min_norm(x, G, h, np.zeros(d), np.ones(d), 2, qp_solver="osqp") is None
        mu = lam / lam.sum()
        a = mu @ G
        assert np.all(mu >= 0) and np.sum(np.maximum(a * 0.0, a * 1.0)) - mu @ h < 0   # no z of the box fits
        assert solve_min_norm(x, G, h, np.zeros(d), np.ones(d), 2) is None


def test_padding_batching_and_warm_starts():
    rng = np.random.default_rng(3)
    d, m, B = 60, 10, 4
    probs = [_problem(rng, d, m, "feasible") for _ in range(B)]
    singles = [qp.solve(x, G, h, np.zeros(d), np.ones(d)) for x, G, h in probs]
    mp = qp.padded_rows(m)
    assert mp >= m
    Gp = np.zeros((B, mp, d))
    hp = np.zeros((B, mp))
    for i, (_, G, h) in enumerate(probs):
        Gp[i, :m], hp[i, :m] = G, h
        Gp[i, m:] = rng.normal(size=(mp - m, d))        # masked rows: any values, ignored
        hp[i, m:] = 1e3                                  # (infeasible were they read)
    with jax.enable_x64(True):
        sol = qp.min_l2_batch(jnp.asarray(np.stack([p[0] for p in probs])), jnp.asarray(Gp), jnp.asarray(hp),
                              jnp.zeros((B, d)), jnp.ones((B, d)), jnp.asarray(np.arange(mp) < m)[None].repeat(B, 0),
                              jnp.zeros((B, mp)))
        assert np.all(np.asarray(sol.status) == qp.OPTIMAL)
        for i in range(B):
            np.testing.assert_allclose(np.asarray(sol.z[i]), singles[i][0], atol=1e-9)
        x, G, h = probs[0]
        cold = qp.min_l2(jnp.asarray(x), jnp.asarray(G), jnp.asarray(h), jnp.zeros(d), jnp.ones(d))
        warm = qp.min_l2(jnp.asarray(x), jnp.asarray(G), jnp.asarray(h), jnp.zeros(d), jnp.ones(d),
                         lam0=cold.lam)
        assert int(warm.status) == qp.OPTIMAL and int(warm.iterations) <= 1
        np.testing.assert_allclose(np.asarray(warm.z), np.asarray(cold.z), atol=1e-12)


def test_float32_reaches_a_float32_tolerance():
    """Without x64 the solver runs in float32: optimal to a tolerance float32 can meet, close to float64's answer."""
    rng = np.random.default_rng(4)
    x, G, h = _problem(rng, 100, 20, "feasible")
    sol = qp.min_l2(jnp.asarray(x, jnp.float32), jnp.asarray(G, jnp.float32), jnp.asarray(h, jnp.float32),
                    jnp.zeros(100), jnp.ones(100), tol=1e-4)
    assert sol.z.dtype == jnp.float32 and int(sol.status) == qp.OPTIMAL
    z64, _, _ = qp.solve(x, G, h, np.zeros(100), np.ones(100))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(sol.z) - x), np.linalg.norm(z64 - x), rtol=1e-4)


def test_bad_solver_name():
    with pytest.raises(ValueError, match="qp_solver"):
        solve_min_norm(np.zeros(3), np.ones((1, 3)), np.ones(1), np.zeros(3), np.ones(3), 2, qp_solver="cvxopt")
