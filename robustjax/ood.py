"""Confidence far from the data: why ReLU networks are overconfident there, how to measure it, and
CEDA / ACET training against it.

Hein, Andriushchenko, Bitterwolf, "Why ReLU networks yield high-confidence predictions far away from
the training data and how to mitigate the problem", CVPR 2019 (methods.md section 4).

- Theorem 3.1: a ReLU network is piecewise affine, f(x) = V^l x + a^l on finitely many regions Q_l;
  along a ray alpha * x it ends in one unbounded region, so for almost every x (and no V^l with
  identical rows) max_k softmax_k(f(alpha x)) -> 1 as alpha -> infinity. `scaled_confidence` and
  `alpha_for_confidence` measure it; the `project` variant clips alpha x back to the input box.
- Out-of-distribution inputs: `uniform_noise`, `permuted_pixels` (each image's pixel positions
  shuffled, channels kept together), `lowpass_noise` (the CEDA code's training noise), and
  `adversarial_noise` (l_inf PGD maximizing the confidence around noise).
- Metrics: mean maximal confidence (MMC), AUROC (exact Mann-Whitney statistic, ties counted 1/2) and
  FPR at 95 % TPR, with the in-distribution set as positives and the confidence as score.
- Training: `ceda` and `acet` are regularizer terms `term(params, x, y, *, apply_fn, key)` with
  `apply_fn(params, x) -> logits`, for `train.fit(..., regularizer=term)` (also registered as "ceda" /
  "acet" in `robustjax.regularizers` once this module is imported).

Inputs: every function taking images checks them with `robustjax.validate.batch` (ValueError naming x
for an unbatched, non-float or non-finite array; the finiteness check is skipped under tracing, where
values are unknown); an empty batch gives empty results. Boxes are anything `geometry.as_box` takes.

Normalization of the training loss. The paper minimizes
  [sum_clean CE + sum_noise L_out] / (n_clean + n_noise),   L_out(z) = log max_k p_k(z),
with n_noise = n_clean (half of each batch is noise). `fit` computes mean_clean CE and adds the term
`weight * mean_noise L_out` on as many noise images as clean ones, so with weight 1 our objective is
exactly twice the paper's (same minimizer and gradient direction; an SGD learning rate eta here is the
paper's 2 eta). Weight decay (paper: 5e-4 ||W||^2) is a separate term,
`regularizers.weight_decay(1e-3)` (= 1e-3 * 1/2 ||W||^2).

Confidence scores are compared through log max_k p_k = -log1p(sum_{j != k*} exp(f_j - f_k*)), computed
stably: in float32 the confidence itself rounds to exactly 1.0 for many far-away points, which would
turn the ranking in AUROC / FPR into ties; the log keeps them apart (a monotone map, so the metrics
are those of the confidence).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import regularizers, validate
from robustjax.batching import map_batches
from robustjax.geometry import Box, as_box, lp_norm, per_example, take_max

NOISES = ("lowpass", "uniform", "permuted")


# ----------------------------------------------------------------------------- confidence

def log_confidence(logits):
    """log max_k softmax_k(logits): `[..., K]` -> `[...]`, <= 0, stable for huge logits (no rounding to 0
    where the confidence is 1 - 1e-30)."""
    top = jnp.expand_dims(take_max(logits, axis=-1), -1)
    mask = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=bool)
    rest = jnp.sum(jnp.where(mask, 0.0, jnp.exp(logits - top)), axis=-1)   # sum_{j != argmax} e^(f_j - f_max)
    return -jnp.log1p(rest)


def confidence(logits):
    """max_k softmax_k(logits): `[..., K]` -> `[...]` in [1/K, 1]."""
    return jnp.exp(log_confidence(logits))


def _images(x, name: str = "x"):
    """x checked by `validate.batch` (values only when concrete: a tracer's are unknown)."""
    return validate.batch(x, name, finite=not isinstance(x, jax.core.Tracer))


def _nhwc(x, what: str, name: str = "x"):
    x = _images(x, name)
    if x.ndim != 4:
        raise ValueError(f"{what} takes NHWC images {name} [batch, H, W, C]; got shape {tuple(x.shape)}")
    return x


def max_log_confidence(logits_fn: Callable, x, *, batch_size: int = 500) -> np.ndarray:
    """log max_k p_k(x) per example: x `[n, ...]` -> `[n]` float32 (for AUROC / FPR)."""
    x = _images(x)
    return map_batches(jax.jit(lambda xb: log_confidence(logits_fn(xb))), [x], batch_size=batch_size)


def max_confidence(logits_fn: Callable, x, *, batch_size: int = 500) -> np.ndarray:
    """max_k p_k(x) per example: x `[n, ...]` -> `[n]`."""
    return np.exp(max_log_confidence(logits_fn, x, batch_size=batch_size).astype(np.float64))


def log_confidence_gradient_norm(logits_fn: Callable, x, *, batch_size: int = 500) -> np.ndarray:
    """||grad_x log max_k p_k(x)||_1 per example: x `[n, ...]` -> `[n]`. Exactly 0 where the network is
    locally constant in x (e.g. every ReLU feeding the output dead): there sign-gradient searches such as
    `adversarial_noise` cannot move, so a low confidence found by them is a flat region, not a maximum."""
    x = _images(x)

    def norms(xb):
        return lp_norm(jax.grad(lambda u: jnp.sum(log_confidence(logits_fn(u))))(xb), 1)
    return map_batches(jax.jit(norms), [x], batch_size=batch_size)


# ----------------------------------------------------------------------------- alpha * x

def scaled_confidence(logits_fn: Callable, x, alphas, *, project: bool = False, box=Box(0.0, 1.0),
                      batch_size: int = 500) -> np.ndarray:
    """Confidence max_k p_k(alpha x) (or of alpha x clipped to the box, `project=True`; any box
    `geometry.as_box` takes, per example too) for every alpha: x `[n, ...]`, alphas `[m]` -> `[m, n]`
    (float64 from the stable log-confidence)."""
    x = _images(x)
    alphas = np.asarray(alphas, np.float32)
    if alphas.ndim != 1 or not np.all(np.isfinite(alphas)):
        raise ValueError(f"alphas must be a finite 1-D array, got {alphas}")
    box = as_box(box, x)

    @jax.jit
    def per_batch(xb, lo, hi):
        def at(a):
            z = a * xb
            return log_confidence(logits_fn(jnp.clip(z, lo, hi) if project else z))
        return jax.lax.map(at, jnp.asarray(alphas)).T

    out = map_batches(per_batch, [x, box.lo, box.hi], batch_size=batch_size).T
    return np.exp(out.astype(np.float64))


def alpha_for_confidence(logits_fn: Callable, x, *, target: float = 0.999, alphas=None, bisection: int = 12,
                         batch_size: int = 500) -> np.ndarray:
    """Per example, an alpha >= alphas[0] at which max_k p_k(alpha x) first reaches `target` on the grid
    `alphas` (default 1 to 1e20, 8 per decade), refined by `bisection` steps in log alpha between the
    last grid point below and the first at or above the target: `[n]`, inf where never reached.

    Theorem 3.1 says a ReLU network reaches any target < 1 for almost every x; the paper's Table 2
    reports the median over uniform noise (MNIST plain 1.5, ACET 3.0e15). The confidence along the ray
    need not be monotone; this returns the first crossing at the grid's resolution.
    """
    x = _images(x)
    if not 0 < target < 1:
        raise ValueError(f"target must be in (0, 1), got {target}")
    bisection = validate.positive_int(bisection, "bisection", allow_zero=True)
    alphas = np.logspace(0, 20, 161) if alphas is None else np.asarray(alphas, np.float64)
    if alphas.ndim != 1 or np.any(alphas <= 0) or np.any(np.diff(alphas) <= 0):
        raise ValueError("alphas must be a positive increasing 1-D array")
    log_t = np.float32(np.log(target))
    la = jnp.asarray(np.log(alphas), jnp.float32)

    @jax.jit
    def per_batch(xb):
        lc = jax.lax.map(lambda a: log_confidence(logits_fn(jnp.exp(a) * xb)), la)     # [m, B]
        hit = lc >= log_t
        first = jnp.argmax(hit, axis=0)
        reached = jnp.any(hit, axis=0)
        hi = la[first]
        lo = jnp.where(first > 0, la[jnp.maximum(first - 1, 0)], hi)

        def bisect(_, carry):
            lo, hi = carry
            mid = 0.5 * (lo + hi)
            ok = log_confidence(logits_fn(per_example(jnp.exp(mid), xb) * xb)) >= log_t
            return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

        lo, hi = jax.lax.fori_loop(0, bisection, bisect, (lo, hi))
        return jnp.where(reached, jnp.exp(hi), jnp.inf)

    return map_batches(per_batch, [x], batch_size=batch_size).astype(np.float64)


# ----------------------------------------------------------------------------- noise

def uniform_noise(key, x, *, box=Box(0.0, 1.0)):
    """Uniform noise U[lo, hi] of the shape and dtype of x `[batch, ...]` (box per example or shared)."""
    x = _images(x)
    box = as_box(box, x)
    return _uniform(validate.key(key), box.lo, box.hi)


@jax.jit
def _uniform(key, lo, hi):
    return jax.random.uniform(key, lo.shape, lo.dtype, minval=lo, maxval=hi)


def permuted_pixels(key, x):
    """Each image of x `[batch, H, W, C]` with its pixel positions randomly permuted (one permutation
    per image; the C channel values of a pixel stay together)."""
    return _permuted(validate.key(key), _nhwc(x, "permuted_pixels"))


@jax.jit
def _permuted(key, x):
    b, h, w, c = x.shape
    perms = jax.vmap(lambda k: jax.random.permutation(k, h * w))(jax.random.split(key, b))
    flat = x.reshape(b, h * w, c)
    return jnp.take_along_axis(flat, perms[:, :, None], axis=1).reshape(x.shape)


def _kernel_size(kernel_size) -> int:
    k = validate.positive_int(kernel_size, "kernel_size")
    if k % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    return k


def gaussian_kernel_matrix(n: int, sigma, kernel_size: int = 15):
    """The `[n, n]` matrix of a 1-D Gaussian blur with standard deviation `sigma` (pixels), truncated
    to `kernel_size` taps and normalized to sum 1, zero padding: (A v)_i = sum_j g(i - j) v_j. sigma > 0 (checked
    unless traced)."""
    n = validate.positive_int(n, "n")
    if not isinstance(sigma, jax.core.Tracer):
        validate.positive_float(sigma, "sigma")
    r = _kernel_size(kernel_size) // 2
    t = jnp.arange(-r, r + 1, dtype=jnp.float32)
    g = jnp.exp(-0.5 * (t / sigma) ** 2)
    g = g / jnp.sum(g)
    d = jnp.arange(n)[:, None] - jnp.arange(n)[None, :]
    return jnp.where(jnp.abs(d) <= r, g[jnp.clip(d + r, 0, 2 * r)], 0.0)


def gaussian_blur(x, sigma, *, kernel_size: int = 15):
    """Separable Gaussian blur of each image: x `[batch, H, W, C]`, sigma (scalar or `[batch]`, pixels,
    > 0) -> `[batch, H, W, C]` (kernel_size x kernel_size taps, zero padding: scipy.ndimage.gaussian_filter
    with mode="constant", truncate=(kernel_size // 2) / sigma)."""
    x = _nhwc(x, "gaussian_blur")
    if not isinstance(sigma, jax.core.Tracer):
        sigma = validate.per_example(sigma, x.shape[0], "sigma", allow_zero=False)
    return _blur(x, jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (x.shape[0],)),
                 kernel_size=_kernel_size(kernel_size))


