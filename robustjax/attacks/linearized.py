"""The linearized l2 attack of the cross-Lipschitz authors' evaluation code (methods.md 1(d)).

For each other class j, f_j - f_c is linearized at x (c the true label, w = grad f_j - grad f_c,
Delta = f_c(x) - f_j(x)) and the box-constrained minimum-norm step

    min ||delta||_2  s.t.  <w, delta> >= t Delta,  lo <= x + delta <= hi

is solved exactly (`halfspace_box_step_l2`: delta(lam) = clip(lam w, lo - x, hi - x), lam from the sorted
breakpoints of the piecewise-linear, increasing <w, delta(lam)>). The target multiplier t starts at 1
and grows by `multiplier` (1.2; 1.7 where mean|w| < 0.01) until the real model misclassifies x + delta,
then a binary search on t shrinks it. The smallest adversarial delta over j is kept and re-verified by `finalize`.
An upper bound on the minimal adversarial l2 distance (so at least the certified radius).

Reference: Hein & Andriushchenko, NIPS 2017, `attacks.py` / `ae_generation.py` of max-andr/cross-lipschitz.
"""
from __future__ import annotations

import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from robustjax import validate
from robustjax.attacks.model_arg import jit_model
from robustjax.attacks.result import AttackResult, as_box, check_inputs, check_norm, finalize
from robustjax.batching import map_batches
from robustjax.geometry import class_margins


def halfspace_box_step_l2(w, r, x, lo, hi):
    """argmin ||delta||_2 s.t. w . delta >= r, lo <= x + delta <= hi, for one example (JAX, jittable,
    vmappable): the JAX twin of `geometry.halfspace_box_step` for p = 2. w, x, lo, hi `[d]`, r scalar.

    The solution is clip(lam w, lo - x, hi - x) with lam >= 0 found among the sorted breakpoints of the
    piecewise-linear, increasing w . delta(lam); r <= 0 gives 0. Returns (delta `[d]`, feasible); where r is
    out of reach, the fully clipped step (lam = inf) and feasible False.
    """
    room = jnp.where(w < 0, x - lo, hi - x)                        # how far each coordinate can move
    bound = jnp.where(w < 0, lo - x, hi - x)                       # delta_i once clipped
    aw = jnp.abs(w)
    brk = jnp.where(aw > 0, room / jnp.where(aw > 0, aw, 1.0), jnp.inf)   # lam at which i clips
    order = jnp.argsort(brk)
    b_s, w_s, bd_s = brk[order], w[order], bound[order]
    zero = jnp.zeros((1,), w.dtype)
    clipped = jnp.concatenate([zero, jnp.cumsum(jnp.where(jnp.isfinite(b_s), w_s * bd_s, 0.0))])
    w2 = w_s * w_s
    free = jnp.sum(w2) - jnp.concatenate([zero, jnp.cumsum(w2)])
    # w . delta at the k-th breakpoint (k coordinates clipped): clipped_k + lam_k free_k
    lam_k = jnp.concatenate([zero, jnp.where(jnp.isfinite(b_s), b_s, 0.0)])
    phi_k = clipped + lam_k * free
    valid = jnp.concatenate([jnp.ones((1,), bool), jnp.isfinite(b_s)])
    k = jnp.sum(valid & (phi_k <= r)) - 1                          # last breakpoint still below r
    lam = (r - clipped[k]) / jnp.where(free[k] > 0, free[k], 1.0)
    feasible = (free[k] > 0) | (clipped[k] >= r)
    lam = jnp.where(r <= 0, 0.0, jnp.where(free[k] > 0, lam, jnp.inf))
    delta = jnp.clip(jnp.where(jnp.isfinite(lam), lam, 1e30) * w, lo - x, hi - x)
    return delta, feasible


class _SearchState(NamedTuple):
    t: jax.Array        # current multiplier [B, K]
    t_lo: jax.Array     # largest multiplier known not adversarial
    t_hi: jax.Array     # smallest multiplier known adversarial (inf if none)


