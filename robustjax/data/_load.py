"""Loaders and batch iterator. See the package docstring for the order of sources."""
from __future__ import annotations

import importlib.resources
import os
import pickle
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

ENV_DATA_DIR = "ROBUSTJAX_DATA"


class DatasetInfo(NamedTuple):
    name: str
    shape: tuple[int, int, int]
    num_classes: int
    tfds_name: str
    train_size: int
    test_size: int


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", (28, 28, 1), 10, "mnist", 60000, 10000),
    "fashion_mnist": DatasetInfo("fashion_mnist", (28, 28, 1), 10, "fashion_mnist", 60000, 10000),
    "cifar10": DatasetInfo("cifar10", (32, 32, 3), 10, "cifar10", 50000, 10000),
}
SPLITS = ("train", "test")


class DataNotFoundError(FileNotFoundError):
    """Raised when no source holds the data set; the message lists every place looked at."""


def info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name]


def _finish(name: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    meta = info(name)
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[1:] != meta.shape:
        raise ValueError(f"{name}: images have shape {x.shape[1:]}, expected {meta.shape}")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    else:
        x = x.astype(np.float32)
        if x.size and (x.min() < 0 or x.max() > 1):
            x = x / np.float32(255.0)
    y = np.asarray(y).astype(np.int32).reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"{name}: {len(x)} images but {len(y)} labels")
    if y.size and (y.min() < 0 or y.max() >= meta.num_classes):
        raise ValueError(f"{name}: labels outside [0, {meta.num_classes}): found min {y.min()}, max {y.max()}")
    return x, y


IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SYSTEM_IDX_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist",  # Debian: dataset-fashion-mnist
                   "mnist": "/usr/share/datasets/mnist"}


def read_idx(path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, optionally gzipped) as a numpy array; ValueError naming the file
    when it is not one (or a truncated or corrupt gzip)."""
    import gzip
    path = Path(path)
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip file ({type(e).__name__}: {e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def _idx_pair(folder: Path, split: str):
    """(images, labels) paths in `folder` for `split`, or None."""
    found = []
    for stem in IDX_FILES[split]:
        hits = [folder / (stem + ext) for ext in ("", ".gz") if (folder / (stem + ext)).is_file()]
        if not hits:
            return None
        found.append(hits[0])
    return found


def read_npz(path, keys) -> dict[str, np.ndarray]:
    """The arrays `keys` of an .npz file. ValueError naming the file when it is not a readable npz
    (corrupt, truncated, pickled objects) or lacks one of the keys (the message lists the keys found)."""
    path = Path(path)
    broken = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, pickle.UnpicklingError)

    def unreadable(e):
        return ValueError(f"{path}: not a readable .npz archive (corrupt or truncated?): {type(e).__name__}: {e}")
    try:
        z = np.load(path, allow_pickle=False)
    except broken as e:
        raise unreadable(e) from None
    if not hasattr(z, "files"):
        raise ValueError(f"{path}: a single .npy array; expected an .npz archive holding {list(keys)}")
    with z:
        missing = [k for k in keys if k not in z.files]
        if missing:
            raise ValueError(f"{path}: no array(s) {missing}; expected {list(keys)}, found {sorted(z.files)}")
        try:
            return {k: z[k] for k in keys}
        except broken as e:
            raise unreadable(e) from None


def _from_npz(path: Path, name: str, split: str):
    z = read_npz(path, (f"x_{split}", f"y_{split}"))
    try:
        return _finish(name, z[f"x_{split}"], z[f"y_{split}"])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _from_tfds(name: str, split: str, tfds_dir: str | None, allow_tfds_load: bool):
    """Reads a prepared tfds data set. Returns None when it is not there; never downloads."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    from robustjax.data import _tfds  # noqa: F401 - registers the <name>_npz builders

    meta = info(name)
    src = None
    for tname in (f"{name}_npz", meta.tfds_name):
        try:
            src = tfds.data_source(tname, split=split, data_dir=tfds_dir, download=False)
            break
        except Exception:  # noqa: BLE001 - tfds raises assorted errors for "not prepared"
            continue
    if src is not None:
        n = len(src)
        xs = np.empty((n,) + meta.shape, np.uint8)
        ys = np.empty((n,), np.int64)
        for i, ex in enumerate(src.__getitems__(list(range(n)))):
            xs[i] = np.asarray(ex["image"]).reshape(meta.shape)
            ys[i] = int(ex["label"])
        return _finish(name, xs, ys)
    if allow_tfds_load:
        try:
            import tensorflow  # noqa: F401 - tfds.load needs it
        except ImportError:
            return None
        try:
            ds = tfds.load(meta.tfds_name, split=split, data_dir=tfds_dir, download=False,
                           batch_size=-1, as_supervised=True)
        except Exception:  # noqa: BLE001
            return None
        x, y = tfds.as_numpy(ds)
        return _finish(name, x, y)
    return None


