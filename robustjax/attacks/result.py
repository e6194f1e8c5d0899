"""The per-example attack result every attack returns, and the checks around it.

Contracts (design.md): inputs live in a box [lo, hi]^d; an adversarial example never leaves it; every
success is re-checked with the real model; an example the model already misclassifies gets
distance 0, success True and x_adv = x; no adversarial found means success False, distance inf and
x_adv = x. Distances are measured in the input space the caller passed.
"""
from __future__ import annotations

import time
import warnings
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robustjax.geometry import NORMS, Box, check_norm, lp_norm  # noqa: F401  (re-exported)


class AttackResult(NamedTuple):
    """One row per example.

    x_adv: `[batch, ...]` the adversarial input (x itself where nothing was found).
    distance: `[batch]` ||x_adv - x||_p; 0 for misclassified inputs; inf where success is False.
    success: `[batch]` bool, re-checked with the model: argmax f(x_adv) != label.
    label_adv: `[batch]` int, argmax f(x_adv).
    model_calls: `[batch]` int, forward and backward passes (or linearizations) spent per example.
    time_s: `[batch]` float, wall time per example (batched attacks divide the batch time evenly).
    p: the norm (1, 2 or inf; nan for attacks whose threat model is not an l_p ball, e.g. spatial).
    method: attack name.
    info: method-specific extras (a dict of arrays or values, e.g. the region attack's trajectory), or None.
    """
    x_adv: np.ndarray
    distance: np.ndarray
    success: np.ndarray
    label_adv: np.ndarray
    model_calls: np.ndarray
    time_s: np.ndarray
    p: float
    method: str
    info: dict | None = None

    @property
    def misclassified(self) -> np.ndarray:
        """Examples the model got wrong before any attack (distance 0)."""
        return self.success & (self.distance == 0)


def check_inputs(logits_fn: Callable, x, labels, box: Box = Box(), *, check_logits: bool = True,
                 atol: float = 1e-6):
    """Validates an attack's inputs and returns (x float32 array, labels int32, clean logits).

    Raises ValueError naming the problem: shapes, dtypes, NaN/inf, values outside the box, labels
    out of range. Warns when the model's outputs look like probabilities (non-negative rows that
    sum to 1): attacks and certificates expect logits.
    """
    x = jnp.asarray(x)
    labels = jnp.asarray(labels)
    if x.ndim < 2:
        raise ValueError(f"x must be batched, [batch, ...]; got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be floating point in the box [{box.lo}, {box.hi}], got dtype {x.dtype}")
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},) to match x, got {labels.shape}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError("x contains NaN or inf")
    lo, hi = jnp.asarray(box.lo, x.dtype), jnp.asarray(box.hi, x.dtype)
    below, above = float(jnp.max(lo - x)), float(jnp.max(x - hi))
    if below > atol or above > atol:
        raise ValueError(f"x lies outside the box [{box.lo}, {box.hi}] (by up to {max(below, above):.3g}); "
                         "attacks work in the input space of the box: normalize inside the model")
    logits = None
    if check_logits:
        logits = jnp.asarray(logits_fn(x))
        if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"logits_fn must map [batch, ...] to [batch, K]; got {logits.shape}")
        k = logits.shape[1]
        if not bool(jnp.all(jnp.isfinite(logits))):
            raise ValueError("the model returned NaN or inf logits")
        if int(labels.min()) < 0 or int(labels.max()) >= k:
            raise ValueError(f"labels outside [0, {k}): min {int(labels.min())}, max {int(labels.max())}")
        if k > 1 and bool(jnp.all(logits >= 0)) and bool(jnp.allclose(jnp.sum(logits, -1), 1.0, atol=1e-4)):
            warnings.warn("the model's outputs are non-negative and sum to 1: they look like probabilities. "
                          "Attacks and certificates expect logits (drop the final softmax).", stacklevel=3)
    return x, labels.astype(jnp.int32), logits


def clip_to_box(x, box: Box):
    return jnp.clip(x, jnp.asarray(box.lo, x.dtype), jnp.asarray(box.hi, x.dtype))


