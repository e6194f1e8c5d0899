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
        e^T M e <= sum_{i<=r} (lam_i - lam_{r+1}) (q_i^T e)^2 + (lam_{r+1} + delta) ||e||^2, delta covering
        the inexactness of the computed eigenpairs (measured once per structure).
      - spectral: ||U||_2 ||v o max_{I_l}|sigma'| ||_2.
      - global componentwise: || |U| |v| ||_2 sup|sigma'| (constant, precomputed per class pair).
  * `GaussianKernelWeights` (f_j = sum_r alpha_rj exp(-gamma ||x - x_r||^2)): the smaller of
      - 2 gamma sum_r |alpha_rc - alpha_rj| h(s_r*), h(s) = s exp(-gamma s^2), s_r* the point of
        [max(||x-x_r|| - R, 0), ||x-x_r|| + R] closest to 1/sqrt(2 gamma) (methods.md 1(b)), and
      - (beyond the paper) the exact ||grad(f_c - f_j)(x)|| plus 2 gamma R sum_r |alpha_rc - alpha_rj| rho_r:
        phi_r(y) = (y - x_r) e^{-gamma ||y - x_r||^2} has Jacobian norm psi(t) = e^{-t} max(1, |1 - 2t|) at
        t = gamma ||y - x_r||^2, and rho_r is its exact maximum over the distance range (mean-value theorem).

`global_lipschitz_radius` is the baseline with R-independent (global) constants.

