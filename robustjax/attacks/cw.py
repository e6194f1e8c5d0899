"""Carlini-Wagner l2 (Carlini & Wagner, "Towards evaluating the robustness of neural networks",
IEEE S&P 2017, arXiv 1608.04644), untargeted, with a binary search over the constant c per example.

Change of variables (Sec. V.A, "method 3"): x' = lo + (hi - lo) (tanh(w) + 1) / 2 keeps x' in the box
without clipping (lo, hi per coordinate). For a constant c_i per example, Adam minimizes over w

    ||x' - x||_2^2 + c_i * max(f_y(x') - max_{j != y} f_j(x') + kappa, 0)      (the paper's f_6)

from w0 = atanh(x) (delta = 0) for `steps` steps, keeping the closest misclassified iterate. Then,
per example: a success sets upper_i = c_i, a failure lower_i = c_i; c_i becomes (lower+upper)/2, or
10 c_i while no success has been seen (the authors' and Foolbox's schedule). Masks, not Python
branches, keep the per-example search inside one jitted program.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import optax

from robustjax import validate
from robustjax.attacks import steps as S
from robustjax.attacks.model_arg import jit_model
from robustjax.attacks.result import Timer, as_box, check_inputs, check_norm, finalize, keep_best
from robustjax.batching import map_batches
from robustjax.geometry import lp_norm, margin


def _to_model(w, lo, hi):
    return lo + (hi - lo) * (jnp.tanh(w) + 1.0) / 2.0


def _to_attack(x, lo, hi):
    width = hi - lo
    z = jnp.where(width > 0, (x - lo) / jnp.where(width > 0, width, 1.0), 0.5) * 2.0 - 1.0
    return jnp.arctanh(jnp.clip(z, -1.0, 1.0) * 0.999999)


@jit_model(("steps", "binary_search_steps", "learning_rate",
            "confidence", "initial_const", "evaluate_last", "line_search_steps"))
def _cw(logits_fn, x, labels, lo, hi, *, steps, binary_search_steps, learning_rate, confidence,
        initial_const, evaluate_last, line_search_steps):
    """x, lo, hi `[batch, ...]`, labels `[batch]` -> (x_adv, model calls `[batch]`)."""
    n = x.shape[0]
    w0 = _to_attack(x, lo, hi)
    x_start = _to_model(w0, lo, hi)      # the tanh round trip of x; the penalty is measured from it
    opt = optax.adam(learning_rate)

    def objective(w, consts):
        xa = _to_model(w, lo, hi)
        logits = logits_fn(xa)
        hinge = jax.nn.relu(margin(logits, labels) + confidence)
        sq = jnp.sum((xa - x_start).reshape(n, -1) ** 2, -1)
        return jnp.sum(sq + consts * hinge), (xa, logits)

    grad_fn = jax.grad(objective, has_aux=True)

    def search_step(_, carry):
        consts, lower, upper, best_x, best_d = carry

        def adam_step(_, inner):
            w, opt_state, found, best_x, best_d = inner
            g, (xa, logits) = grad_fn(w, consts)
            upd, opt_state = opt.update(g, opt_state, w)
            adv = S.is_adversarial(logits, labels)
            best_x, best_d = keep_best(best_x, best_d, xa, lp_norm(xa - x, 2), adv)
            return optax.apply_updates(w, upd), opt_state, found | adv, best_x, best_d

        inner = (w0, opt.init(w0), jnp.zeros((n,), bool), best_x, best_d)
        w, opt_state, found, best_x, best_d = jax.lax.fori_loop(0, steps, adam_step, inner)
        xa = _to_model(w, lo, hi)                        # the last iterate, not yet evaluated in the loop
        adv = S.is_adversarial(logits_fn(xa), labels) & evaluate_last
        best_x, best_d = keep_best(best_x, best_d, xa, lp_norm(xa - x, 2), adv)
        found = found | adv
        upper = jnp.where(found, jnp.minimum(upper, consts), upper)
        lower = jnp.where(found, lower, jnp.maximum(lower, consts))
        consts = jnp.where(jnp.isinf(upper), consts * 10.0, (lower + upper) / 2.0)
        return consts, lower, upper, best_x, best_d

    init = (jnp.full((n,), initial_const, x.dtype), jnp.zeros((n,), x.dtype), jnp.full((n,), jnp.inf, x.dtype),
            x, jnp.full((n,), jnp.inf, x.dtype))
    _, _, _, best_x, best_d = jax.lax.fori_loop(0, binary_search_steps, search_step, init)
    calls = jnp.full((n,), (2 * steps + int(evaluate_last)) * binary_search_steps, jnp.int32)
    if line_search_steps:
        ls = S.line_search(logits_fn, x, labels, best_x, jnp.isfinite(best_d), line_search_steps)
        best_x, calls = ls.x_adv, calls + ls.calls
    return best_x, calls


def cw(logits_fn, x, labels, *, p=2, key=None, box=None, steps: int = 1000, binary_search_steps: int = 9,
       learning_rate: float = 0.01, confidence: float = 0.0, initial_const: float = 1e-3,
       evaluate_last: bool = True, line_search_steps: int = 0, batch_size: int | None = None,
       min_margin: float | None = None):
    """Carlini-Wagner l2 attack, minimal-norm, untargeted.

    Args:
      logits_fn: batched `[batch, ...]` -> logits `[batch, K]` (a jit argument: `attacks/model_arg.py`).
      x: `[batch, ...]` in the box; labels `[batch]`. p: must be 2. key: unused (deterministic).
      box: Box, (lo, hi) or None ([0, 1]); lo, hi a scalar, one example's shape or `[batch, ...]`.
      steps: Adam steps per value of c; binary_search_steps: values of c tried per example;
      learning_rate: Adam step in tanh space; confidence: kappa; initial_const: first c.
      evaluate_last: also check the last Adam iterate of each c (one forward pass; Foolbox does not).
      line_search_steps: optional bisection toward x after the search (0 = the original attack).
      min_margin: see `finalize`.
      Defaults follow Foolbox 3 except steps (Foolbox: 10000) and no early abort. The step budget and the
      learning rate trade off: a small rate may stop far from the boundary within `steps`, a large one is
      coarse near it; benchmarks/attacks.md measures both.

    Returns:
      AttackResult; model_calls = 2 (forward + backward) per Adam step.
    """
    del key
    p = check_norm(p)
    if p != 2:
        raise ValueError(f"cw is the l2 attack (p = 2), got p = {p}")
    x, labels, _ = check_inputs(logits_fn, x, labels, box)
    box = as_box(box, x)
    opts = dict(steps=validate.positive_int(steps, "steps"),
                binary_search_steps=validate.positive_int(binary_search_steps, "binary_search_steps"),
                learning_rate=validate.positive_float(learning_rate, "learning_rate"),
                confidence=validate.positive_float(confidence, "confidence", allow_zero=True),
                initial_const=validate.positive_float(initial_const, "initial_const"),
                evaluate_last=bool(evaluate_last),
                line_search_steps=validate.positive_int(line_search_steps, "line_search_steps", allow_zero=True))
    run = lambda xb, yb, lob, hib: _cw(logits_fn, xb, yb, lob, hib, **opts)  # noqa: E731
    with Timer() as t:
        x_adv, calls = map_batches(run, (x, labels, box.lo, box.hi), batch_size=batch_size)
    return finalize(logits_fn, x, labels, x_adv, p=2, box=box, model_calls=calls, time_s=t.seconds,
                    method="cw_l2", min_margin=min_margin)
