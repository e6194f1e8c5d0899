"""The linearized l2 attack of the cross-Lipschitz authors' evaluation code (methods.md 1(d)).

For each other class j, f_c - f_j is linearized at x (c the true label, v = grad f_c - grad f_j,
Delta = f_c(x) - f_j(x)) and the box-constrained minimum-norm step

    min ||delta||_2  s.t.  <v, delta> = -t Delta,  lo <= x + delta <= hi

is solved exactly: delta(lam) = clip(-lam v, lo - x, hi - x), with lam found from the sorted breakpoints
of the piecewise-linear, decreasing <v, delta(lam)>. The target multiplier t starts at 1 and grows by
`multiplier` (1.2; 1.7 where mean|v| < 0.01) until the real model misclassifies x + delta, then a binary
search on t shrinks it. The smallest adversarial delta over j is kept and re-verified by `finalize`.
An upper bound on the minimal adversarial l2 distance (so at least the certified radius).

Reference: Hein & Andriushchenko, NIPS 2017, `attacks.py` / `ae_generation.py` of max-andr/cross-lipschitz.
"""
from __future__ import annotations

import functools
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax.attacks.result import AttackResult, Box, check_inputs, check_norm, finalize


def box_linear_step(v, x, lo, hi, target):
    """Exact min ||delta||_2 s.t. <v, delta> = target (<= 0), lo <= x + delta <= hi, for one example.

    v, x, lo, hi `[d]`; target scalar. The solution is clip(-lam v, lo - x, hi - x) with lam >= 0; if the
    target is out of reach the fully clipped step (lam = inf) is returned. Returns (delta `[d]`, feasible).
    """
    room = jnp.where(v > 0, x - lo, hi - x)                        # how far each coordinate can move
    bound = jnp.where(v > 0, lo - x, hi - x)                       # delta_i once clipped
    av = jnp.abs(v)
    brk = jnp.where(av > 0, room / jnp.where(av > 0, av, 1.0), jnp.inf)   # lam at which i clips
    order = jnp.argsort(brk)
    b_s, v_s, bd_s = brk[order], v[order], bound[order]
    vb = jnp.where(jnp.isfinite(b_s), v_s * bd_s, 0.0)
    A = jnp.concatenate([jnp.zeros((1,), v.dtype), jnp.cumsum(vb)])             # clipped part, k clipped
    v2 = v_s * v_s
    S = jnp.sum(v2) - jnp.concatenate([jnp.zeros((1,), v.dtype), jnp.cumsum(v2)])  # free part
    # phi at the k-th breakpoint (k coordinates clipped, k = 1..d): A_k - lam_k S_k
    lam_k = jnp.concatenate([jnp.zeros((1,), v.dtype), jnp.where(jnp.isfinite(b_s), b_s, 0.0)])
    phi_k = A - lam_k * S
    valid = jnp.concatenate([jnp.ones((1,), bool), jnp.isfinite(b_s)])
    k = jnp.sum(valid & (phi_k >= target)) - 1                     # last breakpoint still above target
    lam = (A[k] - target) / jnp.where(S[k] > 0, S[k], 1.0)
    feasible = (S[k] > 0) | (A[k] <= target)
    lam = jnp.where(S[k] > 0, lam, jnp.inf)
    delta = jnp.clip(-jnp.where(jnp.isfinite(lam), lam, 1e30) * v, lo - x, hi - x)
    return delta, feasible


class _SearchState(NamedTuple):
    t: jax.Array        # current multiplier [B, K]
    t_lo: jax.Array     # largest multiplier known not adversarial
    t_hi: jax.Array     # smallest multiplier known adversarial (inf if none)


