"""Fashion-MNIST from Debian's `dataset-fashion-mnist` (MIT): 60k train + 10k test, 28x28."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from models.data.base import DatasetError

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def fashion_mnist_dir() -> Path:
    return Path(os.environ.get("SDFT_FASHION_MNIST_DIR", DEFAULT_DIR))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian magic, dims, then raw uint8."""
    with gzip.open(path, "rb") as f:
        zero, dtype_code, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype_code != 0x08:
            raise DatasetError(f"{path}: not a uint8 IDX file")
        dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)


def raw_files() -> dict[str, Path]:
    folder = fashion_mnist_dir()
    paths = {key: folder / name for key, name in FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise DatasetError(f"{missing[0]}: Fashion-MNIST not found "
                           "(apt-get install dataset-fashion-mnist, or set SDFT_FASHION_MNIST_DIR)")
    return paths


def load_fashion_mnist() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((train_x, train_y), (test_x, test_y)): images (N, 28, 28) uint8, labels int64."""
    p = raw_files()
    train = read_idx(p["train_images"]), read_idx(p["train_labels"]).astype(np.int64)
    test = read_idx(p["test_images"]), read_idx(p["test_labels"]).astype(np.int64)
    return train, test
