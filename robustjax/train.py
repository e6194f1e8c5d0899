"""The one training loop: configs as data, jitted steps, optax, checkpoints that survive a kill.

The Flax examples' shape: `create_train_state(key, config, model, input_shape, total_steps)`,
`make_train_step(loss, regularizer)` -> `train_step(state, x, y)`, `make_eval_step` and `evaluate`, and
`fit(config, train, test, workdir) -> TrainState`, a short loop over them. A run folder holds config.json,
metrics.jsonl (one record per epoch) and checkpoints (robustjax.checkpoint: checksummed, two kept, locked
against a second writer).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import time
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from robustjax import checkpoint, losses, models, regularizers, validate
from robustjax.batching import map_batches
from robustjax.data import batches

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "piecewise", "cosine")
RESUME = ("must_match", "allow_changed")
# Fields a resumed run may change without changing what it computes.
_RESUME_FREE = ("progress", "checkpoint_every")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. Defaults are the cross-Lipschitz paper's MNIST setting
    (methods.md 1(d)): one hidden layer, 1024 softplus(alpha=10) units, plain SGD, lr 0.2, batch 128,
    lr x0.1 at 72 % and x0.01 at 88 % of the updates."""
    model: str = "one_hidden_layer"
    model_config: dict = dataclasses.field(default_factory=dict)
    dataset: str = "mnist"
    loss: str = "cross_entropy"
    regularizers: tuple = ()
    optimizer: str = "sgd"
    learning_rate: float = 0.2
    momentum: float = 0.0
    schedule: str = "piecewise"
    epochs: int = 10
    batch_size: int = 128
    seed: int = 0
    train_size: int | None = None
    eval_batch_size: int = 1000
    checkpoint_every: int = 0
    progress: bool = True

    def replace(self, **kw) -> "TrainConfig":
        bad = set(kw) - {f.name for f in dataclasses.fields(self)}
        if bad:
            raise ValueError(f"TrainConfig has no field(s) {sorted(bad)}")
        return dataclasses.replace(self, **kw)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        """The config of `to_json`'s dict (lists back to tuples). ValueError naming the field when d is not a
        dict, has an unknown field or a field of the wrong JSON type (e.g. "10" for epochs)."""
        if not isinstance(d, dict):
            raise ValueError(f"a TrainConfig's JSON must be an object, got {type(d).__name__}")
        d = dict(d)
        for name, kinds in _json_types().items():
            if name in d:
                _check_json_type(name, d[name], kinds)
        regs = d.get("regularizers", ())
        if not all(isinstance(r, (list, tuple)) for r in regs):
            raise ValueError(f"config field 'regularizers' must be a list of [name, ...] lists, got {regs!r}")
        d["regularizers"] = tuple(tuple(r) for r in regs)
        d["model_config"] = {k: tuplify(v) for k, v in d.get("model_config", {}).items()}
        return cls().replace(**d)


@functools.lru_cache(maxsize=1)
def _json_types() -> dict:
    """Field name -> the Python types its JSON value may have, read from TrainConfig's annotations (a tuple field
    comes back from JSON as a list; `int | None` may be null)."""
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: _json_kinds(hints[f.name]) for f in dataclasses.fields(TrainConfig)}


def _json_kinds(t) -> tuple:
    """The Python types a JSON value of annotation t may have: a union's members, a generic's origin (dict[str,
    Any] -> dict), list or tuple for a tuple."""
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        return tuple(k for a in typing.get_args(t) for k in _json_kinds(a))
    base = typing.get_origin(t) or t
    return (list, tuple) if base is tuple else (base,)


def _check_json_type(name: str, v, kinds: tuple) -> None:
    """ValueError unless v has one of the JSON types `kinds` of a TrainConfig field (an int counts as a float, a
    bool as neither)."""
    ok = any(isinstance(v, bool) if k is bool else
             (isinstance(v, (int, float)) and not isinstance(v, bool)) if k is float else
             (isinstance(v, int) and not isinstance(v, bool)) if k is int else isinstance(v, k)
             for k in kinds)
    if not ok:
        want = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise ValueError(f"config field {name!r} must be {want}, got {type(v).__name__} {v!r}")


