"""Data sets as numpy arrays: images float32 in [0, 1], NHWC; labels int32.

Sources, tried in this order by `load`:
  1. an explicit folder (`data_dir=` or the environment variable ROBUSTJAX_DATA) holding
     `<name>.npz` with uint8 arrays x_train, y_train, x_test, y_test as in ../shared/data, or a
     subfolder `<name>/` of IDX files (train-images-idx3-ubyte[.gz], ...);
  2. the MNIST copy embedded in this package (CC BY-SA 3.0, see LICENSE-MNIST.txt); for
     fashion_mnist, the IDX files of Debian's dataset-fashion-mnist in /usr/share/datasets/fashion-mnist;
  3. tensorflow-datasets on an already prepared `tfds_dir` (or TFDS_DATA_DIR), read through
     `tfds.data_source` (no TensorFlow needed); with `allow_tfds_load=True` and TensorFlow installed,
     `tfds.load` as well. Nothing here ever downloads.
"""
from robustjax.data._load import (DATASETS, DataNotFoundError, DatasetInfo, batches, info, load,
                                  load_split_pair, read_idx, read_npz)

__all__ = ["DATASETS", "DataNotFoundError", "DatasetInfo", "batches", "info", "load", "load_split_pair", "read_idx",
           "read_npz"]
