"""Theorem 2.1 of Hein & Andriushchenko (NIPS 2017): certified l2 radii from local cross-Lipschitz bounds.

For f: R^d -> R^K with C^1 components and c = argmax_j f_j(x), no perturbation with

    ||delta||_2 <= R* = max_{R > 0} min{ min_{j != c} (f_c(x) - f_j(x)) / L_cj(R), R }

changes the class, where L_cj(R) >= max_{y in B_2(x, R)} ||grad f_c(y) - grad f_j(y)||_2 (methods.md 1(a)).
g(R) = min_j Delta_j / L_cj(R) is non-increasing (the balls are nested), so R* is the crossing of g(R)
with R. Any evaluated R with g(R) >= R is a valid certificate, whatever search found it; the search here
keeps the largest such R (a safeguarded false-position search inside a bracket, `lax.fori_loop` over a
NamedTuple state).

Closed-form bounds L_cj(R), dispatched by structure type (`BOUNDS` table):
  * `LinearWeights` (f = W^T x + b): L is the constant ||w_c - w_j||; R* is the exact distance to the
    decision boundary.
  * `OneHiddenLayerWeights` (f = W^T sigma(U^T x), sigma C^1 with a known range of sigma' on intervals):
    grad(f_c - f_j)(y) = U (v o sigma'(U^T y)), v = W_c - W_j. On B(x, R), <u_l, y> lies in
    I_l = [z_l - R||u_l||, z_l + R||u_l||] and sigma'(<u_l, y>) in [lo_l, hi_l] (exact range of sigma'
    on I_l). Four sound bounds, the minimum is used per class:
      - interval ("center-radius", tighter than the paper's): with mid = (lo+hi)/2, rad = (hi-lo)/2,
        |grad_i| <= |U (v o mid)|_i + (|U| (|v| o rad))_i componentwise, then the l2 norm. It is never
        larger than the paper's || |U| (|v| o max|sigma'|) ||_2 (methods.md 1(b)) and equals the exact
        gradient norm at R = 0. Costs two [d, m] products per class and evaluation: used for the
        `num_tight_classes` classes with the smallest linearized radius.
      - exact-at-x plus deviation (all classes, O(m (r + K)) per class and evaluation):
        ||U (v o s0)|| + ||U (v o (mid - s0))|| + || |U| (|v| o rad) ||, s0 = sigma'(z); the first term is
        computed exactly once, the other two through the top-r eigenpairs of U^T U (resp. |U|^T |U|):
        e^T M e <= sum_{i<=r} lam_i (q_i^T e)^2 + lam_{r+1} (||e||^2 - sum_{i<=r} (q_i^T e)^2).
      - spectral: ||U||_2 ||v o max_{I_l}|sigma'| ||_2.
      - global componentwise: || |U| |v| ||_2 sup|sigma'| (constant, precomputed per class pair).
  * `GaussianKernelWeights` (f_j = sum_r alpha_rj exp(-gamma ||x - x_r||^2)): the smaller of
      - 2 gamma sum_r |alpha_rc - alpha_rj| h(s_r*), h(s) = s exp(-gamma s^2), s_r* the point of
        [max(||x-x_r|| - R, 0), ||x-x_r|| + R] closest to 1/sqrt(2 gamma) (methods.md 1(b)), and
      - (beyond the paper) the exact ||grad(f_c - f_j)(x)|| plus 2 gamma R sum_r |alpha_rc - alpha_rj| rho_r:
        phi_r(y) = (y - x_r) e^{-gamma ||y - x_r||^2} has Jacobian norm psi(t) = e^{-t} max(1, |1 - 2t|) at
        t = gamma ||y - x_r||^2, and rho_r is its exact maximum over the distance range (mean-value theorem).

`global_lipschitz_radius` is the baseline with R-independent (global) constants.

Guarantee: radius[i] > 0 implies argmax f(x_i + delta) = labels[i] for every ||delta||_2 <= radius[i]
(in exact arithmetic; float rounding is covered by shrinking the radius by 256 machine epsilons).
Points the model already misclassifies get radius 0 and `misclassified=True`. No input box is used:
the certificate holds on all of R^d, hence also inside [0, 1]^d.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax.models.activations import Activation
from robustjax.models.kernel import GaussianKernelWeights
from robustjax.models.mlp import OneHiddenLayerWeights

__all__ = ["LinearWeights", "CertificateResult", "certified_radius", "global_lipschitz_radius",
           "cross_lipschitz_bound", "BOUNDS", "OneHiddenLayerWeights", "GaussianKernelWeights"]


class LinearWeights(NamedTuple):
    """A linear classifier f(x) = W^T x + b. W: `[d, K]`, b: `[K]`."""
    W: jax.Array
    b: jax.Array

    def logits(self, x):
        """x `[batch, ...]` -> `[batch, K]`."""
        return x.reshape(x.shape[0], -1) @ self.W + self.b


class CertificateResult(NamedTuple):
    """One row per example.

    radius: `[batch]` certified l2 radius (0 where misclassified or where no positive radius is proven).
    misclassified: `[batch]` bool, argmax f(x) != label (radius 0 there).
    predicted: `[batch]` int, argmax f(x) (the class the certificate protects).
    closest_class: `[batch]` int, the class j attaining min_j Delta_j / L_cj(radius).
    bound: name of the bound used.
    """
    radius: np.ndarray
    misclassified: np.ndarray
    predicted: np.ndarray
    closest_class: np.ndarray
    bound: str


# ----------------------------------------------------------------------------- activations: range of sigma'

def _grad_range(act: Activation) -> Callable:
    """(lo, hi) -> (min, max) of sigma' over [lo, hi], elementwise. Exact for softplus (sigma' increasing),
    sigmoid and tanh (sigma' even, peaked at 0) and identity; otherwise [-max|sigma'|, max|sigma'|]."""
    name = act.name
    if name.startswith("softplus"):
        return lambda lo, hi: (act.grad(lo), act.grad(hi))
    if name in ("sigmoid", "tanh"):
        return lambda lo, hi: (jnp.minimum(act.grad(lo), act.grad(hi)), act.max_abs_grad(lo, hi))
    if name == "identity":
        return lambda lo, hi: (jnp.ones_like(lo), jnp.ones_like(hi))

    def generic(lo, hi):
        m = act.max_abs_grad(lo, hi)
        return -m, m
    return generic


def _check_activation(act: Activation):
    if not act.smooth or act.max_abs_grad is None:
        raise ValueError(
            f"Theorem 2.1 needs a continuously differentiable model whose |sigma'| has a known maximum on "
            f"every interval; the activation {act.name!r} is not (a ReLU net is not C^1). Use softplus, "
            "sigmoid or tanh, or bound such nets with an attack / the exact MILP verifier instead.")


def _sup_grad(act: Activation) -> float:
    return float(act.max_abs_grad(jnp.asarray(-jnp.inf), jnp.asarray(jnp.inf)))


# ----------------------------------------------------------------------------- per-structure problems

class _Problem(NamedTuple):
    """What the driver needs for one batch: margins `[B, K]` (inf at the predicted class), the bound
    L(R) `[B] -> [B, K]` used for the certificate, and a cheap sound bound for the initial bracket (or
    None, then the bracket starts at 0)."""
    margins: jax.Array
    full: Callable
    cheap: Callable | None
    r_floor: jax.Array   # a radius known to be certified (0 or a global bound), [B]


def _margins(logits, c):
    fc = jnp.take_along_axis(logits, c[:, None], 1)
    m = fc - logits
    return jnp.where(jax.nn.one_hot(c, logits.shape[1], dtype=bool), jnp.inf, m)


def _linear_prepare(s: LinearWeights, dtype):
    W = jnp.asarray(s.W, dtype)
    return {"W": W, "b": jnp.asarray(s.b, dtype)}


def _linear_problem(arrays, x, *, opts):
    del opts
    W, b = arrays["W"], arrays["b"]
    logits = x @ W + b
    c = jnp.argmax(logits, -1)
    V = W[:, c].T[:, :, None] - W[None]                          # [B, d, K]
    L = jnp.sqrt(jnp.sum(V * V, 1))                              # [B, K]
    full = lambda R: L  # noqa: E731
    return logits, _Problem(_margins(logits, c), full, None, jnp.zeros(x.shape[:1], x.dtype))


def _top_eig(M, r):
    """Top-r eigenpairs of a symmetric PSD matrix (float64) and the (r+1)-th eigenvalue (0 if none)."""
    lam, Q = np.linalg.eigh(M)
    lam, Q = np.maximum(lam[::-1], 0.0), Q[:, ::-1]
    r = min(r, len(lam))
    rest = lam[r] if r < len(lam) else 0.0
    return lam[:r], Q[:, :r], rest


def _ohl_prepare(s: OneHiddenLayerWeights, dtype, *, rank_u: int = 32, rank_abs: int = 4):
    """Everything that depends only on the weights: column norms, spectral norms, the global pair bound,
    and the top eigenpairs of U^T U and |U|^T |U| (each bound multiplied by 1 + 1e-6 against rounding)."""
    U = np.asarray(s.U, np.float64)
    W = np.asarray(s.W, np.float64)
    m, K = W.shape
    spec = np.linalg.norm(U, 2) * (1 + 1e-6)
    sup = _sup_grad(s.act)
    diff = W[:, :, None] - W[:, None, :]                                            # [m, Kc, Kj]
    absdiff = np.abs(diff).reshape(m, K * K)
    # global componentwise bound per pair (c, j): || |U| |W_c - W_j| ||_2 sup|sigma'|, [K, K]
    glob = np.linalg.norm(np.abs(U) @ absdiff, axis=0).reshape(K, K) * sup
    lam_u, Q_u, rest_u = _top_eig(U.T @ U, rank_u)
    lam_a, Q_a, rest_a = _top_eig(np.abs(U).T @ np.abs(U), rank_abs)
    # q_i^T (a o v_j) = a^T (q_i o W_c) - a^T (q_i o W_j): one [m, r K] table; for |v_j| a [m, r K K] table
    QW_u = (Q_u[:, :, None] * W[:, None, :]).reshape(m, -1)
    QW_a = (Q_a[:, :, None] * absdiff[:, None, :]).reshape(m, -1)
    f = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    return {"U": f(U), "absU": f(np.abs(U)), "W": f(W), "unorm": f(np.linalg.norm(U, axis=0)),
            "spec": f(spec), "glob": f(glob * (1 + 1e-6)), "W2": f((diff ** 2).reshape(m, K * K)),
            "lam_u": f(lam_u), "rest_u": f(rest_u), "QW_u": f(QW_u),
            "lam_a": f(lam_a), "rest_a": f(rest_a), "QW_a": f(QW_a)}


def _quad_bound(lam, rest, proj, sq):
    """sqrt(e^T M e) <= sqrt(sum_i lam_i (q_i^T e)^2 + lam_{r+1} (||e||^2 - sum_i (q_i^T e)^2)) for the
    eigen-decomposition of M; proj `[B, r, K]` = q_i^T e_j, sq `[B, K]` = ||e_j||^2."""
    # = sum_i (lam_i - lam_{r+1}) (q_i^T e)^2 + lam_{r+1} ||e||^2: a sum of non-negative terms (no
    # cancellation in floating point); 1e-4 covers the relative rounding of the float32 sums
    top = jnp.einsum("r,brk->bk", lam - rest, proj * proj)
    return jnp.sqrt(top + rest * sq) * (1 + 1e-4)


def _ohl_problem(arrays, x, *, opts):
    act, k = opts["act"], opts["num_tight_classes"]
    U, absU, W, unorm, spec, glob, W2 = (arrays[n] for n in ("U", "absU", "W", "unorm", "spec", "glob", "W2"))
    B, K = x.shape[0], W.shape[1]
    grange = _grad_range(act)
    z = x @ U                                                    # [B, m]
    logits = act.fn(z) @ W
    c = jnp.argmax(logits, -1)
    margins = _margins(logits, c)
    g_glob = glob[c]                                             # [B, K]

    def pick_c(t):                                               # [B, ..., Kc, Kj] table rows of class c
        return jnp.take_along_axis(t, c.reshape((B,) + (1,) * (t.ndim - 1)), t.ndim - 2).squeeze(t.ndim - 2)

    def vnorm2(a):                                               # ||v_j o a||^2, v_j = W_c - W_j: [B, m] -> [B, K]
        return pick_c(((a * a) @ W2).reshape(B, K, K))

    def interval(R):
        return z - R[:, None] * unorm, z + R[:, None] * unorm

    def cheap(R):
        lo, hi = interval(R)
        return jnp.minimum(spec * jnp.sqrt(vnorm2(act.max_abs_grad(lo, hi))), g_glob)

    # exact gradient differences at x: grad(f_c - f_j)(x) = U (v_j o sigma'(z)), all classes at once
    s0 = act.grad(z)
    G = jnp.einsum("bmk,dm->bkd", s0[:, :, None] * W[None], U)   # [B, K, d] gradients of the logits
    n0 = jnp.sqrt(jnp.sum((jnp.take_along_axis(G, c[:, None, None], 1) - G) ** 2, -1))   # [B, K]

    def dev_bound(a):                                            # >= ||U (v_j o a)||_2, a fixed [B, m]
        Y = (a @ arrays["QW_u"]).reshape(B, -1, K)               # [B, r, K]: q_i^T (a o W_k)
        proj = jnp.take_along_axis(Y, c[:, None, None], 2) - Y
        return _quad_bound(arrays["lam_u"], arrays["rest_u"], proj, vnorm2(a))

    def box_bound(a):                                            # >= || |U| (|v_j| o a) ||_2, a >= 0 [B, m]
        r = arrays["lam_a"].shape[0]
        proj = pick_c((a @ arrays["QW_a"]).reshape(B, r, K, K))
        return _quad_bound(arrays["lam_a"], arrays["rest_a"], proj, vnorm2(a))

    def fast(R):
        # U (v o s) = U (v o s0) + U (v o (mid - s0)) + U (v o t), |t| <= rad componentwise
        lo, hi = interval(R)
        smin, smax = grange(lo, hi)
        mid, rad = (smax + smin) / 2, (smax - smin) / 2
        return jnp.minimum(n0 + dev_bound(mid - s0) + box_bound(rad), cheap(R))

    # the k classes with the smallest linearized radius also get the interval bound
    k = min(k, K - 1)
    r_glob = jnp.min(_ratio(margins, g_glob), -1)
    if k <= 0:
        return logits, _Problem(margins, fast, cheap, jnp.maximum(r_glob, 0.0))
    _, idx = jax.lax.top_k(-_ratio(margins, n0), k)              # [B, k]
    VkT = W.T[c][:, None, :] - W.T[idx]                          # [B, k, m]: W_c - W_j, j in idx
    onehot_k = jax.nn.one_hot(idx, K, dtype=x.dtype)             # [B, k, K]
    selected = jnp.sum(onehot_k, 1) > 0                          # [B, K]

    def full(R):
        lo, hi = interval(R)
        smin, smax = grange(lo, hi)
        mid, rad = (smax + smin) / 2, (smax - smin) / 2
        # one [B k, m] x [m, d] product each (rows: examples x selected classes)
        center = (mid[:, None, :] * VkT).reshape(B * k, -1) @ U.T
        spread = (rad[:, None, :] * jnp.abs(VkT)).reshape(B * k, -1) @ absU.T
        tight = jnp.sqrt(jnp.sum((jnp.abs(center) + spread) ** 2, -1)).reshape(B, k)
        tight_full = jnp.where(selected, jnp.einsum("bk,bkK->bK", tight, onehot_k), jnp.inf)
        return jnp.minimum(fast(R), tight_full)

    return logits, _Problem(margins, full, cheap, jnp.maximum(r_glob, 0.0))


def _kernel_prepare(s: GaussianKernelWeights, dtype):
    A = np.asarray(s.alpha, np.float64)                          # [Rc, K]
    absdiff = np.abs(A[:, :, None] - A[:, None, :])              # [Rc, Kc, Kj]
    C = jnp.asarray(s.centers, dtype)
    return {"centers": C.reshape(C.shape[0], -1), "alpha": jnp.asarray(A, dtype),
            "absdiff": jnp.asarray(absdiff.reshape(A.shape[0], -1), dtype), "gamma": jnp.asarray(s.gamma, dtype)}


def _kernel_dist(x, C):
    sq = jnp.sum(x * x, -1)[:, None] + jnp.sum(C * C, -1)[None] - 2 * x @ C.T
    return jnp.maximum(sq, 0.0)


def _kernel_problem(arrays, x, *, opts):
    del opts
    C, A, absdiff, gamma = arrays["centers"], arrays["alpha"], arrays["absdiff"], arrays["gamma"]
    K = A.shape[1]
    sq = _kernel_dist(x, C)                                      # [B, Rc]
    logits = jnp.exp(-gamma * sq) @ A
    c = jnp.argmax(logits, -1)
    dist = jnp.sqrt(sq)
    s_peak = 1 / jnp.sqrt(2 * gamma)

    B = x.shape[0]

    def pairs(h):                                                # sum_r |alpha_rc - alpha_rj| h_r: [B, Rc] -> [B, K]
        return jnp.take_along_axis((h @ absdiff).reshape(B, K, K), c[:, None, None], 1)[:, 0]

    # exact gradients at x: grad f_k(x) = -2 gamma (x (k A)_k - C^T (k o A_k)), then differences to class c
    kx = jnp.exp(-gamma * sq)
    H = jnp.einsum("brk,rd->bkd", kx[:, :, None] * A[None], C)              # [B, K, d]
    grads = -2 * gamma * (x[:, None, :] * (kx @ A)[:, :, None] - H)
    n0 = jnp.sqrt(jnp.sum((jnp.take_along_axis(grads, c[:, None, None], 1) - grads) ** 2, -1))

    def psi(t):                                                  # ||Jacobian of (y - x_r) e^{-gamma ||y - x_r||^2}||_2
        return jnp.exp(-t) * jnp.maximum(1.0, jnp.abs(1 - 2 * t))   # at gamma ||y - x_r||^2 = t

    def full(R):
        lo, hi = jnp.maximum(dist - R[:, None], 0.0), dist + R[:, None]
        # paper-style: |(y - x_r) k_r(y)| <= max of s e^{-gamma s^2} over the distance range
        s = jnp.clip(s_peak, lo, hi)
        paper = 2 * gamma * pairs(s * jnp.exp(-gamma * s * s))
        # exact at x plus mean-value deviation: psi is decreasing, increasing on [1, 1.5], decreasing
        t_lo, t_hi = gamma * lo * lo, gamma * hi * hi
        rho = jnp.maximum(psi(t_lo), psi(jnp.clip(1.5, t_lo, t_hi)))
        deviation = n0 + 2 * gamma * R[:, None] * pairs(rho)
        return jnp.minimum(paper, deviation * (1 + 1e-5))
    return logits, _Problem(_margins(logits, c), full, None, jnp.zeros(x.shape[:1], x.dtype))


class _Handler(NamedTuple):
    prepare: Callable      # (structure, dtype) -> dict of arrays independent of x and R
    problem: Callable      # (arrays, x [B, d], *, opts) -> (logits, _Problem)
    static: Callable       # structure -> dict of hashable options (e.g. the activation)
    name: str


BOUNDS: dict[type, _Handler] = {
    LinearWeights: _Handler(_linear_prepare, _linear_problem, lambda s: {}, "linear/exact"),
    OneHiddenLayerWeights: _Handler(_ohl_prepare, _ohl_problem, lambda s: {"act": s.act},
                                    "one_hidden_layer/local(interval+spectral+global)"),
    GaussianKernelWeights: _Handler(_kernel_prepare, _kernel_problem, lambda s: {}, "gaussian_kernel/local"),
}


def _handler(structure) -> _Handler:
    h = BOUNDS.get(type(structure))
    if h is None:
        what = "a callable (logits_fn)" if callable(structure) else type(structure).__name__
        raise ValueError(
            f"certified_radius needs a model structure with a closed-form local cross-Lipschitz bound, one of "
            f"{[t.__name__ for t in BOUNDS]}; got {what}. Theorem 2.1 needs continuously differentiable "
            "components with a computable bound on the local Lipschitz constant of f_c - f_j (a ReLU net is "
            "not C^1); pass e.g. `model.weights(variables)` of a OneHiddenLayer or GaussianKernelMachine.")
    if isinstance(structure, OneHiddenLayerWeights):
        _check_activation(structure.act)
    return h


# ----------------------------------------------------------------------------- the search over R

class SearchState(NamedTuple):
    """Bracket [lo, hi] of the crossing of g(R) with R: psi(lo) = g(lo) - lo >= 0 (lo certified),
    psi(hi) < 0 unless hi is itself certified; `side` remembers which end moved last (Illinois)."""
    lo: jax.Array
    hi: jax.Array
    psi_lo: jax.Array
    psi_hi: jax.Array
    side: jax.Array


def _ratio(margins, L):
    """margins / L with 0/0 -> 0 and m/0 -> inf (m > 0)."""
    safe = jnp.where(L > 0, L, 1.0)
    return jnp.where(L > 0, margins / safe, jnp.where(margins > 0, jnp.inf, 0.0))


def _g(problem: _Problem, bound: Callable, R):
    return jnp.min(_ratio(problem.margins, bound(R)), -1)


def _bisect_cheap(problem: _Problem, r_hi, steps: int):
    """Plain bisection with the cheap bound: returns a certified lower end >= problem.r_floor."""
    def body(_, lohi):
        lo, hi = lohi
        mid = (lo + hi) / 2
        ok = _g(problem, problem.cheap, mid) >= mid
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)
    lo0 = jnp.minimum(problem.r_floor, r_hi)
    lo, _ = jax.lax.fori_loop(0, steps, body, (lo0, r_hi))
    return lo


