"""A directory of PNG/JPEG images, resized and centre-cropped to the run's resolution."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from models.data.base import DatasetError, ImageSet

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.exists():
        raise DatasetError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    if not files:
        raise DatasetError(f"{folder}: no images (looked for {', '.join(sorted(EXTENSIONS))})")
    return files


def load_image(path: Path, resolution: int) -> np.ndarray:
    """Resize the short side to `resolution`, crop the centre square: (r, r, 3) uint8."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = resolution / min(w, h)
            im = im.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))),
                           Image.BICUBIC)
            w, h = im.size
            left, top = (w - resolution) // 2, (h - resolution) // 2
            return np.array(im.crop((left, top, left + resolution, top + resolution)))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DatasetError(f"{path}: unreadable image ({err})") from None


class ImageFolderSet(ImageSet):
    def __init__(self, folder: str | Path, resolution: int):
        self.folder = Path(folder)
        self.resolution = resolution
        self.files = list_images(folder)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(load_image(self.files[index], self.resolution)).permute(2, 0, 1)

    def verify(self) -> None:
        """Open every file once: an unreadable image fails here, naming its path."""
        for path in self.files:
            load_image(path, self.resolution)
