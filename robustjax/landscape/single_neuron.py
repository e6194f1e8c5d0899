"""The talk's "bad news" slide made concrete: one sigmoid neuron with many local minima (Auer, Herbster
& Warmuth, NIPS 1996), beside a wide one-hidden-layer net that reaches zero training loss from every
start on the same data.

Construction (ours, in the spirit of Auer et al.'s separable one; their figure shows 25 minima from 10
two-dimensional examples): on each axis e_a put `per_dim` examples x = t_j e_a with t_j = ratio^{-j}
and alternating targets y_j = 1, 0, 1, ... For the neuron f(x) = sigmoid(w . x) the squared loss
separates, L(w) = sum_a L_a(w_a), and each L_a is a sum of sigmoid steps that switch at |w_a| ~ 1/t_j
with alternating directions, so a local minimum sits between a step down and the next step up.
The minima of L are all pairs (products) of the axes' minima: m per axis gives m^dim in total.
Every minimum reported here is verified in float64: gradient ~ 0 and Hessian positive definite.

The wide net: f(x) = W2^T softplus(W1^T x + b1) + b2 with n_1 >= N hidden units (the ICML 2017
theorem's setting: analytic strictly increasing sigma, squared loss, distinct points, pyramidal),
shown on real data (N MNIST digits, one-hot targets). Both are minimized by the same local method
(L-BFGS, float64) from random starts. (On the neuron's own 12 points the wide net fits too in
principle, but those points differ by factors of 10 down to 1e-5 with alternating targets, which
needs weights ~1e5: L-BFGS does not get there in thousands of steps, so that pairing shows
conditioning, not landscape.)
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.special


def auer_examples(per_dim: int = 5, dim: int = 2, ratio: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """X `[per_dim * dim, dim]`, y `[per_dim * dim]` (targets 1, 0, 1, ... on each axis)."""
    if per_dim < 2 or dim < 1 or ratio <= 1:
        raise ValueError("need per_dim >= 2, dim >= 1, ratio > 1")
    t = ratio ** -np.arange(per_dim, dtype=np.float64)
    y1 = (np.arange(per_dim) % 2 == 0).astype(np.float64)
    X = np.zeros((per_dim * dim, dim))
    for a in range(dim):
        X[a * per_dim:(a + 1) * per_dim, a] = t
    return X, np.tile(y1, dim)


def neuron_loss(w, X, y):
    """sum_i (sigmoid(w . x_i) - y_i)^2 for w `[dim]`."""
    return jnp.sum((jax.nn.sigmoid(X @ w) - y) ** 2)


class Minima(NamedTuple):
    """Verified local minima: points `[m, dim]`, their losses `[m]`, gradient norms `[m]`, smallest
    Hessian eigenvalue `[m]` (all > 0), and the per-axis counts."""
    points: np.ndarray
    losses: np.ndarray
    grad_norms: np.ndarray
    min_hessian_eig: np.ndarray
    per_axis: tuple


def _axis_minima(t: np.ndarray, y: np.ndarray, wmax: float) -> np.ndarray:
    """Local minima of w -> sum_j (sigmoid(w t_j) - y_j)^2 on [-wmax, wmax]: sign changes - to + of
    the derivative on an asinh-spaced grid, refined by brentq."""
    def d(w):
        s = scipy.special.expit(np.outer(np.atleast_1d(w), t))
        return np.sum(2.0 * (s - y) * s * (1 - s) * t, axis=1)

    u = np.linspace(-np.arcsinh(wmax), np.arcsinh(wmax), 200001)
    w = np.sinh(u)
    g = d(w)
    idx = np.flatnonzero((g[:-1] < 0) & (g[1:] > 0))
    return np.array([scipy.optimize.brentq(lambda v: d(v)[0], w[i], w[i + 1], xtol=1e-14) for i in idx])


def local_minima(X: np.ndarray, y: np.ndarray, *, per_dim: int, wmax: float | None = None) -> Minima:
    """All local minima of `neuron_loss` for `auer_examples` data (axis-separable), verified with the
    float64 gradient and Hessian of the full loss."""
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    if X.ndim != 2 or y.shape != (len(X),):
        raise ValueError(f"X must be [n, dim] and y [n]; got {X.shape} and {y.shape}")
    dim = X.shape[1]
    if per_dim * dim != len(X):
        raise ValueError(f"per_dim must be len(X) / dim = {len(X) / dim:g} for auer_examples data (per_dim "
                         f"examples on each axis), got {per_dim}")
    on_axis = np.repeat(np.eye(dim, dtype=bool), per_dim, axis=0)
    if np.any(X[~on_axis] != 0) or np.any(X[on_axis] <= 0):
        raise ValueError("X must be axis-separable as auer_examples makes it: the a-th block of per_dim rows "
                         "positive on axis a and zero elsewhere")
    t = X[:per_dim, 0]
    wmax = wmax or 100.0 / t.min()
    axes = []
    for a in range(dim):
        rows = slice(a * per_dim, (a + 1) * per_dim)
        axes.append(_axis_minima(X[rows, a], y[rows], wmax))
    grids = np.meshgrid(*axes, indexing="ij")
    pts = np.stack([g.ravel() for g in grids], 1)
    with jax.enable_x64(True):
        Xj, yj = jnp.asarray(X), jnp.asarray(y)
        f = jax.jit(lambda w: neuron_loss(w, Xj, yj))
        grad = jax.jit(jax.grad(lambda w: neuron_loss(w, Xj, yj)))
        hess = jax.jit(jax.hessian(lambda w: neuron_loss(w, Xj, yj)))
        P = jnp.asarray(pts)
        losses = np.asarray(jax.vmap(f)(P))
        gn = np.asarray(jnp.linalg.norm(jax.vmap(grad)(P), axis=1))
        eig = np.asarray(jnp.min(jnp.linalg.eigvalsh(jax.vmap(hess)(P)), axis=1))
    ok = (gn < 1e-9) & (eig > 0)
    return Minima(pts[ok], losses[ok], gn[ok], eig[ok], tuple(len(a) for a in axes))


def neuron_restarts(X, y, key, *, n_starts: int = 50, scale: float = 5.0, maxiter: int = 2000) -> np.ndarray:
    """L-BFGS on `neuron_loss` from n_starts random w = sinh(scale * N(0, I)) (starting points spread over all
    the scales of the data). Returns `[n_starts, dim + 1]`: each row the end point w, then its loss."""
    u0 = scale * np.asarray(jax.random.normal(key, (n_starts, X.shape[1])), np.float64)
    out = []
    with jax.enable_x64(True):
        Xj, yj = jnp.asarray(X, jnp.float64), jnp.asarray(y, jnp.float64)
        vg = jax.jit(jax.value_and_grad(lambda w: neuron_loss(w, Xj, yj)))

        def f(v):
            val, g = vg(jnp.asarray(v))
            return float(val), np.asarray(g, np.float64)

        for w0 in np.sinh(u0):
            res = scipy.optimize.minimize(f, w0, jac=True, method="L-BFGS-B",
                                          options={"maxiter": maxiter, "gtol": 1e-12, "ftol": 1e-15})
            out.append(np.append(res.x, res.fun))
    return np.array(out)


def _unflatten(theta, d: int, hidden: int, k: int):
    i = 0
    parts = []
    for shape in ((d, hidden), (hidden,), (hidden, k), (k,)):
        n = int(np.prod(shape))
        parts.append(theta[i:i + n].reshape(shape))
        i += n
    return parts


def wide_net_loss(theta, X, Y, hidden: int):
    """Squared loss sum_i ||W2^T softplus(W1^T x_i + b1) + b2 - y_i||^2; theta the flat parameters,
    X `[N, d]`, Y `[N, K]`."""
    W1, b1, W2, b2 = _unflatten(theta, X.shape[1], hidden, Y.shape[1])
    return jnp.sum((jax.nn.softplus(X @ W1 + b1) @ W2 + b2 - Y) ** 2)


def _recorder(hist: list):
    def callback(intermediate_result):  # scipy passes the OptimizeResult by this parameter name
        hist.append(float(intermediate_result.fun))
    return callback


def wide_net_restarts(X, Y, key, *, hidden: int, n_starts: int = 10, maxiter: int = 2000,
                      record: bool = False):
    """Final training losses `[n_starts]` of L-BFGS (float64) on the one-hidden-layer softplus net
    d -> hidden -> K from LeCun-normal starts; X `[N, d]`, Y `[N, K]` (or `[N]`). With record=True also
    each run's loss after every iteration."""
    X = np.asarray(X, np.float64).reshape(len(X), -1)
    Y = np.asarray(Y, np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    (N, d), K = X.shape, Y.shape[1]
    if hidden < N:
        raise ValueError(f"hidden = {hidden} < N = {N}: not a wide layer")
    finals, curves = [], []
    with jax.enable_x64(True):
        Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
        vg = jax.jit(jax.value_and_grad(lambda th: wide_net_loss(th, Xj, Yj, hidden)))

        def f(v):
            val, g = vg(jnp.asarray(v))
            return float(val), np.asarray(g, np.float64)

        for k in jax.random.split(key, n_starts):
            k1, k2 = jax.random.split(k)
            theta0 = np.concatenate([np.asarray(jax.random.normal(k1, (d * hidden,))) / np.sqrt(d),
                                     np.zeros(hidden),
                                     np.asarray(jax.random.normal(k2, (hidden * K,))) / np.sqrt(hidden),
                                     np.zeros(K)]).astype(np.float64)
            hist = [f(theta0)[0]]
            res = scipy.optimize.minimize(f, theta0, jac=True, method="L-BFGS-B",
                                          callback=_recorder(hist) if record else None,
                                          options={"maxiter": maxiter, "maxfun": 2 * maxiter,
                                                   "gtol": 1e-14, "ftol": 1e-20})
            finals.append(res.fun)
            curves.append(np.array(hist))
    return (np.array(finals), curves) if record else np.array(finals)