def search_init(problem: _Problem, *, cheap_steps: int) -> SearchState:
    """g(0) bounds R* from above (g is non-increasing and R* = g(R*)); the lower end is certified."""
    B = problem.margins.shape[0]
    zero = jnp.zeros((B,), problem.margins.dtype)
    hi = jnp.maximum(_g(problem, problem.full, zero), 0.0)
    lo = _bisect_cheap(problem, hi, cheap_steps) if problem.cheap is not None else jnp.minimum(problem.r_floor, hi)
    psi_lo = _g(problem, problem.full, lo) - lo
    psi_hi = _g(problem, problem.full, hi) - hi
    # hi itself certified (e.g. linear models: g constant): collapse the bracket there
    done = psi_hi >= 0
    lo = jnp.where(done, hi, lo)
    psi_lo = jnp.where(done, psi_hi, psi_lo)
    return SearchState(lo, hi, psi_lo, psi_hi, jnp.zeros((B,), jnp.int32))


def search_step(problem: _Problem, state: SearchState) -> SearchState:
    """One safeguarded false-position (Illinois) step on psi(R) = g(R) - R; the new point is kept away
    from the ends by 5 % of the bracket so the bracket always shrinks."""
    lo, hi, plo, phi, side = state
    w = hi - lo
    denom = jnp.where(plo - phi > 0, plo - phi, 1.0)
    t = jnp.clip(plo / denom, 0.05, 0.95)
    R = jnp.where(w > 0, lo + t * w, lo)
    psi = _g(problem, problem.full, R) - R
    ok = psi >= 0
    # Illinois: halve the stale end's psi when the same end moves twice
    new_plo = jnp.where(ok, psi, jnp.where(side == -1, plo / 2, plo))
    new_phi = jnp.where(ok, jnp.where(side == 1, phi / 2, phi), psi)
    return SearchState(jnp.where(ok, R, lo), jnp.where(ok, hi, R), new_plo, new_phi,
                       jnp.where(ok, 1, -1).astype(jnp.int32))


