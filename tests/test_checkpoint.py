"""Checkpoints: damaged, missing or truncated bytes are caught and fall back (or fail naming the path), the
previous checkpoint survives until the new one verifies, a run folder has one writer, and fit refuses a
changed config and keeps its metrics honest across a resume."""
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

from _nets import assert_same_tree

from robustjax import checkpoint, train
from robustjax.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]


def _blob(step: int) -> bytes:
    return np.random.default_rng(step).bytes(4096)


def _two(tmp_path):
    checkpoint.save(tmp_path, 10, _blob(10), {"lr": 0.1})
    checkpoint.save(tmp_path, 20, _blob(20), {"lr": 0.1})
    return tmp_path / "ckpt-20.msgpack"


def test_save_restore_round_trip_keeps_two(tmp_path):
    for s in (5, 10, 15, 20):
        checkpoint.save(tmp_path, s, _blob(s), {"step": s, "nested": [1, {"a": 2.5}]})
    assert [s for s, _ in checkpoint.manifests(tmp_path)] == [20, 15]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-15.json", "ckpt-15.msgpack",
                                                          "ckpt-20.json", "ckpt-20.msgpack"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ckpt = checkpoint.restore(tmp_path)
    assert (ckpt.step, ckpt.data, ckpt.meta) == (20, _blob(20), {"step": 20, "nested": [1, {"a": 2.5}]})
    assert checkpoint.restore(tmp_path / "empty") is None
    for step in ("abc", -1, 2.0, True):
        with pytest.raises(ValueError, match="step must be an int >= 0"):
            checkpoint.save(tmp_path / "bad", step, b"", {})
    with pytest.raises(ValueError, match="meta must be JSON-serializable"):
        checkpoint.save(tmp_path / "bad", 3, b"", {"x": object()})
    assert not (tmp_path / "bad").exists()               # refused before anything is written


@pytest.mark.parametrize("damage", ["flip", "delete", "truncate", "manifest", "meta"])
def test_damaged_latest_falls_back_with_a_warning(tmp_path, damage):
    latest = _two(tmp_path)
    if damage == "flip":                                            # 64 flipped bytes in the middle
        b = bytearray(latest.read_bytes())
        b[1000:1064] = bytes(x ^ 0xFF for x in b[1000:1064])
        latest.write_bytes(bytes(b))
    elif damage == "delete":
        latest.unlink()
    elif damage == "truncate":
        latest.write_bytes(latest.read_bytes()[:3000])
    elif damage == "manifest":
        (tmp_path / "ckpt-20.json").write_text('{"step": 20, "fi')
    else:                                                           # metadata edited, still valid JSON
        m = json.loads((tmp_path / "ckpt-20.json").read_text())
        m["meta"]["lr"] = 10.0
        (tmp_path / "ckpt-20.json").write_text(json.dumps(m))
    with pytest.warns(UserWarning, match=r"ckpt-20\.(msgpack|json).*falling back to the previous checkpoint, step 10"):
        ckpt = checkpoint.restore(tmp_path)
    assert (ckpt.step, ckpt.data, ckpt.meta) == (10, _blob(10), {"lr": 0.1})


def test_no_trusted_checkpoint_fails_naming_every_path(tmp_path):
    latest = _two(tmp_path)
    latest.write_bytes(latest.read_bytes()[:100])
    (tmp_path / "ckpt-10.msgpack").unlink()
    with pytest.raises(CheckpointError, match=r"ckpt-20\.msgpack has 100 bytes.*ckpt-10\.msgpack is missing"):
        checkpoint.restore(tmp_path)


def test_previous_checkpoint_kept_until_the_new_one_verifies(tmp_path, monkeypatch):
    _two(tmp_path)
    real_verify = checkpoint.verify

    def broken(manifest):
        if Path(manifest).name == "ckpt-30.json":
            raise CheckpointError("disk returned other bytes")
        return real_verify(manifest)
    monkeypatch.setattr(checkpoint, "verify", broken)
    with pytest.raises(CheckpointError, match="other bytes"):
        checkpoint.save(tmp_path, 30, _blob(30), {})
    monkeypatch.undo()
    assert [s for s, _ in checkpoint.manifests(tmp_path)] == [30, 20, 10]     # nothing removed
    checkpoint.save(tmp_path, 40, _blob(40), {})
    assert [s for s, _ in checkpoint.manifests(tmp_path)] == [40, 30]


def test_save_drops_checkpoints_of_an_abandoned_later_step(tmp_path):
    """After a fallback from a damaged step 20 to step 10, the next save (step 14) removes step 20."""
    latest = _two(tmp_path)
    latest.write_bytes(b"garbage")
    with pytest.warns(UserWarning):
        assert checkpoint.restore(tmp_path).step == 10
    checkpoint.save(tmp_path, 14, _blob(14), {})
    assert [s for s, _ in checkpoint.manifests(tmp_path)] == [14, 10]


