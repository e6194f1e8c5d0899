"""Fast Adaptive Boundary attack (Croce & Hein, "Minimally distorted adversarial examples with a fast
adaptive boundary attack", ICML 2020, arXiv 1907.02044, Alg. 1), a minimal attack in l1, l2 and l_inf.

At the iterate x^(i), the decision boundary toward class s is linearized, pi_s = {z : w.(z - x^(i)) + g = 0}
with g = f_s - f_y, w = grad f_s - grad f_y (untargeted: s the class of smallest |g| / ||w||_q, q dual to
p; targeted: the target). Both x^(i) and the original point are projected onto pi_s ∩ box exactly in l_p
(`project_hyperplane_box`), giving delta and delta_orig, and

    alpha = min(||delta||_p / (||delta||_p + ||delta_orig||_p), alpha_max)
    x^(i+1) = clip((1 - alpha) (x^(i) + eta delta) + alpha (x_orig + eta delta_orig))

(eta > 1 extrapolates past the boundary). Once x^(i+1) is adversarial it is kept when closer than the best
so far and pulled back toward x_orig: x^(i+1) = (1 - beta) x_orig + beta x^(i+1). Restarts after the first
start uniformly in the ball of radius min(best distance, eps_init) / 2. With eps, the attack is thresholded:
only points within eps count (AutoAttack's use); `fab_targeted` is FAB-T, one targeted run per class among
the top n_targets of the clean logits, each on the points not yet broken.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from robustjax import validate
from robustjax.attacks import steps as S
from robustjax.attacks.apgd import targeted_cascade
from robustjax.attacks.pgd import default_eps_init
from robustjax.attacks.model_arg import jit_model
from robustjax.attacks.result import (AttackResult, Timer, as_box, check_inputs, check_norm, check_target,
                                      default_min_margin, finalize, keep_best)
from robustjax.batching import map_batches
from robustjax.geometry import dual_norm, lp_norm, margin, per_example

TINY = 1e-12


def _halfspace_step(w, r, x, lo, hi, p):
    """argmin ||d||_p s.t. w.d >= r > 0, lo <= x + d <= hi, one flat example `[d]`; where the box cannot
    reach the halfspace, the box point maximizing w.d (every coordinate at its bound toward sign w)."""
    cap = jnp.maximum(jnp.where(w > 0, hi - x, x - lo), 0.0)
    aw, sg = jnp.abs(w), jnp.sign(w)
    gain = aw * cap
    if p == np.inf:
        order = jnp.argsort(cap)
        c, a, g = cap[order], aw[order], gain[order]
        before = jnp.cumsum(g) - g
        after = jnp.cumsum(a[::-1])[::-1]
        k = jnp.argmax(before + c * after >= r)
        t = (r - before[k]) / jnp.maximum(after[k], TINY)
        d = sg * jnp.minimum(t, cap)
    elif p == 2:
        bp = jnp.where(aw > 0, cap / jnp.maximum(aw, TINY), jnp.inf)
        order = jnp.argsort(bp)
        b, a, g = bp[order], aw[order], gain[order]
        before = jnp.cumsum(g) - g
        s2 = jnp.cumsum((a * a)[::-1])[::-1]
        k = jnp.argmax((before + jnp.where(jnp.isfinite(b), b, 0.0) * s2 >= r) & jnp.isfinite(b))
        lam = (r - before[k]) / jnp.maximum(s2[k], TINY)
        d = sg * jnp.minimum(lam * aw, cap)
    else:
        order = jnp.argsort(-aw)
        a, c, g = aw[order], cap[order], gain[order]
        cum = jnp.cumsum(g)
        k = jnp.argmax(cum >= r)
        idx = jnp.arange(w.shape[0])
        part = (r - (cum[k] - g[k])) / jnp.maximum(a[k], TINY)
        d = jnp.zeros_like(w).at[order].set(jnp.where(idx < k, c, jnp.where(idx == k, part, 0.0))) * sg
    return jnp.where(jnp.sum(gain) >= r, d, sg * cap)


def project_hyperplane_box(w, r, x, lo, hi, p):
    """The exact l_p projection of x onto {x + d : w.d = r} ∩ [lo, hi]: d `[batch, d]` for w, x, lo, hi
    `[batch, d]`, r `[batch]` (jittable). r < 0 is the halfspace (-w).d >= -r; r = 0 gives d = 0; where the
    box misses the hyperplane, the box point closest to it along w (`_halfspace_step`)."""
    p = check_norm(p)

    def one(wi, ri, xi, loi, hii):
        s = jnp.where(ri < 0, -1.0, 1.0).astype(wi.dtype)
        d = _halfspace_step(s * wi, jnp.abs(ri), xi, loi, hii, p)
        return jnp.where(ri == 0, 0.0, d)
    return jax.vmap(one)(w, r, x, lo, hi)


_STATIC = ("p", "steps", "restarts", "alpha_max", "eta", "beta", "targeted")


@jit_model(_STATIC)
def _fab(logits_fn, x, labels, target, lo, hi, eps_init, key, *, p, steps, restarts, alpha_max, eta, beta,
         targeted):
    n = x.shape[0]
    shape = x.shape
    flat = lambda a: a.reshape(n, -1)  # noqa: E731
    x0, lo_f, hi_f = flat(x), flat(lo), flat(hi)
    rows = jnp.arange(n)

    def verdicts(logits):
        """(crossed: argmax != label, adversarial: by at least the default margin), `[n]` each."""
        m = -margin(logits, labels)
        return m > 0, m >= default_min_margin(logits)

    def boundary(z):
        """(w, g) of the linearized boundary chosen at z, `[n, d]`, `[n]`."""
        if targeted:
            def diff(zz):
                lg = logits_fn(zz.reshape(shape))
                return jnp.sum(lg[rows, target] - lg[rows, labels]), lg[rows, target] - lg[rows, labels]
            (_, g), w = jax.value_and_grad(diff, has_aux=True)(z)
            return w, g
        logits, vjp_fn = jax.vjp(lambda zz: logits_fn(zz.reshape(shape)), z)
        k = logits.shape[-1]
        cot = jnp.broadcast_to(jnp.eye(k, dtype=logits.dtype)[:, None, :], (k,) + logits.shape)
        (jac,) = jax.vmap(vjp_fn)(cot)
        jac = jnp.moveaxis(jac, 0, 1)                                         # [n, K, d]
        g_all = logits - logits[rows, labels][:, None]
        w_all = jac - jac[rows, labels][:, None]
        score = jnp.abs(g_all) / (dual_norm(w_all, p) + TINY)
        score = jnp.where(jax.nn.one_hot(labels, k, dtype=bool), jnp.inf, score)
        j = jnp.argmin(score, axis=1)
        return w_all[rows, j], g_all[rows, j]


    def step(i, carry):
        xk, best, best_d = carry
        w, g = boundary(xk)
        d1 = project_hyperplane_box(w, -g, xk, lo_f, hi_f, p)
        d2 = project_hyperplane_box(w, -g - jnp.sum(w * (x0 - xk), -1), x0, lo_f, hi_f, p)
        n1, n2 = lp_norm(d1, p), lp_norm(d2, p)
        a = jnp.minimum(n1 / jnp.maximum(n1 + n2, TINY), alpha_max)[:, None]
        x_new = jnp.clip((1 - a) * (xk + eta * d1) + a * (x0 + eta * d2), lo_f, hi_f)
        crossed, adv = verdicts(logits_fn(x_new.reshape(shape)))
        best, best_d = keep_best(best, best_d, x_new, lp_norm(x_new - x0, p), adv)
        # pulled back toward x0 on crossing, as in the reference: an iterate just across (inside the margin)
        # would otherwise sit on its linearized boundary, where every later step is 0
        x_new = jnp.where(crossed[:, None], (1 - beta) * x0 + beta * x_new, x_new)
        return x_new, best, best_d

    def restart(carry, kr):
        r, k = kr
        best, best_d = carry
        radius = 0.5 * jnp.minimum(best_d, eps_init)
        start = jnp.clip(flat(S.uniform_in_ball(p)(k, x, radius)), lo_f, hi_f)
        xk = jnp.where(r == 0, x0, start)
        _, best, best_d = jax.lax.fori_loop(0, steps, step, (xk, best, best_d))
        return (best, best_d), None

    init = (x0, jnp.full((n,), jnp.inf, x.dtype))
    (best, best_d), _ = jax.lax.scan(restart, init, (jnp.arange(restarts), jax.random.split(key, restarts)))
    return best.reshape(shape), best_d


def _check(p, alpha_max, eta, beta):
    p = check_norm(p)
    alpha_max = validate.positive_float(alpha_max, "alpha_max", allow_zero=True)
    if alpha_max > 1:
        raise ValueError(f"alpha_max must lie in [0, 1], got {alpha_max!r}")
    beta = validate.positive_float(beta, "beta")
    if beta >= 1:
        raise ValueError(f"beta must lie in (0, 1), got {beta!r}")
    eta = validate.positive_float(eta, "eta")
    if eta < 1:
        raise ValueError(f"eta must be >= 1, got {eta!r}")
    return p, alpha_max, eta, beta


def _name(p, targeted):
    return f"fab{'-t' if targeted else ''}_l{'inf' if p == np.inf else int(p)}"


def fab(logits_fn, x, labels, *, p, key, box=None, eps=None, target=None, steps: int = 100, restarts: int = 1,
        alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, eps_init=None,
        batch_size: int | None = None, min_margin: float | None = None) -> AttackResult:
    """FAB, a minimal attack (module docstring), untargeted or toward target classes.

    Args:
      logits_fn: batched `[batch, ...]` -> `[batch, K]` (a jit argument: `attacks/model_arg.py`).
      x: `[batch, ...]` in the box; labels `[batch]`; p: 1, 2 or inf; key: PRNG key (restarts).
      box: Box, (lo, hi) or None ([0, 1]). eps: None (minimal attack) or a threshold, scalar or `[batch]`:
        points farther than eps are failures (a budget result). target: None or `[batch]` int classes
        (linearize the boundary to that class only: 1 forward and 1 backward pass per step instead of K).
      steps: iterations per restart; restarts: >= 1 (the first from x); alpha_max, eta, beta: Alg. 1's
        (defaults the paper's 0.1, 1.05, 0.9); eps_init: the restart radius when nothing is found yet
        (default eps, else `pgd.default_eps_init`). min_margin: see `finalize`.

    Returns:
      AttackResult with the closest adversarial iterate; model_calls: (2 + K) untargeted or 3 targeted
      passes per step (the linearization and the check of the new iterate).
    """
    key = validate.key(key)
    x, labels, logits = check_inputs(logits_fn, x, labels, box)
    p, alpha_max, eta, beta = _check(p, alpha_max, eta, beta)
    box = as_box(box, x)
    n = x.shape[0]
    eps = None if eps is None else validate.per_example(eps, n, "eps")
    if eps_init is None:
        eps_init = eps if eps is not None else default_eps_init(p, x, box)
    eps_init = validate.per_example(eps_init, n, "eps_init").astype(np.dtype(x.dtype))
    targeted = target is not None
    target = np.asarray(labels) if not targeted else check_target(target, labels, logits.shape[1])
    opts = dict(p=p, steps=validate.positive_int(steps, "steps"), restarts=validate.positive_int(restarts, "restarts"),
                alpha_max=alpha_max, eta=eta, beta=beta, targeted=targeted)
    run = lambda xb, yb, tb, lob, hib, eb, kb: _fab(logits_fn, xb, yb, tb, lob, hib, eb, kb, **opts)  # noqa: E731
    with Timer() as t:
        x_adv, dist = map_batches(run, (x, labels, target, box.lo, box.hi, eps_init), batch_size=batch_size,
                                  key=key)
    calls = opts["restarts"] * opts["steps"] * (3 if targeted else 2 + logits.shape[1])
    if eps is not None:
        x_adv = np.where(per_example(dist <= eps, x_adv), x_adv, np.asarray(x))
    return finalize(logits_fn, x, labels, x_adv, p=p, box=box, model_calls=calls, time_s=t.seconds,
                    method=_name(p, targeted), min_margin=min_margin, push_outward=eps is None)


def fab_targeted(logits_fn, x, labels, *, p, key, box=None, eps=None, n_targets: int = 9, steps: int = 100,
                 restarts: int = 1, alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
                 batch_size: int | None = None, min_margin: float | None = None) -> AttackResult:
    """FAB-T: targeted `fab` toward each of the n_targets classes with the largest clean logits (after the
    label), in that order, each on the points not yet broken (with eps: not yet within eps).

    Args: as `fab`, plus n_targets (>= 1, capped at K - 1). Returns: AttackResult; model_calls summed over
    the runs. Without eps every target runs on every correctly classified point and the closest point wins.
    """
    key = validate.key(key)
    x, labels, logits = check_inputs(logits_fn, x, labels, box)
    p = _check(p, alpha_max, eta, beta)[0]
    box = as_box(box, x)
    if eps is not None:
        validate.per_example(eps, x.shape[0], "eps")
    n_targets = validate.positive_int(n_targets, "n_targets")
    return targeted_cascade(fab, logits_fn, x, labels, logits, n_targets, _name(p, True), p=p, eps=eps, key=key,
                            box=box, steps=steps, restarts=restarts, alpha_max=alpha_max, eta=eta, beta=beta,
                            batch_size=batch_size, min_margin=min_margin)
