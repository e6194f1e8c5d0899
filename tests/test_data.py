"""Real-data checks (../shared/data/README.md), the tfds path without TensorFlow, the batch iterator."""
import hashlib
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from robustjax import data

SHARED = Path(os.environ.get("ROBUSTJAX_DATA", ""))
MNIST_SHA = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
CIFAR_SHA = {
    "x_train": "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
    "y_train": "2b7cd2f24487317614016b72ffd53071c3062f592f0eb300c18a770d41ae1253",
    "x_test": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
    "y_test": "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5",
}
needs_cifar = pytest.mark.skipif(not (SHARED / "cifar10.npz").is_file(),
                                 reason="cifar10.npz not found: set ROBUSTJAX_DATA to ../shared/data")


def test_embedded_mnist_is_the_real_one():
    import importlib.resources
    with importlib.resources.as_file(importlib.resources.files("robustjax.data") / "mnist.npz") as p:
        with np.load(p) as z:
            for k, h in MNIST_SHA.items():
                assert z[k].dtype == np.uint8
                assert hashlib.sha256(z[k].tobytes()).hexdigest() == h, k


def test_mnist_statistics(monkeypatch):
    monkeypatch.delenv("ROBUSTJAX_DATA", raising=False)  # the embedded copy
    xte, yte = data.load("mnist", "test")
    assert xte.shape == (10000, 28, 28, 1) and xte.dtype == np.float32 and yte.dtype == np.int32
    assert 0.0 <= xte.min() and xte.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(yte), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    assert abs(xte.mean(dtype=np.float64) - 0.1325) < 5e-5
    xtr, ytr = data.load("mnist", "train")
    np.testing.assert_array_equal(np.bincount(ytr), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    assert abs(xtr.mean(dtype=np.float64) - 0.1307) < 5e-5


@needs_cifar
def test_cifar10_statistics_and_checksums():
    with np.load(SHARED / "cifar10.npz") as z:
        for k, h in CIFAR_SHA.items():
            assert hashlib.sha256(z[k].tobytes()).hexdigest() == h, k
    xte, yte = data.load("cifar10", "test", data_dir=SHARED)
    assert xte.shape == (10000, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(yte), [1000] * 10)
    np.testing.assert_array_equal(yte[:10], [3, 8, 8, 0, 6, 6, 1, 6, 3, 1])
    np.testing.assert_allclose(xte.mean(axis=(0, 1, 2), dtype=np.float64), [0.4942, 0.4851, 0.4504], atol=5e-5)
    xtr, ytr = data.load("cifar10", "train", data_dir=SHARED)
    np.testing.assert_array_equal(ytr[:10], [6, 9, 9, 4, 1, 1, 2, 7, 8, 3])
    np.testing.assert_array_equal(np.bincount(ytr), [5000] * 10)
    np.testing.assert_allclose(xtr.mean(axis=(0, 1, 2), dtype=np.float64), [0.4914, 0.4822, 0.4465], atol=5e-5)


def test_tfds_path_without_tensorflow(tmp_path, monkeypatch):
    """Builds a small tfds data set from the npz with our builder, reads it back through
    tfds.data_source and through load(tfds_dir=...)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from robustjax.data import _tfds
    import importlib.resources
    with importlib.resources.as_file(importlib.resources.files("robustjax.data") / "mnist.npz") as npz:
        _tfds.prepare_tfds("mnist", npz, tmp_path, limit=200)
        with np.load(npz) as z:
            x_ref, y_ref = z["x_test"][:200], z["y_test"][:200]
    src = tfds.data_source("mnist_npz", split="test", data_dir=str(tmp_path), download=False)
    assert len(src) == 200
    assert int(src[5]["label"]) == y_ref[5]
    np.testing.assert_array_equal(np.asarray(src[5]["image"])[..., 0], x_ref[5])
    from robustjax.data._load import _from_tfds
    x, y = _from_tfds("mnist", "test", str(tmp_path), allow_tfds_load=False)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_allclose(x[..., 0], x_ref / 255.0, atol=1e-7)
    # load() reaches tfds when no folder has the npz (cifar10 is not embedded)
    _tfds.prepare_tfds("cifar10", _tiny_cifar_npz(tmp_path), tmp_path)
    monkeypatch.delenv("ROBUSTJAX_DATA", raising=False)
    xc, yc = data.load("cifar10", "test", tfds_dir=tmp_path)
    assert xc.shape == (7, 32, 32, 3) and list(yc) == list(range(7))


def _tiny_cifar_npz(folder):
    rng = np.random.default_rng(0)
    path = folder / "tiny_cifar.npz"
    np.savez(path, x_train=rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8), y_train=np.arange(5),
             x_test=rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8), y_test=np.arange(7))
    return path


def test_missing_data_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTJAX_DATA", str(tmp_path))
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    with pytest.raises(data.DataNotFoundError) as e:
        data.load("cifar10", "test")
    msg = str(e.value)
    assert str(tmp_path / "cifar10.npz") in msg and "ROBUSTJAX_DATA" in msg and "tensorflow-datasets" in msg


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="unknown split"):
        data.load("mnist", "validation")


def test_explicit_folder_takes_precedence(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "mnist.npz", x_train=rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
             y_train=np.array([0, 1, 2, 3]), x_test=rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
             y_test=np.array([9, 8, 7]))
    x, y = data.load("mnist", "test", data_dir=tmp_path)
    assert x.shape == (3, 28, 28, 1) and list(y) == [9, 8, 7]


def test_a_data_dir_that_is_not_a_folder_is_named(tmp_path, monkeypatch):
    (tmp_path / "file.npz").write_bytes(b"")
    for bad, what in ((tmp_path / "file.npz", "a file"), (tmp_path / "missing", "no such folder")):
        with pytest.raises(ValueError, match=f"data_dir must be a folder .*{what}"):
            data.load("mnist", "test", data_dir=bad)     # never the embedded copy instead
    monkeypatch.setenv("ROBUSTJAX_DATA", str(tmp_path / "missing"))
    with pytest.warns(UserWarning, match=r"\$ROBUSTJAX_DATA is not a folder .*no such folder"):
        x, _ = data.load("mnist", "test")               # the variable only warns; the embedded copy is read
    assert x.shape == (10000, 28, 28, 1)


def test_bad_labels_in_file(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.array([0, 10]),
             x_train=np.zeros((1, 28, 28), np.uint8), y_train=np.array([0]))
    with pytest.raises(ValueError, match=r"mnist.npz: mnist: labels outside \[0, 10\): found min 0, max 10"):
        data.load("mnist", "test", data_dir=tmp_path)


def test_batches_are_a_keyed_permutation():
    x = np.arange(10)[:, None].astype(np.float32)
    y = np.arange(10).astype(np.int32)
    a = [yb for _, yb in data.batches(jax.random.key(3), x, y, 4)]
    b = [yb for _, yb in data.batches(jax.random.key(3), x, y, 4)]
    c = [yb for _, yb in data.batches(jax.random.key(4), x, y, 4)]
    assert len(a) == 2 and all(len(v) == 4 for v in a)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))
    full = np.concatenate([yb for _, yb in data.batches(jax.random.key(3), x, y, 4, drop_remainder=False)])
    assert sorted(full) == list(range(10))
    for xb, yb in data.batches(jax.random.key(3), x, y, 3):
        np.testing.assert_array_equal(xb[:, 0], yb)


def _write_idx(path, arr):
    import gzip
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_folder(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    imgs = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", imgs)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 4, 9]))
    x, y = data.load("fashion_mnist", "test", data_dir=tmp_path)
    assert x.shape == (6, 28, 28, 1) and list(y) == [0, 1, 2, 3, 4, 9]
    np.testing.assert_allclose(x[..., 0], imgs / 255.0, atol=1e-7)
    (folder / "bad-idx").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x05")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        data.read_idx(folder / "bad-idx")


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package(monkeypatch):
    monkeypatch.delenv("ROBUSTJAX_DATA", raising=False)
    x, y = data.load("fashion_mnist", "test")
    assert x.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(y), [1000] * 10)
    xtr, ytr = data.load("fashion_mnist", "train")
    np.testing.assert_array_equal(np.bincount(ytr), [6000] * 10)


def _good_npz(path, n=3):
    rng = np.random.default_rng(4)
    np.savez(path, x_train=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), y_train=np.arange(n),
             x_test=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), y_test=np.arange(n))


def test_corrupt_truncated_or_incomplete_npz_names_the_file(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"\x93NUMPY this is not an array")                     # corrupt header
    with pytest.raises(ValueError, match="not a readable .npz archive") as e:
        data.load("mnist", "test", data_dir=tmp_path)
    assert str(path) in str(e.value)
    path.write_bytes(b"no zip, no pickle, no magic")                        # numpy would try to unpickle it
    with pytest.raises(ValueError, match="not a readable .npz archive") as e:
        data.load("mnist", "test", data_dir=tmp_path)
    assert str(path) in str(e.value)
    _good_npz(path)
    whole = path.read_bytes()
    for cut in (len(whole) // 2, len(whole) - 30):                          # truncated mid-member, mid-directory
        path.write_bytes(whole[:cut])
        with pytest.raises(ValueError, match="not a readable .npz archive") as e:
            data.load("mnist", "test", data_dir=tmp_path)
        assert str(path) in str(e.value)
    np.savez(path, x_train=np.zeros((1, 28, 28), np.uint8), y_train=np.zeros(1), y_test=np.zeros(1))
    with pytest.raises(ValueError) as e:
        data.load("mnist", "test", data_dir=tmp_path)
    msg = str(e.value)
    assert str(path) in msg and "['x_test']" in msg and "found ['x_train', 'y_test', 'y_train']" in msg
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="a single .npy array"):
        data.read_npz(tmp_path / "single.npy", ("x_test",))


def test_wrong_shapes_in_file_name_the_file(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_test=np.zeros((2, 32, 32), np.uint8), y_test=np.array([0, 1]),
             x_train=np.zeros((1, 28, 28), np.uint8), y_train=np.array([0]))
    with pytest.raises(ValueError, match=r"mnist.npz: mnist: images have shape \(32, 32, 1\), expected \(28, 28, 1\)"):
        data.load("mnist", "test", data_dir=tmp_path)
    np.savez(tmp_path / "mnist.npz", x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.array([0, 1, 2]),
             x_train=np.zeros((1, 28, 28), np.uint8), y_train=np.array([0]))
    with pytest.raises(ValueError, match="mnist.npz: mnist: 2 images but 3 labels"):
        data.load("mnist", "test", data_dir=tmp_path)


def test_truncated_idx_names_the_file(tmp_path):
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((6, 28, 28)))
    raw = (folder / "t10k-images-idx3-ubyte.gz").read_bytes()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated gzip") as e:
        data.read_idx(folder / "t10k-images-idx3-ubyte.gz")
    assert str(folder / "t10k-images-idx3-ubyte.gz") in str(e.value)
    _write_idx(folder / "short-idx", np.zeros((6, 28, 28)))
    raw = __import__("gzip").decompress((folder / "short-idx").read_bytes())
    (folder / "short-idx").write_bytes(raw[:-10])
    with pytest.raises(ValueError, match=r"header says \(6, 28, 28\) but holds 4694 bytes"):
        data.read_idx(folder / "short-idx")
