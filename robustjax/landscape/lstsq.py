""""rand": random hidden weights, output layer fit by least squares (the talk's skip-connection slide).

With features Phi `[N, P]` of rank N (P >= N; for a skip network Phi = [psi(X), f_{L-1}(X), 1] and
psi has M >= N units), the linear system Phi W = Y (Y `[N, K]` one-hot) has exact solutions; we take
the minimum-norm one, W = Phi^T (Phi Phi^T)^{-1} Y. Then f(x_i) = y_i for every training point: zero
squared loss and zero training error "with probability 1" over the random hidden weights
(Nguyen, Mukkamala & Hein, ICLR 2019; methods.md section 3).

Three solvers, all float64 where it matters:
- "cholesky": the normal equations of the dual problem. G = Phi Phi^T `[N, N]` accumulated in float64
  over column blocks, Cholesky, alpha = G^{-1} Y, W = Phi^T alpha. O(N^2 P) time, 8 N^2 bytes (+ Phi).
- "qr": economic QR of Phi^T `[P, N]` in float64, W = Q R^{-T} Y. About 2x the flops of "cholesky"
  and 16 P N bytes, but it never squares the condition number.
- "cg": conjugate gradients on G alpha = Y with a Jacobi preconditioner, matrix-free (each step two
  float64 products with Phi), i.e. CGNE: it converges to the minimum-norm solution. Memory: a float64
  copy of Phi, no N x N matrix. Stops at relative residual `cg_tol` or after `cg_maxiter` steps; the
  residual reached is reported. Its step count grows with cond(Phi)^2 ~ cond(G), which for random
  sigmoid/softplus features is large (1e6 and more): on those it often stops before an exact fit;
  the benchmark reports by how much.

Large N on some CPUs: numpy's bundled OpenBLAS (numpy 2.4) crashed with SIGSEGV on the float64 product
behind a 20,000 x 20,000 Gram matrix on this project's AMD EPYC build machines (its native kernel,
multi-threaded); with OPENBLAS_CORETYPE=Haswell (or OPENBLAS_NUM_THREADS=1) in the environment before
Python starts, the same product runs. Set it in the shell for N of 20,000 and more.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from robustjax import validate
from robustjax.batching import map_batches

METHODS = ("cholesky", "qr", "cg")


class FitInfo(NamedTuple):
    """method; N points, P features, K outputs; time_s of the solve; residual = max |Phi W - Y|
    (float64); iterations (cg only, else 0); ridge added to G (0 unless asked)."""
    method: str
    N: int
    P: int
    K: int
    time_s: float
    residual: float
    iterations: int
    ridge: float


def one_hot(y, num_classes: int) -> np.ndarray:
    """labels `[N]` (integers, or floats that are whole numbers) -> `[N, K]` float64 one-hot targets."""
    num_classes = validate.positive_int(num_classes, "num_classes")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be [N], got shape {y.shape}")
    return np.eye(num_classes, dtype=np.float64)[validate.labels(y, len(y), num_classes)]


def _gram(Phi: np.ndarray, block: int) -> np.ndarray:
    N, P = Phi.shape
    G = np.zeros((N, N), np.float64)
    for j in range(0, P, block):
        B = Phi[:, j:j + block].astype(np.float64)
        G += B @ B.T
    return G


def _times_transpose(Phi: np.ndarray, A: np.ndarray, block: int) -> np.ndarray:
    """Phi^T A `[P, K]` in float64, Phi converted block by block."""
    out = np.empty((Phi.shape[1], A.shape[1]), np.float64)
    for j in range(0, Phi.shape[1], block):
        out[j:j + block] = Phi[:, j:j + block].astype(np.float64).T @ A
    return out


def _residual(Phi, W, Y, block):
    R = -np.asarray(Y, np.float64)
    for j in range(0, Phi.shape[1], block):
        R += Phi[:, j:j + block].astype(np.float64) @ W[j:j + block]
    return float(np.max(np.abs(R)))


def _cg(Phi: np.ndarray, Y: np.ndarray, tol: float, maxiter: int):
    """Jacobi-preconditioned CG on (Phi Phi^T) alpha = Y, one independent CG per column of Y."""
    Phi64 = np.asarray(Phi, np.float64)

    def G(v):
        return Phi64 @ (Phi64.T @ v)

    d = np.einsum("ij,ij->i", Phi64, Phi64)
    dinv = 1.0 / np.maximum(d, np.finfo(np.float64).tiny)[:, None]
    alpha = np.zeros_like(Y)
    r = Y.copy()
    z = dinv * r
    p = z.copy()
    rz = np.sum(r * z, 0)
    ynorm = np.linalg.norm(Y, axis=0)
    it = 0
    for it in range(1, maxiter + 1):
        Gp = G(p)
        a = rz / np.maximum(np.sum(p * Gp, 0), 1e-300)
        alpha += a * p
        r -= a * Gp
        if np.all(np.linalg.norm(r, axis=0) <= tol * ynorm):
            break
        z = dinv * r
        rz_new = np.sum(r * z, 0)
        p = z + (rz_new / np.maximum(rz, 1e-300)) * p
        rz = rz_new
    return alpha, it


def min_norm_fit(Phi, Y, *, method: str = "cholesky", ridge: float = 0.0, block: int = 4096,
                 cg_tol: float = 1e-6, cg_maxiter: int = 1000) -> tuple[np.ndarray, FitInfo]:
    """Minimum-norm W `[P, K]` with Phi W = Y, for Phi `[N, P]` of rank N (P >= N), Y `[N, K]`.

    ridge > 0 solves (G + ridge I) alpha = Y instead (then the fit is no longer exact).
    Raises ValueError on bad shapes, P < N, non-finite input, or (cholesky) a Gram matrix that is
    not numerically positive definite, i.e. rank Phi < N in float64.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {METHODS}")
    Phi = np.asarray(Phi)
    Y = np.asarray(Y, np.float64)
    if Phi.ndim != 2 or Y.ndim != 2 or Phi.shape[0] != Y.shape[0]:
        raise ValueError(f"need Phi [N, P] and Y [N, K]; got {Phi.shape} and {Y.shape}")
    N, P = Phi.shape
    if P < N:
        raise ValueError(f"P = {P} features < N = {N} points: an exact fit needs P >= N (a wide layer)")
    if not np.all(np.isfinite(Phi)):
        raise ValueError("Phi contains NaN or inf")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y contains NaN or inf")
    ridge = validate.positive_float(ridge, "ridge", allow_zero=True)
    block = validate.positive_int(block, "block")
    t0 = time.perf_counter()
    iters = 0
    if method == "cholesky":
        G = _gram(Phi, block)
        if ridge:
            G[np.diag_indices(N)] += ridge
        try:
            c = scipy.linalg.cho_factor(G, lower=True, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError as e:
            raise ValueError(f"Gram matrix Phi Phi^T is not numerically positive definite ({e}): "
                             f"rank Phi < N = {N}; use method='qr' or a ridge") from None
        alpha = scipy.linalg.cho_solve(c, Y, check_finite=False)
        del G, c
        W = _times_transpose(Phi, alpha, block)
    elif method == "qr":
        if ridge:
            raise ValueError("ridge is only supported by 'cholesky' and 'cg'")
        A = np.asarray(Phi.T, np.float64, order="F")
        Q, R = scipy.linalg.qr(A, mode="economic", overwrite_a=True, check_finite=False)
        del A
        W = Q @ scipy.linalg.solve_triangular(R, Y, trans="T", check_finite=False)
    else:
        if ridge:
            raise ValueError("ridge with cg: not implemented")
        alpha, iters = _cg(Phi, Y, cg_tol, cg_maxiter)
        W = _times_transpose(Phi, alpha, block)
    dt = time.perf_counter() - t0
    return W, FitInfo(method, N, P, Y.shape[1], dt, _residual(Phi, W, Y, block), iters, float(ridge))


# ----------------------------------------------------------------------------- skip networks

def skip_features(model: nn.Module, variables, x, *, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(psi `[N, M]`, f_{L-1} `[N, p]`) of a skip network (`model.apply(..., return_features=True)`)."""
    @jax.jit
    def run(xb):
        _, psi, h = model.apply(variables, xb, return_features=True)
        return psi, h

    return map_batches(run, [validate.batch(x)], batch_size=batch_size)


def predict(model: nn.Module, variables, x, *, batch_size: int = 500) -> np.ndarray:
    """logits `[N, K]` of `model.apply(variables, x)` in batches."""
    return map_batches(jax.jit(lambda xb: model.apply(variables, xb)), [validate.batch(x)], batch_size=batch_size)


class RandFit(NamedTuple):
    """The fitted variables; the solve's FitInfo; and, re-checked with the model itself on the
    training set: accuracy, max |f(x_i) - onehot(y_i)|, and zero_train_error (accuracy == 1)."""
    variables: dict
    info: FitInfo
    train_accuracy: float
    train_residual: float
    zero_train_error: bool


def rand_fit(model: nn.Module, variables, x, y, *, num_classes: int = 10, method: str = "cholesky",
             batch_size: int = 500, **solver_kw) -> RandFit:
    """Keeps the (random) hidden weights of a skip network and fits its output layer ("skip" kernel V,
    "out" kernel W_L and bias b) to one-hot targets by a minimum-norm least-squares solve on
    Phi = [psi(X), f_{L-1}(X), 1]; then re-evaluates the model on X to verify zero training error.

    Needs a model with `return_features` and Dense modules "skip" (no bias) and "out" (robustjax.models.skip).
    """
    x = validate.batch(x)
    y = validate.labels(y, x.shape[0], num_classes, name="y")
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one training point to fit, got an empty batch")
    psi, h = skip_features(model, variables, x, batch_size=batch_size)
    M, p = psi.shape[1], h.shape[1]
    Phi = np.concatenate([psi, h, np.ones((len(x), 1), psi.dtype)], 1)
    del psi, h
    W, info = min_norm_fit(Phi, one_hot(y, num_classes), method=method, **solver_kw)
    del Phi
    params = jax.tree_util.tree_map(lambda a: a, dict(variables["params"]))
    params["skip"] = {"kernel": jnp.asarray(W[:M], jnp.float32)}
    params["out"] = {"kernel": jnp.asarray(W[M:M + p], jnp.float32), "bias": jnp.asarray(W[-1], jnp.float32)}
    new_vars = {**variables, "params": params}
    logits = predict(model, new_vars, x, batch_size=batch_size)
    acc = float(np.mean(np.argmax(logits, -1) == y))
    res = float(np.max(np.abs(logits - one_hot(y, num_classes))))
    return RandFit(new_vars, info, acc, res, acc == 1.0)
