"""Projected gradient attacks in l1, l2 and l_inf, composed from small pieces (as
deepmind-research's adversarial_robustness/jax/attacks.py and optax):

    run = make_pgd(p=2, step=lambda eps: optax.chain(mask_box(box), normalize(2),
                                                     scale_per_example(0.05 * eps)),
                   init_fn=uniform_in_ball(2), project_fn=project(2, box), loss_fn=margin,
                   num_steps=100)
    out = run(logits_fn, key, x, labels, eps)       # PGDOutput, one row per example

Public attacks (the common call shape, AttackResult out):
- `pgd`: fixed-eps PGD (Madry et al., ICLR 2018, arXiv 1706.06083), random start, restarts; the
  l1 version takes sparse steepest-ascent steps (Tramer & Boneh 2019) and projects with Duchi et al.
- `pgd_minimal`: a per-example search over eps (doubling, then bisection on [largest failed eps,
  smallest found distance]) running `pgd` at each eps, warm-started from the best adversarial
  point scaled into the new ball, then a line search toward x.
- `ddn`: Decoupled Direction and Norm (Rony et al., CVPR 2019, arXiv 1811.09600), l2.
- `adversarial_training(weight, *, p, eps, steps)`: the regularizer term weight * CE(f(x_pgd), y)
  for `train.fit(..., regularizer=term)` (registered as "adversarial_training").
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robustjax import regularizers
from robustjax.attacks import _projections as P
from robustjax.attacks.result import Box, Timer, check_inputs, check_norm, finalize


class PGDState(NamedTuple):
    i: jax.Array
    x_adv: jax.Array          # current iterate [batch, ...]
    opt_state: optax.OptState
    best_adv: jax.Array       # closest adversarial iterate seen [batch, ...]
    best_dist: jax.Array      # its lp distance [batch], inf if none
    found: jax.Array          # [batch] bool
    calls: jax.Array          # [batch] forward + backward passes


class PGDOutput(NamedTuple):
    x_final: jax.Array
    best_adv: jax.Array
    best_dist: jax.Array
    found: jax.Array
    calls: jax.Array


def make_pgd(*, p, step: Callable, init_fn: Callable | None, project_fn: Callable, loss_fn: Callable,
             num_steps: int, stop_early: bool = True) -> Callable:
    """Builds a jittable PGD run from its parts.

    Args:
      p: the norm distances are measured in (1, 2, inf).
      step: eps `[batch]` -> optax.GradientTransformation mapping the gradient of the summed loss
        (and params = the current x) to the ascent update.
      init_fn: (key, x, eps) -> starting point (projected afterwards), or None to start at x.
      project_fn: (x_adv, x, eps) -> a point of the ball of radius eps around x, in the box.
      loss_fn: (logits `[batch, K]`, labels `[batch]`) -> `[batch]`, maximized.
      num_steps: maximum steps; stop_early: freeze rows once misclassified and stop the loop when all
        are (attacks); False runs all steps on every row (adversarial training).

    Returns:
      run(logits_fn, key, x, labels, eps, x_init=None) -> PGDOutput.
    """
    p = float(p)

    def run(logits_fn, key, x, labels, eps, x_init=None):
        eps = jnp.broadcast_to(jnp.asarray(eps, x.dtype), x.shape[:1])
        tx = step(eps)
        if x_init is None:
            x_init = x if init_fn is None else init_fn(key, x, eps)
        x0 = project_fn(x_init, x, eps)
        n = x.shape[0]

        def loss_sum(z):
            logits = logits_fn(z)
            return jnp.sum(loss_fn(logits, labels)), logits

        def body(s: PGDState) -> PGDState:
            (_, logits), g = jax.value_and_grad(loss_sum, has_aux=True)(s.x_adv)
            adv = P.is_adversarial(logits, labels)
            d = P.norm(s.x_adv - x, p)
            better = adv & (d < s.best_dist)
            best_adv = jnp.where(P._bcast(better, x), s.x_adv, s.best_adv)
            best_dist = jnp.where(better, d, s.best_dist)
            found = s.found | adv
            active = ~found if stop_early else jnp.ones_like(found)
            upd, opt_state = tx.update(g, s.opt_state, s.x_adv)
            x_new = project_fn(s.x_adv + upd, x, eps)
            x_adv = jnp.where(P._bcast(active, x), x_new, s.x_adv)
            return PGDState(s.i + 1, x_adv, opt_state, best_adv, best_dist, found, s.calls + 2 * active)

        def cond(s: PGDState):
            return (s.i < num_steps) & (jnp.any(~s.found) if stop_early else True)

        s = PGDState(jnp.zeros((), jnp.int32), x0, tx.init(x0), x, jnp.full((n,), jnp.inf, x.dtype),
                     jnp.zeros((n,), bool), jnp.zeros((n,), jnp.int32))
        s = jax.lax.while_loop(cond, body, s)
        # the last iterate
        adv = P.is_adversarial(logits_fn(s.x_adv), labels)
        d = P.norm(s.x_adv - x, p)
        better = adv & (d < s.best_dist)
        best_adv = jnp.where(P._bcast(better, x), s.x_adv, s.best_adv)
        best_dist = jnp.where(better, d, s.best_dist)
        return PGDOutput(s.x_adv, best_adv, best_dist, s.found | adv, s.calls + 1)
    return run


def default_step_size(p, steps: int) -> float:
    """The first step size relative to eps (it then decays by cosine to 1/10 of it): 5 / steps for
    l2 and l_inf, so that the decayed steps still cross the ball about 2.5 times, as Madry et al.'s
    2.5 eps / steps does without decay, capped at eps / 2; eps / 5 for the sparse l1 steps."""
    return 0.2 if float(p) == 1 else min(0.5, 5.0 / steps)


STEP_DECAY = 0.1


def cosine_decay(steps: int, final: float) -> Callable:
    """Step-size factor 1 -> final over `steps` steps (cosine), applied to every norm's step."""
    return lambda t: final + (1.0 - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(t, steps) / steps))