def load(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None,
         tfds_dir: str | os.PathLike | None = None,
         allow_tfds_load: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Loads a whole split.

    Args:
      name: "mnist", "fashion_mnist" or "cifar10".
      split: "train" or "test".
      data_dir: folder of `<name>.npz` files; defaults to $ROBUSTJAX_DATA.
      tfds_dir: a prepared tensorflow-datasets data_dir; defaults to $TFDS_DATA_DIR.
      allow_tfds_load: also try `tfds.load` (needs TensorFlow; never downloads).

    Returns:
      images `[n, H, W, C]` float32 in [0, 1] and labels `[n]` int32.

    Raises:
      ValueError: unknown name or split; data_dir is not a folder (a $ROBUSTJAX_DATA that is not one only
        warns).
      DataNotFoundError: no source has the data; the message says where it looked.
    """
    meta = info(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {SPLITS}")
    looked = []
    folder = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR)
    if folder and not Path(folder).is_dir():
        what = f"{str(folder)!r}: {'a file' if Path(folder).exists() else 'no such folder'}"
        if data_dir is not None:
            raise ValueError(f"data_dir must be a folder (of <name>.npz files), got {what}")
        warnings.warn(f"${ENV_DATA_DIR} is not a folder ({what}); looking elsewhere", stacklevel=2)
    if folder:
        path = Path(folder) / f"{name}.npz"
        if path.is_file():
            return _from_npz(path, name, split)
        looked.append(f"{path} (from {'data_dir' if data_dir is not None else '$' + ENV_DATA_DIR})")
        idx = _idx_pair(Path(folder) / name, split)
        if idx is not None:
            return _finish(name, read_idx(idx[0]), read_idx(idx[1]))
        looked.append(f"{Path(folder) / name}/ (IDX files)")
    else:
        looked.append(f"no data_dir given and ${ENV_DATA_DIR} unset")
    embedded = importlib.resources.files("robustjax.data") / f"{name}.npz"
    if embedded.is_file():
        with importlib.resources.as_file(embedded) as p:
            return _from_npz(p, name, split)
    looked.append(f"package data robustjax/data/{name}.npz (only mnist is embedded)")
    if name in SYSTEM_IDX_DIRS:
        idx = _idx_pair(Path(SYSTEM_IDX_DIRS[name]), split)
        if idx is not None:
            return _finish(name, read_idx(idx[0]), read_idx(idx[1]))
        looked.append(f"{SYSTEM_IDX_DIRS[name]} (IDX files; Debian package dataset-{name.replace('_', '-')})")
    tdir = tfds_dir if tfds_dir is not None else os.environ.get("TFDS_DATA_DIR")
    if tdir is not None:
        out = _from_tfds(name, split, str(tdir), allow_tfds_load)
        if out is not None:
            return out
        looked.append(f"tensorflow-datasets data_dir {tdir} (no prepared {meta.tfds_name})")
    else:
        looked.append("tensorflow-datasets: no tfds_dir given and $TFDS_DATA_DIR unset")
    raise DataNotFoundError(
        f"data set {name!r} ({split}) not found. Looked in: " + "; ".join(looked) + ". "
        f"To get it: put {name}.npz (uint8 x_train, y_train, x_test, y_test) in a folder and set "
        f"${ENV_DATA_DIR} to it (this project's copies are in ../shared/data), or prepare it with "
        f"tensorflow-datasets on a machine with internet and pass tfds_dir.")


def load_split_pair(name: str, **kw):
    """(x_train, y_train), (x_test, y_test) of `load`."""
    return load(name, "train", **kw), load(name, "test", **kw)


def batches(key, x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool = True,
            drop_remainder: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of (x, y) batches; the order comes from the explicit jax key only.

    With drop_remainder=False the last batch is shorter (callers that jit should pad and mask).
    """
    import jax

    n = len(x)
    if n != len(y):
        raise ValueError(f"{n} inputs but {len(y)} labels")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = np.asarray(jax.random.permutation(key, n)) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_remainder else n
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]