@functools.lru_cache(maxsize=64)
def _compiled(kind: type, static_key: tuple, steps: int, cheap_steps: int, num_tight_classes: int,
              static_vals: tuple):
    handler = BOUNDS[kind]
    opts = {k: (v.act if isinstance(v, _ActKey) else v) for k, v in zip(static_key, static_vals)}
    opts["num_tight_classes"] = num_tight_classes

    def run(arrays, x):
        logits, problem = handler.problem(arrays, x, opts=opts)
        state = search_init(problem, cheap_steps=cheap_steps)
        state = jax.lax.fori_loop(0, steps, lambda _, s: search_step(problem, s), state)
        R = state.lo
        closest = jnp.argmin(_ratio(problem.margins, problem.full(R)), -1)
        return logits, R, closest
    return jax.jit(run)


def _static(structure):
    s = BOUNDS[type(structure)].static(structure)
    # activations are keyed by name so that equal activations share one compilation
    keys = tuple(sorted(s))
    vals = tuple(_ActKey(v) if isinstance(v, Activation) else v for v in (s[k] for k in keys))
    return keys, vals


class _ActKey:
    """Hashable wrapper of an Activation, equal by name."""
    def __init__(self, act):
        self.act = act

    def __hash__(self):
        return hash(self.act.name)

    def __eq__(self, other):
        return isinstance(other, _ActKey) and other.act.name == self.act.name


