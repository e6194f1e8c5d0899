"""The per-example result every attack returns, and the checks around it.

Contracts (design.md): inputs live in a box [lo, hi] (a scalar, one example's shape or one box per
example, `geometry.as_box`); an adversarial example never leaves it; every success is re-checked with
the real model by `finalize`, the one exit of every attack. What `success` guarantees: evaluated by
logits_fn in the model's own dtype, argmax f(x_adv) != label and max_{j != y} f_j(x_adv) - f_y(x_adv)
>= min_margin (default `default_min_margin`: a few ulps of the logits' scale, so that the point stays
adversarial when the model is re-evaluated in another batch or at higher precision). An example the
model already misclassifies gets distance 0, success True and x_adv = x; no adversarial found means
success False, distance inf and x_adv = x. Distances are measured in the input space the caller passed.
"""
from __future__ import annotations

import time
import warnings
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import validate
from robustjax.attacks.model_arg import apply, jit_model
from robustjax.batching import map_batches
from robustjax.geometry import Box, as_box, box_violation, check_norm, lp_norm, margin, per_example  # noqa: F401

MIN_MARGIN_ULPS = 16


class AttackResult(NamedTuple):
    """One row per example.

    x_adv: `[batch, ...]` the adversarial input (x itself where nothing was found).
    distance: `[batch]` ||x_adv - x||_p (spatial attacks: the normalized magnitude of the transformation,
      see attacks/spatial.py); 0 for misclassified inputs; inf where success is False.
    success: `[batch]` bool, re-checked with the model (module docstring: what it guarantees).
    label_adv: `[batch]` int, argmax f(x_adv).
    model_calls: `[batch]` int, forward and backward passes (or linearizations) spent per example.
    time_s: `[batch]` float, wall time per example (batched attacks divide the batch time evenly).
    p: the norm of `distance` (1, 2 or inf), or None for threat models that are not an l_p ball (spatial).
    method: attack name.
    info: method-specific extras (a dict of `[batch, ...]` arrays or values, e.g. the spatial attacks'
      angle and shift, the region attack's trajectory), or None.
    """
    x_adv: np.ndarray
    distance: np.ndarray
    success: np.ndarray
    label_adv: np.ndarray
    model_calls: np.ndarray
    time_s: np.ndarray
    p: float | None
    method: str
    info: dict | None = None

    @property
    def misclassified(self) -> np.ndarray:
        """Examples the model got wrong before any attack (distance 0)."""
        return self.success & (self.distance == 0)


def _call(logits_fn: Callable, x):
    """logits_fn(x) (jitted, the model a jit argument: `model_arg`), or its shape for an empty batch (traced on
    one zero row, not run); a failure of logits_fn becomes a ValueError naming x's shape, the original error
    chained."""
    try:
        if x.shape[0]:
            return apply(logits_fn, x)
        s = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype))
        return jnp.zeros((0,) + tuple(s.shape[1:]), s.dtype)
    except Exception as e:  # noqa: BLE001  (any failure of the user's function)
        raise validate.model_error(e, f"logits_fn failed on x of shape {tuple(x.shape)}; it must map inputs like "
                                      "x, [batch, ...], to logits [batch, K]") from e


