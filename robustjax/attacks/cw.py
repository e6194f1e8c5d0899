"""Carlini-Wagner l2 (Carlini & Wagner, "Towards evaluating the robustness of neural networks",
IEEE S&P 2017, arXiv 1608.04644), untargeted, with a binary search over the constant c per example.

Change of variables (Sec. V.A, "method 3"): x' = lo + (hi - lo) (tanh(w) + 1) / 2 keeps x' in the box
without clipping. For a constant c_i per example, Adam minimizes over w

    ||x' - x||_2^2 + c_i * max(f_y(x') - max_{j != y} f_j(x') + kappa, 0)      (the paper's f_6)

from w0 = atanh(x) (delta = 0) for `steps` steps, keeping the closest misclassified iterate. Then,
per example: a success sets upper_i = c_i, a failure lower_i = c_i; c_i becomes (lower+upper)/2, or
10 c_i while no success has been seen (the authors' and Foolbox's schedule). Masks, not Python
branches, keep the per-example search inside one jitted program.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from robustjax.attacks import _projections as P
from robustjax.attacks.result import Box, Timer, check_inputs, check_norm, finalize


def _to_model(w, lo, hi):
    return lo + (hi - lo) * (jnp.tanh(w) + 1.0) / 2.0


def _to_attack(x, lo, hi):
    z = (x - lo) / (hi - lo) * 2.0 - 1.0
    return jnp.arctanh(jnp.clip(z, -1.0, 1.0) * 0.999999)


@functools.partial(jax.jit, static_argnames=("logits_fn", "steps", "binary_search_steps", "learning_rate",
                                             "confidence", "initial_const", "evaluate_last", "line_search_steps"))
def _cw(logits_fn, x, labels, lo, hi, *, steps, binary_search_steps, learning_rate, confidence,
        initial_const, evaluate_last, line_search_steps):
    """x `[batch, ...]`, labels `[batch]` -> (x_adv, found `[batch]`, model calls `[batch]`)."""
    n = x.shape[0]
    w0 = _to_attack(x, lo, hi)
    x_start = _to_model(w0, lo, hi)      # the tanh round trip of x; the penalty is measured from it
    opt = optax.adam(learning_rate)

    def objective(w, consts):
        xa = _to_model(w, lo, hi)
        logits = logits_fn(xa)
        hinge = jnp.maximum(-P.margin(logits, labels) + confidence, 0.0)
        sq = jnp.sum(P._flat(xa - x_start) ** 2, -1)
        return jnp.sum(sq + consts * hinge), (xa, logits)

    grad_fn = jax.grad(objective, has_aux=True)

    def search_step(_, carry):
        consts, lower, upper, best_x, best_d = carry

        def adam_step(_, inner):
            w, opt_state, found, best_x, best_d = inner
            g, (xa, logits) = grad_fn(w, consts)
            upd, opt_state = opt.update(g, opt_state, w)
            adv = P.is_adversarial(logits, labels)
            d = P.norm(xa - x, 2)
            better = adv & (d < best_d)
            best_x = jnp.where(P._bcast(better, x), xa, best_x)
            best_d = jnp.where(better, d, best_d)
            return optax.apply_updates(w, upd), opt_state, found | adv, best_x, best_d

        inner = (w0, opt.init(w0), jnp.zeros((n,), bool), best_x, best_d)
        w, opt_state, found, best_x, best_d = jax.lax.fori_loop(0, steps, adam_step, inner)
        # the last iterate, not yet evaluated inside the loop
        xa = _to_model(w, lo, hi)
        adv = P.is_adversarial(logits_fn(xa), labels) & evaluate_last
        d = P.norm(xa - x, 2)
        better = adv & (d < best_d)
        best_x = jnp.where(P._bcast(better, x), xa, best_x)
        best_d = jnp.where(better, d, best_d)
        found = found | adv
        upper = jnp.where(found, jnp.minimum(upper, consts), upper)
        lower = jnp.where(found, lower, jnp.maximum(lower, consts))
        consts = jnp.where(jnp.isinf(upper), consts * 10.0, (lower + upper) / 2.0)
        return consts, lower, upper, best_x, best_d

    init = (jnp.full((n,), initial_const, x.dtype), jnp.zeros((n,), x.dtype), jnp.full((n,), jnp.inf, x.dtype),
            x, jnp.full((n,), jnp.inf, x.dtype))
    _, _, _, best_x, best_d = jax.lax.fori_loop(0, binary_search_steps, search_step, init)
    found = jnp.isfinite(best_d)
    calls = jnp.full((n,), (2 * steps + int(evaluate_last)) * binary_search_steps, jnp.int32)
    if line_search_steps:
        ls = P.line_search(logits_fn, x, labels, best_x, found, line_search_steps)
        best_x, calls = ls.x_adv, calls + ls.calls
    return best_x, found, calls


def cw(logits_fn, x, labels, *, p=2, key=None, box: Box = Box(), steps: int = 1000,
       binary_search_steps: int = 9, learning_rate: float = 0.01, confidence: float = 0.0,
       initial_const: float = 1e-3, evaluate_last: bool = True, line_search_steps: int = 0,
       batch_size: int | None = None):
    """Carlini-Wagner l2 attack, minimal-norm, untargeted.

    Args:
      logits_fn: batched `[batch, ...]` -> logits `[batch, K]` (static under jit: reuse the object).
      x: `[batch, ...]` in the box; labels `[batch]`. p: must be 2. key: unused (deterministic).
      steps: Adam steps per value of c; binary_search_steps: values of c tried per example;
      learning_rate: Adam step in tanh space; confidence: kappa; initial_const: first c.
      evaluate_last: also check the last Adam iterate of each c (one forward pass; Foolbox does not).
      line_search_steps: optional bisection toward x after the search (0 = the original attack).
      Defaults follow Foolbox 3 except steps (Foolbox: 10000) and no early abort. Mind the step budget:
      with learning_rate 0.01, 1000 steps can stop far from the boundary (MNIST 784-256-10 net: median
      l2 2.06 against 0.88 with learning_rate 0.1 and DeepFool's 0.91), while 0.1 is coarse near the
      boundary (21 % above the exact distance on a linear model after 300 steps, where 0.01 is exact).

    Returns:
      AttackResult; model_calls = 2 (forward + backward) per Adam step.
    """
    del key
    p = check_norm(p)
    if p != 2:
        raise ValueError(f"cw is the l2 attack (p = 2), got p = {p}")
    x, labels, _ = check_inputs(logits_fn, x, labels, box)
    lo, hi = jnp.asarray(box.lo, x.dtype), jnp.asarray(box.hi, x.dtype)
    run = lambda xb, yb, kb: _cw(  # noqa: E731
        logits_fn, xb, yb, lo, hi, steps=int(steps), binary_search_steps=int(binary_search_steps),
        learning_rate=float(learning_rate), confidence=float(confidence),
        initial_const=float(initial_const), evaluate_last=bool(evaluate_last),
        line_search_steps=int(line_search_steps))
    with Timer() as t:
        x_adv, _, calls = P.in_batches(run, (x, labels), jax.random.key(0), batch_size)
    return finalize(logits_fn, x, labels, x_adv, p=2, box=box, model_calls=calls, time_s=t.seconds,
                    method="cw_l2")
