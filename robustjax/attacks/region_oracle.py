"""The region attack's view of a model: jitted functions of one example's flat input `[d]` that give its
logits, its switches (the signs that fix its linear region, `robustjax.network.region`), the region's rows,
the first adversarial point on a segment, and one round of sampled regions with their lower bounds.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import network
from robustjax.attacks.result import default_min_margin
from robustjax.geometry import halfspace_box_distance

ROW_CHUNK = 32   # region rows are fetched ROW_CHUNK at a time (one vjp each): one compilation


def switch_fn(logits_fn: Callable, example_shape: Sequence[int], *, preacts_fn: Callable | None = None,
              dtype=jnp.float32) -> Callable:
    """g(x_flat `[d]`) -> (logits `[K]`, switches `[n]`) for one example; traceable (jit, vmap, jvp, vjp).

    The switches come from the graph `network.trace(logits_fn, example_shape)`, or, with `preacts_fn(x)
    -> list of [batch, n_l]` (the pre-activations of every ReLU), are those, concatenated.
    """
    example_shape = tuple(example_shape)
    if preacts_fn is not None:
        def g(xf):
            x1 = xf.reshape((1,) + example_shape)
            pre = preacts_fn(x1)
            sw = jnp.concatenate([jnp.reshape(a[0], -1) for a in pre]) if len(pre) else jnp.zeros((0,), dtype)
            return logits_fn(x1)[0], sw
        return g
    graph = network.trace(logits_fn, example_shape, dtype=dtype)
    if not graph.is_piecewise_affine():
        kinds = sorted({type(n.layer).__name__ for n in graph.nodes
                        if not isinstance(n.layer, network.AFFINE_KINDS + network.PIECEWISE_KINDS)})
        raise ValueError(f"the region attack needs a piecewise-affine logits_fn (ReLU, max-pool, affine layers); "
                         f"this one has {', '.join(kinds)}")

    def g(xf):
        out, sw = network.switches(graph, xf.reshape((1,) + example_shape))
        return out[0], sw[0]
    return g


def sample_points(key, x, x_best, frac):
    """`[R, d]` points x_best + dir ||x_best - x||_2 frac (methods.md 2, step 2), dir tilted toward x in 80 %
    of the draws; frac `[R]` = r^gamma."""
    k1, k2, k3 = jax.random.split(key, 3)
    R = frac.shape[0]
    diff = x - x_best
    nrm = jnp.linalg.norm(diff)
    e = diff / jnp.maximum(nrm, 1e-12)
    n = jax.random.normal(k1, (R, x.shape[0]))
    n = n - (n @ e)[:, None] * e[None]
    n = n / jnp.maximum(jnp.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    toward = jax.random.uniform(k2, (R,)) < 0.8
    alpha = jax.random.uniform(k3, (R,), minval=0.0, maxval=jnp.pi)
    alpha = jnp.where(toward, alpha, -alpha)
    direction = jnp.sin(alpha)[:, None] * e[None] + jnp.cos(alpha)[:, None] * n
    return x_best[None] + direction * (nrm * frac)[:, None]


class RegionOracle(NamedTuple):
    """Jitted functions of one model (flat inputs; lo, hi `[d]` the example's box)."""
    probe: Callable       # Y [R, d] -> (logits [R, K], switches [R, n], jac [R, K, d])
    lin: Callable         # (y [d], z [d]) -> the switches linearized at y, evaluated at z [n]
    rows: Callable        # (y [d], idx [ROW_CHUNK]) -> switch gradient rows [ROW_CHUNK, d]
    logits: Callable      # Z [B, d] -> logits [B, K]
    ray: Callable         # (x, z, c, lo, hi) -> (point [d], found): first adversarial point on x -> z
    round: Callable       # one round of sampled regions: (Y, logits, switches, w, lower bounds)
    ray_calls: int        # model calls of one ray (grid points + bisection steps)
    lin_batch: Callable   # (Y [T, d], Z [T, d]) -> lin of each pair [T, n]
    rows_batch: Callable  # (Y [T, d], idx [T, ROW_CHUNK]) -> rows [T, ROW_CHUNK, d]


@functools.lru_cache(maxsize=8)
def make_oracle(logits_fn, preacts_fn, example_shape: tuple, dtype, n_grid: int = 64, n_bisect: int = 24,
                s_max: float = 1.05) -> RegionOracle:
    """The RegionOracle of one model (cached: repeated attacks on the same logits_fn compile once)."""
    g = switch_fn(logits_fn, example_shape, preacts_fn=preacts_fn, dtype=dtype)

    def one_probe(y):
        out, sw = g(y)
        return out, sw, jax.jacrev(lambda t: g(t)[0])(y)

    @jax.jit
    def lin(y, z):
        (_, sw), (_, dsw) = jax.jvp(g, (y,), (z - y,))
        return sw + dsw

    @jax.jit
    def rows(y, idx):
        sw, pullback = jax.vjp(lambda t: g(t)[1], y)
        return jax.vmap(lambda c: pullback(c)[0])(jax.nn.one_hot(idx, sw.shape[0], dtype=sw.dtype))

    def batched_logits(zf):
        return logits_fn(zf.reshape((zf.shape[0],) + tuple(example_shape)))

    @jax.jit
    def ray(x, z, c, lo, hi):
        """clip(x + s (z - x)) for the smallest s in [0, s_max] (grid, then bisection) at which the model
        misclassifies with finalize's default margin, and whether there is one."""
        def adv(s):
            out = batched_logits(jnp.clip(x[None] + s[:, None] * (z - x)[None], lo, hi))
            other = jnp.max(jnp.where(jnp.arange(out.shape[-1]) == c, -jnp.inf, out), -1)
            return other - out[:, c] >= 2 * default_min_margin(out)
        grid = jnp.linspace(0.0, s_max, n_grid)
        a = adv(grid)
        k = jnp.argmax(a)
        s_lo = jnp.where(k > 0, grid[jnp.maximum(k - 1, 0)], 0.0)

        def body(_, lh):
            lo_, hi_ = lh
            mid = 0.5 * (lo_ + hi_)
            ok = adv(mid[None])[0]
            return jnp.where(ok, lo_, mid), jnp.where(ok, mid, hi_)
        _, s_hi = jax.lax.fori_loop(0, n_bisect, body, (s_lo, grid[k]))
        return jnp.clip(x + s_hi * (z - x), lo, hi), jnp.any(a)

    @functools.partial(jax.jit, static_argnames=("p", "R"))
    def round_fn(key, x, x_best, c, lo, hi, gamma, first, extra, n_extra, *, p, R):
        """R points around x_best (x_best itself first when `first`; the first n_extra replaced by `extra`
        `[R, d]`), their logits, switches, margin gradients w = J_t - J_c `[R, K, d]` and the lower bounds
        `[R, K]` on the distance to {f_t >= f_c} in the box (inf at t = c)."""
        k_r, k_u = jax.random.split(key)
        frac = jax.random.uniform(k_u, (R,)) ** gamma
        frac = jnp.where(first & (jnp.arange(R) == 0), 0.0, frac)
        Y = sample_points(k_r, x, x_best, frac)
        Y = jnp.where((jnp.arange(R) < n_extra)[:, None], extra, Y)
        out, sw, jac = jax.vmap(one_probe)(Y)
        w = jac - jnp.take(jac, c, axis=1)[:, None, :]
        g_x = out - jnp.take(out, c, axis=1)[:, None] + jnp.einsum("rkd,d->rk", w, x) - jnp.einsum("rkd,rd->rk", w, Y)
        bound = functools.partial(halfspace_box_distance, x=x, lo=lo, hi=hi, p=p)
        lb = jax.vmap(jax.vmap(bound))(w, -g_x)
        return Y, out, sw, w, jnp.where(jnp.arange(out.shape[1])[None] == c, jnp.inf, lb)

    return RegionOracle(jax.jit(jax.vmap(one_probe)), lin, rows, jax.jit(batched_logits), ray, round_fn,
                        n_grid + n_bisect, jax.jit(jax.vmap(lin)), jax.jit(jax.vmap(rows)))


def pad_rows_index(idx) -> np.ndarray:
    """idx (at most ROW_CHUNK) padded to ROW_CHUNK by repeating its first entry, int32."""
    return np.concatenate([idx, np.full(ROW_CHUNK - len(idx), idx[0])]).astype(np.int32)