def tuplify(v):
    """JSON lists back to tuples (model fields such as widths are tuples)."""
    return tuple(tuplify(u) for u in v) if isinstance(v, list) else v


def check_config(config: TrainConfig) -> TrainConfig:
    """config itself when every field is valid (known model, loss, optimizer, schedule and regularizers;
    positive learning rate, epochs and batch sizes; momentum in [0, 1)); ValueError naming the field, what was
    expected and what came otherwise."""
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    if config.model not in models.REGISTRY:
        raise ValueError(f"unknown model {config.model!r}; known: {sorted(models.REGISTRY)}")
    if not isinstance(config.model_config, dict):
        raise ValueError(f"config.model_config must be a dict, got {type(config.model_config).__name__}")
    losses.get(config.loss)
    for field, known in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        if getattr(config, field) not in known:
            raise ValueError(f"unknown {field} {getattr(config, field)!r}; known: {', '.join(known)}")
    validate.positive_float(config.learning_rate, "config.learning_rate")
    if validate.positive_float(config.momentum, "config.momentum", allow_zero=True) >= 1:
        raise ValueError(f"config.momentum must be in [0, 1), got {config.momentum!r}")
    for field in ("epochs", "batch_size", "eval_batch_size"):
        validate.positive_int(getattr(config, field), f"config.{field}")
    validate.positive_int(config.seed, "config.seed", allow_zero=True)
    validate.positive_int(config.checkpoint_every, "config.checkpoint_every", allow_zero=True)
    if config.train_size is not None:
        validate.positive_int(config.train_size, "config.train_size")
    regularizers.from_spec(config.regularizers)
    return config


class TrainState(flax.struct.PyTreeNode):
    """step, trainable params, optimizer state, non-trainable collections (e.g. kernel centers), key."""
    step: jax.Array
    params: Any
    opt_state: Any
    constants: Any
    key: jax.Array
    apply_fn: Callable = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    def variables(self, params=None):
        return {"params": self.params if params is None else params, **self.constants}

    def logits_fn(self, params=None):
        """Batched x -> logits with these parameters (eval mode), as a `jax.tree_util.Partial` of apply_fn over the
        variables: attacks take it as a jit argument (`attacks/model_arg.py`), so calls with the same apply_fn
        share their programs."""
        return jax.tree_util.Partial(self.apply_fn, self.variables(params))


def piecewise_schedule(learning_rate: float, total_steps: int, *,
                       boundaries=(0.72, 0.88), factors=(0.1, 0.01)) -> optax.Schedule:
    """lr, then lr*factors[i] from boundaries[i]*total_steps on (the paper's x0.1 at 72 %, x0.01 at 88 %)."""
    if len(boundaries) != len(factors):
        raise ValueError("boundaries and factors must have the same length")
    bounds = jnp.asarray([int(b * total_steps) for b in boundaries])
    values = jnp.asarray((1.0,) + tuple(factors)) * learning_rate

    def schedule(step):
        return values[jnp.sum(step >= bounds)]
    return schedule


def make_schedule(config: TrainConfig, total_steps: int) -> optax.Schedule:
    if config.schedule == "constant":
        return optax.constant_schedule(config.learning_rate)
    if config.schedule == "piecewise":
        return piecewise_schedule(config.learning_rate, total_steps)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(config.learning_rate, max(total_steps, 1))
    raise ValueError(f"unknown schedule {config.schedule!r}; known: {', '.join(SCHEDULES)}")


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    lr = make_schedule(config, total_steps)
    if config.optimizer == "sgd":
        return optax.sgd(lr, momentum=config.momentum or None)
    if config.optimizer == "adam":
        return optax.adam(lr)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; known: {', '.join(OPTIMIZERS)}")


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    cfg = dict(config.model_config)
    cfg.setdefault("num_classes", num_classes)
    return models.build(config.model, **cfg)