@functools.partial(jax.jit, static_argnames=("kernel_size",))
def _blur(x, sigma, *, kernel_size):
    _, h, w, _ = x.shape
    ah = jax.vmap(lambda s: gaussian_kernel_matrix(h, s, kernel_size))(sigma)
    aw = jax.vmap(lambda s: gaussian_kernel_matrix(w, s, kernel_size))(sigma)
    return jnp.einsum("bij,bjkc,blk->bilc", ah, x, aw)


def lowpass_noise(key, x, *, sigma_range=(1.0, 2.5), kernel_size: int = 15, box=Box(0.0, 1.0)):
    """The CEDA/ACET training noise (methods.md section 4): for each image of x `[batch, H, W, C]`,
    with probability 1/2 its pixel permutation, else uniform noise in the box; then a Gaussian low-pass
    filter with sigma ~ U[sigma_range] (`kernel_size` taps) and a per-image affine rescale to [lo, hi]
    (min -> lo, max -> hi). -> `[batch, H, W, C]`."""
    x = _nhwc(x, "lowpass_noise")
    box = as_box(box, x)
    lo_s, hi_s = (validate.positive_float(s, "sigma_range") for s in sigma_range)
    if lo_s > hi_s:
        raise ValueError(f"sigma_range must be (low, high) with low <= high, got {sigma_range}")
    return _lowpass(validate.key(key), x, box.lo, box.hi, sigma_range=(lo_s, hi_s),
                    kernel_size=_kernel_size(kernel_size))