def test_second_writer_fails_at_once(tmp_path):
    with checkpoint.RunLock(tmp_path):
        in_use = re.escape(f"run folder {tmp_path} is in use by another process (pid {os.getpid()})")
        with pytest.raises(RuntimeError, match=in_use):
            checkpoint.RunLock(tmp_path).acquire()
        code = ("import sys; from robustjax import checkpoint\n"
                "try:\n    checkpoint.RunLock(sys.argv[1]).acquire()\n"
                "except RuntimeError as e:\n    print(e); sys.exit(3)\n")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 3 and f"pid {os.getpid()}" in out.stdout, (out.stdout, out.stderr)
    with checkpoint.RunLock(tmp_path):                              # released on exit
        pass


# ----------------------------------------------------------------------------- through fit


def _config(**kw):
    base = dict(model="mlp", model_config={"widths": (8,), "act": "tanh", "dropout_hidden": 0.1},
                optimizer="sgd", momentum=0.9, learning_rate=0.05, epochs=2, batch_size=64, train_size=640,
                checkpoint_every=3, progress=False)
    base.update(kw)
    return train.TrainConfig(**base)



def test_fit_refuses_a_changed_config_unless_asked(mnist_small, tmp_path):
    (xtr, ytr), _ = mnist_small
    cfg = _config()
    train.fit(cfg, (xtr, ytr), None, tmp_path, stop_after_steps=5)
    with pytest.raises(ValueError, match=r"step 5.*learning_rate: 0\.05 -> 5\.0.*resume='allow_changed'"):
        train.fit(cfg.replace(learning_rate=5.0), (xtr, ytr), None, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["learning_rate"] == 0.05
    train.fit(cfg.replace(progress=True, checkpoint_every=4), (xtr, ytr), None, tmp_path, stop_after_steps=7)
    with pytest.warns(UserWarning, match=r"changed config: learning_rate: 0\.05 -> 0\.01"):
        state = train.fit(cfg.replace(learning_rate=0.01), (xtr, ytr), None, tmp_path, resume="allow_changed")
    assert int(state.step) == 20
    assert train.load_run(tmp_path)[2].learning_rate == 0.01


def test_fit_on_a_locked_folder_fails_at_once(mnist_small, tmp_path):
    (xtr, ytr), _ = mnist_small
    with checkpoint.RunLock(tmp_path):
        with pytest.raises(RuntimeError, match="is in use by another process"):
            train.fit(_config(), (xtr, ytr), None, tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_fit_with_a_damaged_latest_checkpoint_resumes_from_the_previous(mnist_small, tmp_path):
    """Flipped bytes in the newest checkpoint: a warning, and training redone from the previous one ends
    bit-exact with an uninterrupted run, with the same metrics."""
    (xtr, ytr), _ = mnist_small
    cfg = _config()
    full = train.fit(cfg, (xtr, ytr), None, tmp_path / "full")
    run = tmp_path / "run"
    train.fit(cfg, (xtr, ytr), None, run, stop_after_steps=14)     # checkpoints at 12 and 14
    assert [s for s, _ in checkpoint.manifests(run)] == [14, 12]
    latest = run / "ckpt-14.msgpack"
    b = bytearray(latest.read_bytes())
    b[len(b) // 2:len(b) // 2 + 64] = bytes(64)
    latest.write_bytes(bytes(b))
    with pytest.warns(UserWarning, match=r"ckpt-14\.msgpack.*falling back.*step 12"):
        resumed = train.fit(cfg, (xtr, ytr), None, run)
    assert_same_tree(full.params, resumed.params)
    logs = [[{k: v for k, v in json.loads(line).items() if k != "time_s"}
             for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (tmp_path / "full", run)]
    assert logs[0] == logs[1] and len(logs[0]) == 2


def test_fit_drops_metrics_records_it_will_redo(mnist_small, tmp_path):
    """A kill between an epoch's metrics record and its checkpoint: the resumed run redoes that epoch and
    metrics.jsonl holds it once, plus a torn last line from a kill mid-append."""
    (xtr, ytr), _ = mnist_small
    cfg = _config(checkpoint_every=0)
    train.fit(cfg, (xtr, ytr), None, tmp_path, stop_after_steps=10)
    for _, p in checkpoint.manifests(tmp_path):
        p.unlink()                                                  # as if killed before the first save
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "st')
    with pytest.warns(UserWarning, match=r"dropping 2 record\(s\) after step 0"):
        train.fit(cfg, (xtr, ytr), None, tmp_path)
    assert [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_fit_refuses_an_old_unverifiable_checkpoint(mnist_small, tmp_path):
    (xtr, ytr), _ = mnist_small
    (tmp_path / "checkpoint.msgpack").write_bytes(b"\x85")
    with pytest.raises(CheckpointError, match="old format without a checksum"):
        train.fit(_config(), (xtr, ytr), None, tmp_path)
