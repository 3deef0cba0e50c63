"""A directory of PNG/JPEG images, resized and centre-cropped to the run's resolution.

Every image becomes 8-bit RGB the same way, whatever its mode: grey (L, 1) and palette (P)
images are expanded to RGB; 16-bit grey (I;16, and I as Pillow reads 16-bit PNGs) is scaled
to 8 bits (65535 -> 255), where a plain conversion would clip it to white; images with
transparency (LA, RGBA, PA, P or RGB/L with a transparent colour) are composited over a
white background (BACKGROUND), where a plain conversion would drop the alpha and show
whatever colour the transparent pixels happen to hold. A photo whose EXIF orientation tag
says it is stored turned (as cameras and phones store them) is turned upright first, as an
image viewer shows it; the crop is then taken from the upright image.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from models.data.base import DatasetError, ImageSet

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
BACKGROUND = (255, 255, 255)          # what transparent pixels show: white
SCAN_LIMIT = 2000                     # scan_images checks at most this many files of a folder
SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


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


def listing_digest(folder: str | Path) -> str:
    """What a cache of something made from a folder's images must change with: each image
    file's path within the folder, size and modification time (stat calls, no reads; an
    edit in place that keeps both the size and the time goes unseen)."""
    folder = Path(folder)
    digest = hashlib.blake2b(digest_size=10)
    for path in list_images(folder):
        info = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def to_rgb(im: Image.Image) -> Image.Image:
    """Any mode as 8-bit RGB (see the module's doc): 16-bit scaled, alpha composited."""
    if im.mode in SIXTEEN_BIT:
        raw = np.asarray(im)
        grey = np.clip(np.rint(raw.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)   # 65535 / 257 = 255
        rgb = np.repeat(grey[..., None], 3, axis=2)
        if "transparency" in im.info:          # one grey level marked transparent: the background
            rgb[raw == im.info["transparency"]] = BACKGROUND
        return Image.fromarray(rgb, "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        background = Image.new("RGBA", im.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, im.convert("RGBA")).convert("RGB")
    return im.convert("RGB")


def scan_images(folder: str | Path, limit: int = SCAN_LIMIT) -> int:
    """A cheap check before any job runs: the folder holds images and each file's header
    (and, for PNG, every chunk's checksum) reads. Above `limit` files an evenly spaced
    `limit` of them are checked. Returns the number of images."""
    files = list_images(folder)
    for path in (files if len(files) <= limit else [files[i * len(files) // limit] for i in range(limit)]):
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as err:   # Pillow raises many kinds (OSError, SyntaxError, struct.error...)
            raise DatasetError(f"{path}: unreadable image ({type(err).__name__}: {err})") from None
    return len(files)


def load_image(path: Path, resolution: int) -> np.ndarray:
    """Resize the short side to `resolution`, crop the centre square: (r, r, 3) uint8."""
    try:
        with Image.open(path) as im:
            im = to_rgb(ImageOps.exif_transpose(im))
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
