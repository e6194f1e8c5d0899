"""The adversarial-training regularizer term (Madry et al., ICLR 2018): the loss at PGD points.

Registered with `robustjax.regularizers` as "adversarial_training", so a training config can name it:
`("adversarial_training", weight, {"p": inf, "eps": 0.1, "steps": 10})`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import losses, regularizers, validate
from robustjax.attacks.pgd import make_run
from robustjax.geometry import Box, as_box, check_norm


def adversarial_training(weight: float, *, p=np.inf, eps: float = 0.3, steps: int = 10,
                         step_size: float | None = None, loss="cross_entropy", random_start: bool = True,
                         box=None) -> regularizers.Term:
    """Regularizer term weight * mean CE(f(x_pgd), y) with x_pgd from `steps` PGD steps (all of them, no
    early stop) maximizing `loss` in the lp ball of radius eps and the box (a scalar or one example's
    shape). With the clean loss of `fit` and weight 1 this is the 50 % clean / 50 % adversarial mix of
    Goodfellow et al. 2015 and of MMR+at.

    Returns term(params, x, y, *, apply_fn, key) -> scalar, apply_fn(params, x) -> logits. The attack runs
    on the current parameters with gradients stopped (x_pgd is a constant for the parameter update).
    """
    p = check_norm(p)
    eps = validate.positive_float(eps, "eps", allow_zero=True)
    steps = validate.positive_int(steps, "steps")
    box = as_box(box)
    losses.get(loss)

    def term(params, x, y, *, apply_fn, key):
        run = make_run(p, Box(jnp.asarray(box.lo, x.dtype), jnp.asarray(box.hi, x.dtype)), steps, step_size,
                       loss, random_start, 0.99, stop_early=False)
        frozen = jax.lax.stop_gradient(params)
        x_adv = run(lambda z: apply_fn(frozen, z), x, y, eps=eps, key=key).x_final
        x_adv = jax.lax.stop_gradient(x_adv)
        return weight * jnp.mean(losses.softmax_cross_entropy(logits=apply_fn(params, x_adv), labels=y))
    return term


regularizers.register("adversarial_training", adversarial_training)
