"""Image grids people can look at: PNG files from batches in [-1, 1]."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid

from models.data.base import to_uint8


def grid_image(rows: list[torch.Tensor], scale: int = 2, pad: int = 2) -> Image.Image:
    """Each tensor (n, 3, h, w) in [-1, 1] becomes one row; rows are stacked top to bottom."""
    width = max(r.shape[0] for r in rows)
    tiles = []
    for r in rows:
        filler = torch.full((width - r.shape[0], *r.shape[1:]), -1.0)
        tiles.append(torch.cat([r.float().cpu(), filler]))
    grid = make_grid(to_uint8(torch.cat(tiles)), nrow=width, padding=pad, pad_value=128)
    image = Image.fromarray(grid.permute(1, 2, 0).numpy())
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def save_grid(rows: list[torch.Tensor], path: str | Path, scale: int = 2) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    grid_image(rows, scale=scale).save(tmp)
    tmp.replace(path)
    return path