def create_train_state(key, config: TrainConfig, model: nn.Module, input_shape, total_steps: int,
                       *, init_kwargs: dict | None = None) -> TrainState:
    """Initial state; `input_shape` is one example's shape (no batch axis)."""
    key = validate.key(key)
    if not (isinstance(input_shape, (tuple, list)) and all(isinstance(d, (int, np.integer)) and d > 0
                                                           for d in input_shape)):
        raise ValueError(f"input_shape must be a tuple of positive ints (one example's shape), got {input_shape!r}")
    init_key, state_key = jax.random.split(key)
    variables = model.init(init_key, jnp.zeros((1,) + tuple(input_shape), jnp.float32),
                           **(init_kwargs or {}))
    params = variables["params"]
    constants = {k: v for k, v in variables.items() if k != "params"}
    tx = make_optimizer(config, total_steps)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      constants=constants, key=state_key, apply_fn=models.Apply(model), tx=tx)


def make_train_step(loss_fn: Callable, regularizer: regularizers.Term | None = None, *,
                    jit: bool = True) -> Callable:
    """(state, x `[B, ...]`, y `[B]`) -> (state, metrics): mean loss, regularizer, objective and accuracy
    (float32 scalars) and `finite` (bool: the objective and every updated parameter are finite). Dropout and
    regularizer keys come from fold_in(state.key, state.step), so a resumed run draws the same randomness."""
    regularizer = regularizer or regularizers.combine()

    def train_step(state: TrainState, x, y):
        step_key = jax.random.fold_in(state.key, state.step)
        dropout_key, reg_key = jax.random.split(step_key)

        def apply_fn(params, xx):
            return state.apply_fn(state.variables(params), xx)

        def objective(params):
            logits = state.apply_fn(state.variables(params), x, train=True, rngs={"dropout": dropout_key})
            data_loss = jnp.mean(loss_fn(logits=logits, labels=y))
            reg = regularizer(params, x, y, apply_fn=apply_fn, key=reg_key)
            return data_loss + reg, (data_loss, reg, logits)

        (total, (data_loss, reg, logits)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(total)
        for leaf in jax.tree.leaves(params):
            finite &= jnp.all(jnp.isfinite(leaf))
        metrics = {"loss": data_loss, "regularizer": reg, "objective": total,
                   "accuracy": jnp.mean(jnp.argmax(logits, -1) == y), "finite": finite}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return jax.jit(train_step, donate_argnums=0) if jit else train_step


def make_eval_step(loss_fn: Callable) -> Callable:
    """Jitted (state, x `[B, ...]`, y `[B]`) -> (loss `[B]`, correct `[B]` bool), eval mode."""
    @jax.jit
    def eval_step(state: TrainState, x, y):
        logits = state.apply_fn(state.variables(), x)
        return loss_fn(logits=logits, labels=y), jnp.argmax(logits, -1) == y
    return eval_step


def evaluate(state: TrainState, x: np.ndarray, y: np.ndarray, *, loss: str = "cross_entropy",
             batch_size: int = 1000, eval_step: Callable | None = None) -> dict:
    """{"loss": mean loss, "accuracy": fraction correct} over (x `[n, ...]`, y `[n]`), run in padded
    batches of one compiled shape (robustjax.batching.map_batches); both NaN for n = 0."""
    eval_step = eval_step or make_eval_step(losses.get(loss))
    x = validate.batch(x, "x")
    K = None
    if len(x):
        try:
            K = jax.eval_shape(lambda v, z: state.apply_fn(v, z), state.variables(), x[:1]).shape[-1]
        except Exception as e:     # e.g. Flax's shape errors for inputs the model was not built for
            raise validate.model_error(e, f"the model fails on x of example shape {tuple(x.shape[1:])}") from e
    y = validate.labels(y, len(x), K, name="y")
    batch_size = validate.positive_int(batch_size, "batch_size")
    per_loss, correct = map_batches(lambda xb, yb: eval_step(state, xb, yb), (x, y), batch_size=batch_size)
    if len(per_loss) == 0:
        return {"loss": math.nan, "accuracy": math.nan}
    return {"loss": float(np.mean(per_loss, dtype=np.float64)), "accuracy": float(np.mean(correct))}


# ----------------------------------------------------------------------------- checkpoints

def _state_dict(state: TrainState) -> dict:
    return {"step": state.step, "params": state.params, "opt_state": state.opt_state,
            "constants": state.constants, "key": jax.random.key_data(state.key)}


def save_checkpoint(workdir: str | os.PathLike, state: TrainState, meta: dict) -> Path:
    """Saves `state` as the checkpoint of its step with JSON `meta` (robustjax.checkpoint.save: checksummed,
    atomic, the previous one kept). Returns the manifest path."""
    return checkpoint.save(workdir, int(state.step), flax.serialization.to_bytes(_state_dict(state)), meta)


def _load(state: TrainState, ckpt: checkpoint.Checkpoint) -> TrainState:
    """`state` with the arrays of a verified checkpoint; CheckpointError naming it if they do not fit."""
    template = _state_dict(state)
    try:
        restored = flax.serialization.from_bytes(template, ckpt.data)
    except (ValueError, KeyError, TypeError) as e:
        raise checkpoint.CheckpointError(f"checkpoint {ckpt.path} does not fit this model's state: {e}") from None
    shapes = lambda t: [np.shape(a) for a in jax.tree.leaves(t)]  # noqa: E731
    if shapes(restored) != shapes(template):
        raise checkpoint.CheckpointError(f"checkpoint {ckpt.path} holds arrays of other shapes than this model's")
    return state.replace(step=jnp.asarray(restored["step"]), params=restored["params"],
                         opt_state=restored["opt_state"], constants=restored["constants"],
                         key=jax.random.wrap_key_data(restored["key"]))


def restore_checkpoint(workdir: str | os.PathLike, state: TrainState) -> tuple[TrainState, dict] | None:
    """(state, meta) of the newest verified checkpoint in `workdir` (same structure as `state`), or None if
    there is none; a damaged newer one is skipped with a warning (robustjax.checkpoint.restore)."""
    ckpt = checkpoint.restore(workdir)
    return None if ckpt is None else (_load(state, ckpt), ckpt.meta)


def load_run(workdir: str | os.PathLike) -> tuple[TrainState, nn.Module, TrainConfig]:
    """(state, model, config) of a finished or interrupted run folder written by `fit`; the config is the
    one saved with the checkpoint."""
    ckpt = checkpoint.restore(workdir)
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in run folder {workdir}")
    meta = ckpt.meta
    config = TrainConfig.from_json(meta["config"])
    model = build_model(config, meta["num_classes"])
    state = create_train_state(jax.random.key(config.seed), config, model,
                               meta["input_shape"], meta["total_steps"],
                               init_kwargs=_init_kwargs(config, meta["input_shape"]))
    return _load(state, ckpt), model, config


def _init_kwargs(config: TrainConfig, input_shape):
    if config.model == "gaussian_kernel":
        n = config.model_config["num_centers"]
        return {"centers": jnp.zeros((n, int(np.prod(input_shape))), jnp.float32)}
    return {}


# ----------------------------------------------------------------------------- fit's pieces

class _EpochMeter:
    """Running sums of one epoch's step metrics (device scalars: no sync per step), its step count and wall
    time, saved with each checkpoint so a resumed epoch's means cover all its steps. Each step's `finite`
    flag is checked one step late, so the device keeps running ahead."""

    def __init__(self, epoch: int, steps: int = 0, sums: dict | None = None, time_s: float = 0.0):
        self.epoch, self.steps, self.time_s = epoch, steps, time_s
        self.sums = {k: np.float32(v) for k, v in (sums or {}).items()}
        self._start = time.time()
        self._pending = None

    def add(self, metrics: dict, step: int) -> None:
        metrics = dict(metrics)
        finite = metrics.pop("finite")
        self.check()
        self._pending = (finite, step)
        self.steps += 1
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def check(self) -> None:
        """FloatingPointError naming the step and epoch if the last step added was not finite."""
        if self._pending is not None:
            finite, step = self._pending
            if not bool(finite):
                raise FloatingPointError(
                    f"non-finite loss or parameters at step {step} (epoch {self.epoch + 1}); training stopped "
                    "before saving them. Lower the learning rate or check the data and the regularizer")
            self._pending = None

    def means(self) -> dict:
        self.check()
        return {"time_s": self.time_s + time.time() - self._start,
                **{f"train_{k}": float(v) / max(self.steps, 1) for k, v in self.sums.items()}}

    def to_json(self) -> dict:
        self.check()
        return {"epoch": self.epoch, "steps": self.steps, "sums": {k: float(v) for k, v in self.sums.items()},
                "time_s": self.time_s + time.time() - self._start}


def _config_changes(saved: dict, config: TrainConfig) -> list[str]:
    now = json.loads(json.dumps(config.to_json()))
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved) | set(now))
            if k not in _RESUME_FREE and saved.get(k) != now.get(k)]