def _make_run(p, box, steps, step_size, loss, random_start, sparsity, stop_early=True):
    rel = default_step_size(p, steps) if step_size is None else float(step_size)
    return make_pgd(
        p=p, step=lambda eps: optax.chain(P.mask_box(box), P.normalize(p, sparsity=sparsity),
                                          P.scale_per_example(rel * eps),
                                          optax.scale_by_schedule(cosine_decay(steps, STEP_DECAY))),
        init_fn=P.uniform_in_ball(p) if random_start else None, project_fn=P.project(p, box),
        loss_fn=P.get_loss(loss), num_steps=steps, stop_early=stop_early)


_STATIC = ("logits_fn", "p", "box", "steps", "step_size", "loss", "random_start", "sparsity")


@functools.partial(jax.jit, static_argnames=_STATIC + ("restarts",))
def _pgd(logits_fn, x, labels, eps, key, *, p, box, steps, step_size, loss, random_start, sparsity, restarts):
    run = _make_run(p, box, steps, step_size, loss, random_start, sparsity)

    def restart(carry, k):
        best_adv, best_dist, calls = carry
        active = ~jnp.isfinite(best_dist)
        out = run(logits_fn, k, x, labels, eps)
        better = out.found & (out.best_dist < best_dist)
        best_adv = jnp.where(P._bcast(better, x), out.best_adv, best_adv)
        return (best_adv, jnp.where(better, out.best_dist, best_dist), calls + active * out.calls), None

    n = x.shape[0]
    init = (x, jnp.full((n,), jnp.inf, x.dtype), jnp.zeros((n,), jnp.int32))
    (best_adv, best_dist, calls), _ = jax.lax.scan(restart, init, jax.random.split(key, restarts))
    return best_adv, jnp.isfinite(best_dist), calls


def _hashable_box(box: Box) -> Box:
    for v in box:
        if np.ndim(v) != 0:
            raise ValueError("pgd needs a scalar box (lo, hi); per-coordinate boxes are not supported here")
    return Box(float(box.lo), float(box.hi))