@functools.partial(jax.jit, static_argnames=("sigma_range", "kernel_size"))
def _lowpass(key, x, lo, hi, *, sigma_range, kernel_size):
    k_perm, k_unif, k_pick, k_sigma = jax.random.split(key, 4)
    b = x.shape[0]
    pick = jax.random.bernoulli(k_pick, 0.5, (b,))
    z = jnp.where(per_example(pick, x), _permuted(k_perm, x), _uniform(k_unif, lo, hi))
    sigma = jax.random.uniform(k_sigma, (b,), minval=sigma_range[0], maxval=sigma_range[1])
    z = _blur(z, sigma, kernel_size=kernel_size)
    zmin = jnp.min(z, axis=(1, 2, 3), keepdims=True)
    zmax = jnp.max(z, axis=(1, 2, 3), keepdims=True)
    return lo + (hi - lo) * (z - zmin) / jnp.maximum(zmax - zmin, 1e-12)


def make_noise(name: str, key, x, *, box=Box(0.0, 1.0)):
    """Noise by name ("lowpass", "uniform", "permuted") of the shape of x `[batch, H, W, C]`."""
    if name == "lowpass":
        return lowpass_noise(key, x, box=box)
    if name == "uniform":
        return uniform_noise(key, x, box=box)
    if name == "permuted":
        return permuted_pixels(key, x)
    raise ValueError(f"unknown noise {name!r}; known: {NOISES}")