class _RunFolder:
    """fit's run folder: the lock, resuming, config.json, metrics.jsonl and checkpoints; with workdir None
    nothing is written and every run starts at step 0."""

    def __init__(self, workdir, meta: dict):
        self.dir = None if workdir is None else Path(workdir)
        self.meta = meta
        self._lock = None if self.dir is None else checkpoint.RunLock(self.dir)

    def __enter__(self) -> "_RunFolder":
        if self._lock is not None:
            self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.release()

    def resume(self, state: TrainState, config: TrainConfig, resume: str) -> tuple[TrainState, _EpochMeter]:
        """The state and epoch meter to continue from: the newest verified checkpoint's, or the initial ones.
        Refuses a checkpoint saved with another config unless resume == "allow_changed"; drops metrics records
        of steps after the checkpoint (they will be redone); writes config.json."""
        steps_per_epoch = self.meta["steps_per_epoch"]
        if self.dir is None:
            return state, _EpochMeter(0)
        ckpt = checkpoint.restore(self.dir)
        if ckpt is None and (self.dir / "checkpoint.msgpack").exists():
            raise checkpoint.CheckpointError(
                f"run folder {self.dir} holds checkpoint.msgpack, the old format without a checksum; this version "
                "cannot verify it: move it away to restart the run from step 0")
        step, progress = 0, None
        if ckpt is not None:
            changes = _config_changes(ckpt.meta.get("config", {}), config)
            if changes and resume == "must_match":
                raise ValueError(f"run folder {self.dir} holds a checkpoint (step {ckpt.step}) trained with another "
                                 f"config ({'; '.join(changes)}); pass resume='allow_changed' to continue it with "
                                 "this config, or use a new run folder")
            if changes:
                warnings.warn(f"resuming {self.dir} at step {ckpt.step} with a changed config: {'; '.join(changes)}",
                              stacklevel=3)
            state, step, progress = _load(state, ckpt), ckpt.step, ckpt.meta.get("epoch_progress")
        self._truncate_metrics(step)
        checkpoint.write_atomic(self.dir / "config.json", json.dumps(config.to_json(), indent=1).encode())
        epoch, offset = divmod(step, steps_per_epoch)
        if progress is not None and progress["epoch"] == epoch and progress["steps"] == offset:
            return state, _EpochMeter(epoch, offset, progress["sums"], progress["time_s"])
        if offset:
            warnings.warn(f"checkpoint at step {step} has no running metrics of epoch {epoch + 1}: its train "
                          "means will cover only the steps after the resume", stacklevel=3)
        return state, _EpochMeter(epoch)

    def _truncate_metrics(self, step: int) -> None:
        path = self.dir / "metrics.jsonl"
        if not path.is_file():
            return
        lines = path.read_text().splitlines()
        kept = [line for line in lines if _record_step(line) <= step]
        if len(kept) != len(lines):
            warnings.warn(f"{path}: dropping {len(lines) - len(kept)} record(s) after step {step}, the step "
                          "resumed from", stacklevel=4)
            checkpoint.write_atomic(path, "".join(line + "\n" for line in kept).encode())

    def save(self, state: TrainState, meter: _EpochMeter) -> None:
        progress = meter.to_json()
        if self.dir is not None:
            save_checkpoint(self.dir, state, {**self.meta, "step": int(state.step), "epoch_progress": progress})

    def append(self, record: dict) -> None:
        if self.dir is not None:
            with open(self.dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")


def _record_step(line: str) -> float:
    """The step of one metrics.jsonl line; inf for a line torn by a kill mid-write."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def _check_structure_terms(config: TrainConfig, model: nn.Module) -> None:
    """A cross-Lipschitz term with structure 'one_hidden_layer' uses its own act / alpha (softplus, 10 by
    default) in its closed form: they must be the model's, and the model a OneHiddenLayer."""
    for entry in config.regularizers:
        kw = entry[2] if len(entry) > 2 else {}
        if entry[0] != "cross_lipschitz" or kw.get("structure") != "one_hidden_layer":
            continue
        if not isinstance(model, models.OneHiddenLayer):
            raise ValueError(f"the cross_lipschitz term's structure 'one_hidden_layer' needs the one_hidden_layer "
                             f"model, got {config.model!r}")
        act, alpha = kw.get("act", "softplus"), float(kw.get("alpha", 10.0))
        if act != model.act or (act == "softplus" and alpha != float(model.alpha)):
            raise ValueError(f"the cross_lipschitz term's act={act!r}, alpha={alpha} differ from the model's "
                             f"act={model.act!r}, alpha={model.alpha}: give the model's in its options")


def _data(xy, num_classes: int, name: str, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(xy, (tuple, list)) and len(xy) == 2):
        raise ValueError(f"{name} must be a pair (x, labels), got {type(xy).__name__}")
    x, y = xy
    nx, ny = (np.shape(v)[0] if np.ndim(v) else None for v in (x, y))
    if nx != ny:
        raise ValueError(f"{name} x has {nx} examples but {name} labels {ny}")
    if size is not None:
        x, y = x[:size], y[:size]
    x = validate.batch(x, f"{name} x")
    return x, validate.labels(y, len(x), num_classes, name=f"{name} labels")


def _place(state: TrainState, train_step: Callable, mesh, batch_size: int, shard_min_size: int | None):
    """(state, jitted train_step, put_batch) on one device, or data parallel over `mesh`."""
    if mesh is None:
        return state, jax.jit(train_step, donate_argnums=0), lambda xb, yb: (xb, yb)
    from robustjax import parallel
    if batch_size % mesh.shape[parallel.DATA]:
        raise ValueError(f"batch_size {batch_size} does not divide over {mesh.shape[parallel.DATA]} devices")
    state_sh = state.replace(
        step=parallel.replicated(mesh), key=parallel.replicated(mesh),
        params=parallel.param_shardings(mesh, state.params, shard_min_size=shard_min_size),
        opt_state=parallel.param_shardings(mesh, state.opt_state, shard_min_size=shard_min_size),
        constants=jax.tree.map(lambda _: parallel.replicated(mesh), state.constants))
    batch_sh = parallel.batch_sharding(mesh)
    step = jax.jit(train_step, in_shardings=(state_sh, batch_sh, batch_sh),
                   out_shardings=(state_sh, parallel.replicated(mesh)), donate_argnums=0)
    return parallel.place(state, state_sh), step, lambda xb, yb: parallel.shard_batch(mesh, xb, yb)


# ----------------------------------------------------------------------------- fit

def fit(config: TrainConfig, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray] | None = None,
        workdir: str | os.PathLike | None = None, *, num_classes: int = 10,
        init_kwargs: dict | None = None, regularizer: regularizers.Term | None = None,
        stop_after_steps: int | None = None, log: Callable[[dict], None] | None = None,
        mesh=None, shard_params_min_size: int | None = None, resume: str = "must_match") -> TrainState:
    """Trains `config` on `train`, evaluating on `test` after each epoch.

    With a `workdir`: locks it (a second fit on the same folder fails at once), writes config.json,
    metrics.jsonl (one JSON object per epoch) and a checkpoint each epoch and every `config.checkpoint_every`
    steps if set; if a verified checkpoint is there, resumes from it (a damaged newest one falls back to the
    previous with a warning). `resume="must_match"` refuses a checkpoint saved with another config (fields
    other than progress and checkpoint_every); "allow_changed" continues it with this one. Data order and
    dropout keys depend only on (seed, step), and the running train metrics of an epoch are saved with it, so
    a resumed run ends with the same parameters and metrics as an uninterrupted one.

    `stop_after_steps` ends the run early (after checkpointing), as a kill would; `regularizer` overrides
    the one built from `config.regularizers`. Raises ValueError on an invalid config or data before training,
    and FloatingPointError naming the step at the first non-finite objective or parameter.

    With a `mesh` (robustjax.parallel.data_mesh()), training is data parallel: each batch is sharded over
    the mesh's devices, parameters are replicated, or sharded when they have at least
    `shard_params_min_size` elements; the result equals the one-device run up to float tolerance.
    """
    from tqdm.auto import tqdm

    config = check_config(config)
    num_classes = validate.positive_int(num_classes, "num_classes")
    if resume not in RESUME:
        raise ValueError(f"resume must be one of {RESUME}, got {resume!r}")
    given = config.model_config.get("num_classes", num_classes)
    if given != num_classes:
        raise ValueError(f"config.model_config['num_classes'] is {given!r}, but num_classes is {num_classes}")
    x_train, y_train = _data(train, num_classes, "train", config.train_size)
    test = None if test is None else _data(test, num_classes, "test")
    if test is not None and test[0].shape[1:] != x_train.shape[1:]:
        raise ValueError(f"test x has example shape {test[0].shape[1:]}, train x {x_train.shape[1:]}")
    steps_per_epoch = len(x_train) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"config.batch_size {config.batch_size} exceeds the {len(x_train)} training examples")
    total_steps = steps_per_epoch * config.epochs
    stop = total_steps if stop_after_steps is None else min(
        total_steps, validate.positive_int(stop_after_steps, "stop_after_steps"))
    state_key, data_key = jax.random.split(jax.random.key(config.seed))
    input_shape = tuple(x_train.shape[1:])
    model = build_model(config, num_classes)
    if regularizer is None:
        _check_structure_terms(config, model)
    state = create_train_state(state_key, config, model, input_shape, total_steps,
                               init_kwargs=_init_kwargs(config, input_shape) if init_kwargs is None else init_kwargs)
    reg = regularizer if regularizer is not None else regularizers.from_spec(config.regularizers)
    train_step = make_train_step(losses.get(config.loss), reg, jit=False)
    eval_step = make_eval_step(losses.get(config.loss))
    meta = {"config": config.to_json(), "num_classes": num_classes, "input_shape": list(input_shape),
            "total_steps": total_steps, "steps_per_epoch": steps_per_epoch}

    with _RunFolder(workdir, meta) as run:
        state, meter = run.resume(state, config, resume)
        state, train_step, put_batch = _place(state, train_step, mesh, config.batch_size, shard_params_min_size)
        step = int(state.step)
        bar = tqdm(total=total_steps, initial=step, disable=not config.progress,
                   desc=f"{config.model}/{config.dataset}")
        while step < stop:
            epoch, offset = divmod(step, steps_per_epoch)
            epoch_batches = batches(jax.random.fold_in(data_key, epoch), x_train, y_train, config.batch_size)
            for xb, yb in itertools.islice(epoch_batches, offset, offset + stop - step):
                state, metrics = train_step(state, *put_batch(xb, yb))
                step += 1
                meter.add(metrics, step)
                bar.update(1)
                if step % steps_per_epoch and (step == stop or (config.checkpoint_every
                                                                and step % config.checkpoint_every == 0)):
                    run.save(state, meter)
            if step % steps_per_epoch == 0:
                record = {"epoch": epoch + 1, "step": step, **meter.means()}
                if test is not None:
                    ev = evaluate(state, *test, batch_size=config.eval_batch_size, eval_step=eval_step)
                    record.update({"test_loss": ev["loss"], "test_accuracy": ev["accuracy"]})
                bar.set_postfix({k: round(v, 4) for k, v in record.items() if k in ("train_loss", "test_accuracy")})
                run.append(record)
                if log is not None:
                    log(record)
                meter = _EpochMeter(epoch + 1)
                run.save(state, meter)
        meter.check()
        bar.close()
    return state