def pgd(logits_fn, x, labels, *, p, key, box: Box = Box(), eps, steps: int = 100,
        step_size: float | None = None, restarts: int = 1, loss: str = "margin", random_start: bool = True,
        sparsity: float = 0.99, batch_size: int | None = None):
    """Fixed-eps PGD: finds x_adv in the lp ball of radius eps (and the box) that is misclassified.

    Args:
      logits_fn: batched `[batch, ...]` -> `[batch, K]` (static under jit: reuse the object).
      x: `[batch, ...]` in the box; labels `[batch]`; p: 1, 2 or inf; key: PRNG key (random starts).
      eps: radius, scalar or `[batch]`; steps: PGD steps per restart; step_size: relative to eps
        (default `default_step_size`); restarts: random restarts, rows already broken skip later
        work in the count; loss: "margin" (C&W f_6) or "ce", maximized; sparsity: l1 only, the
        fraction of coordinates left out of each step.

    Returns:
      AttackResult: success where a misclassified point with ||x_adv - x||_p <= eps was found, its
      distance (not eps); inf elsewhere. model_calls: forward + backward passes.
    """
    p = check_norm(p)
    x, labels, _ = check_inputs(logits_fn, x, labels, box)
    eps_arr = jnp.broadcast_to(jnp.asarray(eps, x.dtype), x.shape[:1])
    if not bool(jnp.all(eps_arr >= 0)):
        raise ValueError("eps must be non-negative")
    opts = dict(p=p, box=_hashable_box(box), steps=int(steps),
                step_size=None if step_size is None else float(step_size), loss=loss,
                random_start=bool(random_start), sparsity=float(sparsity), restarts=int(restarts))
    run = lambda xb, yb, eb, kb: _pgd(logits_fn, xb, yb, eb, kb, **opts)  # noqa: E731
    with Timer() as t:
        x_adv, _, calls = P.in_batches(run, (x, labels, eps_arr), key, batch_size)
    name = "inf" if p == np.inf else int(p)
    return finalize(logits_fn, x, labels, x_adv, p=p, box=box, model_calls=calls, time_s=t.seconds,
                    method=f"pgd_l{name}")


def default_eps_init(p, x, box: Box) -> float:
    """A first radius for the eps search: 10 % of the box width in l_inf, and the l2 / l1 norms of
    a 5 % / 1 % change of every coordinate."""
    width = float(np.mean(np.asarray(box.hi) - np.asarray(box.lo)))
    d = int(np.prod(x.shape[1:]))
    return {np.inf: 0.1 * width, 2.0: 0.05 * width * np.sqrt(d), 1.0: 0.01 * width * d}[float(p)]


@functools.partial(jax.jit, static_argnames=_STATIC + ("search_steps", "line_search_steps"))
def _pgd_minimal(logits_fn, x, labels, eps_init, key, *, p, box, steps, step_size, loss, random_start,
                 sparsity, search_steps, line_search_steps):
    run = _make_run(p, box, steps, step_size, loss, random_start, sparsity)
    n = x.shape[0]

    def search(carry, k):
        lo, hi, best_adv, calls = carry
        have = jnp.isfinite(hi)
        eps = jnp.where(have, 0.5 * (lo + hi), jnp.where(lo > 0, 2.0 * lo, eps_init))
        # warm start: the best adversarial point scaled into the new ball (inside the box: a convex
        # combination of x and a box point); a random start where none is known yet
        scale = jnp.where(have, jnp.minimum(eps / jnp.maximum(hi, 1e-12), 1.0), 0.0)
        warm = x + P._bcast(scale, x) * (best_adv - x)
        start = P.uniform_in_ball(p)(k, x, eps) if random_start else x
        out = run(logits_fn, k, x, labels, eps, jnp.where(P._bcast(have, x), warm, start))
        better = out.found & (out.best_dist < hi)
        best_adv = jnp.where(P._bcast(better, x), out.best_adv, best_adv)
        hi = jnp.where(better, out.best_dist, hi)
        lo = jnp.where(out.found, lo, jnp.maximum(lo, eps))
        return (lo, hi, best_adv, calls + out.calls), None

    init = (jnp.zeros((n,), x.dtype), jnp.full((n,), jnp.inf, x.dtype), x, jnp.zeros((n,), jnp.int32))
    (lo, hi, best_adv, calls), _ = jax.lax.scan(search, init, jax.random.split(key, search_steps))
    found = jnp.isfinite(hi)
    if line_search_steps:
        ls = P.line_search(logits_fn, x, labels, best_adv, found, line_search_steps)
        best_adv, calls = ls.x_adv, calls + ls.calls
    return best_adv, found, calls


