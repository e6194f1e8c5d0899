"""DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016, arXiv 1511.04599), l2 and l_inf.

At the current point x_k, every class j != y is linearized: Delta_j = f_j - f_y, w_j = grad f_j -
grad f_y. The nearest linearized boundary is j* = argmin_j |Delta_j| / ||w_j||_q (q dual to p), and
the step onto it is r = (|Delta_j*| / ||w_j*||_q + 1e-4) * s, with s = w/||w||_2 (p = 2) or sign(w)
(p = inf), Alg. 2 and Sec. 3.1 of the paper. Steps accumulate, r_total += r, and
x_{k+1} = clip(x + (1 + overshoot) r_total) (the overshoot as in the authors' and Foolbox's code).
A row stops (mask) once it is misclassified; the loop stops when all rows are.

On an affine classifier with the box inactive one step lands on the exact minimal perturbation
(times 1 + overshoot). `line_search_steps > 0` adds a bisection along the segment x -> x_adv
(not part of the original algorithm, off by default so the results compare with other DeepFools).
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from robustjax import validate
from robustjax.attacks import steps as S
from robustjax.attacks.model_arg import jit_model
from robustjax.attacks.result import Timer, as_box, check_inputs, check_norm, finalize
from robustjax.batching import map_batches
from robustjax.geometry import dual_norm, per_example


@jit_model(("p", "steps", "overshoot", "line_search_steps"))
def _deepfool(logits_fn, x, labels, lo, hi, *, p, steps, overshoot, line_search_steps):
    """x, lo, hi `[batch, ...]`, labels `[batch]` -> (x_adv, model calls `[batch]`)."""
    def logits_and_jacobian(z):
        logits, vjp_fn = jax.vjp(logits_fn, z)
        k = logits.shape[-1]
        cot = jnp.broadcast_to(jnp.eye(k, dtype=logits.dtype)[:, None, :], (k,) + logits.shape)
        (jac,) = jax.vmap(vjp_fn)(cot)                      # [K, batch, ...]
        return logits, jnp.moveaxis(jac, 0, 1)              # [batch, K, ...]

    def step_of(logits, jac):
        b, k = logits.shape
        jf = jac.reshape(b, k, -1)
        f_y = jnp.take_along_axis(logits, labels[:, None], 1)            # [b, 1]
        g_y = jnp.take_along_axis(jf, labels[:, None, None], 1)           # [b, 1, d]
        delta = jnp.abs(logits - f_y)                                     # [b, K]
        w = jf - g_y                                                      # [b, K, d]
        dist = delta / (dual_norm(w, p) + 1e-8)
        dist = jnp.where(jax.nn.one_hot(labels, k, dtype=bool), jnp.inf, dist)
        j = jnp.argmin(dist, axis=1)
        dj = jnp.take_along_axis(dist, j[:, None], 1)[:, 0] + 1e-4
        wj = jnp.take_along_axis(w, j[:, None, None], 1)[:, 0]           # [b, d]
        if p == np.inf:
            r = dj[:, None] * jnp.sign(wj)
        else:
            r = (dj / (jnp.sqrt(jnp.sum(wj * wj, -1)) + 1e-8))[:, None] * wj
        return r.reshape(x.shape).astype(x.dtype)

    def cond(carry):
        i, _, _, active, _ = carry
        return (i < steps) & jnp.any(active)

    def body(carry):
        i, xk, r_total, _, calls = carry
        logits, jac = logits_and_jacobian(xk)
        active = ~S.is_adversarial(logits, labels)
        r = jnp.where(per_example(active, x), step_of(logits, jac), 0.0)
        r_total = r_total + r
        x_new = jnp.clip(x + (1.0 + overshoot) * r_total, lo, hi)
        xk = jnp.where(per_example(active, x), x_new, xk)
        calls = calls + active * (1 + logits.shape[-1])
        return i + 1, xk, r_total, active, calls

    n = x.shape[0]
    init = (0, x, jnp.zeros_like(x), jnp.ones((n,), bool), jnp.zeros((n,), jnp.int32))
    _, xk, _, _, calls = jax.lax.while_loop(cond, body, init)
    calls = calls + 1
    if line_search_steps:
        found = S.is_adversarial(logits_fn(xk), labels)
        ls = S.line_search(logits_fn, x, labels, xk, found, line_search_steps)
        xk, calls = ls.x_adv, calls + ls.calls
    return xk, calls


def deepfool(logits_fn, x, labels, *, p, key=None, box=None, steps: int = 50, overshoot: float = 0.02,
             line_search_steps: int = 0, batch_size: int | None = None, min_margin: float | None = None):
    """DeepFool, minimal-norm, untargeted, p in {2, inf}; all classes are candidates.

    Args:
      logits_fn: batched `[batch, ...]` -> logits `[batch, K]` (jittable; `model_arg`: the same object
        or a Partial of the same function reuses the compiled attack).
      x: `[batch, ...]` inputs in the box; labels: `[batch]` ints.
      p: 2 or inf. key: unused (DeepFool is deterministic), accepted for the common call shape.
      box: Box, (lo, hi) or None ([0, 1]); lo, hi a scalar, one example's shape or `[batch, ...]`.
      steps: maximum DeepFool iterations; overshoot: factor (1 + overshoot) on the accumulated step.
      line_search_steps: bisection steps toward x after the attack (0 = classic DeepFool).
      batch_size: rows per compiled batch (None = all at once). min_margin: see `finalize`.

    Returns:
      AttackResult; model_calls counts one forward and K backward passes per active iteration.
    """
    del key
    p = check_norm(p)
    if p not in (2.0, np.inf):
        raise ValueError(f"deepfool supports p = 2 or inf, got {p}")
    x, labels, _ = check_inputs(logits_fn, x, labels, box)
    box = as_box(box, x)
    opts = dict(p=p, steps=validate.positive_int(steps, "steps"),
                overshoot=validate.positive_float(overshoot, "overshoot", allow_zero=True),
                line_search_steps=validate.positive_int(line_search_steps, "line_search_steps", allow_zero=True))
    run = lambda xb, yb, lob, hib: _deepfool(logits_fn, xb, yb, lob, hib, **opts)  # noqa: E731
    with Timer() as t:
        x_adv, calls = map_batches(run, (x, labels, box.lo, box.hi), batch_size=batch_size)
    return finalize(logits_fn, x, labels, x_adv, p=p, box=box, model_calls=calls, time_s=t.seconds,
                    method=f"deepfool_l{'inf' if p == np.inf else 2}", min_margin=min_margin)
