"""What every dataset is: a map-style set of uint8 CHW images, optionally labelled."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class DatasetError(ValueError):
    """A dataset that cannot be used: names the path or setting at fault."""


class ImageSet(Dataset):
    """Images as uint8 tensors (3, H, W). `labels` is None where a set has no classes."""

    labels: np.ndarray | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> torch.Tensor:
        raise NotImplementedError


class ArrayImages(ImageSet):
    """An in-memory set from an (N, H, W, 3) uint8 array."""

    def __init__(self, images_nhwc: np.ndarray, labels: np.ndarray | None = None):
        if images_nhwc.ndim != 4 or images_nhwc.shape[-1] != 3 or images_nhwc.dtype != np.uint8:
            raise DatasetError(f"expected (N, H, W, 3) uint8 images, got {images_nhwc.shape} {images_nhwc.dtype}")
        self.images = torch.from_numpy(np.ascontiguousarray(images_nhwc)).permute(0, 3, 1, 2)
        self.labels = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def to_model_range(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the range the diffusion model works in."""
    return images_u8.float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], clamped and rounded."""
    return images.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
