"""Beyond one device: data parallelism with jax.sharding, and a process pool for CPU solver work
(`process_map` over items, `map_rows` over chunks of a batch: the region attack and the MILP batches).

The model code does not change: a jitted function given a batch sharded over the mesh's "data" axis
and replicated (or, for large leaves, sharded) parameters runs SPMD on every device, and XLA inserts
the gradient all-reduce. Results equal the one-device results up to float reduction order.

    mesh = parallel.data_mesh()                         # all devices, one "data" axis
    state = train.fit(config, train, test, mesh=mesh)   # data-parallel training
    result = parallel.sharded_call(pgd, mesh, logits_fn, x, labels, p=2, key=key)

Multi-host: call `parallel.initialize()` first on every host (it runs `jax.distributed.initialize`
when a coordinator is configured); each host then feeds its own slice of every batch
(`shard_batch` uses `jax.make_array_from_process_local_data`).
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from robustjax import validate

DATA = "data"


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Starts multi-host JAX when configured (arguments, or $JAX_COORDINATOR_ADDRESS,
    $JAX_NUM_PROCESSES, $JAX_PROCESS_ID); returns whether it did. A single host needs nothing."""
    address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return False
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=num_processes if num_processes is not None else int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=process_id if process_id is not None else int(os.environ["JAX_PROCESS_ID"]))
    return True


def data_mesh(devices: Sequence | None = None) -> Mesh:
    """A 1-D mesh with axis "data" over `devices` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices), (DATA,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _leaf_sharding(mesh: Mesh, leaf, min_size: int | None) -> NamedSharding:
    """Replicated, or sharded along the largest axis divisible by the device count when the leaf
    has at least `min_size` elements (None: never shard)."""
    n = mesh.shape[DATA]
    shape = getattr(leaf, "shape", ())
    if min_size is None or n == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return replicated(mesh)
    axes = [a for a in np.argsort(shape)[::-1] if shape[a] % n == 0]
    if not axes:
        return replicated(mesh)
    spec = [None] * len(shape)
    spec[axes[0]] = DATA
    return NamedSharding(mesh, P(*spec))


def param_shardings(mesh: Mesh, tree, *, shard_min_size: int | None = None):
    """Shardings for a pytree: replicated, or leaves of >= shard_min_size elements sharded (FSDP-like)."""
    return jax.tree.map(lambda leaf: _leaf_sharding(mesh, leaf, shard_min_size), tree)


def place(tree, shardings):
    return jax.tree.map(lambda leaf, s: jax.device_put(leaf, s), tree, shardings)


def shard_batch(mesh: Mesh, *arrays):
    """Global arrays sharded along the batch axis from this process's rows (all rows on one host).
    The global batch must divide evenly over the devices."""
    sharding = batch_sharding(mesh)
    out = []
    for a in arrays:
        a = np.asarray(a)
        global_rows = a.shape[0] * jax.process_count()
        if global_rows % mesh.shape[DATA]:
            raise ValueError(f"batch of {global_rows} rows does not divide over {mesh.shape[DATA]} devices")
        out.append(jax.make_array_from_process_local_data(sharding, a, (global_rows,) + a.shape[1:]))
    return out[0] if len(out) == 1 else tuple(out)


def pad_to_multiple(x: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """x padded (by repeating its last row) to a multiple of n rows; returns (padded, original rows)."""
    rows = x.shape[0]
    extra = (-rows) % n
    if extra:
        x = np.concatenate([x, np.repeat(x[-1:], extra, axis=0)])
    return x, rows


def sharded_call(fn: Callable, mesh: Mesh, logits_fn: Callable, x, labels, **kwargs):
    """Runs a batched method with the standard call shape `fn(logits_fn, x, labels, **kw)` (attacks,
    certificates) with x and labels sharded over the mesh's devices. The batch is padded to a
    multiple of the device count and every array field of the result is trimmed back."""
    if not isinstance(mesh, Mesh):
        raise ValueError(f"mesh must be a jax.sharding.Mesh (parallel.data_mesh()), got {type(mesh).__name__}")
    n = mesh.shape[DATA]
    if np.shape(x)[:1] != np.shape(labels)[:1]:
        raise ValueError(f"x has {np.shape(x)[:1]} rows but labels {np.shape(labels)[:1]}")
    xp, rows = pad_to_multiple(np.asarray(x), n)
    lp, _ = pad_to_multiple(np.asarray(labels), n)
    xs, ls = shard_batch(mesh, xp, lp)
    with jax.sharding.use_mesh(mesh) if hasattr(jax.sharding, "use_mesh") else _null():
        result = fn(logits_fn, xs, ls, **kwargs)
    return _trim(result, rows, len(xp))


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _trim(result, rows, padded):
    """Every array of the result (info dicts included) whose leading size is the padded batch, cut to rows."""
    def cut(v):
        if isinstance(v, (np.ndarray, jax.Array)) and v.ndim >= 1 and v.shape[0] == padded:
            return np.asarray(v)[:rows]
        return v
    if hasattr(result, "_fields"):
        return type(result)(*[jax.tree.map(cut, getattr(result, f)) for f in result._fields])
    return jax.tree.map(cut, result)


def process_map(fn: Callable, items: Iterable, *, processes: int | None = None, progress: bool = False,
                desc: str = "") -> list:
    """[fn(item) for item in items] over a pool of worker processes (spawned, not forked: JAX is not
    fork-safe). fn and the items must pickle (top-level functions, numpy arrays). processes=1 runs
    inline. Results keep the order of the items."""
    items = list(items)
    processes = validate.positive_int(processes, "processes") if processes is not None else os.cpu_count() or 1
    if processes <= 1 or len(items) <= 1:
        it = items
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(items, desc=desc)
        return [fn(i) for i in it]
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(processes, len(items)), mp_context=ctx) as ex:
        futures = [ex.submit(fn, i) for i in items]
        if progress:
            from tqdm.auto import tqdm
            for _ in tqdm(concurrent.futures.as_completed(futures), total=len(futures), desc=desc):
                pass
        return [f.result() for f in futures]


_WORKER_FNS: dict = {}


def _run_chunk(item):
    """One chunk in a worker: the cloudpickled function (unpickled once per worker and function, so its
    jit caches are reused across chunks) on the chunk's rows."""
    payload, rows, cpu = item
    if cpu:
        jax.config.update("jax_platforms", "cpu")
    import hashlib

    import cloudpickle
    digest = hashlib.sha256(payload).hexdigest()
    if digest not in _WORKER_FNS:
        _WORKER_FNS.clear()
        _WORKER_FNS[digest] = cloudpickle.loads(payload)
    return _WORKER_FNS[digest](*rows)