@functools.partial(jax.jit, static_argnames=("logits_fn", "n_grow", "n_bisect"))
def _linearized(logits_fn, x, labels, lo, hi, multiplier, small_multiplier, n_grow, n_bisect):
    B = x.shape[0]
    shape = x.shape[1:]
    xf = x.reshape(B, -1)
    d = xf.shape[1]

    def summed(xx):
        return jnp.sum(logits_fn(xx), 0)
    logits = logits_fn(x)
    K = logits.shape[1]
    J = jax.jacrev(summed)(x).reshape(K, B, d).transpose(1, 0, 2)          # [B, K, d]
    Jc = jnp.take_along_axis(J, labels[:, None, None], 1)
    V = Jc - J                                                               # [B, K, d]
    fc = jnp.take_along_axis(logits, labels[:, None], 1)
    Delta = fc - logits                                                      # [B, K]
    other = ~jax.nn.one_hot(labels, K, dtype=bool)
    mult = jnp.where(jnp.mean(jnp.abs(V), -1) < 0.01, small_multiplier, multiplier)
    lo_b = jnp.broadcast_to(jnp.asarray(lo, x.dtype), shape).reshape(-1)
    hi_b = jnp.broadcast_to(jnp.asarray(hi, x.dtype), shape).reshape(-1)

    step = jax.vmap(jax.vmap(box_linear_step, (0, None, None, None, 0)), (0, 0, None, None, 0))

    def candidate(t):
        delta, _ = step(V, xf, lo_b, hi_b, -t * Delta)                      # [B, K, d]
        return delta

    def adversarial(t):
        delta = candidate(t)
        xa = jnp.clip(xf[:, None] + delta, lo_b, hi_b).reshape((B * K,) + shape)
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
    any_found = jnp.any(found, -1)
    return jnp.where(any_found[:, None], x_adv, xf).reshape(x.shape)


def linearized(logits_fn: Callable, x, labels, *, p: float = 2, key=None, box: Box = Box(),
               multiplier: float = 1.2, small_gradient_multiplier: float = 1.7, n_grow: int = 20,
               n_bisect: int = 10, batch_size: int = 500) -> AttackResult:
    """The authors' linearized l2 attack (methods.md 1(d)), batched and jitted.

    Args:
      logits_fn: batched x `[batch, ...]` -> logits `[batch, K]` (differentiable).
      x: `[batch, ...]` inputs in the box; labels: `[batch]` int.
      p: must be 2. key: unused (the attack is deterministic); accepted for the common call shape.
      multiplier: growth factor of the target multiplier t (1.2 MNIST/GTSRB, 1.3 CIFAR in the paper);
        small_gradient_multiplier where mean|grad f_c - grad f_j| < 0.01.
      n_grow, n_bisect: model checks per class in the growth and binary-search phases.
      batch_size: examples per compiled call (each check evaluates the model on batch * K points).

    Returns:
      AttackResult (re-verified): distance = ||x_adv - x||_2, inf where no class gave an adversarial point.
    """
    del key
    p = check_norm(p)
    if p != 2.0:
        raise ValueError(f"the linearized attack is an l2 attack; got p={p}")
    if multiplier <= 1 or small_gradient_multiplier <= 1:
        raise ValueError("multipliers must be > 1")
    t0 = time.perf_counter()
    x, labels, logits = check_inputs(logits_fn, x, labels, box)
    K = logits.shape[1]
    n = x.shape[0]
    bs = min(batch_size, n)
    outs = []
    for i in range(0, n, bs):
        xb, yb = x[i:i + bs], labels[i:i + bs]
        nb = xb.shape[0]
        if nb < bs:
            xb = jnp.concatenate([xb, jnp.broadcast_to(xb[:1], (bs - nb,) + xb.shape[1:])])
            yb = jnp.concatenate([yb, jnp.broadcast_to(yb[:1], (bs - nb,))])
        outs.append(np.asarray(_linearized(logits_fn, xb, yb, box.lo, box.hi, multiplier,
                                           small_gradient_multiplier, n_grow, n_bisect))[:nb])
    x_adv = np.concatenate(outs)
    calls = K + 1 + (K - 1) * (n_grow + n_bisect + 1)
    return finalize(logits_fn, x, labels, x_adv, p=2, box=box, model_calls=calls,
                    time_s=time.perf_counter() - t0, method="linearized", batch_size=batch_size)
