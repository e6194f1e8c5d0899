"""Square attack (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020, arXiv 1912.00049), a score-based
budget attack in l_inf and l2: random search over square-shaped updates, no gradients.

Examples are read as images `[h, w, c]` (channels last; `[h, w]` as one channel, a flat `[d]` as a
column `[d, 1, 1]`). The loss is the margin f_y - max_{j != y} f_j, minimized; a proposal replaces the
current point of an example when it lowers its margin, and an example stops once misclassified.

- l_inf (Alg. 1, 2): start from vertical stripes x + eps s (one sign s per column and channel); each step
  sets one random s x s window to x + eps s_c (one random sign per channel) and clips to the box. A
  proposal that leaves the window unchanged is negated (the paper resamples it).
- l2 (Alg. 3): start from a grid of pseudo-Gaussian bumps with random signs, scaled to norm eps; each
  step moves the perturbation mass of a second random window W2 into window W1, adding a fresh
  pseudo-Gaussian bump with random sign per channel, keeping the norm at eps, then clips to the box.

The window covers a fraction p of the pixels (side round(sqrt(p h w)), at most min(h, w) - 1; a column:
round(p h) entries), p = p_init halved at the iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000
of 10,000, rescaled to n_queries (the published schedule).
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from robustjax import validate
from robustjax.attacks.model_arg import jit_model
from robustjax.attacks.result import (AttackResult, Timer, as_box, check_inputs, check_norm, default_min_margin,
                                      finalize)
from robustjax.batching import map_batches
from robustjax.geometry import lp_norm, margin, per_example

HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def fraction(p_init: float, i: int, n_queries: int) -> float:
    """p at iteration i of n_queries: p_init / 2^m, m the number of HALVINGS below i / n_queries * 10,000."""
    it = int(i / n_queries * 10000)
    return p_init / 2 ** sum(it > h for h in HALVINGS)


def _image_shape(shape) -> tuple[int, int, int]:
    if len(shape) == 1:
        return shape[0], 1, 1
    return shape[0], shape[1], int(np.prod(shape[2:]))


def window(p: float, h: int, w: int) -> tuple[int, int]:
    """The (rows, columns) of the window changing a fraction p of an h x w image (a column: w = 1)."""
    if w == 1:
        return int(np.clip(round(p * h), 1, max(h - 1, 1))), 1
    s = int(round(np.sqrt(p * h * w)))
    return int(np.clip(s, 1, max(min(h, w) - 1, 1))), int(np.clip(s, 1, max(min(h, w) - 1, 1)))


def phases(p_init: float, n_queries: int, h: int, w: int) -> list[tuple[int, int, tuple[int, int]]]:
    """[(first iteration, end, window)] over the iterations 1 .. n_queries - 1 with a constant window."""
    out = []
    for i in range(1, n_queries):
        win = window(fraction(p_init, i, n_queries), h, w)
        if out and out[-1][2] == win:
            out[-1] = (out[-1][0], i + 1, win)
        else:
            out.append((i, i + 1, win))
    return out


def _bump(a: int, b: int) -> np.ndarray:
    """Concentric rectangles around the centre of an a x b patch, the k-th ring adding 1 / (k + 1)^2."""
    if a == 0 or b == 0:
        return np.zeros((a, b))
    i, j = np.ogrid[:a, :b]
    ring = np.maximum(np.abs(i - a // 2), np.abs(j - b // 2))
    k = np.arange(max(a, b))
    weights = np.cumsum((1.0 / (k + 1) ** 2)[::-1])[::-1]
    return weights[ring]


def pseudo_gaussian(a: int, b: int) -> np.ndarray:
    """The l2 update pattern of an a x b window: a bump on the top half minus one on the bottom half,
    unit l2 norm (`[a, b]` float64)."""
    top = a // 2
    eta = np.concatenate([_bump(top, b), -_bump(a - top, b)]) if top else _bump(a, b)
    return eta / max(np.linalg.norm(eta), 1e-12)


def _place(base, block, r, c):
    return jax.lax.dynamic_update_slice(base, block, (r, c, 0))


def _init_linf(key, x, eps):
    n, h, w, c = x.shape
    s = jax.random.rademacher(key, (n, 1, w, c), x.dtype)
    return x + per_example(eps, x) * s


def _init_l2(key, x, eps):
    n, h, w, c = x.shape
    th, tw = max(h // 5, 1), max(w // 5, 1)
    eta = jnp.asarray(pseudo_gaussian(th, tw), x.dtype)
    rows, cols = h // th, w // tw
    r0, c0 = (h - rows * th) // 2, (w - cols * tw) // 2
    signs = jax.random.rademacher(key, (n, rows, cols, c), x.dtype)
    tiles = jnp.einsum("ab,nrsc->nrasbc", eta, signs).reshape(n, rows * th, cols * tw, c)
    delta = jnp.zeros_like(x).at[:, r0:r0 + rows * th, c0:c0 + cols * tw].set(tiles)
    delta = delta * per_example(eps / jnp.maximum(lp_norm(delta, 2), 1e-12), x)
    return x + delta


def _propose_linf(key, x, x_best, eps, lo, hi, win):
    n, h, w, c = x.shape
    kr, kc, ks = jax.random.split(key, 3)
    r = jax.random.randint(kr, (n,), 0, h - win[0] + 1)
    col = jax.random.randint(kc, (n,), 0, w - win[1] + 1)
    signs = jax.random.rademacher(ks, (n, 1, 1, c), x.dtype)

    def one(xi, xb, e, s, ri, ci, loi, hii):
        block = jnp.broadcast_to(e * s, win + (c,))
        def at(sign):
            return jnp.clip(_place(xb - xi, sign * block, ri, ci) + xi, loi, hii)
        first = at(1.0)
        return jnp.where(jnp.all(first == xb), at(-1.0), first)
    return jax.vmap(one)(x, x_best, eps, signs, r, col, lo, hi)


def _propose_l2(key, x, x_best, eps, lo, hi, win):
    n, h, w, c = x.shape
    ks = jax.random.split(key, 6)
    r1 = jax.random.randint(ks[0], (n,), 0, h - win[0] + 1)
    c1 = jax.random.randint(ks[1], (n,), 0, w - win[1] + 1)
    r2 = jax.random.randint(ks[2], (n,), 0, h - win[0] + 1)
    c2 = jax.random.randint(ks[3], (n,), 0, w - win[1] + 1)
    signs = jax.random.rademacher(ks[4], (n, c), x.dtype)
    flip = jax.random.bernoulli(ks[5], 0.5, (n,))
    eta = jnp.asarray(pseudo_gaussian(*win), x.dtype)
    ones = jnp.ones(win + (c,), x.dtype)

    def one(xi, xb, e, s, a1, b1, a2, b2, fl, loi, hii):
        delta = xb - xi
        pattern = jnp.where(fl, eta.T, eta) if win[0] == win[1] else eta
        w1 = jax.lax.dynamic_slice(delta, (a1, b1, 0), win + (c,))
        union = _place(_place(jnp.zeros_like(delta), ones, a2, b2), ones, a1, b1)
        n_w1 = jnp.sqrt(jnp.sum(w1 * w1, (0, 1)))
        n_union = jnp.sqrt(jnp.sum((delta * union) ** 2, (0, 1)))
        free = jnp.maximum(e * e - jnp.sum(delta * delta), 0.0) / c
        new = pattern[:, :, None] * s + w1 / (n_w1 + 1e-12)
        new = new * jnp.sqrt(free + n_union ** 2) / jnp.maximum(jnp.sqrt(jnp.sum(new * new, (0, 1))), 1e-12)
        delta = _place(_place(delta, jnp.zeros(win + (c,), x.dtype), a2, b2), new, a1, b1)
        delta = delta * e / jnp.maximum(jnp.sqrt(jnp.sum(delta * delta)), 1e-12)
        return jnp.clip(xi + delta, loi, hii)
    return jax.vmap(one)(x, x_best, eps, signs, r1, c1, r2, c2, flip, lo, hi)


@jit_model(("p", "n_queries", "p_init", "shape"))
def _square(logits_fn, x, labels, eps, lo, hi, key, *, p, n_queries, p_init, shape):
    n = x.shape[0]
    img = (n,) + shape
    xi, loi, hii = x.reshape(img), lo.reshape(img), hi.reshape(img)

    def score(z):
        logits = logits_fn(z.reshape(x.shape))
        return margin(logits, labels), -margin(logits, labels) >= default_min_margin(logits)

    k0, key = jax.random.split(key)
    x0 = jnp.clip((_init_linf if p == np.inf else _init_l2)(k0, xi, eps), loi, hii)
    m0, fooled0 = score(x0)
    propose = _propose_linf if p == np.inf else _propose_l2
    state = (x0, m0, fooled0, jnp.ones((n,), jnp.int32))
    for start, end, win in phases(p_init, n_queries, shape[0], shape[1]):
        def body(carry, win=win):
            i, (x_best, m_best, fooled, calls) = carry
            active = ~fooled
            x_new = propose(jax.random.fold_in(key, i), xi, x_best, eps, loi, hii, win)
            m_new, adv = score(x_new)
            take = active & (m_new < m_best)
            x_best = jnp.where(per_example(take, xi), x_new, x_best)
            return i + 1, (x_best, jnp.where(take, m_new, m_best), fooled | (take & adv), calls + active)

        def cond(carry, end=end):
            i, (_, _, fooled, _) = carry
            return (i < end) & jnp.any(~fooled)
        _, state = jax.lax.while_loop(cond, body, (jnp.asarray(start, jnp.int32), state))
    x_best, _, fooled, calls = state
    return jnp.where(per_example(fooled, x), x_best.reshape(x.shape), x), calls


def square(logits_fn, x, labels, *, p, eps, key, box=None, n_queries: int = 5000, p_init: float = 0.8,
           batch_size: int | None = None, min_margin: float | None = None) -> AttackResult:
    """Square attack, untargeted, a budget attack (module docstring).

    Args:
      logits_fn: batched `[batch, ...]` -> `[batch, K]`, only evaluated (a jit argument:
        `attacks/model_arg.py`).
      x: `[batch, ...]` in the box (images channels last); labels `[batch]`; p: 2 or inf; eps: radius,
        scalar or `[batch]`; key: PRNG key. box: Box, (lo, hi) or None ([0, 1]).
      n_queries: model evaluations per example at most (the start counts one); p_init: the first fraction
        of pixels a window covers, in (0, 1]. min_margin: see `finalize`.

    Returns:
      AttackResult: success where a misclassified point with ||x_adv - x||_p <= eps was found.
      model_calls: the forward passes each example used (fewer than n_queries when broken early).
    """
    key = validate.key(key)
    p = check_norm(p)
    if p not in (2.0, np.inf):
        raise ValueError(f"square supports p = 2 or inf, got {p}")
    x, labels, _ = check_inputs(logits_fn, x, labels, box)
    box = as_box(box, x)
    eps = validate.per_example(eps, x.shape[0], "eps").astype(np.dtype(x.dtype))
    p_init = validate.positive_float(p_init, "p_init")
    if p_init > 1:
        raise ValueError(f"p_init must lie in (0, 1], got {p_init!r}")
    opts = dict(p=p, n_queries=validate.positive_int(n_queries, "n_queries"), p_init=p_init,
                shape=_image_shape(tuple(x.shape[1:])))
    run = lambda xb, yb, eb, lob, hib, kb: _square(logits_fn, xb, yb, eb, lob, hib, kb, **opts)  # noqa: E731
    with Timer() as t:
        x_adv, calls = map_batches(run, (x, labels, eps, box.lo, box.hi), batch_size=batch_size, key=key)
    return finalize(logits_fn, x, labels, x_adv, p=p, box=box, model_calls=calls, time_s=t.seconds,
                    method=f"square_l{'inf' if p == np.inf else 2}", min_margin=min_margin, push_outward=False)
