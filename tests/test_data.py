import numpy as np
import pytest
from PIL import Image

from models.data import DatasetError, open_dataset
from models.data.builtin import build_pair, load_pair
from models.data.folder import ImageFolderSet
from models.data.painted import paint


@pytest.fixture(scope="module")
def pair16():
    return load_pair(resolution=16, seed=0, size=200, missing=(5, 8, 9))


def test_pair_shapes_and_bias(pair16):
    assert pair16["source_x"].shape == (50_000, 16, 16)
    assert pair16["target_x"].shape == (200, 16, 16, 3)
    assert pair16["heldout_x"].shape == (10_000, 16, 16, 3)
    assert not np.isin(pair16["target_y"], [5, 8, 9]).any()          # missing classes are missing
    assert set(np.unique(pair16["source_y"])) == set(range(10))        # the source has them all
    assert np.isin(pair16["heldout_y"], [5, 8, 9]).mean() == pytest.approx(0.30)


def test_pair_is_deterministic_and_cached(pair16):
    again = load_pair(resolution=16, seed=0, size=200, missing=(5, 8, 9))
    for key in pair16:
        assert np.array_equal(pair16[key], again[key]), key
    other = build_pair(resolution=16, seed=1, size=200, missing=(5, 8, 9))
    assert not np.array_equal(other["target_x"], pair16["target_x"])


def test_painted_style_differs_from_grey(pair16):
    target = pair16["target_x"].astype(float)
    channel_spread = np.abs(target[..., 0] - target[..., 2]).mean()
    assert channel_spread > 5                      # coloured, not grey
    corners = target[:, 0, 0].mean()
    assert corners > 5                             # a canvas, not a black background
    grey = np.zeros((2, 16, 16), np.uint8)
    assert np.array_equal(paint(grey, 3), paint(grey, 3))


def test_open_dataset_builtin_splits():
    target = open_dataset({"kind": "builtin-target", "resolution": 16, "size": 200})
    held = open_dataset({"kind": "builtin-target", "resolution": 16, "size": 200}, split="heldout")
    assert len(target) == 200 and len(held) == 10_000
    assert target[0].shape == (3, 16, 16) and str(target[0].dtype) == "torch.uint8"


def test_folder_dataset_resizes_and_crops(tmp_path):
    Image.new("RGB", (64, 40), (255, 0, 0)).save(tmp_path / "a.png")
    Image.new("RGB", (30, 90), (0, 0, 255)).save(tmp_path / "b.jpg")
    ds = ImageFolderSet(tmp_path, 32)
    assert len(ds) == 2
    assert ds[0].shape == (3, 32, 32) and ds[1].shape == (3, 32, 32)
    assert int(ds[0][0].float().mean()) > 240 and int(ds[1][2].float().mean()) > 240


def test_folder_dataset_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        ImageFolderSet(tmp_path / "nope", 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty.*no images"):
        ImageFolderSet(tmp_path / "empty", 32)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png")
    ds = ImageFolderSet(bad, 32)
    with pytest.raises(DatasetError, match=r"broken\.png: unreadable"):
        ds.verify()