def adversarial_noise(logits_fn: Callable, z, key, *, eps: float = 0.3, steps: int = 40,
                      step_size: float | None = None, restarts: int = 1, box=Box(0.0, 1.0)):
    """argmax of L_out(u) = log max_k p_k(u) over ||u - z||_inf <= eps, u in the box, by sign-gradient
    ascent (ACET, methods.md section 4): `restarts` random starts uniform in the eps-ball, each followed
    by `steps` steps u <- proj(u + step_size * sign(grad)) (default step_size eps / steps: the CEDA
    code's 40 steps of eps / 40; with few steps pass a larger one, e.g. Madry et al.'s 2.5 eps / steps).
    Returns the best iterate per example over all restarts and steps, z itself included as a candidate
    (so L_out(result) >= L_out(z)), without gradient. z `[batch, ...]` -> same shape.

    `logits_fn(u)` is any batched function; gradients of sum_i L_out(u_i) give per-example ones. Where
    the gradient is exactly 0 (e.g. every ReLU of a region dead) sign steps do not move: only the random
    starts explore, so a flat region can hide higher confidence nearby (gradient masking).
    """
    z = _images(z, "z")
    eps = validate.positive_float(eps, "eps", allow_zero=True)
    steps = validate.positive_int(steps, "steps", allow_zero=True)
    restarts = validate.positive_int(restarts, "restarts")
    step_size = eps / max(steps, 1) if step_size is None else validate.positive_float(step_size, "step_size")
    box = as_box(box, z)
    key = validate.key(key)
    if z.shape[0] == 0:
        return jnp.asarray(z)
    return _adversarial_noise(logits_fn, z, key, box.lo, box.hi, eps=eps, steps=steps,
                              step_size=step_size, restarts=restarts)


@functools.partial(jax.jit, static_argnames=("logits_fn", "eps", "steps", "step_size", "restarts"))
def _adversarial_noise(logits_fn, z, key, lo, hi, *, eps, steps, step_size, restarts):
    lower, upper = jnp.maximum(z - eps, lo), jnp.minimum(z + eps, hi)

    def value(u):
        lc = log_confidence(logits_fn(u))
        return jnp.sum(lc), lc

    grad = jax.grad(value, has_aux=True)

    def keep_best(u, lc, best, best_val):
        take = lc > best_val
        return jnp.where(per_example(take, u), u, best), jnp.where(take, lc, best_val)

    def step(_, carry):
        u, best, best_val = carry
        g, lc = grad(u)
        best, best_val = keep_best(u, lc, best, best_val)
        return jnp.clip(u + step_size * jnp.sign(g), lower, upper), best, best_val

    def restart(carry, k):
        best, best_val = carry
        u0 = jnp.clip(z + jax.random.uniform(k, z.shape, z.dtype, -eps, eps), lower, upper)
        u, best, best_val = jax.lax.fori_loop(0, steps, step, (u0, best, best_val))
        _, lc = value(u)
        return keep_best(u, lc, best, best_val), None

    _, val0 = value(z)
    (best, _), _ = jax.lax.scan(restart, (z, val0), jax.random.split(key, restarts))
    return jax.lax.stop_gradient(best)


# ----------------------------------------------------------------------------- metrics

