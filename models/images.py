"""Image grids people can look at: PNG files from rows of uint8 images.

numpy and PIL, not torchvision's make_grid: the aggregate and the evaluation's driver draw
grids of images already in uint8, and importing torchvision costs them about 2 s a process
(it brings torch._dynamo); the tiling itself is a few lines.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PAD_VALUE = 128                 # grey between and around the tiles


def grid_array(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Each array (n, c, h, w) uint8 is one row of tiles, rows top to bottom, `pad` grey
    pixels between and around the tiles; a row shorter than the widest ends in black tiles.
    One-channel images are shown grey. Returns (H, W, 3) uint8."""
    rows = [np.repeat(r, 3, axis=1) if r.shape[1] == 1 else r for r in rows]
    _, channels, h, w = rows[0].shape
    width = max(len(r) for r in rows)
    grid = np.full((len(rows) * (h + pad) + pad, width * (w + pad) + pad, channels), PAD_VALUE, np.uint8)
    for i, row in enumerate(rows):
        y = pad + i * (h + pad)
        for j in range(width):
            x = pad + j * (w + pad)
            grid[y:y + h, x:x + w] = row[j].transpose(1, 2, 0) if j < len(row) else 0
    return grid


def save_grid(rows: list[np.ndarray], path: str | Path, scale: int = 2) -> Path:
    """grid_array's image, each pixel `scale` x `scale`, written atomically as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(grid_array(rows))
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    tmp = path.with_name(f".{path.name}.tmp.png")
    image.save(tmp)
    tmp.replace(path)
    return path
