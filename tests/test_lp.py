"""robustjax.lp: the interior-point LP against HiGHS (the reference), exact dual bounds (weak duality tried on
random multipliers), closed forms, Farkas certificates of infeasibility, degenerate vertices, padding, batching,
float32, and the HiGHS fallback of `solvers.solve_min_norm`."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import lp, qp, solvers
from robustjax.geometry import halfspace_box_distance
from robustjax.solvers import solve_min_norm

from _nets import polyhedron_problem as _problem  # noqa: E402  (tests/ is on sys.path under pytest)

NORMS = [1, np.inf]
RTOL = 2e-7            # distances: the certified relative gap 1e-7, the feasibility slack 1e-8, rounding



def _dist(z, x, p):
    return float(np.linalg.norm(z - x, ord=p))


@pytest.mark.parametrize("p", NORMS)
@pytest.mark.parametrize("kind", ["feasible", "tight"])
def test_matches_highs_feasible_in_the_box_and_certified(p, kind):
    rng = np.random.default_rng(3)
    for d, m in ((30, 1), (30, 12), (200, 40), (784, 40), (784, 64)):
        x, G, h = _problem(rng, d, m, kind)
        lo, hi = np.zeros(d), np.ones(d)
        z, nu, status = lp.solve(x, G, h, lo, hi, p)
        assert status == qp.OPTIMAL, (d, m)
        ref = solve_min_norm(x, G, h, lo, hi, p, lp_solver="highs")
        assert np.all(z >= lo) and np.all(z <= hi)                  # in the box exactly
        assert np.all(G @ z >= h - 1e-8)
        v, r = _dist(z, x, p), _dist(ref, x, p)
        assert r * (1 - RTOL) <= v <= r * (1 + RTOL) + 1e-9, (d, m, v, r)
        with jax.enable_x64(True):
            bound = float(lp.lp_dual_bound(*(jnp.asarray(a) for a in (x, G, h, lo, hi, nu)), p))
        assert bound <= r + 1e-9 and v - bound <= 1e-7 * v + 1e-9    # the certificate: the gap, closed


@pytest.mark.parametrize("p", NORMS)
def test_dual_bound_never_exceeds_the_optimum(p):
    """Weak duality, tried to break: random nonnegative multipliers, sparse and dense, at every scale."""
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        for trial in range(20):
            d, m = (40, 6) if trial % 2 else (300, 20)
            x, G, h = _problem(rng, d, m, "feasible")
            ref = _dist(solve_min_norm(x, G, h, np.zeros(d), np.ones(d), p, lp_solver="highs"), x, p)
            for scale in (1e-3, 1.0, 1e3):
                nu = rng.exponential(size=m) * (rng.uniform(size=m) < 0.5) * scale
                bound = float(lp.lp_dual_bound(*(jnp.asarray(a) for a in (x, G, h, np.zeros(d), np.ones(d), nu)),
                                               p))
                assert bound <= ref + 1e-9


@pytest.mark.parametrize("p", NORMS)
def test_one_halfspace_equals_the_closed_form(p):
    rng = np.random.default_rng(5)
    for _ in range(5):
        d = 50
        x = rng.uniform(size=d)
        w = rng.normal(size=d)
        w /= np.linalg.norm(w)
        r = rng.uniform(0.05, 0.5)
        z, _, status = lp.solve(x, w[None], np.array([r + w @ x]), np.zeros(d), np.ones(d), p)
        exact = float(halfspace_box_distance(jnp.asarray(w), r, jnp.asarray(x), 0.0, 1.0, p))
        assert status == qp.OPTIMAL
        np.testing.assert_allclose(_dist(z, x, p), exact, rtol=RTOL)


@pytest.mark.parametrize("p", NORMS)
def test_infeasible_with_a_checked_farkas_certificate(p):
    rng = np.random.default_rng(6)
    for d, m in ((30, 1), (200, 40), (784, 64)):
        x, G, h = _problem(rng, d, m, "infeasible")
        z, nu, status = lp.solve(x, G, h, np.zeros(d), np.ones(d), p)
        assert status == qp.INFEASIBLE
        mu = nu / nu.sum()
        a = mu @ G
        assert np.sum(np.maximum(a * 0.0, a * 1.0)) - mu @ h < 0           # no z of the box meets every row
        assert solve_min_norm(x, G, h, np.zeros(d), np.ones(d), p, lp_solver="highs") is None


@pytest.mark.parametrize("p", NORMS)
def test_degenerate_vertices(p):
    """Repeated rows, rows that are sums of others, and x on the box's faces: the normal equations are singular
    at the optimum (this broke the solver into NaNs before the ridge and the stable Schur complement)."""
    rng = np.random.default_rng(7)
    for _ in range(4):
        d = 784
        x, G, h = _problem(rng, d, 6, "tight")
        x[:300] = 0.0
        x[300:400] = 1.0
        both = G[0] + G[1]
        G = np.concatenate([G, G[:3], (both / np.linalg.norm(both))[None]])
        h = np.concatenate([h, h[:3], [(h[0] + h[1]) / np.linalg.norm(both)]])
        z, _, status = lp.solve(x, G, h, np.zeros(d), np.ones(d), p)
        ref = solve_min_norm(x, G, h, np.zeros(d), np.ones(d), p, lp_solver="highs")
        assert status == qp.OPTIMAL and np.all(np.isfinite(z))
        np.testing.assert_allclose(_dist(z, x, p), _dist(ref, x, p), rtol=RTOL)


@pytest.mark.parametrize("p", NORMS)
def test_the_region_attacks_own_lps(p):
    """Five LPs the l_inf region attack handed its solver on the plain 784-1024-10 MNIST MLP (region rows of one
    sampled region and the target row; x a test image, 85 % of its pixels 0; tests/data/region_lps_linf.npz,
    rows stored in float32): certified, feasible, and equal to HiGHS."""
    data = np.load(Path(__file__).parent / "data" / "region_lps_linf.npz")
    for k in range(5):
        x, G, h = (np.asarray(data[f"{a}{k}"], np.float64) for a in "xGh")
        z, _, status = lp.solve(x, G, h, np.zeros(784), np.ones(784), p)
        ref = solve_min_norm(x, G, h, np.zeros(784), np.ones(784), p, lp_solver="highs")
        assert status == qp.OPTIMAL and np.all(G @ z >= h - 1e-8)
        np.testing.assert_allclose(_dist(z, x, p), _dist(ref, x, p), rtol=RTOL)


@pytest.mark.parametrize("p", NORMS)
def test_padding_and_batch_equal_single_problems(p):
    """Same statuses; distances equal to the certified gap (batched products round differently)."""
    rng = np.random.default_rng(8)
    d, m = 100, 9
    probs = [_problem(rng, d, m, kind) for kind in ("feasible", "tight", "infeasible", "feasible")]
    singles = [lp.solve(x, G, h, np.zeros(d), np.ones(d), p) for x, G, h in probs]
    mp = qp.padded_rows(m)
    Gp, hp, mask = np.zeros((4, mp, d)), np.zeros((4, mp)), np.zeros((4, mp), bool)
    for j, (_, G, h) in enumerate(probs):
        Gp[j, :m], hp[j, :m], mask[j, :m] = G, h, True
    with jax.enable_x64(True):
        sol = lp.min_lp_batch(jnp.asarray(np.stack([q[0] for q in probs])), jnp.asarray(Gp), jnp.asarray(hp),
                              jnp.zeros((4, d)), jnp.ones((4, d)), jnp.asarray(mask), p=p)
        status, z = np.asarray(sol.status), np.asarray(sol.z)
    assert status.tolist() == [s[2] for s in singles] == [qp.OPTIMAL, qp.OPTIMAL, qp.INFEASIBLE, qp.OPTIMAL]
    for j in (0, 1, 3):
        np.testing.assert_allclose(_dist(z[j], probs[j][0], p), _dist(singles[j][0], probs[j][0], p), rtol=RTOL)


@pytest.mark.parametrize("p", NORMS)
def test_float32_meets_float32_tolerances(p):
    """In float32, with tolerances float32 can meet, the answer is in the box, feasible and certified to them
    (against HiGHS's float64 optimum)."""
    rng = np.random.default_rng(9)
    x, G, h = _problem(rng, 200, 20, "feasible")
    ref = _dist(solve_min_norm(x, G, h, np.zeros(200), np.ones(200), p, lp_solver="highs"), x, p)
    sol = lp.min_lp(*(jnp.asarray(a, jnp.float32) for a in (x, G, h, np.zeros(200), np.ones(200))), p=p,
                    tol=1e-4, gap_rtol=1e-4)
    z = np.asarray(sol.z, np.float64)
    assert sol.z.dtype == jnp.float32 and int(sol.status) == qp.OPTIMAL
    assert np.all(z >= 0) and np.all(z <= 1) and np.all(G @ z >= h - 2e-4)
    assert abs(_dist(z, x, p) - ref) <= 1e-3 * ref


def test_solve_min_norm_falls_back_to_highs(monkeypatch):
    """HiGHS where x lies outside the box (lp.solve refuses it) and where the interior point gives up (MAX_ITER,
    monkeypatched)."""
    rng = np.random.default_rng(10)
    x, G, h = _problem(rng, 60, 8, "feasible")
    x_out = x.copy()
    x_out[0] = 1.5
    ref = solve_min_norm(x_out, G, h, np.zeros(60), np.ones(60), np.inf, lp_solver="highs")
    np.testing.assert_array_equal(solvers.solve_min_norm(x_out, G, h, np.zeros(60), np.ones(60), np.inf), ref)
    for p in (1, np.inf):   # the answer lies in the box although x does not; no rows: clip(x) is optimal
        z = solvers.solve_min_norm(x_out, G[:0], h[:0], np.zeros(60), np.ones(60), p)
        assert np.all((z >= 0) & (z <= 1))
        np.testing.assert_allclose(np.linalg.norm(z - x_out, p), np.linalg.norm(np.clip(x_out, 0, 1) - x_out, p),
                                   atol=1e-9)
    ref = solve_min_norm(x, G, h, np.zeros(60), np.ones(60), np.inf, lp_solver="highs")
    monkeypatch.setattr(lp, "solve", lambda x, G, h, lo, hi, p: (np.full_like(x, np.nan), None, qp.MAX_ITER))
    np.testing.assert_array_equal(solvers.solve_min_norm(x, G, h, np.zeros(60), np.ones(60), np.inf), ref)


def test_bad_norm_names_the_argument():
    x = jnp.zeros(3)
    with pytest.raises(ValueError, match="p must be 1 or inf"):
        lp.min_lp(x, jnp.ones((1, 3)), jnp.ones(1), x, x + 1, p=2)
    with pytest.raises(ValueError, match="p must be 1, 2 or inf"):
        lp.min_lp(x, jnp.ones((1, 3)), jnp.ones(1), x, x + 1, p=3)
    with pytest.raises(ValueError, match="lp_solver"):
        solve_min_norm(np.zeros(3), np.ones((1, 3)), np.ones(1), np.zeros(3), np.ones(3), 1, lp_solver="glpk")
    with pytest.raises(ValueError, match="x must lie in the box"):
        lp.solve(np.full(3, 2.0), np.ones((1, 3)), np.ones(1), np.zeros(3), np.ones(3), 1)