def pgd_minimal(logits_fn, x, labels, *, p, key, box: Box = Box(), eps_init: float | None = None,
                search_steps: int = 12, steps: int = 50, step_size: float | None = None,
                loss: str = "margin", random_start: bool = True, sparsity: float = 0.99,
                line_search_steps: int = 10, batch_size: int | None = None):
    """Minimal-norm PGD: a per-example search over eps, PGD at each radius.

    Per example: eps starts at eps_init and doubles until PGD finds an adversarial point; then
    bisection on [largest eps where PGD failed, smallest distance found]. Each PGD run is
    warm-started from the best adversarial point scaled into its ball, so the distance found never
    increases. After search_steps radii, a line search toward x (line_search_steps forward passes).

    Args: as `pgd`, plus eps_init (default `default_eps_init`), search_steps (radii tried per
      example), steps (PGD steps per radius), line_search_steps.
    Returns: AttackResult with the smallest distance found; model_calls: forward + backward passes.
    """
    p = check_norm(p)
    x, labels, _ = check_inputs(logits_fn, x, labels, box)
    eps0 = float(default_eps_init(p, x, box) if eps_init is None else eps_init)
    opts = dict(p=p, box=_hashable_box(box), steps=int(steps),
                step_size=None if step_size is None else float(step_size), loss=loss,
                random_start=bool(random_start), sparsity=float(sparsity), search_steps=int(search_steps),
                line_search_steps=int(line_search_steps))
    run = lambda xb, yb, kb: _pgd_minimal(logits_fn, xb, yb, eps0, kb, **opts)  # noqa: E731
    with Timer() as t:
        x_adv, _, calls = P.in_batches(run, (x, labels), key, batch_size)
    name = "inf" if p == np.inf else int(p)
    return finalize(logits_fn, x, labels, x_adv, p=p, box=box, model_calls=calls, time_s=t.seconds,
                    method=f"pgd_minimal_l{name}")


# ------------------------------------------------------------------------------------------ DDN

@functools.partial(jax.jit, static_argnames=("logits_fn", "steps", "gamma", "init_epsilon", "max_step",
                                             "loss", "line_search_steps"))
def _ddn(logits_fn, x, labels, lo, hi, *, steps, gamma, init_epsilon, max_step, loss, line_search_steps):
    n = x.shape[0]
    worst = P.norm(jnp.maximum(x - lo, hi - x), 2)

    def loss_sum(z):
        logits = logits_fn(z)
        return jnp.sum(P.get_loss(loss)(logits, labels)), logits

    def body(k, carry):
        delta, eps, best_delta, best_d = carry
        alpha = 0.01 + (max_step - 0.01) * (1.0 + jnp.cos(jnp.pi * k / steps)) / 2.0   # cosine annealing
        (_, logits), g = jax.value_and_grad(loss_sum, has_aux=True)(x + delta)
        adv = P.is_adversarial(logits, labels)
        d = P.norm(delta, 2)
        better = adv & (d < best_d)
        best_delta = jnp.where(P._bcast(better, x), delta, best_delta)
        best_d = jnp.where(better, d, best_d)
        delta = delta + alpha * P._steepest(g, 2.0, 0.0)
        eps = jnp.minimum(eps * jnp.where(adv, 1.0 - gamma, 1.0 + gamma), worst)
        delta = delta * P._bcast(eps / jnp.maximum(P.norm(delta, 2), 1e-12), x)
        delta = jnp.clip(x + delta, lo, hi) - x
        return delta, eps, best_delta, best_d

    init = (jnp.zeros_like(x), jnp.full((n,), init_epsilon, x.dtype), jnp.zeros_like(x),
            jnp.full((n,), jnp.inf, x.dtype))
    delta, _, best_delta, best_d = jax.lax.fori_loop(0, steps, body, init)
    last_adv = P.is_adversarial(logits_fn(x + delta), labels)
    better = last_adv & (P.norm(delta, 2) < best_d)
    best_delta = jnp.where(P._bcast(better, x), delta, best_delta)
    found = jnp.isfinite(best_d) | last_adv
    x_adv = x + best_delta
    calls = jnp.full((n,), 2 * steps + 1, jnp.int32)
    if line_search_steps:
        ls = P.line_search(logits_fn, x, labels, x_adv, found, line_search_steps)
        x_adv, calls = ls.x_adv, calls + ls.calls
    return x_adv, found, calls