def _concat(parts):
    single = not isinstance(parts[0], tuple)
    cols = [[p] if single else list(p) for p in parts]
    out = tuple(np.concatenate([np.asarray(c[k]) for c in cols]) for k in range(len(cols[0])))
    return out[0] if single else out


def map_rows(fn: Callable, rows: Sequence, *, processes: int | None = None, chunks: int | None = None,
             cpu: bool = True, progress: bool = False, desc: str = ""):
    """fn(*rows) computed on chunks of the rows in worker processes and concatenated, as numpy.

    rows: arrays with one leading size n; fn(*chunk_rows) returns an array or a tuple of arrays with the
    chunk's leading size (numpy object arrays for other values). fn travels by cloudpickle (closures, partials
    and lambdas over a model work). chunks: how many pieces (default 4 per process, at most n); processes as
    in `process_map` (1 or n <= 1: fn(*rows) here). cpu: workers run JAX on their CPU (spawned workers would
    otherwise each claim the accelerator).
    """
    if not isinstance(rows, (list, tuple)):
        raise ValueError(f"rows must be a list or tuple of arrays, got {type(rows).__name__}")
    rows = [np.asarray(r) for r in rows]
    n = rows[0].shape[0] if rows and rows[0].ndim else 0
    for i, r in enumerate(rows):
        if r.ndim == 0 or r.shape[0] != n:
            raise ValueError(f"rows[{i}] has shape {r.shape}, expected {n} rows like rows[0]")
    processes = validate.positive_int(processes, "processes") if processes is not None else os.cpu_count() or 1
    if chunks is not None:
        validate.positive_int(chunks, "chunks")
    if processes <= 1 or n <= 1:
        return _check_rows(fn(*rows), n)
    import cloudpickle
    k = min(n, chunks or 4 * processes)
    payload = cloudpickle.dumps(fn)
    items = [(payload, [r[c] for r in rows], cpu) for c in np.array_split(np.arange(n), k) if len(c)]
    return _check_rows(_concat(process_map(_run_chunk, items, processes=processes, progress=progress, desc=desc)), n)


def _check_rows(out, n: int):
    for v in out if isinstance(out, tuple) else (out,):
        if np.ndim(v) == 0 or np.shape(v)[0] != n:
            raise ValueError(f"map_rows: fn must return arrays with one row per input row ({n}); got shape "
                             f"{np.shape(v)}")
    return out


def describe(mesh: Mesh) -> dict[str, Any]:
    return {"devices": mesh.shape[DATA], "platform": mesh.devices.flat[0].platform,
            "processes": jax.process_count()}
