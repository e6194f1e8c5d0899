"""The training loop: accuracy on real MNIST, resume after a kill, atomic checkpoints, bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _nets import assert_same_tree

from robustjax import checkpoint, losses, regularizers, train

ROOT = Path(__file__).resolve().parents[1]


def test_paper_net_beats_90_percent_in_300_steps(mnist_small):
    from robustjax.data import load
    xtr, ytr = load("mnist", "train")
    xte, yte = load("mnist", "test")
    cfg = train.TrainConfig(train_size=300 * 128, epochs=1, progress=False)  # 1024 softplus units, SGD 0.2
    state = train.fit(cfg, (xtr, ytr))
    assert int(state.step) == 300
    acc = train.evaluate(state, xte, yte)["accuracy"]
    assert acc > 0.90, acc


def _small_config(**kw):
    base = dict(model="mlp", model_config={"widths": (16,), "act": "tanh", "dropout_hidden": 0.2},
                optimizer="sgd", momentum=0.9, learning_rate=0.05, epochs=3, batch_size=64,
                train_size=640, checkpoint_every=4, progress=False, regularizers=(("weight_decay", 1e-3),))
    base.update(kw)
    return train.TrainConfig(**base)



def test_resume_equals_uninterrupted(mnist_small, tmp_path):
    (xtr, ytr), test = mnist_small
    cfg = _small_config()
    full = train.fit(cfg, (xtr, ytr), None, tmp_path / "full")
    partial = train.fit(cfg, (xtr, ytr), None, tmp_path / "resumed", stop_after_steps=13)  # mid epoch 2
    assert int(partial.step) == 13
    resumed = train.fit(cfg, (xtr, ytr), None, tmp_path / "resumed")
    assert int(resumed.step) == int(full.step) == 30
    assert_same_tree(full.params, resumed.params)
    assert_same_tree(full.opt_state, resumed.opt_state)
    full_log, resumed_log = ([json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
                             for run in ("full", "resumed"))
    assert [r["epoch"] for r in full_log] == [r["epoch"] for r in resumed_log] == [1, 2, 3]
    for a, b in zip(full_log, resumed_log):                  # epoch 2's means cover all its 10 steps
        assert {k: v for k, v in a.items() if k != "time_s"} == {k: v for k, v in b.items() if k != "time_s"}
    state, model, config = train.load_run(tmp_path / "resumed")
    assert config == cfg
    assert_same_tree(state.params, full.params)


def test_resume_after_sigkill(tmp_path):
    """A real kill -9 of scripts/train.py mid-run, then the same command again."""
    workdir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--model", "mlp", "--model-config",
           '{"widths": [16], "act": "relu"}', "--optimizer", "adam", "--lr", "1e-3", "--schedule", "constant",
           "--epochs", "40", "--batch-size", "100", "--train-size", "2000", "--checkpoint-every", "7",
           "--workdir", str(workdir), "--no-progress"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    def latest():
        found = checkpoint.manifests(workdir)
        return found[0][0] if found else 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if latest() >= 100:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed; make the run longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = latest()
    assert 0 < killed_at < 800
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    resumed, _, cfg = train.load_run(workdir)
    assert int(resumed.step) == 800
    from robustjax.data import load
    xtr, ytr = load("mnist", "train")
    uninterrupted = train.fit(cfg.replace(checkpoint_every=0), (xtr, ytr))
    assert_same_tree(uninterrupted.params, resumed.params)


def test_checkpoint_write_is_atomic(mnist_small, tmp_path, monkeypatch):
    (xtr, ytr), _ = mnist_small
    cfg = _small_config(epochs=1)
    state = train.fit(cfg, (xtr, ytr), None, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("ckpt-*")}

    def crash(src, dst):
        raise KeyboardInterrupt("killed while writing")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        train.save_checkpoint(tmp_path, state.replace(step=state.step + 1), {"step": 99})
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.glob("ckpt-*")} == before
    restored, _ = train.restore_checkpoint(tmp_path, state)
    assert int(restored.step) == int(state.step)


def test_bad_input_is_refused(mnist_small):
    (xtr, ytr), _ = mnist_small
    cfg = _small_config(epochs=1)
    x_nan = xtr[:640].copy()
    x_nan[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="train x contains NaN"):
        train.fit(cfg, (x_nan, ytr[:640]))
    with pytest.raises(ValueError, match=r"train labels must lie in \[0, 10\)"):
        train.fit(cfg, (xtr[:640], np.full(640, 10, np.int32)))
    with pytest.raises(ValueError, match="train x has 640 examples but train labels 600"):
        train.fit(cfg, (xtr[:640], ytr[:600]))
    with pytest.raises(ValueError, match="train x has 4 examples but train labels 3"):     # before the cut
        train.fit(cfg.replace(train_size=2), (xtr[:4], ytr[:3]))
    model = train.build_model(cfg, 10)
    with pytest.raises(ValueError, match="input_shape must be a tuple of positive ints"):
        train.create_train_state(jax.random.key(0), cfg, model, 784, 10)
    with pytest.raises(ValueError, match="key must be a jax.random key"):
        train.create_train_state(None, cfg, model, (28, 28, 1), 10)
    with pytest.raises(ValueError, match="train must be a pair"):
        train.fit(cfg, xtr[:640])
    with pytest.raises(ValueError, match=r"test x has example shape \(28, 28\), train x \(28, 28, 1\)"):
        train.fit(cfg, (xtr[:640], ytr[:640]), (xtr[:10, ..., 0], ytr[:10]))
    with pytest.raises(ValueError, match=r"model_config\['num_classes'\] is 2, but num_classes is 10"):
        train.fit(cfg.replace(model_config={"widths": (8,), "num_classes": 2}), (xtr[:640], ytr[:640]))
    for opts in ({"structure": "one_hidden_layer"}, {"structure": "one_hidden_layer", "act": "softplus", "alpha": 1.0}):
        with pytest.raises(ValueError, match="differ from the model's act='tanh'"):
            train.fit(cfg.replace(model="one_hidden_layer", model_config={"hidden": 8, "act": "tanh"},
                                  regularizers=(("cross_lipschitz", 1.0, opts),)), (xtr[:640], ytr[:640]))
    with pytest.raises(ValueError, match="needs the one_hidden_layer model, got 'mlp'"):
        train.fit(cfg.replace(regularizers=(("cross_lipschitz", 1.0, {"structure": "one_hidden_layer"}),)),
                  (xtr[:640], ytr[:640]))
    with pytest.raises(ValueError, match="train labels must be integers"):
        train.fit(cfg, (xtr[:640], ytr[:640] + 0.5))
    with pytest.raises(ValueError, match="test labels must lie"):
        train.fit(cfg, (xtr, ytr), (xtr[:10], np.full(10, -1)))
    with pytest.raises(ValueError, match="exceeds the 640 training examples"):
        train.fit(cfg.replace(batch_size=641), (xtr, ytr))


@pytest.mark.parametrize("field, value, message", [
    ("epochs", -1, r"config.epochs must be > 0, got -1"),
    ("epochs", 0, r"config.epochs must be > 0, got 0"),
    ("batch_size", 0, r"config.batch_size must be > 0, got 0"),
    ("batch_size", 2.5, r"config.batch_size must be an integer, got 2.5"),
    ("eval_batch_size", 0, r"config.eval_batch_size must be > 0"),
    ("learning_rate", float("nan"), r"config.learning_rate must be finite, got nan"),
    ("learning_rate", -0.1, r"config.learning_rate must be > 0"),
    ("momentum", 1.0, r"config.momentum must be in \[0, 1\)"),
    ("checkpoint_every", -4, r"config.checkpoint_every must be >= 0"),
    ("train_size", 0, r"config.train_size must be > 0"),
    ("model", "nope", "unknown model 'nope'"),
    ("loss", "hinge2", "unknown loss"),
    ("optimizer", "lbfgs", "unknown optimizer 'lbfgs'; known: sgd, adam"),
    ("schedule", "step", "unknown schedule 'step'"),
    ("regularizers", (("l7", 1.0),), "unknown regularizer 'l7'"),
    ("regularizers", (("weight_decay", float("inf")),), "weight of regularizer 'weight_decay' must be finite"),
    ("regularizers", (("weight_decay",),), r"regularizers\[0\] must be \(name, weight\)"),
])
def test_bad_config_is_refused_before_training(mnist_small, field, value, message):
    (xtr, ytr), _ = mnist_small
    cfg = _small_config(epochs=1).replace(**{field: value})
    with pytest.raises(ValueError, match=message):
        train.fit(cfg, (xtr, ytr))


def test_config_replace_rejects_unknown_fields():
    with pytest.raises(ValueError, match="no field"):
        train.TrainConfig().replace(learningrate=0.1)


def test_config_json_round_trip_and_wrong_types():
    cfg = train.TrainConfig(model="mlp", model_config={"widths": (8, 4)}, regularizers=(("weight_decay", 1e-4),),
                            train_size=100)
    assert train.TrainConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    assert train.TrainConfig.from_json({"learning_rate": 1}).learning_rate == 1    # an int is a JSON number
    for d, message in (({"epochs": "10"}, "'epochs' must be int, got str '10'"),
                       ({"learning_rate": "0.1"}, "'learning_rate' must be float, got str"),
                       ({"progress": 1}, "'progress' must be bool, got int"),
                       ({"epochs": True}, "'epochs' must be int, got bool"),
                       ({"train_size": 1.5}, "'train_size' must be int or null"),
                       ({"model_config": [8]}, "'model_config' must be dict"),
                       ({"regularizers": ["weight_decay"]}, "'regularizers' must be a list of"),
                       ({"lr": 0.1}, r"no field\(s\) \['lr'\]"),
                       ([("epochs", 1)], "JSON must be an object, got list")):
        with pytest.raises(ValueError, match=message):
            train.TrainConfig.from_json(d)


def test_divergence_stops_at_the_first_non_finite_step(mnist_small, tmp_path):
    """A learning rate that passes validation but overflows: FloatingPointError naming the step, and no
    checkpoint of non-finite parameters."""
    (xtr, ytr), _ = mnist_small
    cfg = _small_config(epochs=2, learning_rate=1e30, momentum=0.0, regularizers=(), checkpoint_every=1,
                        model_config={"widths": (16,), "act": "relu"})
    with pytest.raises(FloatingPointError, match=r"non-finite loss or parameters at step (\d+) \(epoch 1\)") as e:
        train.fit(cfg, (xtr, ytr), None, tmp_path)
    bad_step = int(e.value.args[0].split("step ")[1].split()[0])
    assert 1 <= bad_step <= 10, e.value
    saved = [s for s, _ in checkpoint.manifests(tmp_path)]
    assert all(s < bad_step for s in saved), (saved, bad_step)
    if saved:
        state = train.load_run(tmp_path)[0]
        assert all(bool(np.all(np.isfinite(np.asarray(a)))) for a in jax.tree.leaves(state.params))


def test_evaluate_empty_and_padded(mnist_small):
    (xtr, ytr), (xte, yte) = mnist_small
    state = train.fit(_small_config(epochs=1), (xtr, ytr))
    for bad in (np.full(4, 10), np.full(4, -1)):
        with pytest.raises(ValueError, match=r"y must lie in \[0, 10\)"):
            train.evaluate(state, xte[:4], bad)
    with pytest.raises(ValueError, match=r"the model fails on x of example shape \(27, 28, 1\)"):
        train.evaluate(state, xte[:4, 1:], yte[:4])
    ev = train.evaluate(state, xte[:0], yte[:0])
    assert np.isnan(ev["loss"]) and np.isnan(ev["accuracy"])
    f = state.logits_fn()
    logits = np.asarray(f(xte[:37]))
    ref_loss = np.mean(np.asarray(losses.get("cross_entropy")(logits=logits, labels=yte[:37])))
    ev = train.evaluate(state, xte[:37], yte[:37], batch_size=16)       # 3 batches, the last padded
    np.testing.assert_allclose(ev["loss"], ref_loss, rtol=1e-5)
    assert ev["accuracy"] == np.mean(logits.argmax(-1) == yte[:37])


def test_states_of_equal_models_share_eval_and_attack_programs():
    """apply_fn is `models.Apply(model)`: the logits_fns of two runs' states of separately built equal models (other
    weights) share an attack program, and each uses its own weights."""
    import importlib
    from robustjax import models
    deepfool = importlib.import_module("robustjax.attacks.deepfool")
    config = _small_config(epochs=1)
    x = jax.random.uniform(jax.random.key(3), (4, 28, 28, 1))
    y = np.zeros(4, np.int64)
    core = deepfool._deepfool.jitted
    n_attack = core._cache_size()
    for seed in range(2):
        model = train.build_model(config, 10)
        state = train.create_train_state(jax.random.key(seed), config, model, (28, 28, 1), 10)
        assert state.apply_fn == models.Apply(train.build_model(config, 10))
        f = state.logits_fn()
        np.testing.assert_allclose(f(x), model.apply(state.variables(), x), rtol=1e-6)
        labels = np.asarray(jnp.argmax(f(x), -1))
        r = deepfool.deepfool(f, x, labels, p=2)
        ref = deepfool.deepfool(lambda z, m=model, v=state.variables(): m.apply(v, z), x, labels, p=2)
        np.testing.assert_allclose(r.distance, ref.distance, rtol=1e-5)
    assert core._cache_size() - n_attack == 1 + 2          # one for both states, one per closure


def test_piecewise_schedule():
    s = train.piecewise_schedule(0.2, 100)
    vals = [float(s(t)) for t in (0, 71, 72, 87, 88, 99)]
    np.testing.assert_allclose(vals, [0.2, 0.2, 0.02, 0.02, 0.002, 0.002], rtol=1e-6)


def test_losses_against_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 3))
    labels = np.array([0, 2, 1, 1])
    onehot = np.eye(3)[labels]
    lse = np.log(np.exp(logits).sum(-1))
    np.testing.assert_allclose(losses.get("cross_entropy")(logits=jnp.asarray(logits), labels=labels),
                               lse - logits[np.arange(4), labels], rtol=1e-5)
    np.testing.assert_allclose(losses.get("squared")(logits=jnp.asarray(logits), labels=labels),
                               ((logits - onehot) ** 2).sum(-1), rtol=1e-5)
    r = np.abs(logits - onehot)
    hub = np.where(r <= 1, 0.5 * r ** 2, r - 0.5).sum(-1)
    np.testing.assert_allclose(losses.get("huber")(logits=jnp.asarray(logits), labels=labels), hub, rtol=1e-5)


def test_weight_decay_term():
    params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((2,))}}
    t = regularizers.weight_decay(0.1)
    assert float(t(params, None, None, apply_fn=None, key=jax.random.key(0))) == pytest.approx(0.1 * 0.5 * 6)
    t_all = regularizers.weight_decay(0.1, include_biases=True)
    assert float(t_all(params, None, None, apply_fn=None, key=jax.random.key(0))) == pytest.approx(0.1 * 0.5 * 8)


def test_regularizer_sees_model_and_batch(mnist_small):
    """The hook passes the batch and a logits function that differentiates through the model."""
    (xtr, ytr), _ = mnist_small
    seen = {}

    def term(params, x, y, *, apply_fn, key):
        seen["shapes"] = (x.shape, y.shape)
        return 1e-3 * jnp.mean(apply_fn(params, x) ** 2)
    cfg = _small_config(epochs=1, regularizers=())
    state = train.fit(cfg, (xtr, ytr), regularizer=term)
    assert seen["shapes"] == ((64, 28, 28, 1), (64,))
    assert int(state.step) == 10
