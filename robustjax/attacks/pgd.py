"""Projected gradient attacks in l1, l2 and l_inf, composed from small pieces (as
deepmind-research's adversarial_robustness/jax/attacks.py and optax):

    run = make_pgd(p=2, step=lambda eps: optax.chain(mask_box(box), normalize(2),
                                                     scale_per_example(0.05 * eps)),
                   init_fn=uniform_in_ball(2), project_fn=project(2, box), loss_fn=losses.margin,
                   num_steps=100)
    out = run(logits_fn, x, labels, eps=eps, key=key)      # PGDOutput, one row per example

Public attacks (AttackResult out):
- `pgd`, a budget attack: fixed-eps PGD (Madry et al., ICLR 2018, arXiv 1706.06083), random start,
  restarts; the l1 version takes sparse steepest-ascent steps (Tramer & Boneh 2019) and projects with
  Duchi et al.
- `pgd_minimal`, a minimal attack: a per-example search over eps (doubling, then bisection on [largest
  failed eps, smallest found distance]) running PGD at each eps, warm-started from the best adversarial
  point scaled into the new ball, then a line search toward x.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robustjax import losses, validate
from robustjax.attacks import steps as S
from robustjax.attacks.model_arg import jit_model
from robustjax.attacks.result import Box, Timer, as_box, check_inputs, check_norm, finalize, keep_best
from robustjax.batching import map_batches
from robustjax.geometry import lp_norm, per_example


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
      loss_fn: a `robustjax.losses` loss, (*, logits `[batch, K]`, labels `[batch]`) -> `[batch]`, maximized.
      num_steps: maximum steps; stop_early: freeze rows once misclassified and stop the loop when all
        are (attacks); False runs all steps on every row (adversarial training).

    Returns:
      run(logits_fn, x, labels, *, eps, key, x_init=None) -> PGDOutput, in the budget attacks' call order.
    """
    p = check_norm(p)

    def run(logits_fn, x, labels, *, eps, key, x_init=None):
        eps = jnp.broadcast_to(jnp.asarray(eps, x.dtype), x.shape[:1])
        tx = step(eps)
        if x_init is None:
            x_init = x if init_fn is None else init_fn(key, x, eps)
        x0 = project_fn(x_init, x, eps)
        n = x.shape[0]

        def loss_sum(z):
            logits = logits_fn(z)
            return jnp.sum(loss_fn(logits=logits, labels=labels)), logits

        def body(s: PGDState) -> PGDState:
            (_, logits), g = jax.value_and_grad(loss_sum, has_aux=True)(s.x_adv)
            adv = S.is_adversarial(logits, labels)
            best_adv, best_dist = keep_best(s.best_adv, s.best_dist, s.x_adv, lp_norm(s.x_adv - x, p), adv)
            found = s.found | adv
            active = ~found if stop_early else jnp.ones_like(found)
            upd, opt_state = tx.update(g, s.opt_state, s.x_adv)
            x_new = project_fn(s.x_adv + upd, x, eps)
            x_adv = jnp.where(per_example(active, x), x_new, s.x_adv)
            return PGDState(s.i + 1, x_adv, opt_state, best_adv, best_dist, found, s.calls + 2 * active)

        def cond(s: PGDState):
            return (s.i < num_steps) & (jnp.any(~s.found) if stop_early else True)

        s = PGDState(jnp.zeros((), jnp.int32), x0, tx.init(x0), x, jnp.full((n,), jnp.inf, x.dtype),
                     jnp.zeros((n,), bool), jnp.zeros((n,), jnp.int32))
        s = jax.lax.while_loop(cond, body, s)
        adv = S.is_adversarial(logits_fn(s.x_adv), labels)            # the last iterate
        best_adv, best_dist = keep_best(s.best_adv, s.best_dist, s.x_adv, lp_norm(s.x_adv - x, p), adv)
        return PGDOutput(s.x_adv, best_adv, best_dist, s.found | adv, s.calls + 1)
    return run


def default_step_size(p, steps: int) -> float:
    """The first step size relative to eps (it then decays by cosine to 1/10 of it): 5 / steps for
    l2 and l_inf, so that the decayed steps still cross the ball about 2.5 times, as Madry et al.'s
    2.5 eps / steps does without decay, capped at eps / 2; eps / 5 for the sparse l1 steps."""
    return 0.2 if check_norm(p) == 1 else min(0.5, 5.0 / steps)


STEP_DECAY = 0.1


def cosine_decay(steps: int, final: float) -> Callable:
    """Step-size factor 1 -> final over `steps` steps (cosine), applied to every norm's step."""
    return lambda t: final + (1.0 - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(t, steps) / steps))