Guarantee, in every dtype (float32 with x64 off as users run it, or float64): radius[i] > 0 implies that
the network *evaluated in exact arithmetic on the weights as stored in the working dtype* (the result type
of x and the weights, canonicalized: float32 when x64 is off) classifies every point of the closed l2 ball
of that radius around x[i] (the x passed, also when it had more precision than the working dtype) as
labels[i]; i.e. radius <= the exact-arithmetic minimal l2 distance to another class. Floating point is
accounted for rigorously, not by a relative fudge:
  * every margin f_c - f_j carries an a-priori forward error bound in the working dtype (gamma_n |a|.|b|
    terms for each dot product of length n, gamma_n = n u / (1 - n u), u the unit roundoff; the input
    error of each elementwise activation pushed through a Lipschitz constant; `ACT_ULPS` units of u for
    jnp's exp / logistic / tanh / softplus evaluations, which are not correctly rounded), and the
    certificate uses margin - error;
  * every bound L_cj(R) is an upper bound in the same sense: intervals are rounded outward, the rounding
    of the cancelling sums (the center term, the gradient at x, the eigen-projections) is added as
    absolute terms, and sums of non-negative terms are inflated by their relative error bound;
  * the quotient margin / L is rounded downward before it is compared with R.
A point whose margin to some class is within its error bound gets radius 0 and `uncertain=True` (its
prediction is not certain in exact arithmetic); it never gets a positive radius. The error model assumes
IEEE arithmetic in the working dtype for dot products (all dots use `Precision.HIGHEST`, so no TF32 or
bfloat16 passes on GPUs) and at most `ACT_ULPS` units of u of error in each elementwise function
(tests/test_certify.py measures jnp's on CPU); float64 eigen/singular value routines are trusted to
backward-stable accuracy (covered by factors 1 + 1e-6 and 1e-10 ||M||). Points the model already
misclassifies get radius 0 and `misclassified=True`. No input box is used: the certificate holds on all
of R^d, hence also inside [0, 1]^d.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import validate
from robustjax.batching import map_batches
from robustjax.geometry import class_margins
from robustjax.models.activations import Activation
from robustjax.models.kernel import GaussianKernelWeights
from robustjax.models.mlp import OneHiddenLayerWeights

__all__ = ["LinearWeights", "CertificateResult", "certified_radius", "global_lipschitz_radius",
           "cross_lipschitz_bound", "BOUNDS", "OneHiddenLayerWeights", "GaussianKernelWeights", "ACT_ULPS"]

ACT_ULPS = 32
"""Error budget, in units of the unit roundoff u, for one evaluation of an elementwise function: exp
(relative to the value), sigma (relative to |sigma(t)| + sup|sigma'| |t|) and sigma' (relative to
sup|sigma'|). jnp's float32 functions on CPU stay below 8.5 u (tanh', measured); tests/test_certify.py
asserts ACT_ULPS / 2."""


class LinearWeights(NamedTuple):
    """A linear classifier f(x) = W^T x + b. W: `[d, K]`, b: `[K]`."""
    W: jax.Array
    b: jax.Array

    def logits(self, x):
        """x `[batch, ...]` -> `[batch, K]`."""
        return x.reshape(x.shape[0], -1) @ self.W + self.b


class CertificateResult(NamedTuple):
    """One row per example.

    radius: `[batch]` certified l2 radius in the working dtype (0 where misclassified, uncertain or where
      no positive radius is proven).
    misclassified: `[batch]` bool, the computed argmax f(x) != label (radius 0 there).
    predicted: `[batch]` int32, the computed argmax f(x) (the class the certificate protects).
    closest_class: `[batch]` int32, the class j attaining min_j Delta_j / L_cj(radius).
    bound: name of the bound used.
    uncertain: `[batch]` bool, some margin f_c(x) - f_j(x) is within its rounding-error bound: the exact
      prediction is not certain, radius 0.
    """
    radius: np.ndarray
    misclassified: np.ndarray
    predicted: np.ndarray
    closest_class: np.ndarray
    bound: str
    uncertain: np.ndarray | None = None


# ----------------------------------------------------------------------------- rigorous rounding

_HIGHEST = jax.lax.Precision.HIGHEST


def _dot(a, b):
    return jnp.matmul(a, b, precision=_HIGHEST)


def _u(dtype) -> float:
    """Unit roundoff of dtype (2^-24 for float32)."""
    return float(jnp.finfo(dtype).eps) / 2


def _gamma(n: int, dtype) -> float:
    """gamma_n = n u / (1 - n u): |fl(a . b) - a . b| <= gamma_n |a| . |b| for dot products of length n."""
    nu = n * _u(dtype)
    if nu >= 0.01:
        raise ValueError(f"a sum of {n} terms is beyond what a rigorous {jnp.dtype(dtype).name} error bound "
                         "covers; use float64 (jax.enable_x64)")
    return nu / (1 - nu)


def _err(n: int, s):
    """>= gamma_n * (exact value of a non-negative sum of n terms whose computed value s), including the
    rounding of this product and of adding it to up to three other such terms: the exact sum is at most
    s (1 + gamma_n), and (1 + 8u) covers four more roundings."""
    g = _gamma(n, s.dtype)
    return s * (g * (1 + g) * (1 + 8 * _u(s.dtype)))


def _up(a):
    """a rounded outward upward: >= a + 6u|a| + tiny (covers up to five roundings of relative size u in
    the computation of a); inf and nan stay."""
    u8 = 8 * _u(a.dtype)                                # a power of two: |a| * u8 is exact
    return jnp.where(jnp.isfinite(a), a + jnp.abs(a) * u8 + jnp.finfo(a.dtype).tiny, a)


def _down(a):
    """a rounded outward downward: <= a - 6u|a| - tiny; inf and nan stay."""
    u8 = 8 * _u(a.dtype)
    return jnp.where(jnp.isfinite(a), a - jnp.abs(a) * u8 - jnp.finfo(a.dtype).tiny, a)


def _inflate(n: int, a):
    """a times 1 + gamma_{n+1}: bounds the exact value of a non-negative quantity computed with at most n
    roundings along any path (sums, products, squares, square roots of non-negative terms), including
    the rounding of this product."""
    return a * (1 + _gamma(n + 1, a.dtype))


def _cast_up(a, dtype) -> np.ndarray:
    """float64 a cast to dtype, rounded upward (exact directed rounding)."""
    a = np.asarray(a, np.float64)
    b = a.astype(dtype)
    return np.where(b.astype(np.float64) < a, np.nextafter(b, np.asarray(np.inf, dtype)), b)


def _cast_down(a, dtype) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = a.astype(dtype)
    return np.where(b.astype(np.float64) > a, np.nextafter(b, np.asarray(-np.inf, dtype)), b)


def _margin_lo(logits, c, err):
    """Rigorous lower bounds on f_c - f_j `[B, K]` (+inf at j = c) from computed logits and an error bound
    err `[B, K]` on each computed logit difference (the subtraction's own rounding is added here)."""
    m = class_margins(logits, c)
    u = _u(logits.dtype)
    lo = _down(m - _up(err + 2 * u * jnp.abs(jnp.where(jnp.isinf(m), 0.0, m))))
    return jnp.where(jnp.isinf(m), jnp.inf, lo)


def _pick(t, c):
    """Row c of a `[B, K]` table per example, `[B, 1]`."""
    return jnp.take_along_axis(t, c[:, None], 1)


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
    with jax.ensure_compile_time_eval():
        return float(act.max_abs_grad(jnp.asarray(-jnp.inf), jnp.asarray(jnp.inf)))


def _sigma_prime_enclosure(act: Activation, lo, hi):
    """Rigorous (smin, smax, max|sigma'|) over [lo, hi] from endpoints already rounded outward by at
    least 2u relative (which covers the rounding of alpha * t inside softplus'): the computed values,
    widened by the function budget ACT_ULPS u sup|sigma'|, clipped to the range of sigma'."""
    sup = _sup_grad(act)
    eg = ACT_ULPS * _u(lo.dtype) * sup
    smin, smax = _grad_range(act)(lo, hi)
    smin, smax = smin - eg, jnp.minimum(smax + eg, sup)
    if act.strictly_increasing:
        smin = jnp.maximum(smin, 0.0)
    smin = jnp.maximum(smin, -sup)
    return smin, smax, jnp.minimum(act.max_abs_grad(lo, hi) + eg, sup)


# ----------------------------------------------------------------------------- per-structure problems

class _Problem(NamedTuple):
    """What the driver needs for one batch: rigorous lower bounds on the margins `[B, K]` (inf at the
    predicted class), the rigorous bound L(R) `[B] -> [B, K]` used for the certificate, and a cheap sound
    bound for the initial bracket (or None, then the bracket starts at r_floor)."""
    margins: jax.Array
    full: Callable
    cheap: Callable | None
    r_floor: jax.Array   # a radius known to be certified (0 or a global bound), [B]


def _num_classes(structure) -> int:
    if isinstance(structure, GaussianKernelWeights):
        return int(np.shape(structure.alpha)[1])
    return int(np.shape(structure.W)[1])


def _num_features(structure) -> int:
    if isinstance(structure, GaussianKernelWeights):
        return int(np.prod(np.shape(structure.centers)[1:]))
    if isinstance(structure, LinearWeights):
        return int(np.shape(structure.W)[0])
    return int(np.shape(structure.U)[0])


def _as_working(a, dtype, name) -> np.ndarray:
    """Weights as stored in the working dtype (what the certificate is about), as exact float64."""
    w = np.asarray(jnp.asarray(a, dtype)).astype(np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError(f"structure.{name} contains NaN or inf")
    return w


def _g64(n) -> float:
    return _gamma(n, np.float64)


# --- linear

def _linear_prepare(s: LinearWeights, dtype, *, bounds: bool = True):
    del bounds
    W, b = _as_working(s.W, dtype, "W"), _as_working(s.b, dtype, "b")
    d = W.shape[0]
    L = np.linalg.norm(W[:, :, None] - W[:, None, :], axis=0) * (1 + 2 * _g64(2 * d + 8))
    return {"W": jnp.asarray(W, dtype), "b": jnp.asarray(b, dtype), "absW": jnp.asarray(np.abs(W), dtype),
            "absb": jnp.asarray(np.abs(b), dtype), "L": jnp.asarray(_cast_up(L, dtype))}


def _linear_margins(arrays, x, *, opts):
    del opts
    W, b = arrays["W"], arrays["b"]
    logits = _dot(x, W) + b
    c = jnp.argmax(logits, -1)
    S = _dot(jnp.abs(x), arrays["absW"]) + arrays["absb"]        # |x| . |w_k| + |b_k| >= 0
    err = _err(W.shape[0] + 1, _pick(S, c) + S)
    return logits, c, _margin_lo(logits, c, err), {}


def _linear_problem(arrays, x, *, opts):
    logits, c, margins, _ = _linear_margins(arrays, x, opts=opts)
    L = arrays["L"][c]                                           # [B, K]
    return logits, _Problem(margins, lambda R: L, None, jnp.zeros(x.shape[:1], x.dtype))


def _linear_global(s: LinearWeights, dtype):
    return np.asarray(_linear_prepare(s, dtype)["L"], np.float64)


# --- one hidden layer

def _psd_cover(M, absnorm2, r, n):
    """For a symmetric PSD M = A^T A (float64, computed with inner length n, || |A| ||_2^2 <= absnorm2):
    (coef [r] >= 0, Q [m, r], rest) with M <= Q diag(coef) Q^T + rest I as matrices, Q the top-r
    eigenvectors; rest = lam_{r+1} plus the measured defect of the computed eigenpairs plus the rounding
    of M itself (1e-10 covers the float64 rounding of these checks for m < 1e5)."""
    lam, Q = np.linalg.eigh(M)
    lam, Q = np.maximum(lam[::-1], 0.0), Q[:, ::-1]
    m = len(lam)
    r = min(r, m)
    rho = lam[r] if r < m else 0.0
    Qr, coef = Q[:, :r], lam[:r] - rho
    E = M - (Qr * coef) @ Qr.T - rho * np.eye(m)
    # lam_max(E) in the computed eigenbasis: F = Q^T E Q (about diag(0, lam_i - rho) <= 0), Gershgorin on
    # F, then back through sigma_min(Q)^2 >= 1 - ||Q^T Q - I||_F
    F = Q.T @ E @ Q
    gersh = float(np.max(np.diag(F) + np.sum(np.abs(F), 1) - np.abs(np.diag(F))))
    orth = float(np.linalg.norm(Q.T @ Q - np.eye(m)))
    defect = max(gersh, 0.0) / max(1 - orth, 0.5)
    rest = rho + defect + 1e-10 * (lam[0] + absnorm2) + 2 * _g64(n) * absnorm2
    return coef, Q[:, :r], rest


def _ohl_prepare(s: OneHiddenLayerWeights, dtype, *, bounds: bool = True, rank_u: int = 32, rank_abs: int = 4):
    """Everything that depends only on the weights (float64, then rounded upward where an upper bound
    is needed): column norms, spectral norms, the global pair bound, and the PSD covers of U^T U and
    |U|^T |U| (only what the margins need when bounds=False)."""
    U, W = _as_working(s.U, dtype, "U"), _as_working(s.W, dtype, "W")
    d, m = U.shape
    K = W.shape[1]
    slack = 1 + 1e-6                                             # float64 SVD / norm accuracy, d, m < 1e8
    absU = np.abs(U)
    up = functools.partial(_cast_up, dtype=dtype)
    f = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    margins = {"U": f(U), "W": f(W), "absW": f(np.abs(W)), "unorm": up(np.linalg.norm(U, axis=0) * slack)}
    if not bounds:
        return margins
    spec = np.linalg.norm(U, 2) * slack
    # || |U| ||_2 <= sqrt(||U||_1 ||U||_inf) (only error terms use it)
    absspec = np.sqrt(absU.sum(0).max() * absU.sum(1).max()) * slack
    sup = _sup_grad(s.act)
    diff = W[:, :, None] - W[:, None, :]                                            # [m, Kc, Kj]
    absdiff = np.abs(diff).reshape(m, K * K)
    glob = np.linalg.norm(absU @ absdiff, axis=0).reshape(K, K) * sup * slack
    coef_u, Q_u, rest_u = _psd_cover(U.T @ U, absspec ** 2, rank_u, d)
    coef_a, Q_a, rest_a = _psd_cover(absU.T @ absU, absspec ** 2, rank_abs, d)
    # q_i^T (a o v_j) = a^T (q_i o W_c) - a^T (q_i o W_j): one [m, r K] table; for |v_j| a [m, r K K] table
    QW_u = (Q_u[:, :, None] * W[:, None, :]).reshape(m, -1)
    QW_a = (Q_a[:, :, None] * absdiff[:, None, :]).reshape(m, -1)
    qn = lambda Q: up(np.linalg.norm(Q, axis=0) * slack)  # noqa: E731
    return {**margins, "absU": f(absU), "Wsq": up(W * W), "spec": up(spec), "absspec": up(absspec),
            "glob": up(glob), "W2": up((diff ** 2).reshape(m, K * K) * slack),
            "coef_u": up(coef_u), "rest_u": up(rest_u), "QW_u": f(QW_u), "qn_u": qn(Q_u),
            "coef_a": up(coef_a), "rest_a": up(rest_a), "QW_a": f(QW_a), "qn_a": qn(Q_a)}


def _ohl_margins(arrays, x, *, opts):
    """Logits, prediction, rigorous margin lower bounds and (z, ez): z = fl(x U) with |z - x U| <= ez."""
    act = opts["act"]
    U, W = arrays["U"], arrays["W"]
    d, m = U.shape
    u = _u(x.dtype)
    sup = _sup_grad(act)
    z = _dot(x, U)                                               # [B, m]
    nx = jnp.sqrt(jnp.sum(x * x, -1))
    ez = _err(d + 2, nx[:, None] * arrays["unorm"])              # |x| . |u_l| <= ||x|| ||u_l||
    h = act.fn(z)
    # |sigma(z_exact) - fl(sigma(fl z))| <= sup|sigma'| ez + ACT_ULPS u (|h| + sup |z|)
    eh = _up(sup * ez + ACT_ULPS * u * (jnp.abs(h) + sup * jnp.abs(z)))
    logits = _dot(h, W)
    c = jnp.argmax(logits, -1)
    S = _dot(jnp.abs(h), arrays["absW"])
    E = _inflate(m + 2, _dot(eh, arrays["absW"]))
    err = _err(m, _pick(S, c) + S) + _pick(E, c) + E
    return logits, c, _margin_lo(logits, c, err), {"z": z, "ez": ez}


def _ohl_problem(arrays, x, *, opts):
    act, k = opts["act"], opts["num_tight_classes"]
    U, absU, W, unorm, spec, glob, W2 = (arrays[n] for n in ("U", "absU", "W", "unorm", "spec", "glob", "W2"))
    B, (d, m), K = x.shape[0], U.shape, W.shape[1]
    u = _u(x.dtype)
    infl = functools.partial(_inflate, m + d + 16)
    logits, c, margins, aux = _ohl_margins(arrays, x, opts=opts)
    z, ez = aux["z"], aux["ez"]
    g_glob = glob[c]                                             # [B, K]

    def pick_c(t):                                               # [B, ..., Kc, Kj] table rows of class c
        return jnp.take_along_axis(t, c.reshape((B,) + (1,) * (t.ndim - 1)), t.ndim - 2).squeeze(t.ndim - 2)

    def vnorm2(a):                                               # >= ||v_j o a||^2, v_j = W_c - W_j: [B, m] -> [B, K]
        return pick_c(_dot(a * a, W2).reshape(B, K, K))

    def enclosure(R):
        # the exact <u_l, y> over B(x, R) lies in [z - ez - R ||u_l||, z + ez + R ||u_l||], rounded outward
        w = _up(ez + R[:, None] * unorm)
        return _sigma_prime_enclosure(act, _down(z - w), _up(z + w))

    def mid_rad(smin, smax):
        mid = (smin + smax) / 2
        return mid, _up(jnp.maximum(smax - mid, mid - smin))

    def cheap(R):
        _, _, amax = enclosure(R)
        return infl(jnp.minimum(spec * jnp.sqrt(vnorm2(amax)), g_glob))

    # gradient differences at x for the vector s0 = fl(sigma'(z)) (any vector works: s = s0 + (mid - s0)
    # + (s - mid) is an identity); the computed product's error is added with Cauchy-Schwarz:
    # |U| (|s0| o |W_k|) has norm <= || |U| ||_2 ||s0 o W_k||
    s0 = act.grad(z)
    G = jnp.einsum("bmk,dm->bkd", s0[:, :, None] * W[None], U, precision=_HIGHEST)   # [B, K, d]
    n0 = jnp.sqrt(jnp.sum((jnp.take_along_axis(G, c[:, None, None], 1) - G) ** 2, -1))   # [B, K]
    T0 = arrays["absspec"] * jnp.sqrt(_dot(s0 * s0, arrays["Wsq"]))
    n0 = infl(n0 + _err(m + 2, _pick(T0, c) + T0))

    def quad(coef, rest, proj, perr, sq):
        """sqrt(sum_i coef_i (|proj_i| + perr_i)^2 + rest sq) >= sqrt(e^T M e): a sum of non-negative terms."""
        top = jnp.einsum("r,brk->bk", coef, (jnp.abs(proj) + perr) ** 2, precision=_HIGHEST)
        return infl(jnp.sqrt(top + rest * sq))

    def dev_bound(a):                                            # >= ||U (v_j o a)||_2, a fixed [B, m]
        Y = _dot(a, arrays["QW_u"]).reshape(B, -1, K)            # [B, r, K]: q_i^T (a o W_k)
        proj = jnp.take_along_axis(Y, c[:, None, None], 2) - Y
        TA = jnp.sqrt(_dot(a * a, arrays["Wsq"]))                # ||a o W_k||_2 >= sum_l |a_l q_li W_lk| / ||q_i||
        perr = _err(m + 4, arrays["qn_u"][None, :, None] * (_pick(TA, c) + TA)[:, None, :])
        return quad(arrays["coef_u"], arrays["rest_u"], proj, perr, vnorm2(a))

    def box_bound(a):                                            # >= || |U| (|v_j| o a) ||_2, a >= 0 [B, m]
        r = arrays["coef_a"].shape[0]
        proj = pick_c(_dot(a, arrays["QW_a"]).reshape(B, r, K, K))
        sq = vnorm2(a)
        perr = _err(m + 4, arrays["qn_a"][None, :, None] * jnp.sqrt(sq)[:, None, :])
        return quad(arrays["coef_a"], arrays["rest_a"], proj, perr, sq)

    def fast(R):
        # U (v o s) = U (v o s0) + U (v o a) + U (v o t), a = fl(mid - s0), |t| <= rad + |mid - s0 - a|
        smin, smax, _ = enclosure(R)
        mid, rad = mid_rad(smin, smax)
        a = mid - s0
        t = _up(rad + 2 * u * jnp.abs(a))
        return jnp.minimum(infl(n0 + dev_bound(a) + box_bound(t)), cheap(R))

    # the k classes with the smallest linearized radius also get the interval bound
    k = min(k, K - 1)
    r_glob = jnp.maximum(jnp.min(_ratio(margins, g_glob), -1), 0.0)
    if k <= 0:
        return logits, _Problem(margins, fast, cheap, r_glob)
    _, idx = jax.lax.top_k(-_ratio(margins, n0), k)              # [B, k]
    VkT = W.T[c][:, None, :] - W.T[idx]                          # [B, k, m]: W_c - W_j, j in idx
    onehot_k = jax.nn.one_hot(idx, K, dtype=x.dtype)             # [B, k, K]
    selected = jnp.sum(onehot_k, 1) > 0                          # [B, K]
    g_center = _gamma(m + 6, x.dtype) * (1 + 8 * u)

    def full(R):
        smin, smax, _ = enclosure(R)
        mid, rad = mid_rad(smin, smax)
        # the center product's rounding (and that of v = W_c - W_j) is absorbed into the spread term
        rad = _up(rad + g_center * jnp.abs(mid))
        center = _dot((mid[:, None, :] * VkT).reshape(B * k, -1), U.T)
        spread = _dot((rad[:, None, :] * jnp.abs(VkT)).reshape(B * k, -1), absU.T)
        tight = infl(jnp.sqrt(jnp.sum((jnp.abs(center) + spread) ** 2, -1))).reshape(B, k)
        tight_full = jnp.where(selected, jnp.einsum("bk,bkK->bK", tight, onehot_k), jnp.inf)
        return jnp.minimum(fast(R), tight_full)

    return logits, _Problem(margins, full, cheap, r_glob)


def _ohl_global(s: OneHiddenLayerWeights, dtype):
    U, W = _as_working(s.U, dtype, "U"), _as_working(s.W, dtype, "W")
    sup = _sup_grad(s.act)
    diff = W[:, :, None] - W[:, None, :]                                        # [m, K, K]
    comp = np.linalg.norm(np.abs(U) @ np.abs(diff).reshape(W.shape[0], -1), axis=0)
    spec = np.linalg.norm(U, 2) * np.linalg.norm(diff, axis=0).reshape(-1)
    return (np.minimum(comp, spec) * sup * (1 + 1e-6)).reshape(W.shape[1], W.shape[1])


# --- Gaussian kernel machine

def _kernel_prepare(s: GaussianKernelWeights, dtype, *, bounds: bool = True):
    del bounds
    C = _as_working(s.centers, dtype, "centers")
    C = C.reshape(C.shape[0], -1)
    A = _as_working(s.alpha, dtype, "alpha")                     # [Rc, K]
    gamma = float(np.asarray(jnp.asarray(s.gamma, dtype)))
    if not (np.isfinite(gamma) and gamma > 0):
        raise ValueError(f"structure.gamma must be a positive number, got {s.gamma!r}")
    absdiff = np.abs(A[:, :, None] - A[:, None, :]).reshape(A.shape[0], -1) * (1 + 1e-12)
    up = functools.partial(_cast_up, dtype=dtype)
    return {"centers": jnp.asarray(C, dtype), "alpha": jnp.asarray(A, dtype), "absA": jnp.asarray(np.abs(A), dtype),
            "Asq": up(A * A), "absdiff": up(absdiff), "gamma": jnp.asarray(gamma, dtype),
            "cc": jnp.asarray(np.sum(C * C, 1), dtype), "cn": up(np.linalg.norm(C, axis=1) * (1 + 1e-12)),
            "cspec": up(np.linalg.norm(np.abs(C), 2) * (1 + 1e-6))}


def _kernel_margins(arrays, x, *, opts):
    """Logits, prediction, margin lower bounds and the enclosures sq in [sq_lo, sq_hi] of the squared
    distances to the centers and k in [k - ek, k + ek] of the kernel values."""
    del opts
    C, A, g = arrays["centers"], arrays["alpha"], arrays["gamma"]
    Rc, d = C.shape
    K = A.shape[1]
    u = _u(x.dtype)
    B = x.shape[0]
    xx = jnp.sum(x * x, -1)
    nx = jnp.sqrt(xx)
    sq = xx[:, None] + arrays["cc"][None] - 2 * _dot(x, C.T)     # [B, Rc], cancels near a center
    esq = _err(d + 4, (nx[:, None] + arrays["cn"][None]) ** 2)   # |x|^2 + |c|^2 + 2 |x| . |c| <= (|x| + |c|)^2
    sq_lo, sq_hi = jnp.maximum(_down(sq - esq), 0.0), _up(sq + esq)
    fe = ACT_ULPS * u                                            # exp is monotone: outward arguments, widened values
    k_lo = jnp.exp(_down(-g * sq_hi)) * (1 - fe)
    k_hi = jnp.exp(_up(-g * sq_lo)) * (1 + fe) + jnp.finfo(x.dtype).tiny
    k = (k_lo + k_hi) / 2
    ek = _up(jnp.maximum(k_hi - k, k - k_lo))
    logits = _dot(k, A)
    c = jnp.argmax(logits, -1)
    S = _dot(k, arrays["absA"])

    def pairs(h):                                                # sum_r |alpha_rc - alpha_rj| h_r: [B, Rc] -> [B, K]
        return jnp.take_along_axis(_dot(h, arrays["absdiff"]).reshape(B, K, K), c[:, None, None], 1)[:, 0]

    err = _err(Rc, _pick(S, c) + S) + _inflate(Rc + 2, pairs(ek))
    aux = {"sq_lo": sq_lo, "sq_hi": sq_hi, "k": k, "ek": ek, "nx": nx, "S": S, "pairs": pairs, "c": c}
    return logits, c, _margin_lo(logits, c, err), aux


def _kernel_problem(arrays, x, *, opts):
    C, A, g = arrays["centers"], arrays["alpha"], arrays["gamma"]
    (Rc, d), K, B = C.shape, A.shape[1], x.shape[0]
    u = _u(x.dtype)
    fe = ACT_ULPS * u
    infl = functools.partial(_inflate, Rc + d + 16)
    logits, c, margins, aux = _kernel_margins(arrays, x, opts=opts)
    k, ek, pairs, S = aux["k"], aux["ek"], aux["pairs"], aux["S"]
    dist_lo = jnp.maximum(_down(jnp.sqrt(aux["sq_lo"])), 0.0)
    dist_hi = _up(jnp.sqrt(aux["sq_hi"]))
    s_peak = 1 / jnp.sqrt(2 * g)

    # exact gradients at x: grad f_k(x) = -2 gamma (x (k A)_k - C^T (k o A_k)), then differences to class c;
    # errors: the kernel values' enclosure (times ||x - x_r||) and the two products (Cauchy-Schwarz)
    H = jnp.einsum("brk,rd->bkd", k[:, :, None] * A[None], C, precision=_HIGHEST)     # [B, K, d]
    grads = -2 * g * (x[:, None, :] * _dot(k, A)[:, :, None] - H)
    n0 = jnp.sqrt(jnp.sum((jnp.take_along_axis(grads, c[:, None, None], 1) - grads) ** 2, -1))
    Tk = arrays["cspec"] * jnp.sqrt(_dot(k * k, arrays["Asq"]))
    e0 = _inflate(Rc + 2, pairs(ek * dist_hi)) + _err(Rc + 3, aux["nx"][:, None] * (_pick(S, c) + S)) \
        + _err(Rc + 3, _pick(Tk, c) + Tk)
    # the subtraction inside grads_k and the factor -2 gamma round relative to grads_k, not to the difference
    gn = jnp.sqrt(jnp.sum(grads * grads, -1))                                         # [B, K]
    n0 = infl(n0 + 2 * g * e0 + 4 * u * (_pick(gn, c) + gn))

    def psi_up(t):                                               # >= ||Jacobian of (y - x_r) e^{-gamma ||y - x_r||^2}||_2
        return _up(jnp.exp(-t) * jnp.maximum(1.0, jnp.abs(1 - 2 * t))) * (1 + fe)   # at gamma ||y - x_r||^2 = t

    def full(R):
        lo = jnp.maximum(_down(dist_lo - R[:, None]), 0.0)
        hi = _up(dist_hi + R[:, None])
        # paper-style: |(y - x_r) k_r(y)| <= max of s e^{-gamma s^2} over the distance range
        s = jnp.clip(s_peak, lo, hi)
        h = _up(s * jnp.exp(_up(-g * s * s)) * (1 + fe))
        paper = infl(2 * g * pairs(h))
        # exact at x plus mean-value deviation: psi is decreasing, increasing on [1, 1.5], decreasing
        t_lo, t_hi = jnp.maximum(_down(g * lo * lo), 0.0), _up(g * hi * hi)
        rho = jnp.maximum(psi_up(t_lo), psi_up(jnp.clip(1.5, t_lo, t_hi)))
        deviation = infl(n0 + 2 * g * R[:, None] * pairs(rho))
        return jnp.minimum(paper, deviation)
    return logits, _Problem(margins, full, None, jnp.zeros(x.shape[:1], x.dtype))


def _kernel_global(s: GaussianKernelWeights, dtype):
    A = _as_working(s.alpha, dtype, "alpha")
    g = float(np.asarray(jnp.asarray(s.gamma, dtype)))
    sp = 1 / np.sqrt(2 * g)
    hmax = sp * np.exp(-g * sp * sp)
    return 2 * g * hmax * np.sum(np.abs(A[:, :, None] - A[:, None, :]), 0) * (1 + 1e-6)


class _Handler(NamedTuple):
    prepare: Callable      # (structure, dtype, *, bounds) -> dict of arrays independent of x and R
    margins: Callable      # (arrays, x [B, d], *, opts) -> (logits, c, margin lower bounds [B, K], aux)
    problem: Callable      # (arrays, x [B, d], *, opts) -> (logits, _Problem)
    global_bound: Callable  # (structure, dtype) -> [K, K] float64 R-independent bounds on L_cj
    static: Callable       # structure -> dict of hashable options (e.g. the activation)
    name: str


BOUNDS: dict[type, _Handler] = {
    LinearWeights: _Handler(_linear_prepare, _linear_margins, _linear_problem, _linear_global,
                            lambda s: {}, "linear/exact"),
    OneHiddenLayerWeights: _Handler(_ohl_prepare, _ohl_margins, _ohl_problem, _ohl_global,
                                    lambda s: {"act": s.act}, "one_hidden_layer/local(interval+spectral+global)"),
    GaussianKernelWeights: _Handler(_kernel_prepare, _kernel_margins, _kernel_problem, _kernel_global,
                                    lambda s: {}, "gaussian_kernel/local"),
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
    _check_shapes(structure)
    return h


def _check_shapes(structure) -> None:
    """ValueError naming the field unless the structure's arrays fit together (see each structure's docstring)."""
    name = type(structure).__name__
    shape = {f: np.shape(getattr(structure, f)) for f in structure._fields if f not in ("act", "gamma")}
    if isinstance(structure, LinearWeights):
        ok = len(shape["W"]) == 2 and shape["b"] == shape["W"][1:]
        want = "W [d, K] and b [K]"
    elif isinstance(structure, OneHiddenLayerWeights):
        ok = len(shape["U"]) == 2 and len(shape["W"]) == 2 and shape["U"][1] == shape["W"][0]
        want = "U [d, m] and W [m, K]"
    else:
        ok = len(shape["centers"]) >= 2 and len(shape["alpha"]) == 2 and shape["alpha"][0] == shape["centers"][0]
        want = "centers [R, d] and alpha [R, K]"
    if not ok:
        raise ValueError(f"{name} needs {want}; got " + ", ".join(f"{f} {v}" for f, v in shape.items()))


# ----------------------------------------------------------------------------- the search over R

class SearchState(NamedTuple):
    """Bracket [lo, hi] of the crossing of g(R) with R: g(lo) >= lo (lo certified), g(hi) < hi unless
    hi is itself certified; psi = g - R at both ends; `side` remembers which end moved last (Illinois)."""
    lo: jax.Array
    hi: jax.Array
    psi_lo: jax.Array
    psi_hi: jax.Array
    side: jax.Array


def _ratio(margins, L):
    """margins / L rounded downward, with 0/0 -> 0 and m/0 -> inf (m > 0)."""
    safe = jnp.where(L > 0, L, 1.0)
    q = jnp.where(jnp.isinf(margins), jnp.inf, _down(margins / safe))
    return jnp.where(L > 0, q, jnp.where(margins > 0, jnp.inf, 0.0))


def _g(problem: _Problem, bound: Callable, R):
    return jnp.min(_ratio(problem.margins, bound(R)), -1)


def _bisect_cheap(problem: _Problem, r_hi, steps: int):
    """Plain bisection with the cheap bound: returns a certified lower end >= min(problem.r_floor, r_hi)."""
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
    g_lo, g_hi = _g(problem, problem.full, lo), _g(problem, problem.full, hi)
    # hi itself certified (e.g. linear models: g constant): collapse the bracket there
    done = g_hi >= hi
    lo = jnp.where(done, hi, lo)
    psi_lo = jnp.where(done, g_hi - hi, g_lo - lo)
    return SearchState(lo, hi, psi_lo, g_hi - hi, jnp.zeros((B,), jnp.int32))


def search_step(problem: _Problem, state: SearchState) -> SearchState:
    """One safeguarded false-position (Illinois) step on psi(R) = g(R) - R; the new point is kept away
    from the ends by 5 % of the bracket so the bracket always shrinks. A point moves the lower end only
    if g(R) >= R holds as computed (g rounded downward)."""
    lo, hi, plo, phi, side = state
    w = hi - lo
    denom = jnp.where(plo - phi > 0, plo - phi, 1.0)
    t = jnp.clip(plo / denom, 0.05, 0.95)
    R = jnp.where(w > 0, lo + t * w, lo)
    gR = _g(problem, problem.full, R)
    ok = gR >= R
    psi = gR - R
    # Illinois: halve the stale end's psi when the same end moves twice
    new_plo = jnp.where(ok, psi, jnp.where(side == -1, plo / 2, plo))
    new_phi = jnp.where(ok, jnp.where(side == 1, phi / 2, phi), psi)
    return SearchState(jnp.where(ok, R, lo), jnp.where(ok, hi, R), new_plo, new_phi,
                       jnp.where(ok, 1, -1).astype(jnp.int32))


class _ActKey:
    """Hashable wrapper of an Activation, equal by name."""
    def __init__(self, act):
        self.act = act

    def __hash__(self):
        return hash(self.act.name)

    def __eq__(self, other):
        return isinstance(other, _ActKey) and other.act.name == self.act.name


def _static(structure):
    s = BOUNDS[type(structure)].static(structure)
    # activations are keyed by name so that equal activations share one compilation
    keys = tuple(sorted(s))
    vals = tuple(_ActKey(v) if isinstance(v, Activation) else v for v in (s[k] for k in keys))
    return keys, vals


def _opts(static_key, static_vals, **extra):
    opts = {k: (v.act if isinstance(v, _ActKey) else v) for k, v in zip(static_key, static_vals)}
    opts.update(extra)
    return opts


@functools.lru_cache(maxsize=64)
def _compiled(kind: type, static_key: tuple, steps: int, cheap_steps: int, num_tight_classes: int,
              static_vals: tuple):
    handler = BOUNDS[kind]
    opts = _opts(static_key, static_vals, num_tight_classes=num_tight_classes)

    def run(arrays, x, labels):
        logits, problem = handler.problem(arrays, x, opts=opts)
        state = search_init(problem, cheap_steps=cheap_steps)
        state = jax.lax.fori_loop(0, steps, lambda _, s: search_step(problem, s), state)
        closest = jnp.argmin(_ratio(problem.margins, problem.full(state.lo)), -1)
        return _outputs(logits, problem.margins, labels, state.lo, closest)
    return jax.jit(run)


@functools.lru_cache(maxsize=64)
def _compiled_bound(kind: type, static_key: tuple, num_tight_classes: int, static_vals: tuple):
    handler = BOUNDS[kind]
    opts = _opts(static_key, static_vals, num_tight_classes=num_tight_classes)

    def run(arrays, x, R):
        _, problem = handler.problem(arrays, x, opts=opts)
        return jnp.where(jnp.isinf(problem.margins), jnp.inf, problem.full(R))
    return jax.jit(run)


@functools.lru_cache(maxsize=64)
def _compiled_global(kind: type, static_key: tuple, static_vals: tuple):
    handler = BOUNDS[kind]
    opts = _opts(static_key, static_vals)

    def run(arrays, G, x, labels):
        logits, c, margins, _ = handler.margins(arrays, x, opts=opts)
        ratio = _ratio(margins, G[c])
        return _outputs(logits, margins, labels, jnp.maximum(jnp.min(ratio, -1), 0.0), jnp.argmin(ratio, -1))
    return jax.jit(run)


def _outputs(logits, margins, labels, R, closest):
    """(radius, misclassified, predicted, closest, uncertain) `[B]` each; radius 0 unless the computed
    prediction is the label and every margin lower bound is positive."""
    pred = jnp.argmax(logits, -1).astype(jnp.int32)
    uncertain = jnp.min(margins, -1) <= 0
    wrong = pred != labels
    radius = jnp.where(wrong | uncertain, 0.0, jnp.maximum(R, 0.0)).astype(logits.dtype)
    return radius, wrong, pred, closest.astype(jnp.int32), uncertain


def _working_dtype(structure, x):
    dts = [np.dtype(a.dtype) for a in structure if hasattr(a, "dtype")]
    return jax.dtypes.canonicalize_dtype(np.result_type(np.dtype(x.dtype), *dts))


def _inputs(structure, x, labels, name="certified_radius"):
    """Validated (x as passed, flattened [n, d]; x in the working dtype; labels int32 [n]; dtype)."""
    x = validate.batch(x, "x")
    n, d = x.shape[0], _num_features(structure)
    if int(np.prod(x.shape[1:])) != d:
        raise ValueError(f"x must have {d} features per example (the structure's input dimension), i.e. shape "
                         f"[batch, {d}] or any [batch, ...] with {d} entries per row; got {tuple(x.shape)}")
    labels = validate.labels(labels, n, _num_classes(structure))
    x = np.asarray(x).reshape(n, d) if not isinstance(x, jax.Array) else x.reshape(n, d)
    dtype = _working_dtype(structure, x)
    return x, x.astype(dtype), labels, dtype


def _cast_loss(x, xw) -> np.ndarray | None:
    """||x - x_w||_2 per row (float64, rounded up) where x had more precision than the working dtype."""
    if np.dtype(x.dtype).itemsize <= np.dtype(xw.dtype).itemsize:
        return None
    x64 = np.asarray(x, np.float64)
    dx = np.linalg.norm(x64 - np.asarray(xw, np.float64), axis=1)
    return dx * (1 + 1e-12) + np.finfo(np.float64).tiny


def _finish(out, x, xw, dtype, name) -> CertificateResult:
    radius, wrong, pred, closest, uncertain = out
    dx = _cast_loss(x, xw)
    if dx is not None:            # the ball of radius R - ||x - x_w|| around x lies in the one around x_w
        radius = np.where(radius > 0, _cast_down(np.maximum(radius.astype(np.float64) - dx, 0.0), dtype), radius)
    return CertificateResult(radius=np.asarray(radius, dtype), misclassified=np.asarray(wrong, bool),
                             predicted=np.asarray(pred, np.int32), closest_class=np.asarray(closest, np.int32),
                             bound=name, uncertain=np.asarray(uncertain, bool))


def certified_radius(structure, x, labels, *, p: float = 2, steps: int = 8, cheap_steps: int = 24,
                     num_tight_classes: int = 2, batch_size: int = 1000) -> CertificateResult:
    """Certified l2 radius of Theorem 2.1 per example, rigorous in the working dtype (module docstring).

    Args:
      structure: a `LinearWeights`, `OneHiddenLayerWeights` (smooth activation) or
        `GaussianKernelWeights` (e.g. `model.weights(variables)`); a plain logits_fn is rejected.
      x: `[batch, ...]` finite inputs with d entries per example (flattened to `[batch, d]`); batch 0 is valid.
      labels: `[batch]` int true labels in [0, K).
      p: the norm; only 2 is supported.
      steps: search steps after the bracket (each costs one evaluation of the bound).
      cheap_steps: bisection steps with the cheap (O(m) per class) bound that set the certified lower end.
      num_tight_classes: per example, how many classes (smallest cheap radius first) get the tighter
        interval bound of a one-hidden-layer net; the others keep the spectral/global bound (still
        sound). K - 1 uses it for all classes.
      batch_size: examples per compiled call (the last batch is padded; one compilation).

    Returns:
      CertificateResult with radius `[batch]` in the working dtype: 0 and misclassified=True where the
      computed argmax f(x) != label, 0 and uncertain=True where a margin is within its rounding error;
      otherwise radius <= the exact-arithmetic minimal l2 distance from x to a point of another class of
      the network with the weights as stored in the working dtype (float32 with x64 off).

    References: Hein & Andriushchenko, "Formal guarantees on the robustness of a classifier against
    adversarial manipulation", NIPS 2017, Theorem 2.1 (methods.md 1(a), 1(b)).
    """
    if float(p) != 2.0:
        raise ValueError(f"certified_radius implements the l2 case (p=2) of Theorem 2.1; got p={p}")
    handler = _handler(structure)
    steps = validate.positive_int(steps, "steps", allow_zero=True)
    cheap_steps = validate.positive_int(cheap_steps, "cheap_steps", allow_zero=True)
    num_tight_classes = validate.positive_int(num_tight_classes, "num_tight_classes", allow_zero=True)
    batch_size = validate.positive_int(batch_size, "batch_size")
    x, xw, labels, dtype = _inputs(structure, x, labels)
    arrays = handler.prepare(structure, dtype)
    keys, vals = _static(structure)
    fn = _compiled(type(structure), keys, steps, cheap_steps, num_tight_classes, vals)
    out = map_batches(lambda xb, yb: fn(arrays, xb, yb), [xw, labels], batch_size=batch_size)
    return _finish(out, x, xw, dtype, handler.name)


def cross_lipschitz_bound(structure, x, radius, *, num_tight_classes: int | None = None) -> jax.Array:
    """The bound L_cj(R) used by `certified_radius`: `[batch, K]` rigorous upper bounds on
    max_{y in B_2(x_i, R_i)} ||grad f_c(y) - grad f_j(y)||_2, c = argmax f(x_i) (inf at j = c).
    x `[batch, ...]`, radius: scalar or `[batch]`, finite and >= 0. By default every class gets the tightest bound."""
    handler = _handler(structure)
    _, x, _, dtype = _inputs(structure, x, np.zeros((np.shape(x)[0],), np.int32))
    radius = validate.per_example(radius, x.shape[0], "radius")
    tight = _num_classes(structure) - 1 if num_tight_classes is None else num_tight_classes
    keys, vals = _static(structure)
    fn = _compiled_bound(type(structure), keys, tight, vals)
    return fn(handler.prepare(structure, dtype), jnp.asarray(x), jnp.asarray(radius, dtype))


# ----------------------------------------------------------------------------- global baseline

def global_lipschitz_radius(structure, x, labels, *, p: float = 2, batch_size: int = 1000) -> CertificateResult:
    """Baseline: radius min_j Delta_j / L_cj with global constants (sup |sigma'| instead of its local
    maximum; for one hidden layer the smaller of || |U| |v| ||_2 and ||U||_2 ||v||_2 times sup|sigma'|;
    for kernels h at its peak). Same call shape, result and rigour as `certified_radius` (margins with
    their error bounds, constants rounded upward, quotients downward)."""
    if float(p) != 2.0:
        raise ValueError(f"global_lipschitz_radius implements p=2; got p={p}")
    handler = _handler(structure)
    batch_size = validate.positive_int(batch_size, "batch_size")
    x, xw, labels, dtype = _inputs(structure, x, labels, "global_lipschitz_radius")
    arrays = handler.prepare(structure, dtype, bounds=False)
    G = jnp.asarray(_cast_up(handler.global_bound(structure, dtype), dtype))
    keys, vals = _static(structure)
    fn = _compiled_global(type(structure), keys, vals)
    out = map_batches(lambda xb, yb: fn(arrays, G, xb, yb), [xw, labels], batch_size=batch_size)
    return _finish(out, x, xw, dtype, type(structure).__name__ + "/global")
