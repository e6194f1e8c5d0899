"""One padded-batch loop for everything that runs a jitted function over many examples.

The last batch is padded by repeating its last row, so one compiled program serves every batch; the
padded rows are cut from the outputs (and `mask` tells a reducing function which rows are real).
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def pad_rows(a, size: int):
    """a `[m, ...]` padded to `[size, ...]` by repeating its last row (numpy or JAX, whichever comes in)."""
    m = a.shape[0]
    if m >= size:
        return a
    xp = jnp if isinstance(a, jax.Array) else np
    return xp.concatenate([a, xp.repeat(a[-1:], size - m, axis=0)])


def bucket(rows, n: int, min_rows: int | None = None) -> np.ndarray:
    """Row indices (into n rows) padded (`pad_rows`) to the next power of two, at least min_rows and at most n,
    so that work on shrinking subsets reuses a few compiled programs; the caller keeps the first len(rows)."""
    rows = np.asarray(rows)
    return pad_rows(rows, min(n, max(1 << max(len(rows) - 1, 0).bit_length(), min_rows or 0)))


def batch_size_for(n: int, batch_size: int | None) -> int:
    """The batch size actually used for n rows: batch_size capped at n (n itself for None or 0)."""
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 0):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    return max(1, n if not batch_size or batch_size >= n else int(batch_size))


def map_batches(fn: Callable, rows: Sequence, *, batch_size: int | None, key=None, with_mask: bool = False,
                progress: Callable | None = None):
    """Runs fn over batches of rows and concatenates its outputs along the leading axis, as numpy.

    rows: arrays with one leading size n. fn(*rows_b) (plus key_b = fold_in(key, b) when key is given, plus
    mask_b `[bs]` bool when with_mask) returns an array or a tuple of arrays with leading size bs. Returns
    the same structure with leading size n. An empty batch (n = 0) returns empty arrays of the right
    trailing shapes (fn is traced once on a zero-padded row, not run). `progress(done, n)` is called after
    every batch when given.
    """
    rows = [r if isinstance(r, (np.ndarray, jax.Array)) else np.asarray(r) for r in rows]
    n = rows[0].shape[0]
    for i, r in enumerate(rows):
        if r.shape[0] != n:
            raise ValueError(f"rows[{i}] has {r.shape[0]} rows, expected {n} like rows[0]")
    bs = batch_size_for(n, batch_size)

    def call(part, b, m):
        args = list(part)
        if key is not None:
            args.append(jax.random.fold_in(key, b))
        if with_mask:
            args.append(jnp.arange(bs) < m)
        return fn(*args)

    if n == 0:
        dummy = [jax.ShapeDtypeStruct((bs,) + r.shape[1:], r.dtype) for r in rows]
        shapes = jax.eval_shape(lambda *a: call(a, 0, 0), *dummy)
        return jax.tree.map(lambda s: np.zeros((0,) + s.shape[1:], s.dtype), shapes)
    outs, single = [], False
    for b, i in enumerate(range(0, n, bs)):
        part = [r[i:i + bs] for r in rows]
        m = part[0].shape[0]
        out = call([pad_rows(p, bs) for p in part], b, m)
        single = not isinstance(out, tuple)
        outs.append([np.asarray(o)[:m] for o in ((out,) if single else out)])
        if progress is not None:
            progress(i + m, n)
    cat = tuple(np.concatenate(parts) for parts in zip(*outs))
    return cat[0] if single else cat