def make_run(p, box: Box, steps: int, step_size: float | None = None, loss="margin", random_start: bool = True,
             sparsity: float = 0.99, stop_early: bool = True) -> Callable:
    """The PGD run of `pgd` (masked, normalized, cosine-decayed steps relative to eps, random start in the
    ball, projection onto ball ∩ box), from `make_pgd`. box: lo, hi broadcasting against the batch."""
    rel = default_step_size(p, steps) if step_size is None else float(step_size)
    return make_pgd(
        p=p, step=lambda eps: optax.chain(S.mask_box(box), S.normalize(p, sparsity=sparsity),
                                          S.scale_per_example(rel * eps),
                                          optax.scale_by_schedule(cosine_decay(steps, STEP_DECAY))),
        init_fn=S.uniform_in_ball(p) if random_start else None, project_fn=S.project(p, box),
        loss_fn=losses.get(loss), num_steps=steps, stop_early=stop_early)


_STATIC = ("p", "steps", "step_size", "loss", "random_start", "sparsity")


@jit_model(_STATIC + ("restarts",))
def _pgd(logits_fn, x, labels, eps, lo, hi, key, *, p, steps, step_size, loss, random_start, sparsity, restarts):
    run = make_run(p, Box(lo, hi), steps, step_size, loss, random_start, sparsity)

    def restart(carry, k):
        best_adv, best_dist, calls = carry
        active = ~jnp.isfinite(best_dist)
        out = run(logits_fn, x, labels, eps=eps, key=k)
        best_adv, best_dist = keep_best(best_adv, best_dist, out.best_adv, out.best_dist, out.found)
        return (best_adv, best_dist, calls + active * out.calls), None

    n = x.shape[0]
    init = (x, jnp.full((n,), jnp.inf, x.dtype), jnp.zeros((n,), jnp.int32))
    (best_adv, _, calls), _ = jax.lax.scan(restart, init, jax.random.split(key, restarts))
    return best_adv, calls


def _options(steps, step_size, loss, random_start, sparsity):
    losses.get(loss)
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity!r}")
    return dict(steps=validate.positive_int(steps, "steps"),
                step_size=None if step_size is None else validate.positive_float(step_size, "step_size"),
                loss=loss, random_start=bool(random_start), sparsity=float(sparsity))


def _name(p) -> str:
    return "inf" if p == np.inf else str(int(p))


def pgd(logits_fn, x, labels, *, p, eps, key, box=None, steps: int = 100, step_size: float | None = None,
        restarts: int = 1, loss="margin", random_start: bool = True, sparsity: float = 0.99,
        batch_size: int | None = None, min_margin: float | None = None):
    """Fixed-eps PGD, a budget attack: finds x_adv in the lp ball of radius eps (and the box) that is
    misclassified.

    Args:
      logits_fn: batched `[batch, ...]` -> `[batch, K]` (a jit argument: `attacks/model_arg.py`).
      x: `[batch, ...]` in the box; labels `[batch]`; p: 1, 2 or inf; key: PRNG key (random starts).
      eps: radius, scalar or `[batch]`, >= 0. box: Box, (lo, hi) or None ([0, 1]), lo and hi a scalar, one
        example's shape or `[batch, ...]`. steps: PGD steps per run; step_size: relative to eps (default
        `default_step_size`); restarts: the number of PGD runs (>= 1; each from its own random start, rows
        already broken skip later runs in the count); loss: a `robustjax.losses` name ("margin": C&W f_6,
        "cross_entropy") or callable, maximized; sparsity: l1 only, the fraction of coordinates left out of
        each step; min_margin: see `finalize`.

    Returns:
      AttackResult: success where a misclassified point with ||x_adv - x||_p <= eps was found, its
      distance (not eps); inf elsewhere. model_calls: forward + backward passes.
    """
    p = check_norm(p)
    key = validate.key(key)
    x, labels, _ = check_inputs(logits_fn, x, labels, box)
    box = as_box(box, x)
    eps = validate.per_example(eps, x.shape[0], "eps").astype(np.dtype(x.dtype))
    opts = dict(_options(steps, step_size, loss, random_start, sparsity), p=p,
                restarts=validate.positive_int(restarts, "restarts"))
    run = lambda xb, yb, eb, lob, hib, kb: _pgd(logits_fn, xb, yb, eb, lob, hib, kb, **opts)  # noqa: E731
    with Timer() as t:
        x_adv, calls = map_batches(run, (x, labels, eps, box.lo, box.hi), batch_size=batch_size, key=key)
    return finalize(logits_fn, x, labels, x_adv, p=p, box=box, model_calls=calls, time_s=t.seconds,
                    method=f"pgd_l{_name(p)}", min_margin=min_margin)