def auroc(score_in, score_out) -> float:
    """Area under the ROC curve for separating `score_in` `[n]` (positives, e.g. the test set) from
    `score_out` `[m]` by thresholding the score: P(s_in > s_out) + 1/2 P(s_in = s_out), computed exactly
    from average ranks (Mann-Whitney U / (n m)), in float64."""
    a = np.asarray(score_in, np.float64).ravel()
    b = np.asarray(score_out, np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("auroc needs non-empty in- and out-distribution scores")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("auroc scores contain NaN or inf")
    allv = np.concatenate([a, b])
    uniq, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])           # 0-based first rank of each value
    avg_rank = start + (counts + 1) / 2.0                             # 1-based average rank of ties
    ranks = avg_rank[inv]
    u = np.sum(ranks[:a.size]) - a.size * (a.size + 1) / 2.0
    return float(u / (a.size * b.size))


def fpr_at_tpr(score_in, score_out, tpr: float = 0.95) -> float:
    """False-positive rate at the largest threshold t that keeps TPR = mean(score_in >= t) >= `tpr`:
    mean(score_out >= t) (ties at t count as positive, as sklearn's roc_curve)."""
    a = np.sort(np.asarray(score_in, np.float64).ravel())[::-1]
    b = np.asarray(score_out, np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("fpr_at_tpr needs non-empty in- and out-distribution scores")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("fpr_at_tpr scores contain NaN or inf")
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    k = int(np.ceil(tpr * a.size - 1e-9))                           # need at least k positives above t
    t = a[max(k, 1) - 1]
    return float(np.mean(b >= t))


def ood_metrics(log_conf_in, log_conf_out) -> dict:
    """MMC of the out-distribution, AUROC and FPR@95 %TPR (in-distribution positive), from
    log-confidences `[n]`, `[m]` (see `max_log_confidence`)."""
    for name, v in (("log_conf_in", log_conf_in), ("log_conf_out", log_conf_out)):
        if np.any(np.asarray(v, np.float64) > 1e-6):
            raise ValueError(f"{name} must be log-confidences (<= 0), got a maximum of "
                             f"{float(np.max(np.asarray(v, np.float64))):.4g}: pass log(max softmax), not the confidence")
    return {"mmc": float(np.mean(np.exp(np.asarray(log_conf_out, np.float64)))),
            "auroc": auroc(log_conf_in, log_conf_out),
            "fpr95": fpr_at_tpr(log_conf_in, log_conf_out, 0.95)}


# ----------------------------------------------------------------------------- training terms

def _noise_term(weight: float, noise: str, adversary: Callable | None) -> regularizers.Term:
    weight = validate.positive_float(weight, "weight", allow_zero=True)
    if noise not in NOISES:
        raise ValueError(f"unknown noise {noise!r}; known: {NOISES}")

    def term(params, x, y, *, apply_fn, key):
        del y
        k_noise, k_adv = jax.random.split(key)
        z = jax.lax.stop_gradient(make_noise(noise, k_noise, x))
        if adversary is not None:
            frozen = jax.lax.stop_gradient(params)
            z = adversary(lambda u: apply_fn(frozen, u), z, k_adv)
        return weight * jnp.mean(log_confidence(apply_fn(params, z)))
    return term


def ceda(weight: float = 1.0, *, noise: str = "lowpass") -> regularizers.Term:
    """CEDA (Hein et al. 2019): weight * mean over noise z of L_out(z) = log max_k p_k(z), one noise
    image per clean one, generated inside the term from the clean batch x and the key (`noise`:
    "lowpass" = the paper's, "uniform", "permuted"). Minimizing it drives the noise towards the uniform
    prediction (L_out >= -log K). See the module docstring for the loss normalization."""
    return _noise_term(weight, noise, None)


def acet(weight: float = 1.0, *, eps: float = 0.3, steps: int = 40, step_size: float | None = None,
         noise: str = "lowpass") -> regularizers.Term:
    """ACET (Hein et al. 2019): as `ceda`, but on the worst case around each noise image,
    argmax_{||u - z||_inf <= eps, u in [0, 1]} L_out(u), found by `adversarial_noise` (sign PGD, random
    start, best iterate; the parameters are frozen inside the search, gradients flow only through
    the final L_out). The paper uses eps 0.3 and 40 steps."""
    eps = validate.positive_float(eps, "eps", allow_zero=True)
    steps = validate.positive_int(steps, "steps", allow_zero=True)
    if step_size is not None:
        step_size = validate.positive_float(step_size, "step_size")
    adversary = functools.partial(_adversary, eps=eps, steps=steps, step_size=step_size)
    return _noise_term(weight, noise, adversary)


def _adversary(f, z, key, *, eps, steps, step_size):
    return adversarial_noise(f, z, key, eps=eps, steps=steps, step_size=step_size)


regularizers.register("ceda", ceda)
regularizers.register("acet", acet)