def check_inputs(logits_fn: Callable, x, labels, box=None, *, check_logits: bool = True, atol: float = 1e-6):
    """Validates an attack's inputs and returns (x JAX array, labels int32 `[batch]`, clean logits `[batch, K]`).

    box: a Box, (lo, hi) or None ([0, 1]), broadcast against x (`geometry.as_box`). Raises ValueError naming
    the problem: shapes, dtypes, NaN/inf, lo > hi, x outside the box by more than atol, labels out of range,
    logits_fn failing on x or not returning `[batch, K]`, non-finite logits. Warns when the outputs look like
    probabilities (non-negative rows summing to 1): attacks expect logits. An empty batch is valid.
    """
    x = jnp.asarray(validate.batch(x, "x"))
    gap = box_violation(x, as_box(box, x))
    if gap > atol:
        raise ValueError(f"x lies outside the box (by up to {gap:.3g}); attacks work in the input space of the "
                         "box: normalize inside the model, or pass the box x lives in")
    labels = validate.labels(labels, x.shape[0])
    if not check_logits:
        return x, jnp.asarray(labels), None
    logits = _call(logits_fn, x)
    if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        raise ValueError(f"logits_fn must map x {tuple(x.shape)} to [batch, K] = [{x.shape[0]}, K]; "
                         f"got {tuple(logits.shape)}")
    labels = validate.labels(labels, x.shape[0], num_classes=logits.shape[1])
    host = np.asarray(logits)
    if not np.all(np.isfinite(host)):
        raise ValueError("the model returned NaN or inf logits")
    if x.shape[0] and host.shape[1] > 1 and np.all(host >= 0) and np.allclose(np.sum(host, -1), 1.0, atol=1e-4):
        warnings.warn("the model's outputs are non-negative and sum to 1: they look like probabilities. "
                      "Attacks and certificates expect logits (drop the final softmax).", stacklevel=3)
    return x, jnp.asarray(labels), logits


def check_target(target, labels, num_classes: int) -> np.ndarray:
    """target as int32 `[batch]` classes in [0, num_classes) that differ from labels on every row (a targeted
    attack toward the label itself cannot succeed)."""
    target = validate.labels(target, len(labels), num_classes=num_classes, name="target")
    same = np.flatnonzero(target == np.asarray(labels))
    if same.size:
        raise ValueError(f"target must differ from labels; equal at {same.size} rows (first: row {int(same[0])})")
    return target


def default_min_margin(logits) -> jax.Array:
    """The margin a success must clear by default: MIN_MARGIN_ULPS ulps of the logits' scale,
    16 eps(dtype) max(1, max_j |f_j|) per row, `[batch, K]` -> `[batch]`."""
    eps = jnp.finfo(logits.dtype).eps
    return MIN_MARGIN_ULPS * eps * jnp.maximum(1.0, jnp.max(jnp.abs(logits), -1))


@jit_model(("default",))
def _verdict(logits_fn, z, y, min_margin, *, default):
    logits = logits_fn(z)
    need = default_min_margin(logits) if default else jnp.asarray(min_margin).astype(logits.dtype)
    pred = jnp.argmax(logits, -1)
    return pred, (pred != y) & (-margin(logits, y) >= need)


def _verdicts(logits_fn, z, labels, min_margin, batch_size):
    """(argmax `[n]`, adversarial with the margin `[n]` bool) at z, in the model's dtype (one jitted program per
    model and batch shape)."""
    default = min_margin is None
    mm = 0.0 if default else float(min_margin)
    return map_batches(lambda zb, yb: _verdict(logits_fn, zb, yb, mm, default=default), (z, labels),
                       batch_size=batch_size)


def keep_best(best_x, best_dist, x, dist, ok):
    """Per example, (x, dist) where ok and dist < best_dist, else (best_x, best_dist): the update every
    minimal attack applies to its closest adversarial point so far. x `[batch, ...]`, dist, ok `[batch]`."""
    better = ok & (dist < best_dist)
    return jnp.where(per_example(better, x), x, best_x), jnp.where(better, dist, best_dist)


def _distance(x_out, x, p):
    n = x.shape[0]
    if n == 0:
        return np.zeros((0,), np.float64)
    return np.asarray(lp_norm(jnp.asarray((x_out - x).reshape(n, -1)), p), np.float64)