def default_eps_init(p, x, box) -> float:
    """A first radius for the eps search: 10 % of the box width in l_inf, and the l2 / l1 norms of
    a 5 % / 1 % change of every coordinate (the width averaged over the box)."""
    box = as_box(box, x)
    width = float(np.mean(np.asarray(box.hi, np.float64) - np.asarray(box.lo, np.float64))) if np.size(x) else 1.0
    d = int(np.prod(x.shape[1:]))
    return {np.inf: 0.1 * width, 2.0: 0.05 * width * np.sqrt(d), 1.0: 0.01 * width * d}[check_norm(p)]


@jit_model(_STATIC + ("search_steps", "line_search_steps"))
def _pgd_minimal(logits_fn, x, labels, lo, hi, eps_init, key, *, p, steps, step_size, loss, random_start,
                 sparsity, search_steps, line_search_steps):
    run = make_run(p, Box(lo, hi), steps, step_size, loss, random_start, sparsity)
    n = x.shape[0]

    def search(carry, k):
        lo_eps, hi_eps, best_adv, calls = carry
        have = jnp.isfinite(hi_eps)
        eps = jnp.where(have, 0.5 * (lo_eps + hi_eps), jnp.where(lo_eps > 0, 2.0 * lo_eps, eps_init))
        # warm start: the best adversarial point scaled into the new ball (inside the box: a convex
        # combination of x and a box point); a random start where none is known yet
        scale = jnp.where(have, jnp.minimum(eps / jnp.maximum(hi_eps, S.TINY), 1.0), 0.0)
        warm = x + per_example(scale, x) * (best_adv - x)
        start = S.uniform_in_ball(p)(k, x, eps) if random_start else x
        out = run(logits_fn, x, labels, eps=eps, key=k, x_init=jnp.where(per_example(have, x), warm, start))
        best_adv, hi_eps = keep_best(best_adv, hi_eps, out.best_adv, out.best_dist, out.found)
        lo_eps = jnp.where(out.found, lo_eps, jnp.maximum(lo_eps, eps))
        return (lo_eps, hi_eps, best_adv, calls + out.calls), None

    init = (jnp.zeros((n,), x.dtype), jnp.full((n,), jnp.inf, x.dtype), x, jnp.zeros((n,), jnp.int32))
    (_, hi_eps, best_adv, calls), _ = jax.lax.scan(search, init, jax.random.split(key, search_steps))
    if line_search_steps:
        ls = S.line_search(logits_fn, x, labels, best_adv, jnp.isfinite(hi_eps), line_search_steps)
        best_adv, calls = ls.x_adv, calls + ls.calls
    return best_adv, calls


def pgd_minimal(logits_fn, x, labels, *, p, key, box=None, eps_init: float | None = None,
                search_steps: int = 12, steps: int = 50, step_size: float | None = None, loss="margin",
                random_start: bool = True, sparsity: float = 0.99, line_search_steps: int = 10,
                batch_size: int | None = None, min_margin: float | None = None):
    """Minimal-norm PGD, a minimal attack: a per-example search over eps, PGD at each radius.

    Per example: eps starts at eps_init and doubles until PGD finds an adversarial point; then
    bisection on [largest eps where PGD failed, smallest distance found]. Each PGD run is
    warm-started from the best adversarial point scaled into its ball, so the distance found never
    increases. After search_steps radii, a line search toward x (line_search_steps forward passes).

    Args: as `pgd` (no eps, no restarts), plus eps_init (default `default_eps_init`), search_steps (radii
      tried per example), steps (PGD steps per radius), line_search_steps (>= 0).
    Returns: AttackResult with the smallest distance found; model_calls: forward + backward passes.
    """
    p = check_norm(p)
    key = validate.key(key)
    x, labels, _ = check_inputs(logits_fn, x, labels, box)
    box = as_box(box, x)
    eps0 = default_eps_init(p, x, box) if eps_init is None else validate.positive_float(eps_init, "eps_init")
    opts = dict(_options(steps, step_size, loss, random_start, sparsity), p=p,
                search_steps=validate.positive_int(search_steps, "search_steps"),
                line_search_steps=validate.positive_int(line_search_steps, "line_search_steps", allow_zero=True))
    run = lambda xb, yb, lob, hib, kb: _pgd_minimal(logits_fn, xb, yb, lob, hib, eps0, kb, **opts)  # noqa: E731
    with Timer() as t:
        x_adv, calls = map_batches(run, (x, labels, box.lo, box.hi), batch_size=batch_size, key=key)
    return finalize(logits_fn, x, labels, x_adv, p=p, box=box, model_calls=calls, time_s=t.seconds,
                    method=f"pgd_minimal_l{_name(p)}", min_margin=min_margin)
