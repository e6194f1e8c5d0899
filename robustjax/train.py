"""The one training loop: configs as data, jitted steps, optax, checkpoints that survive a kill.

Names follow the Flax examples: `create_train_state(key, config, input_shape)`,
`make_train_step(...)`, `make_eval_step(...)`, `fit(config, train, test, workdir) -> TrainState`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from robustjax import losses, models, regularizers
from robustjax.data import batches


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
        d = dict(d)
        d["regularizers"] = tuple(tuple(r) for r in d.get("regularizers", ()))
        d["model_config"] = {k: tuplify(v) for k, v in d.get("model_config", {}).items()}
        return cls().replace(**d)


def tuplify(v):
    """JSON lists back to tuples (model fields such as widths are tuples)."""
    return tuple(tuplify(u) for u in v) if isinstance(v, list) else v


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
        """Batched x -> logits with these parameters (eval mode)."""
        v = self.variables(params)
        return lambda x: self.apply_fn(v, x)


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
    raise ValueError(f"unknown schedule {config.schedule!r}; known: constant, piecewise, cosine")


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    lr = make_schedule(config, total_steps)
    if config.optimizer == "sgd":
        return optax.sgd(lr, momentum=config.momentum or None)
    if config.optimizer == "adam":
        return optax.adam(lr)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; known: sgd, adam")


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    cfg = dict(config.model_config)
    cfg.setdefault("num_classes", num_classes)
    return models.build(config.model, **cfg)


def create_train_state(key, config: TrainConfig, model: nn.Module, input_shape, total_steps: int,
                       *, init_kwargs: dict | None = None) -> TrainState:
    """Initial state; `input_shape` is one example's shape (no batch axis)."""
    init_key, state_key = jax.random.split(key)
    variables = model.init(init_key, jnp.zeros((1,) + tuple(input_shape), jnp.float32),
                           **(init_kwargs or {}))
    params = variables["params"]
    constants = {k: v for k, v in variables.items() if k != "params"}
    tx = make_optimizer(config, total_steps)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      constants=constants, key=state_key, apply_fn=model.apply, tx=tx)


