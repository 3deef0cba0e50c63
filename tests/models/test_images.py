"""models/images.py tiles uint8 rows as torchvision's make_grid does (its reference here)."""
import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from models.images import grid_array, save_grid


def test_the_grid_is_make_grids_with_short_rows_ending_in_black_tiles(tmp_path):
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 256, (n, 3, 5, 4), dtype=np.uint8) for n in (3, 1, 2)]
    grid = grid_array(rows)
    # make_grid's reference: the rows padded with black tiles, tiled 3 to a row
    padded = [np.concatenate([r, np.zeros((3 - len(r), 3, 5, 4), np.uint8)]) for r in rows]
    want = make_grid(torch.from_numpy(np.concatenate(padded)), nrow=3, padding=2, pad_value=128)
    assert grid.shape == (3 * 7 + 2, 3 * 6 + 2, 3)
    np.testing.assert_array_equal(grid, want.permute(1, 2, 0).numpy())
    # one channel is shown grey; the PNG is the grid scaled up, pixel for pixel
    grey = grid_array([rows[0][:, :1]])
    assert (grey[..., 0] == grey[..., 2]).all() and grey.shape == (7 + 2, 3 * 6 + 2, 3)
    path = save_grid(rows, tmp_path / "g.png", scale=3)
    np.testing.assert_array_equal(np.asarray(Image.open(path))[::3, ::3], grid)
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]
