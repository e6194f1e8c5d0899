"""Linear minima over l_p balls in boxes: valid lower bounds that equal the LP / closed-form optimum."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog, minimize

from robustjax.bounds import input_sets



@pytest.fixture(autouse=True)
def _float64():
    """float64 for this module only (a global switch would leak into every later test)."""
    with jax.enable_x64(True):
        yield


def _exact(a, x0, eps, lo, hi, p):
    d = len(a)
    if p == np.inf:
        l, u = np.maximum(x0 - eps, lo), np.minimum(x0 + eps, hi)
        return float(np.where(a > 0, a * l, a * u).sum())
    if p == 1:     # x = x0 + u - v, u, v >= 0
        A = np.ones((1, 2 * d))
        r = linprog(np.r_[a, -a], A_ub=A, b_ub=[eps], bounds=[(0, h) for h in hi - x0] + [(0, -l) for l in lo - x0])
        return float(a @ x0 + r.fun)
    r = minimize(lambda x: a @ x, x0, jac=lambda x: a, method="SLSQP", bounds=list(zip(lo, hi)),
                 constraints=[{"type": "ineq", "fun": lambda x: eps ** 2 - (x - x0) @ (x - x0),
                               "jac": lambda x: -2 * (x - x0)}], options={"ftol": 1e-14, "maxiter": 500})
    return float(r.fun)


@pytest.mark.parametrize("p", [1, 2, np.inf])
def test_linear_lower_is_valid_and_tight(p):
    rng = np.random.default_rng(7)
    for trial in range(12):
        d = 8
        x0 = rng.uniform(0, 1, d)
        eps = [0.05, 0.3, 1.0, 3.0][trial % 4]
        lo, hi = np.zeros(d), np.ones(d)
        A = rng.normal(size=(3, d))
        s = input_sets.ball_in_box(jnp.asarray(x0), eps, p, (lo, hi))
        low = np.asarray(input_sets.linear_lower(s, jnp.asarray(A)))
        up = np.asarray(input_sets.linear_upper(s, jnp.asarray(A)))
        for i in range(3):
            ref = _exact(A[i], x0, eps, lo, hi, p)
            assert low[i] <= ref + 1e-9
            assert low[i] >= ref - 1e-6 * (1 + abs(ref))
            assert up[i] >= -_exact(-A[i], x0, eps, lo, hi, p) - 1e-9
        # sampled points of the set never go below the bound
        z = rng.normal(size=(500, d))
        z /= np.linalg.norm(z, ord=p, axis=1, keepdims=True)
        x = np.clip(x0 + eps * rng.uniform(0, 1, (500, 1)) * z, lo, hi)
        assert np.all(x @ A.T >= low - 1e-12)
