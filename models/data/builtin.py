"""The built-in pair, the FFHQ -> MetFaces analog on Fashion-MNIST, built offline in seconds.

- source: grey Fashion-MNIST, all 10 classes, 50k images of the train split;
- target: `size` painted images from the other 10k train images, with `missing` classes
  left out entirely (as MetFaces lacks smiles and sunglasses);
- heldout: the full target domain, the 10k test images painted, all classes: the FID/KID
  reference and the yardstick for missing-class recovery.
Everything follows from the seed; the pair is cached on disk by the hash of what built it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from models.data.base import ArrayImages, DatasetError
from models.data.fashion_mnist import load_fashion_mnist, raw_files
from models.data.painted import paint

BUILD_VERSION = 1      # bump when the recipe below changes: old caches are then ignored
SOURCE_SIZE = 50_000
SPLITS = ("source", "target", "heldout", "source_test")


def cache_dir() -> Path:
    return Path(os.environ.get("SDFT_CACHE_DIR", Path.home() / ".cache" / "sdft-bench"))


def resize(gray: np.ndarray, resolution: int) -> np.ndarray:
    """(N, 28, 28) -> (N, r, r): 32 pads the border, 16 averages pixels (box filter)."""
    if resolution == 32:
        return np.pad(gray, ((0, 0), (2, 2), (2, 2)))
    if resolution == 28:
        return gray
    if resolution == 16:
        return np.stack([np.asarray(Image.fromarray(g).resize((16, 16), Image.BOX)) for g in gray])
    raise DatasetError(f"built-in pair resolution must be 16 or 32, got {resolution}")


def grey_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def split_train(rng: np.random.Generator, train_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The pair's first draw: the training images (indices) of the source split, in its
    order, and the disjoint rest that the target set is drawn from."""
    order = rng.permutation(train_size)
    return order[:SOURCE_SIZE], order[SOURCE_SIZE:]


def source_indices(seed: int = 0, train_size: int = 60_000) -> np.ndarray:
    """The Fashion-MNIST training images of the pair's source split, in its order (indices
    into the 60,000 training images), without building the pair."""
    return split_train(np.random.default_rng(seed), train_size)[0]


def build_pair(resolution: int = 32, seed: int = 0, size: int = 500,
               missing: tuple[int, ...] = (5, 8, 9)) -> dict[str, np.ndarray]:
    (train_x, train_y), (test_x, test_y) = load_fashion_mnist()
    rng = np.random.default_rng(seed)
    source_idx, pool_idx = split_train(rng, len(train_x))
    pool_idx = pool_idx[~np.isin(train_y[pool_idx], missing)]
    if size > len(pool_idx):
        raise DatasetError(f"target size {size} exceeds the {len(pool_idx)} images available")
    target_idx = rng.choice(pool_idx, size, replace=False)
    train_r, test_r = resize(train_x, resolution), resize(test_x, resolution)
    return {
        "source_x": train_r[source_idx], "source_y": train_y[source_idx],         # grey
        "source_test_x": test_r, "source_test_y": test_y,                         # grey, all classes
        "target_x": paint(train_r[target_idx], seed + 1), "target_y": train_y[target_idx],
        "heldout_x": paint(test_r, seed + 2), "heldout_y": test_y,
        "missing": np.array(sorted(missing), dtype=np.int64),
    }


def _cache_key(resolution: int, seed: int, size: int, missing: tuple[int, ...]) -> str:
    digest = hashlib.sha1(json.dumps([BUILD_VERSION, resolution, seed, size, sorted(missing)]).encode())
    for path in raw_files().values():
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def load_pair(resolution: int = 32, seed: int = 0, size: int = 500,
              missing: tuple[int, ...] = (5, 8, 9)) -> dict[str, np.ndarray]:
    """The pair from the on-disk cache, built (atomically) on first use."""
    path = cache_dir() / f"fmnist-pair-{_cache_key(resolution, seed, size, tuple(missing))}.npz"
    if path.is_file():
        with np.load(path) as f:
            return dict(f)
    pair = build_pair(resolution, seed, size, tuple(missing))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **pair)
    os.replace(tmp, path)
    return pair


def builtin_split(split: str, resolution: int = 32, seed: int = 0, size: int = 500,
                  missing: tuple[int, ...] = (5, 8, 9)) -> ArrayImages:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {SPLITS}")
    pair = load_pair(resolution, seed, size, missing)
    images = pair[f"{split}_x"]
    if images.ndim == 3:
        images = grey_to_rgb(images)
    return ArrayImages(images, pair[f"{split}_y"])