def finalize(logits_fn: Callable, x, labels, x_adv, *, p, box=None, model_calls=0, time_s: float = 0.0,
             method: str = "", batch_size: int | None = None, min_margin: float | None = None,
             distance=None, push_outward: bool = True, info: dict | None = None) -> AttackResult:
    """Builds the AttackResult from candidate points, re-verifying everything with the real model.

    Candidates x_adv `[batch, ...]` are clipped to the box (broadcast against x). A candidate counts only if,
    at the clipped point, argmax differs from the label and max_{j != y} f_j - f_y >= min_margin in the
    model's dtype (None: `default_min_margin`, 0: argmax only). Misclassified inputs get x_adv = x,
    distance 0. A candidate that fails the test (minimal attacks stop at the boundary) is pushed outward,
    x + s (x_adv - x) for s = 1.0001, 1.001, 1.01 (clipped), and the first point passing the same test is
    kept, at its own distance (push_outward=False skips this, for attacks whose candidates are not l_p
    perturbations). distance: `[batch]` the candidates' own distances (p None); by default ||x_adv - x||_p.
    """
    p = None if p is None else check_norm(p)
    if p is None and distance is None:
        raise ValueError("finalize needs p (1, 2 or inf) or the candidates' distance")
    if min_margin is not None:
        validate.positive_float(min_margin, "min_margin", allow_zero=True)
    x = np.asarray(x)
    labels = np.asarray(labels)
    box = as_box(box, x)
    x_adv = box.clip(np.asarray(x_adv, x.dtype))
    n = x.shape[0]
    pred_clean, _ = _verdicts(logits_fn, x, labels, min_margin, batch_size)
    pred_adv, ok = _verdicts(logits_fn, x_adv, labels, min_margin, batch_size)
    wrong_clean = pred_clean != labels
    found = ok & ~wrong_clean
    moved = np.any((x_adv != x).reshape(n, -1), 1) if n else np.zeros((0,), bool)
    for s in (1.0001, 1.001, 1.01) if push_outward else ():
        retry = ~found & ~wrong_clean & moved
        if not retry.any():
            break
        xr = box.clip(x + np.asarray(s, x.dtype) * (x_adv - x))     # every row: the program of the full batch
        pr, okr = _verdicts(logits_fn, xr, labels, min_margin, batch_size)
        take = retry & okr
        x_adv[take] = xr[take]
        pred_adv[take] = pr[take]
        found |= take
    x_out = np.where(found.reshape((n,) + (1,) * (x.ndim - 1)), x_adv, x)
    dist = _distance(x_out, x, p) if distance is None else np.asarray(distance, np.float64)
    dist = np.where(found, dist, np.where(wrong_clean, 0.0, np.inf))
    return AttackResult(
        x_adv=x_out, distance=dist, success=found | wrong_clean,
        label_adv=np.where(found, pred_adv, pred_clean).astype(np.int32),
        model_calls=np.broadcast_to(np.asarray(model_calls, np.int64), (n,)).copy(),
        time_s=np.full((n,), time_s / max(n, 1)), p=p, method=method, info=info)


class Timer:
    """with Timer() as t: ...; then t.seconds."""
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
    """Per example, the result with the smallest distance (all with the same p, on the same points); the
    chosen result's info rows are kept where every result has the same info keys, else info is None."""
    if not results:
        raise ValueError("best_of needs at least one result")
    ps = {r.p for r in results}
    if len(ps) != 1:
        raise ValueError(f"results measure distance differently (p = {sorted(ps, key=str)}); best_of compares "
                         "results with one p")
    shapes = {np.shape(r.x_adv) for r in results}
    if len(shapes) != 1:
        raise ValueError(f"results must be on the same points; their x_adv shapes differ: {sorted(shapes)}")
    dist = np.stack([r.distance for r in results])
    pick = np.argmin(dist, axis=0)
    n = dist.shape[1]
    rows = np.arange(n)

    def take(values):
        return np.stack([np.asarray(v) for v in values])[pick, rows]
    info = None
    keys = [set(r.info) if r.info else None for r in results]
    if keys[0] and all(k == keys[0] for k in keys) and \
            all(np.shape(r.info[k])[:1] == (n,) for r in results for k in keys[0]):
        info = {k: take([r.info[k] for r in results]) for k in sorted(keys[0])}
    return AttackResult(x_adv=take([r.x_adv for r in results]), distance=take([r.distance for r in results]),
                        success=take([r.success for r in results]), label_adv=take([r.label_adv for r in results]),
                        model_calls=np.sum([r.model_calls for r in results], axis=0),
                        time_s=np.sum([r.time_s for r in results], axis=0), p=results[0].p,
                        method="best_of(" + ",".join(r.method for r in results) + ")", info=info)
