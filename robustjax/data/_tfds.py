"""tensorflow-datasets builders made from the npz files, usable without TensorFlow.

`prepare_tfds(name, npz_path, data_dir)` writes an ArrayRecord data set `<name>_npz` (uint8 image
tensors and int labels, no PNG encoding, so reading needs no TensorFlow); afterwards
`tfds.data_source("<name>_npz", data_dir=data_dir)` reads it with random access, and
`robustjax.data.load(name, tfds_dir=data_dir)` finds it.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from robustjax.data._load import read_npz


class _NpzBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base: uint8 image tensors and int64 labels read from a robustjax npz file."""
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "uint8 tensors from the robustjax npz files."}
    SHAPE: tuple = ()

    def __init__(self, *, npz_path=None, limit=None, **kwargs):
        self._npz_path = npz_path
        self._limit = limit
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, description=f"{self.name}: a robustjax npz file as tensors (uint8, original order).",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=self.SHAPE, dtype=np.uint8),
                "label": tfds.features.Scalar(dtype=np.int64)}),
            supervised_keys=("image", "label"), disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager
        if self._npz_path is None:
            raise ValueError(f"{self.name}: pass npz_path= to prepare the data set")
        return {s: self._generate_examples(s) for s in ("train", "test")}

    def _generate_examples(self, split):
        z = read_npz(self._npz_path, (f"x_{split}", f"y_{split}"))
        x, y = z[f"x_{split}"], z[f"y_{split}"]
        n = len(x) if self._limit is None else min(self._limit, len(x))
        for i in range(n):
            yield i, {"image": x[i].reshape(self.SHAPE), "label": int(y[i])}


class MnistNpz(_NpzBuilder):
    SHAPE = (28, 28, 1)


class FashionMnistNpz(_NpzBuilder):
    SHAPE = (28, 28, 1)


class Cifar10Npz(_NpzBuilder):
    SHAPE = (32, 32, 3)


BUILDERS = {"mnist": MnistNpz, "fashion_mnist": FashionMnistNpz, "cifar10": Cifar10Npz}


def prepare_tfds(name: str, npz_path, data_dir, *, limit: int | None = None):
    """Builds `<name>_npz` in `data_dir` from `npz_path` (first `limit` examples per split)."""
    if name not in BUILDERS:
        raise ValueError(f"no tfds builder for {name!r}; known: {sorted(BUILDERS)}")
    builder = BUILDERS[name](npz_path=str(npz_path), limit=limit, data_dir=str(data_dir),
                             file_format="array_record")
    builder.download_and_prepare()
    return builder