def ddn(logits_fn, x, labels, *, p=2, key=None, box: Box = Box(), steps: int = 100, gamma: float = 0.05,
        init_epsilon: float = 1.0, max_step: float = 1.0, loss: str = "ce", line_search_steps: int = 10,
        batch_size: int | None = None):
    """Decoupled Direction and Norm attack, l2 (Rony et al., CVPR 2019, Alg. 1).

    Each step moves delta along the normalized cross-entropy gradient (step alpha_k, cosine-annealed
    from max_step to 0.01), then rescales it to the l2 sphere of radius eps, which shrinks by
    (1 - gamma) while x + delta is adversarial and grows by (1 + gamma) otherwise; x + delta is
    clipped to the box. Keeps the closest adversarial iterate, then (optionally) a line search.
    Defaults follow Foolbox 3 (steps 100, gamma 0.05, init_epsilon 1, max step 1, cross-entropy);
    loss="margin" follows the nearest boundary instead (exact on affine classifiers).
    Returns AttackResult; model_calls = 2 per step (+1, + line search).
    """
    del key
    p = check_norm(p)
    if p != 2:
        raise ValueError(f"ddn is an l2 attack (p = 2), got p = {p}")
    x, labels, _ = check_inputs(logits_fn, x, labels, box)
    lo, hi = jnp.asarray(box.lo, x.dtype), jnp.asarray(box.hi, x.dtype)
    run = lambda xb, yb, kb: _ddn(logits_fn, xb, yb, lo, hi, steps=int(steps), gamma=float(gamma),  # noqa: E731
                                  init_epsilon=float(init_epsilon), max_step=float(max_step), loss=loss,
                                  line_search_steps=int(line_search_steps))
    with Timer() as t:
        x_adv, _, calls = P.in_batches(run, (x, labels), jax.random.key(0), batch_size)
    return finalize(logits_fn, x, labels, x_adv, p=2, box=box, model_calls=calls, time_s=t.seconds,
                    method="ddn_l2")


# ------------------------------------------------------------------------- adversarial training

def adversarial_training(weight: float, *, p=np.inf, eps: float = 0.3, steps: int = 10,
                         step_size: float | None = None, loss: str = "ce", random_start: bool = True,
                         box: Box = Box()) -> regularizers.Term:
    """Regularizer term weight * mean CE(f(x_pgd), y) with x_pgd from `steps` PGD steps in the lp
    ball of radius eps (Madry et al. 2018; with the clean loss of `fit` and weight 1 this is the
    50 % clean / 50 % adversarial mix of Goodfellow et al. 2015 and of MMR+at).

    The attack runs on the current parameters with gradients stopped (x_pgd is a constant for the
    parameter update). Use as `train.fit(config, data, regularizer=adversarial_training(1.0, p=inf,
    eps=0.1, steps=10))`, or by name ("adversarial_training", weight, {kwargs}) in a config.
    """
    p = check_norm(p)
    run = _make_run(p, _hashable_box(box), int(steps), step_size, loss, random_start, 0.99, stop_early=False)

    def term(params, x, y, *, logits_fn, key):
        frozen = jax.lax.stop_gradient(params)
        x_adv = run(lambda z: logits_fn(frozen, z), key, x, y, eps).x_final
        x_adv = jax.lax.stop_gradient(x_adv)
        return weight * jnp.mean(P.cross_entropy(logits_fn(params, x_adv), y))
    return term


regularizers.register("adversarial_training", adversarial_training)