def make_train_step(loss_fn: Callable, regularizer: regularizers.Term | None = None, *,
                    jit: bool = True) -> Callable:
    """(state, x `[B, ...]`, y `[B]`) -> (state, metrics). Dropout and regularizer keys come from
    fold_in(state.key, state.step), so a resumed run draws the same randomness."""
    regularizer = regularizer or regularizers.combine()

    def train_step(state: TrainState, x, y):
        step_key = jax.random.fold_in(state.key, state.step)
        dropout_key, reg_key = jax.random.split(step_key)

        def plain_logits(params, xx):
            return state.apply_fn(state.variables(params), xx)

        def objective(params):
            logits = state.apply_fn(state.variables(params), x, train=True, rngs={"dropout": dropout_key})
            data_loss = jnp.mean(loss_fn(logits=logits, labels=y))
            reg = regularizer(params, x, y, logits_fn=plain_logits, key=reg_key)
            return data_loss + reg, (data_loss, reg, logits)

        (total, (data_loss, reg, logits)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": data_loss, "regularizer": reg, "objective": total,
                   "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return jax.jit(train_step, donate_argnums=0) if jit else train_step


def make_eval_step(loss_fn: Callable) -> Callable:
    """(state, x, y, mask) -> summed loss and correct count over the masked batch (padded batches
    keep one compiled shape)."""
    @jax.jit
    def eval_step(state: TrainState, x, y, mask):
        logits = state.apply_fn(state.variables(), x)
        loss = loss_fn(logits=logits, labels=y)
        correct = (jnp.argmax(logits, -1) == y)
        return {"loss_sum": jnp.sum(loss * mask), "correct": jnp.sum(correct * mask), "count": jnp.sum(mask)}
    return eval_step


def evaluate(state: TrainState, x: np.ndarray, y: np.ndarray, *, loss: str = "cross_entropy",
             batch_size: int = 1000, eval_step: Callable | None = None) -> dict:
    """Mean loss and accuracy over (x, y); the last batch is padded and masked."""
    eval_step = eval_step or make_eval_step(losses.get(loss))
    totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        n = len(xb)
        mask = np.zeros((batch_size,), np.float32)
        mask[:n] = 1
        if n < batch_size:
            xb = np.concatenate([xb, np.zeros((batch_size - n,) + xb.shape[1:], xb.dtype)])
            yb = np.concatenate([yb, np.zeros((batch_size - n,), yb.dtype)])
        out = eval_step(state, xb, yb, mask)
        for k in totals:
            totals[k] += float(out[k])
    return {"loss": totals["loss_sum"] / max(totals["count"], 1),
            "accuracy": totals["correct"] / max(totals["count"], 1)}


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(workdir: str | os.PathLike, state: TrainState, meta: dict) -> Path:
    """Writes checkpoint.msgpack and checkpoint.json atomically (temp file + os.replace): a run killed
    mid-write leaves the previous checkpoint intact."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    blob = flax.serialization.to_bytes({"step": state.step, "params": state.params,
                                        "opt_state": state.opt_state, "constants": state.constants,
                                        "key": jax.random.key_data(state.key)})
    path = workdir / "checkpoint.msgpack"
    for target, data in ((path, blob), (workdir / "checkpoint.json",
                                        json.dumps(meta, indent=1).encode())):
        tmp = target.with_suffix(target.suffix + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    return path


def restore_checkpoint(workdir: str | os.PathLike, state: TrainState) -> tuple[TrainState, dict] | None:
    """The state saved in `workdir` (same structure as `state`), or None if there is none."""
    path = Path(workdir) / "checkpoint.msgpack"
    if not path.is_file():
        return None
    template = {"step": state.step, "params": state.params, "opt_state": state.opt_state,
                "constants": state.constants, "key": jax.random.key_data(state.key)}
    restored = flax.serialization.from_bytes(template, path.read_bytes())
    meta_path = Path(workdir) / "checkpoint.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return state.replace(step=jnp.asarray(restored["step"]), params=restored["params"],
                         opt_state=restored["opt_state"], constants=restored["constants"],
                         key=jax.random.wrap_key_data(restored["key"])), meta


def load_run(workdir: str | os.PathLike) -> tuple[TrainState, nn.Module, TrainConfig]:
    """(state, model, config) of a finished or interrupted run folder written by `fit`."""
    workdir = Path(workdir)
    config = TrainConfig.from_json(json.loads((workdir / "config.json").read_text()))
    meta = json.loads((workdir / "checkpoint.json").read_text())
    model = build_model(config, meta["num_classes"])
    init_kwargs = _init_kwargs(config, meta.get("input_shape"))
    state = create_train_state(jax.random.key(config.seed), config, model, meta["input_shape"],
                               meta["total_steps"], init_kwargs=init_kwargs)
    state, _ = restore_checkpoint(workdir, state)
    return state, model, config


def _init_kwargs(config: TrainConfig, input_shape):
    if config.model == "gaussian_kernel":
        n = config.model_config["num_centers"]
        return {"centers": jnp.zeros((n, int(np.prod(input_shape))), jnp.float32)}
    return {}


# ----------------------------------------------------------------------------- fit

def _check_data(x: np.ndarray, y: np.ndarray, num_classes: int, what: str):
    if x.ndim < 2 or len(x) != len(y):
        raise ValueError(f"{what}: x must be [n, ...] with one label per example; got x {x.shape}, y {np.shape(y)}")
    if not np.issubdtype(np.asarray(y).dtype, np.integer):
        raise ValueError(f"{what}: labels must be integers, got dtype {np.asarray(y).dtype}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{what}: labels outside [0, {num_classes}): min {y.min()}, max {y.max()}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: inputs contain NaN or inf")


def fit(config: TrainConfig, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray] | None = None,
        workdir: str | os.PathLike | None = None, *, num_classes: int = 10,
        init_kwargs: dict | None = None, regularizer: regularizers.Term | None = None,
        stop_after_steps: int | None = None, log: Callable[[dict], None] | None = None,
        mesh=None, shard_params_min_size: int | None = None) -> TrainState:
    """Trains `config` on `train`, evaluating on `test` after each epoch.

    With a `workdir`: writes config.json, metrics.jsonl (one JSON object per epoch) and an atomic
    checkpoint (each epoch, and every `config.checkpoint_every` steps if set); if a checkpoint is
    already there, resumes from it. Data order and dropout keys depend only on (seed, step), so a
    resumed run ends with the same parameters as an uninterrupted one.

    `stop_after_steps` ends the run early (after checkpointing), as a kill would; `regularizer`
    overrides the one built from `config.regularizers`.

    With a `mesh` (robustjax.parallel.data_mesh()), training is data parallel: each batch is sharded
    over the mesh's devices, parameters are replicated, or sharded when they have at least
    `shard_params_min_size` elements; the result equals the one-device run up to float tolerance.
    """
    from tqdm.auto import tqdm

    x_train, y_train = train
    if config.train_size:
        x_train, y_train = x_train[:config.train_size], y_train[:config.train_size]
    _check_data(x_train, y_train, num_classes, "train")
    if test is not None:
        _check_data(test[0], test[1], num_classes, "test")
    steps_per_epoch = len(x_train) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(x_train)} training examples")
    total_steps = steps_per_epoch * config.epochs
    model = build_model(config, num_classes)
    key = jax.random.key(config.seed)
    state_key, data_key = jax.random.split(key)
    input_shape = tuple(x_train.shape[1:])
    if init_kwargs is None:
        init_kwargs = _init_kwargs(config, input_shape)
    state = create_train_state(state_key, config, model, input_shape, total_steps, init_kwargs=init_kwargs)
    meta = {"num_classes": num_classes, "input_shape": list(input_shape), "total_steps": total_steps,
            "steps_per_epoch": steps_per_epoch}
    metrics_path = None
    if workdir is not None:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(json.dumps(config.to_json(), indent=1))
        metrics_path = workdir / "metrics.jsonl"
        restored = restore_checkpoint(workdir, state)
        if restored is not None:
            state, _ = restored
    reg = regularizer if regularizer is not None else regularizers.from_spec(config.regularizers)
    put_batch = lambda xb, yb: (xb, yb)  # noqa: E731
    if mesh is None:
        train_step = make_train_step(losses.get(config.loss), reg)
    else:
        from robustjax import parallel
        if config.batch_size % mesh.shape[parallel.DATA]:
            raise ValueError(f"batch_size {config.batch_size} does not divide over {mesh.shape[parallel.DATA]} devices")
        state_sh = state.replace(
            step=parallel.replicated(mesh), key=parallel.replicated(mesh),
            params=parallel.param_shardings(mesh, state.params, shard_min_size=shard_params_min_size),
            opt_state=parallel.param_shardings(mesh, state.opt_state, shard_min_size=shard_params_min_size),
            constants=jax.tree.map(lambda _: parallel.replicated(mesh), state.constants))
        state = parallel.place(state, state_sh)
        batch_sh = parallel.batch_sharding(mesh)
        train_step = jax.jit(make_train_step(losses.get(config.loss), reg, jit=False),
                             in_shardings=(state_sh, batch_sh, batch_sh),
                             out_shardings=(state_sh, parallel.replicated(mesh)), donate_argnums=0)
        put_batch = lambda xb, yb: parallel.shard_batch(mesh, xb, yb)  # noqa: E731
    eval_step = make_eval_step(losses.get(config.loss))

    def checkpoint():
        if workdir is not None:
            save_checkpoint(workdir, state, {**meta, "step": int(state.step)})

    step = int(state.step)
    bar = tqdm(total=total_steps, initial=step, disable=not config.progress, desc=f"{config.model}/{config.dataset}")
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        t0 = time.time()
        sums: dict[str, float] = {}
        n_steps = 0
        epoch_batches = batches(jax.random.fold_in(data_key, epoch), x_train, y_train, config.batch_size)
        for i, (xb, yb) in enumerate(epoch_batches):
            if i < offset:
                continue
            state, m = train_step(state, *put_batch(xb, yb))
            step += 1
            n_steps += 1
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.update(1)
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                checkpoint()
            if stop_after_steps is not None and step >= stop_after_steps:
                checkpoint()
                bar.close()
                return state
        record = {"epoch": epoch + 1, "step": step, "time_s": time.time() - t0}
        record.update({f"train_{k}": float(v) / max(n_steps, 1) for k, v in sums.items()})
        if test is not None:
            ev = evaluate(state, test[0], test[1], batch_size=config.eval_batch_size, eval_step=eval_step)
            record.update({"test_loss": ev["loss"], "test_accuracy": ev["accuracy"]})
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k in ("train_loss", "test_accuracy")})
        if metrics_path is not None:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if log is not None:
            log(record)
        checkpoint()
    bar.close()
    return state
