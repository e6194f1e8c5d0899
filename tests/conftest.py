"""Shared, session-scoped fixtures: small real-data subsets and small trained MNIST nets, trained once
per test session so that many test files can attack or certify them cheaply."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import numpy as np
import pytest

# JAX's persistent compilation cache, shared by the xdist workers and every process a test starts (region
# attack pools, notebook kernels, the multi-device child: they read the environment): each program compiles
# once per run, not per process and per module (`_release_compiled_programs`). Inside the checkout, so a fresh
# clone starts empty.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                  int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))

# XLA's CPU backend tuned for compiling fast: the suite compiles over a thousand small programs and runs most of them
# a few times, so code generation costs more than it saves. Optimization level 0 and the classic (not the MLIR
# fusion-emitter) code generator: a first region-attack call 5.8 s -> 3.7 s, XLA's compile time 6.6 s -> 2.8 s
# against level 0 alone, the same distances. No fast math either way; ROBUSTJAX_TEST_XLA_OPT=default runs the suite with
# XLA's defaults.
os.environ.setdefault("ROBUSTJAX_XLA_FLAGS_GIVEN", os.environ.get("XLA_FLAGS", ""))  # xdist workers inherit it
_FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
if os.environ.get("ROBUSTJAX_TEST_XLA_OPT") != "default":
    _flags = os.environ.get("XLA_FLAGS", "").split()
    _named = {f.split("=")[0] for f in _flags}                   # a flag the caller set keeps its value
    os.environ["XLA_FLAGS"] = " ".join(_flags + [f for f in _FAST_COMPILE if f.split("=")[0] not in _named])

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "ROBUSTJAX_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["ROBUSTJAX_DATA"] = str(SHARED_DATA)


class Trained(NamedTuple):
    model: object
    variables: dict
    logits_fn: Callable
    test_accuracy: float


@pytest.fixture(scope="session")
def mnist_small():
    """(x_train[:10000], y_train[:10000]), (x_test[:1000], y_test[:1000]) of real MNIST."""
    from robustjax.data import load
    xtr, ytr = load("mnist", "train")
    xte, yte = load("mnist", "test")
    return (xtr[:10000], ytr[:10000]), (xte[:1000], yte[:1000])


def _train(cfg, data) -> Trained:
    from robustjax import train
    (xtr, ytr), (xte, yte) = data
    state = train.fit(cfg, (xtr, ytr), (xte, yte))
    acc = train.evaluate(state, xte, yte)["accuracy"]
    model = train.build_model(cfg, 10)
    return Trained(model, state.variables(), state.logits_fn(), acc)


@pytest.fixture(scope="session")
def relu_mlp_mnist(mnist_small) -> Trained:
    """784-64-10 ReLU MLP, Adam, 4 epochs on 10k MNIST images (about 92 % test accuracy, 3 s)."""
    from robustjax import train
    cfg = train.TrainConfig(model="mlp", model_config={"widths": (64,), "act": "relu"}, optimizer="adam",
                            learning_rate=3e-3, schedule="piecewise", epochs=4, progress=False)
    return _train(cfg, mnist_small)


@pytest.fixture(scope="session")
def softplus_1hl_mnist(mnist_small) -> Trained:
    """One-hidden-layer net as in the cross-Lipschitz paper but 128 units (no bias, softplus alpha=10),
    SGD with momentum 0.9, lr 0.05, 4 epochs on 10k MNIST images (about 91 % test accuracy, 2 s)."""
    from robustjax import train
    cfg = train.TrainConfig(model="one_hidden_layer", model_config={"hidden": 128}, momentum=0.9,
                            learning_rate=0.05, epochs=4, progress=False)
    return _train(cfg, mnist_small)


@pytest.fixture
def xla_as_given(monkeypatch):
    """XLA_FLAGS as the suite was started with (without its compile-speed flags) for the subprocesses this test
    starts: the notebook kernels, whose numbers are compared with outputs built with those flags."""
    monkeypatch.setenv("XLA_FLAGS", os.environ["ROBUSTJAX_XLA_FLAGS_GIVEN"])


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drops JAX's compiled programs after each test module: one process runs a whole share of the suite, and
    with programs piling up over hundreds of tests XLA's compiler segfaulted in a late module (twice, the last
    time with 5 GB resident). Each CPU executable holds its own memory mappings, and a process may have at
    most vm.max_map_count (65530) of them (jax-ml/jax#27201): test_standard_attacks, test_lp and test_certify
    end at 5,600, 7,900 and 13,200 mappings, and each release brings the count back to about 900."""
    yield
    import gc
    jax.clear_caches()
    gc.collect()