def finalize(logits_fn: Callable, x, labels, x_adv, *, p, box: Box = Box(), model_calls=0,
             time_s: float = 0.0, method: str = "", batch_size: int | None = None) -> AttackResult:
    """Builds the AttackResult from candidate points, re-verifying everything with the real model.

    x_adv candidates are clipped to the box first; a candidate counts only if the model's argmax at
    the clipped point differs from the label. Misclassified inputs get x_adv = x, distance 0. A candidate
    the model does not confirm (minimal attacks stop at the boundary, where the model evaluated at another
    precision, e.g. TF32 matmuls on a GPU, or in another batch may disagree) is pushed outward, x + s (x_adv - x)
    for s = 1.0001, 1.001, 1.01 (clipped), and the first confirmed point is kept, at its own distance.
    """
    p = check_norm(p)
    x = jnp.asarray(x)
    labels = jnp.asarray(labels)
    x_adv = clip_to_box(jnp.asarray(x_adv, x.dtype), box)
    n = x.shape[0]
    step = batch_size or n
    pred_clean = np.concatenate([np.asarray(jnp.argmax(logits_fn(x[i:i + step]), -1)) for i in range(0, n, step)])
    pred_adv = np.concatenate([np.asarray(jnp.argmax(logits_fn(x_adv[i:i + step]), -1)) for i in range(0, n, step)])
    labels_np = np.asarray(labels)
    wrong_clean = pred_clean != labels_np
    found = (pred_adv != labels_np) & ~wrong_clean
    for s in (1.0001, 1.001, 1.01):
        retry = np.flatnonzero(~found & ~wrong_clean & np.any(np.asarray(x_adv != x).reshape(n, -1), 1))
        if not len(retry):
            break
        xr = clip_to_box(x[retry] + s * (x_adv[retry] - x[retry]), box)
        pr = np.concatenate([np.asarray(jnp.argmax(logits_fn(xr[i:i + step]), -1)) for i in range(0, len(retry), step)])
        ok = pr != labels_np[retry]
        x_adv = x_adv.at[retry[ok]].set(xr[ok])
        pred_adv[retry[ok]] = pr[ok]
        found[retry[ok]] = True
    x_np, xa_np = np.asarray(x), np.asarray(x_adv)
    keep = found.reshape((n,) + (1,) * (x.ndim - 1))
    x_out = np.where(keep, xa_np, x_np)
    dist = np.asarray(lp_norm(jnp.asarray(x_out - x_np), p), np.float64)
    dist = np.where(found, dist, np.where(wrong_clean, 0.0, np.inf))
    return AttackResult(
        x_adv=x_out, distance=dist, success=found | wrong_clean,
        label_adv=np.where(found, pred_adv, pred_clean).astype(np.int32),
        model_calls=np.broadcast_to(np.asarray(model_calls, np.int64), (n,)).copy(),
        time_s=np.full((n,), time_s / max(n, 1)), p=p, method=method)


class Timer:
    """with Timer() as t: ...; t.seconds (blocks on JAX results passed to t.block())."""
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def robust_accuracy_curve(distances, eps) -> np.ndarray:
    """Robust accuracy at each eps: the fraction of examples whose adversarial distance exceeds eps
    (misclassified examples have distance 0 and never count). distances `[n]`, eps `[m]` -> `[m]`."""
    d = np.asarray(distances, np.float64)[None, :]
    e = np.asarray(eps, np.float64)[:, None]
    return np.mean(d > e, axis=1)


def best_of(results: Sequence[AttackResult]) -> AttackResult:
    """Per example, the result with the smallest distance (all in the same norm, on the same points)."""
    if not results:
        raise ValueError("best_of needs at least one result")
    ps = {r.p for r in results}
    if len(ps) != 1:
        raise ValueError(f"results use different norms: {sorted(ps)}")
    dist = np.stack([r.distance for r in results])
    pick = np.argmin(dist, axis=0)
    n = dist.shape[1]
    take = lambda field: np.stack([getattr(r, field) for r in results])[pick, np.arange(n)]  # noqa: E731
    return AttackResult(x_adv=take("x_adv"), distance=take("distance"), success=take("success"),
                        label_adv=take("label_adv"),
                        model_calls=np.sum([r.model_calls for r in results], axis=0),
                        time_s=np.sum([r.time_s for r in results], axis=0), p=results[0].p,
                        method="best_of(" + ",".join(r.method for r in results) + ")")
