"""The region attack's view of a model: jitted functions of one example's flat input `[d]` that give its
logits, its switches (the signs that fix its linear region, `robustjax.network.region`), the region's rows,
the first adversarial point on a segment, and one round of sampled regions with their lower bounds.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import network
from robustjax.attacks.model_arg import apply, as_pytree
from robustjax.attacks.result import default_min_margin
from robustjax.geometry import halfspace_box_distance

ROW_CHUNK = 32   # region rows are fetched ROW_CHUNK at a time (one vjp each): one compilation


@dataclasses.dataclass(frozen=True)
class _GraphSwitches:
    """(arrays, x_flat `[d]`) -> (logits `[K]`, switches `[n]`) of one graph structure (hashable: a Partial's
    function, so that nets of one architecture share compiled programs)."""
    structure: network.Structure
    example_shape: tuple

    def __call__(self, arrays, xf):
        out, sw = network.switches(network.join(self.structure, arrays), xf.reshape((1,) + self.example_shape))
        return out[0], sw[0]


@dataclasses.dataclass(frozen=True)
class _Flat:
    """(logits_fn, z `[B, d]`) -> logits_fn(z reshaped to `[B, *example_shape]`)."""
    example_shape: tuple

    def __call__(self, logits_fn, zf):
        return logits_fn(zf.reshape((zf.shape[0],) + self.example_shape))


def switch_fn(logits_fn: Callable, example_shape: Sequence[int], *, preacts_fn: Callable | None = None,
              dtype=jnp.float32) -> jax.tree_util.Partial:
    """g(x_flat `[d]`) -> (logits `[K]`, switches `[n]`) for one example; traceable (jit, vmap, jvp, vjp).

    The switches come from the graph `network.trace(logits_fn, example_shape)` (g is then a Partial with the
    graph's weights as leaves: one compilation per architecture), or, with `preacts_fn(x) -> list of
    [batch, n_l]` (the pre-activations of every ReLU), are those, concatenated.
    """
    example_shape = tuple(example_shape)
    if preacts_fn is not None:
        def g(xf):
            x1 = xf.reshape((1,) + example_shape)
            pre = preacts_fn(x1)
            sw = jnp.concatenate([jnp.reshape(a[0], -1) for a in pre]) if len(pre) else jnp.zeros((0,), dtype)
            return logits_fn(x1)[0], sw
        return jax.tree_util.Partial(g)
    graph = network.trace(logits_fn, example_shape, dtype=dtype)
    if not graph.is_piecewise_affine():
        kinds = sorted({type(n.layer).__name__ for n in graph.nodes
                        if not isinstance(n.layer, network.AFFINE_KINDS + network.PIECEWISE_KINDS)})
        raise ValueError(f"the region attack needs a piecewise-affine logits_fn (ReLU, max-pool, affine layers); "
                         f"this one has {', '.join(kinds)}")
    structure, arrays = network.split(graph)
    return jax.tree_util.Partial(_GraphSwitches(structure, example_shape), list(arrays))


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
    logits: Callable      # Z [B, d] -> logits [B, K] (jitted logits_fn)
    ray: Callable         # (x, z, c, lo, hi) -> (point [d], found): first adversarial point on x -> z
    round: Callable       # one round of sampled regions: (Y, logits, switches, w, lower bounds)
    ray_calls: int        # model calls of one ray (grid points + bisection steps)
    lin_batch: Callable   # (Y [T, d], Z [T, d]) -> lin of each pair [T, n]
    rows_batch: Callable  # (Y [T, d], idx [T, ROW_CHUNK]) -> rows [T, ROW_CHUNK, d]
    logits_fn: Callable   # the model on flat inputs, a Partial (an argument for the attacks' jitted cores)


def _one_probe(g, y):
    out, sw = g(y)
    return out, sw, jax.jacrev(lambda t: g(t)[0])(y)


def _lin(g, y, z):
    (_, sw), (_, dsw) = jax.jvp(g, (y,), (z - y,))
    return sw + dsw


def _rows(g, y, idx):
    sw, pullback = jax.vjp(lambda t: g(t)[1], y)
    return jax.vmap(lambda c: pullback(c)[0])(jax.nn.one_hot(idx, sw.shape[0], dtype=sw.dtype))


@functools.partial(jax.jit, static_argnames=("n_grid", "n_bisect", "s_max"))
def _ray(f, x, z, c, lo, hi, *, n_grid, n_bisect, s_max):
    """clip(x + s (z - x)) for the smallest s in [0, s_max] (grid, then bisection) at which the model f (flat
    inputs) misclassifies with finalize's default margin, and whether there is one."""
    def adv(s):
        out = f(jnp.clip(x[None] + s[:, None] * (z - x)[None], lo, hi))
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
def _round(g, key, x, x_best, c, lo, hi, gamma, first, extra, n_extra, *, p, R):
    """R points around x_best (x_best itself first when `first`; the first n_extra replaced by `extra`
    `[R, d]`), their logits, switches, margin gradients w = J_t - J_c `[R, K, d]` and the lower bounds
    `[R, K]` on the distance to {f_t >= f_c} in the box (inf at t = c)."""
    k_r, k_u = jax.random.split(key)
    frac = jax.random.uniform(k_u, (R,)) ** gamma
    frac = jnp.where(first & (jnp.arange(R) == 0), 0.0, frac)
    Y = sample_points(k_r, x, x_best, frac)
    Y = jnp.where((jnp.arange(R) < n_extra)[:, None], extra, Y)
    out, sw, jac = jax.vmap(functools.partial(_one_probe, g))(Y)
    w = jac - jnp.take(jac, c, axis=1)[:, None, :]
    g_x = out - jnp.take(out, c, axis=1)[:, None] + jnp.einsum("rkd,d->rk", w, x) - jnp.einsum("rkd,rd->rk", w, Y)
    bound = functools.partial(halfspace_box_distance, x=x, lo=lo, hi=hi, p=p)
    lb = jax.vmap(jax.vmap(bound))(w, -g_x)
    return Y, out, sw, w, jnp.where(jnp.arange(out.shape[1])[None] == c, jnp.inf, lb)


_probe = jax.jit(lambda g, Y: jax.vmap(functools.partial(_one_probe, g))(Y))
_lin_one = jax.jit(_lin)
_rows_one = jax.jit(_rows)
_lin_batch = jax.jit(jax.vmap(_lin, in_axes=(None, 0, 0)))
_rows_batch = jax.jit(jax.vmap(_rows, in_axes=(None, 0, 0)))


@functools.lru_cache(maxsize=8)
def make_oracle(logits_fn, preacts_fn, example_shape: tuple, dtype, n_grid: int = 64, n_bisect: int = 24,
                s_max: float = 1.05) -> RegionOracle:
    """The RegionOracle of one model (cached per logits_fn object). Its programs take the model as an argument:
    the switches' graph (`switch_fn`) compiles once per architecture; the logits (the ray, the predictions)
    as the attacks compile theirs (`model_arg`)."""
    g = switch_fn(logits_fn, example_shape, preacts_fn=preacts_fn, dtype=dtype)
    f = jax.tree_util.Partial(_Flat(tuple(example_shape)), as_pytree(logits_fn))
    part = functools.partial
    return RegionOracle(part(_probe, g), part(_lin_one, g), part(_rows_one, g), part(apply, f),
                        part(_ray, f, n_grid=n_grid, n_bisect=n_bisect, s_max=s_max), part(_round, g),
                        n_grid + n_bisect, part(_lin_batch, g), part(_rows_batch, g), f)


def pad_rows_index(idx) -> np.ndarray:
    """idx (at most ROW_CHUNK) padded to ROW_CHUNK by repeating its first entry, int32."""
    return np.concatenate([idx, np.full(ROW_CHUNK - len(idx), idx[0])]).astype(np.int32)