def _flatten_inputs(x, labels):
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must be batched, [batch, ...]; got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be floating point, got dtype {x.dtype}")
    labels = np.asarray(labels)
    if labels.shape != (x.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape ({x.shape[0]},), got {labels.dtype} {labels.shape}")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError("x contains NaN or inf")
    return x.reshape(x.shape[0], -1), labels


def _dtype_of(structure, x):
    return jnp.result_type(x.dtype, *[a.dtype for a in structure if hasattr(a, "dtype")])


def certified_radius(structure, x, labels, *, p: float = 2, steps: int = 8, cheap_steps: int = 24,
                     num_tight_classes: int = 2, batch_size: int = 1000) -> CertificateResult:
    """Certified l2 radius of Theorem 2.1 per example.

    Args:
      structure: a `LinearWeights`, `OneHiddenLayerWeights` (smooth activation) or
        `GaussianKernelWeights` (e.g. `model.weights(variables)`); a plain logits_fn is rejected.
      x: `[batch, ...]` inputs (flattened to `[batch, d]`).
      labels: `[batch]` int true labels.
      p: the norm; only 2 is supported.
      steps: search steps after the bracket (each costs one evaluation of the bound).
      cheap_steps: bisection steps with the cheap (O(m) per class) bound that set the certified lower end.
      num_tight_classes: per example, how many classes (smallest cheap radius first) get the tighter
        interval bound of a one-hidden-layer net; the others keep the spectral/global bound (still
        sound). K - 1 uses it for all classes.
      batch_size: examples per compiled call (the last batch is padded; one compilation).

    Returns:
      CertificateResult with radius `[batch]` (0 and misclassified=True where argmax f(x) != label).

    References: Hein & Andriushchenko, "Formal guarantees on the robustness of a classifier against
    adversarial manipulation", NIPS 2017, Theorem 2.1 (methods.md 1(a), 1(b)).
    """
    if float(p) != 2.0:
        raise ValueError(f"certified_radius implements the l2 case (p=2) of Theorem 2.1; got p={p}")
    handler = _handler(structure)
    x, labels = _flatten_inputs(x, labels)
    dtype = _dtype_of(structure, x)
    x = x.astype(dtype)
    arrays = handler.prepare(structure, dtype)
    keys, vals = _static(structure)
    fn = _compiled(type(structure), keys, int(steps), int(cheap_steps), int(num_tight_classes), vals)
    n = x.shape[0]
    bs = min(batch_size, n)
    radius, pred, closest = [], [], []
    for i in range(0, n, bs):
        xb = x[i:i + bs]
        nb = xb.shape[0]
        if nb < bs:
            xb = jnp.concatenate([xb, jnp.broadcast_to(xb[:1], (bs - nb,) + xb.shape[1:])])
        logits, R, cl = fn(arrays, xb)
        radius.append(np.asarray(R[:nb]))
        pred.append(np.asarray(jnp.argmax(logits[:nb], -1)))
        closest.append(np.asarray(cl[:nb]))
    return _result(np.concatenate(radius), np.concatenate(pred), np.concatenate(closest), labels, dtype,
                   handler.name)


def _result(radius, pred, closest, labels, dtype, name) -> CertificateResult:
    guard = 1 - 256 * float(jnp.finfo(dtype).eps)
    wrong = pred != labels
    radius = np.where(wrong, 0.0, np.maximum(radius, 0.0) * guard)
    return CertificateResult(radius=radius, misclassified=wrong, predicted=pred.astype(np.int32),
                             closest_class=closest.astype(np.int32), bound=name)


def cross_lipschitz_bound(structure, x, radius, *, num_tight_classes: int | None = None) -> jax.Array:
    """The bound L_cj(R) used by `certified_radius`: `[batch, K]` upper bounds on
    max_{y in B_2(x_i, R_i)} ||grad f_c(y) - grad f_j(y)||_2, c = argmax f(x_i) (inf at j = c).
    x `[batch, ...]`, radius `[batch]`. By default every class gets the tightest bound."""
    handler = _handler(structure)
    x, _ = _flatten_inputs(x, np.zeros((jnp.shape(x)[0],), np.int32))
    dtype = _dtype_of(structure, x)
    x = x.astype(dtype)
    opts = BOUNDS[type(structure)].static(structure)
    K = _num_classes(structure)
    opts["num_tight_classes"] = K - 1 if num_tight_classes is None else num_tight_classes
    _, problem = handler.problem(handler.prepare(structure, dtype), x, opts=opts)
    L = problem.full(jnp.asarray(radius, dtype))
    return jnp.where(jnp.isinf(problem.margins), jnp.inf, L)


def _num_classes(structure) -> int:
    if isinstance(structure, GaussianKernelWeights):
        return structure.alpha.shape[1]
    return structure.W.shape[1]


# ----------------------------------------------------------------------------- global baseline

def _global_constants(structure):
    """[K, K] global bounds on ||grad f_c - grad f_j|| over all of R^d (R-independent)."""
    if isinstance(structure, LinearWeights):
        W = np.asarray(structure.W, np.float64)
        return np.linalg.norm(W[:, :, None] - W[:, None, :], axis=0)
    if isinstance(structure, OneHiddenLayerWeights):
        U, W = np.asarray(structure.U, np.float64), np.asarray(structure.W, np.float64)
        sup = _sup_grad(structure.act)
        diff = W[:, :, None] - W[:, None, :]                                        # [m, K, K]
        comp = np.linalg.norm(np.abs(U) @ np.abs(diff).reshape(W.shape[0], -1), axis=0)
        spec = np.linalg.norm(U, 2) * np.linalg.norm(diff, axis=0).reshape(-1)
        return (np.minimum(comp, spec) * sup * (1 + 1e-6)).reshape(W.shape[1], W.shape[1])
    A = np.asarray(structure.alpha, np.float64)
    g = float(structure.gamma)
    s = 1 / np.sqrt(2 * g)
    hmax = s * np.exp(-g * s * s)
    return 2 * g * hmax * np.sum(np.abs(A[:, :, None] - A[:, None, :]), 0) * (1 + 1e-6)


def global_lipschitz_radius(structure, x, labels, *, p: float = 2, batch_size: int = 1000) -> CertificateResult:
    """Baseline: radius min_j Delta_j / L_cj with global constants (sup |sigma'| instead of its local
    maximum; for one hidden layer the smaller of || |U| |v| ||_2 and ||U||_2 ||v||_2 times sup|sigma'|;
    for kernels h at its peak). Same call shape and result as `certified_radius`."""
    if float(p) != 2.0:
        raise ValueError(f"global_lipschitz_radius implements p=2; got p={p}")
    _handler(structure)
    x, labels = _flatten_inputs(x, labels)
    dtype = _dtype_of(structure, x)
    x = x.astype(dtype)
    G = jnp.asarray(_global_constants(structure), dtype)
    logits_fn = jax.jit(structure.logits)
    logits = jnp.concatenate([logits_fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    c = jnp.argmax(logits, -1)
    ratio = _ratio(_margins(logits, c), G[c])
    radius = np.asarray(jnp.min(ratio, -1))
    return _result(radius, np.asarray(c), np.asarray(jnp.argmin(ratio, -1)), labels, dtype,
                   type(structure).__name__ + "/global")