@jit_model(("n_grow", "n_bisect"))
def _linearized(logits_fn, x, labels, lo, hi, multiplier, small_multiplier, n_grow, n_bisect):
    """x, lo, hi `[B, ...]`, labels `[B]` -> x_adv `[B, ...]` (x where no class gave an adversarial point)."""
    B = x.shape[0]
    shape = x.shape[1:]
    xf, lo_f, hi_f = x.reshape(B, -1), lo.reshape(B, -1), hi.reshape(B, -1)
    d = xf.shape[1]

    def summed(xx):
        return jnp.sum(logits_fn(xx), 0)
    logits = logits_fn(x)
    K = logits.shape[1]
    J = jax.jacrev(summed)(x).reshape(K, B, d).transpose(1, 0, 2)          # [B, K, d]
    W = J - jnp.take_along_axis(J, labels[:, None, None], 1)                # grad f_j - grad f_c
    Delta = class_margins(logits, labels)                                    # f_c - f_j, inf at j = c
    other = ~jax.nn.one_hot(labels, K, dtype=bool)
    Delta = jnp.where(other, Delta, 0.0)
    mult = jnp.where(jnp.mean(jnp.abs(W), -1) < 0.01, small_multiplier, multiplier)

    step = jax.vmap(jax.vmap(halfspace_box_step_l2, (0, 0, None, None, None)), (0, 0, 0, 0, 0))

    def candidate(t):
        delta, _ = step(W, t * Delta, xf, lo_f, hi_f)                         # [B, K, d]
        return delta

    def adversarial(t):
        xa = jnp.clip(xf[:, None] + candidate(t), lo_f[:, None], hi_f[:, None]).reshape((B * K,) + shape)
        pred = jnp.argmax(logits_fn(xa), -1).reshape(B, K)
        return pred != labels[:, None]

    def grow(_, s: _SearchState):
        adv = adversarial(s.t)
        open_ = ~jnp.isfinite(s.t_hi)
        t_hi = jnp.where(open_ & adv, s.t, s.t_hi)
        t_lo = jnp.where(open_ & ~adv, s.t, s.t_lo)
        t = jnp.where(open_ & ~adv, s.t * mult, s.t)
        return _SearchState(t, t_lo, t_hi)

    def bisect(_, s: _SearchState):
        found = jnp.isfinite(s.t_hi)
        mid = jnp.where(found, (s.t_lo + s.t_hi) / 2, s.t)
        adv = adversarial(mid) & found
        return _SearchState(s.t, jnp.where(found & ~adv, mid, s.t_lo), jnp.where(adv, mid, s.t_hi))

    ones = jnp.ones((B, K), x.dtype)
    s = _SearchState(ones, 0 * ones, jnp.full((B, K), jnp.inf, x.dtype))
    s = jax.lax.fori_loop(0, n_grow, grow, s)
    s = jax.lax.fori_loop(0, n_bisect, bisect, s)
    found = jnp.isfinite(s.t_hi) & other
    delta = candidate(jnp.where(found, s.t_hi, 1.0))
    norms = jnp.where(found, jnp.sqrt(jnp.sum(delta * delta, -1)), jnp.inf)
    best = jnp.argmin(norms, -1)
    x_adv = xf + jnp.take_along_axis(delta, best[:, None, None], 1)[:, 0]
    return jnp.where(jnp.any(found, -1)[:, None], x_adv, xf).reshape(x.shape)


def linearized(logits_fn: Callable, x, labels, *, p: float = 2, key=None, box=None, multiplier: float = 1.2,
               small_gradient_multiplier: float = 1.7, n_grow: int = 20, n_bisect: int = 10,
               batch_size: int = 500, min_margin: float | None = None) -> AttackResult:
    """The authors' linearized l2 attack (methods.md 1(d)), a minimal attack, batched and jitted.

    Args:
      logits_fn: batched x `[batch, ...]` -> logits `[batch, K]` (differentiable).
      x: `[batch, ...]` inputs in the box; labels: `[batch]` int.
      p: must be 2. key: unused (the attack is deterministic); accepted for the common call shape.
      box: Box, (lo, hi) or None ([0, 1]); lo, hi a scalar, one example's shape or `[batch, ...]`.
      multiplier: growth factor of the target multiplier t (1.2 MNIST/GTSRB, 1.3 CIFAR in the paper);
        small_gradient_multiplier where mean|grad f_c - grad f_j| < 0.01.
      n_grow, n_bisect: model checks per class in the growth and binary-search phases.
      batch_size: examples per compiled call (each check evaluates the model on batch * K points).
      min_margin: see `finalize`.

    Returns:
      AttackResult (re-verified): distance = ||x_adv - x||_2, inf where no class gave an adversarial point.
    """
    del key
    p = check_norm(p)
    if p != 2.0:
        raise ValueError(f"the linearized attack is an l2 attack; got p={p}")
    for name, m in (("multiplier", multiplier), ("small_gradient_multiplier", small_gradient_multiplier)):
        if not validate.positive_float(m, name) > 1:
            raise ValueError(f"{name} must be > 1, got {m!r}")
    n_grow = validate.positive_int(n_grow, "n_grow")
    n_bisect = validate.positive_int(n_bisect, "n_bisect", allow_zero=True)
    t0 = time.perf_counter()
    x, labels, logits = check_inputs(logits_fn, x, labels, box)
    box = as_box(box, x)
    K = logits.shape[1]
    run = lambda xb, yb, lob, hib: _linearized(logits_fn, xb, yb, lob, hib, float(multiplier),  # noqa: E731
                                               float(small_gradient_multiplier), n_grow, n_bisect)
    x_adv = map_batches(run, (x, labels, box.lo, box.hi), batch_size=batch_size)
    calls = K + 1 + (K - 1) * (n_grow + n_bisect + 1)
    return finalize(logits_fn, x, labels, x_adv, p=2, box=box, model_calls=calls,
                    time_s=time.perf_counter() - t0, method="linearized", batch_size=batch_size,
                    min_margin=min_margin)
