"""Decoupled Direction and Norm (Rony, Hafemann, Oliveira, Ben Ayed, Sabourin, Granger, CVPR 2019,
arXiv 1811.09600, Alg. 1), a minimal l2 attack.

Each step moves delta along the normalized loss gradient (step alpha_k, cosine-annealed from max_step
to 0.01), then rescales it to the l2 sphere of radius eps, which shrinks by (1 - gamma) while x + delta
is adversarial and grows by (1 + gamma) otherwise; x + delta is clipped to the box. The closest
adversarial iterate is kept, then (optionally) a line search toward x.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp

from robustjax import losses, validate
from robustjax.attacks import steps as S
from robustjax.attacks.model_arg import jit_model
from robustjax.attacks.result import Timer, as_box, check_inputs, check_norm, finalize, keep_best
from robustjax.batching import map_batches
from robustjax.geometry import lp_norm, per_example


@jit_model(("steps", "gamma", "init_epsilon", "max_step", "loss", "line_search_steps"))
def _ddn(logits_fn, x, labels, lo, hi, *, steps, gamma, init_epsilon, max_step, loss, line_search_steps):
    n = x.shape[0]
    worst = lp_norm(jnp.maximum(x - lo, hi - x), 2)
    loss_fn = losses.get(loss)

    def loss_sum(z):
        logits = logits_fn(z)
        return jnp.sum(loss_fn(logits=logits, labels=labels)), logits

    def body(k, carry):
        delta, eps, best_delta, best_d = carry
        alpha = 0.01 + (max_step - 0.01) * (1.0 + jnp.cos(jnp.pi * k / steps)) / 2.0
        (_, logits), g = jax.value_and_grad(loss_sum, has_aux=True)(x + delta)
        adv = S.is_adversarial(logits, labels)
        best_delta, best_d = keep_best(best_delta, best_d, delta, lp_norm(delta, 2), adv)
        delta = delta + alpha * S.steepest(g, 2)
        eps = jnp.minimum(eps * jnp.where(adv, 1.0 - gamma, 1.0 + gamma), worst)
        delta = delta * per_example(eps / jnp.maximum(lp_norm(delta, 2), S.TINY), x)
        delta = jnp.clip(x + delta, lo, hi) - x
        return delta, eps, best_delta, best_d

    init = (jnp.zeros_like(x), jnp.full((n,), init_epsilon, x.dtype), jnp.zeros_like(x),
            jnp.full((n,), jnp.inf, x.dtype))
    delta, _, best_delta, best_d = jax.lax.fori_loop(0, steps, body, init)
    last_adv = S.is_adversarial(logits_fn(x + delta), labels)
    best_delta, best_d = keep_best(best_delta, best_d, delta, lp_norm(delta, 2), last_adv)
    found = jnp.isfinite(best_d)
    x_adv = x + best_delta
    calls = jnp.full((n,), 2 * steps + 1, jnp.int32)
    if line_search_steps:
        ls = S.line_search(logits_fn, x, labels, x_adv, found, line_search_steps)
        x_adv, calls = ls.x_adv, calls + ls.calls
    return x_adv, calls


def ddn(logits_fn, x, labels, *, p=2, key=None, box=None, steps: int = 100, gamma: float = 0.05,
        init_epsilon: float = 1.0, max_step: float = 1.0, loss="cross_entropy", line_search_steps: int = 10,
        batch_size: int | None = None, min_margin: float | None = None):
    """Decoupled Direction and Norm attack, l2, minimal (module docstring).

    Args:
      logits_fn: batched `[batch, ...]` -> logits `[batch, K]` (a jit argument: `attacks/model_arg.py`).
      x: `[batch, ...]` in the box; labels `[batch]`; p: must be 2; key: unused (deterministic).
      box: Box, (lo, hi) or None ([0, 1]); lo, hi a scalar, one example's shape or `[batch, ...]`.
      steps, gamma, init_epsilon, max_step: Alg. 1's; defaults follow Foolbox 3 (100, 0.05, 1, 1).
      loss: a `robustjax.losses` name, maximized: "cross_entropy" (the paper's) or "margin" (follows the
        nearest boundary, exact on affine classifiers). line_search_steps: bisection toward x (0: none).
      min_margin: see `finalize`.

    Returns:
      AttackResult; model_calls = 2 per step, + 1, + the line search.
    """
    del key
    p = check_norm(p)
    if p != 2:
        raise ValueError(f"ddn is an l2 attack (p = 2), got p = {p}")
    x, labels, _ = check_inputs(logits_fn, x, labels, box)
    box = as_box(box, x)
    losses.get(loss)
    opts = dict(steps=validate.positive_int(steps, "steps"), gamma=validate.positive_float(gamma, "gamma"),
                init_epsilon=validate.positive_float(init_epsilon, "init_epsilon"),
                max_step=validate.positive_float(max_step, "max_step"), loss=loss,
                line_search_steps=validate.positive_int(line_search_steps, "line_search_steps", allow_zero=True))
    if opts["gamma"] >= 1:
        raise ValueError(f"gamma must lie in (0, 1), got {gamma!r}")
    run = lambda xb, yb, lob, hib: _ddn(logits_fn, xb, yb, lob, hib, **opts)  # noqa: E731
    with Timer() as t:
        x_adv, calls = map_batches(run, (x, labels, box.lo, box.hi), batch_size=batch_size)
    return finalize(logits_fn, x, labels, x_adv, p=2, box=box, model_calls=calls, time_s=t.seconds,
                    method="ddn_l2", min_margin=min_margin)
