"""Data-parallel training and sharded evaluation: identical numbers on one and on four devices.

The checks need 4 devices, which XLA only creates at start-up
(XLA_FLAGS=--xla_force_host_platform_device_count=4); `test_on_four_cpu_devices` reruns this file in
such a subprocess. Run directly with that flag, the device tests run in-process.
"""
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from robustjax import parallel, train

FOUR = jax.device_count() >= 4
needs_four = pytest.mark.skipif(not FOUR, reason="needs 4 devices (runs in the subprocess of test_on_four_cpu_devices)")


@pytest.mark.skipif(FOUR or os.environ.get("ROBUSTJAX_PARALLEL_CHILD") == "1", reason="already multi-device")
def test_on_four_cpu_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               ROBUSTJAX_PARALLEL_CHILD="1")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__))],
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    import re
    passed = re.search(r"(\d+) passed", out.stdout)
    assert passed and int(passed.group(1)) >= 3, out.stdout[-2000:]


def _assert_close(a, b, rtol=2e-5, atol=1e-6):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


@needs_four
def test_data_parallel_training_matches_one_device(mnist_small):
    (xtr, ytr), _ = mnist_small
    cfg = train.TrainConfig(model="mlp", model_config={"widths": (32,), "act": "tanh", "dropout_hidden": 0.3},
                            optimizer="adam", learning_rate=1e-3, schedule="constant", epochs=2, batch_size=64,
                            train_size=2048, progress=False, regularizers=(("weight_decay", 1e-4),))
    one = train.fit(cfg, (xtr, ytr), mesh=parallel.data_mesh(jax.devices()[:1]))
    four = train.fit(cfg, (xtr, ytr), mesh=parallel.data_mesh())
    four_fsdp = train.fit(cfg, (xtr, ytr), mesh=parallel.data_mesh(), shard_params_min_size=1000)
    assert four_fsdp.params["dense_0"]["kernel"].sharding.spec[0] == parallel.DATA
    assert len(four.params["dense_0"]["kernel"].sharding.device_set) == 4
    _assert_close(one.params, four.params)
    _assert_close(one.params, four_fsdp.params)


@needs_four
def test_sharded_call_trims_padding(mnist_small):
    """A batched method run sharded over 4 devices on 10 rows (padded to 12) equals the plain call."""
    from robustjax import models
    model = models.build("mlp", widths=(16,))
    logits_fn = models.logits_fn(model, models.init(model, jax.random.key(0), (1, 28, 28, 1)))
    _, (xte, yte) = mnist_small
    x, y = xte[:10], yte[:10]

    def margin_method(logits_fn, x, labels, *, scale):
        z = logits_fn(x)
        top = jax.numpy.take_along_axis(z, labels[:, None], 1)[:, 0]
        return {"margin": scale * (top - jax.numpy.max(jax.numpy.where(
            jax.nn.one_hot(labels, z.shape[1]) > 0, -jax.numpy.inf, z), -1))}
    mesh = parallel.data_mesh()
    a = margin_method(logits_fn, x, y, scale=2.0)
    b = parallel.sharded_call(margin_method, mesh, logits_fn, x, y, scale=2.0)
    assert b["margin"].shape == (10,)
    np.testing.assert_allclose(np.asarray(a["margin"]), b["margin"], rtol=1e-5, atol=1e-6)


def _square(v):
    return v * v


@pytest.mark.skipif(os.environ.get("ROBUSTJAX_PARALLEL_CHILD") == "1", reason="checked in the parent")
def test_process_map_keeps_order():
    assert parallel.process_map(_square, range(7), processes=2) == [i * i for i in range(7)]
    assert parallel.process_map(_square, [3], processes=4) == [9]


@pytest.mark.skipif(os.environ.get("ROBUSTJAX_PARALLEL_CHILD") == "1", reason="checked in the parent")
def test_map_rows_chunks_a_closure_over_workers():
    """A closure (cloudpickled) over 2 workers and 3 chunks: the rows come back in order and concatenated,
    tuples stay tuples, and each chunk ran in a worker (its pid differs from ours)."""
    scale = np.float64(3.0)

    def fn(a, b):
        return a * scale + b, np.full(len(a), os.getpid())
    a, b = np.arange(7.0), np.linspace(0.0, 1.0, 7)
    out, pids = parallel.map_rows(fn, (a, b), processes=2, chunks=3)
    np.testing.assert_array_equal(out, a * 3.0 + b)
    assert len(pids) == 7 and not np.any(pids == os.getpid())
    inline, _ = parallel.map_rows(fn, (a, b), processes=1)
    np.testing.assert_array_equal(inline, out)
    with pytest.raises(ValueError, match=r"rows\[1\] has shape \(2,\), expected 7 rows"):
        parallel.map_rows(fn, (a, b[:2]), processes=2)
    with pytest.raises(ValueError, match=r"one row per input row \(7\); got shape \(3,\)"):
        parallel.map_rows(lambda v: v.sum(keepdims=True), [a], processes=2, chunks=3)
    with pytest.raises(ValueError, match=r"one row per input row \(7\); got shape \(1,\)"):
        parallel.map_rows(lambda v: v.sum(keepdims=True), [a], processes=1)
    for kw, message in ((dict(processes=-2), "processes must be > 0"), (dict(processes=2.5), "processes must be an"),
                        (dict(chunks=0), "chunks must be > 0")):
        with pytest.raises(ValueError, match=message):
            parallel.map_rows(fn, (a, b), **kw)
    with pytest.raises(ValueError, match="rows must be a list or tuple"):
        parallel.map_rows(fn, a, processes=1)


def test_trim_cuts_every_batch_array_info_included():
    """sharded_call's trim cuts arrays whose leading size is the padded batch (info entries too), and only them."""
    from robustjax.attacks import AttackResult
    r = AttackResult(x_adv=np.zeros((4, 2)), distance=np.zeros(4), success=np.zeros(4, bool),
                     label_adv=np.zeros(4, int), model_calls=np.zeros(4, int), time_s=np.zeros(4), p=None,
                     method="m", info={"angle": np.zeros(4), "shift": np.zeros((4, 2)), "grid": np.zeros((5, 3))})
    t = parallel._trim(r, 3, 4)
    assert t.x_adv.shape == (3, 2) and t.distance.shape == (3,) and t.p is None and t.method == "m"
    assert t.info["angle"].shape == (3,) and t.info["shift"].shape == (3, 2) and t.info["grid"].shape == (5, 3)
    with pytest.raises(ValueError, match=r"x has \(3,\) rows but labels \(4,\)"):
        parallel.sharded_call(lambda f, x, y: None, parallel.data_mesh(), None, np.zeros((3, 2)), np.zeros(4, int))
    with pytest.raises(ValueError, match="mesh must be a jax.sharding.Mesh"):
        parallel.sharded_call(lambda f, x, y: None, None, None, np.zeros((3, 2)), np.zeros(3, int))


def test_shard_batch_refuses_uneven(mnist_small):
    mesh = parallel.data_mesh()
    n = mesh.shape[parallel.DATA]
    if n == 1:
        pytest.skip("one device divides everything")
    with pytest.raises(ValueError, match="does not divide"):
        parallel.shard_batch(mesh, np.zeros((n + 1, 3)))


@needs_four
@pytest.mark.parametrize("name", ["deepfool_l2", "pgd_linf", "pgd_l1", "cw_l2"])
def test_sharded_attacks_match_one_device(name, relu_mlp_mnist, mnist_small):
    """Batched attacks on 12 points: the same key gives the same result on one and on four devices."""
    from robustjax import attacks
    _, (xte, yte) = mnist_small
    x, y = xte[:12], yte[:12]
    calls = {
        "deepfool_l2": (attacks.deepfool, dict(p=2)),
        "deepfool_linf": (attacks.deepfool, dict(p=np.inf)),
        "pgd_linf": (attacks.pgd, dict(p=np.inf, eps=0.1, steps=20)),
        "pgd_l1": (attacks.pgd, dict(p=1, eps=8.0, steps=20)),
        "cw_l2": (attacks.cw, dict(p=2, steps=40, binary_search_steps=3)),
        "ddn_l2": (attacks.ddn, dict(p=2, steps=30)),
    }
    fn, kw = calls[name]
    key = jax.random.key(7)
    one = parallel.sharded_call(fn, parallel.data_mesh(jax.devices()[:1]), relu_mlp_mnist.logits_fn, x, y, key=key, **kw)
    four = parallel.sharded_call(fn, parallel.data_mesh(), relu_mlp_mnist.logits_fn, x, y, key=key, **kw)
    np.testing.assert_array_equal(one.success, four.success)
    np.testing.assert_allclose(one.distance, four.distance, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(one.label_adv, four.label_adv)


@pytest.mark.skipif(os.environ.get("ROBUSTJAX_PARALLEL_CHILD") == "1", reason="checked in the parent")
def test_milp_over_a_process_pool_equals_inline():
    from robustjax import verify
    rng = np.random.default_rng(0)
    layers = [verify.Flatten(), verify.Dense(rng.normal(size=(6, 8)), rng.normal(size=8)), verify.ReLU(),
              verify.Dense(rng.normal(size=(8, 3)), rng.normal(size=3))]
    x = rng.uniform(size=(4, 6))
    labels = np.argmax(verify.forward(layers, x), -1)
    inline = verify.min_adversarial_milp_batch(layers, x, labels, processes=1, p=np.inf, time_limit=30)
    pooled = verify.min_adversarial_milp_batch(layers, x, labels, processes=2, p=np.inf, time_limit=30)
    assert [r.status for r in pooled] == [r.status for r in inline]
    np.testing.assert_allclose([r.distance for r in pooled], [r.distance for r in inline], rtol=1e-6)
    assert all(r.status == "optimal" for r in inline)


@needs_four
def test_sharded_certificate_matches_one_device(softplus_1hl_mnist, mnist_small):
    from robustjax import certify
    _, (xte, yte) = mnist_small
    w = softplus_1hl_mnist.model.weights(softplus_1hl_mnist.variables)
    one = certify.certified_radius(w, xte[:20], yte[:20])
    four = parallel.sharded_call(certify.certified_radius, parallel.data_mesh(), w, xte[:20], yte[:20])
    np.testing.assert_allclose(one.radius, four.radius, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(one.misclassified, four.misclassified)
