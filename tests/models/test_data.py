import numpy as np
import pytest
from PIL import Image

from factories import digest, in_fresh_process
from models.data import DatasetError, builtin, open_dataset
from models.data.builtin import build_pair, load_pair
from models.data.folder import ImageFolderSet, scan_images
from models.data.painted import paint
from models.schedule import NoiseSchedule


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


def pair_digest(pair: dict) -> str:
    return digest(*(pair[key] for key in sorted(pair)))


def test_pair_is_deterministic_across_processes(pair16, tmp_path):
    """Another interpreter, with an empty cache of its own, builds the same pair bit for bit."""
    there = in_fresh_process("""
        from factories import digest
        from models.data.builtin import build_pair
        pair = build_pair(resolution=16, seed=0, size=200, missing=(5, 8, 9))
        print(digest(*(pair[key] for key in sorted(pair))))
    """, env={"SDFT_CACHE_DIR": str(tmp_path / "cache")})
    assert there == pair_digest(pair16)
    other = build_pair(resolution=16, seed=1, size=200, missing=(5, 8, 9))
    assert not np.array_equal(other["target_x"], pair16["target_x"])


def test_pair_is_read_back_from_the_cache(pair16, monkeypatch):
    """The second load reads the cached file (nothing is rebuilt) and gives the built pair."""
    def no_rebuild(*args, **kwargs):
        raise AssertionError("load_pair rebuilt a cached pair")

    monkeypatch.setattr(builtin, "build_pair", no_rebuild)
    again = load_pair(resolution=16, seed=0, size=200, missing=(5, 8, 9))
    assert again.keys() == pair16.keys() and pair_digest(again) == pair_digest(pair16)
    with pytest.raises(AssertionError, match="rebuilt"):         # another key: not in the cache
        load_pair(resolution=16, seed=0, size=201, missing=(5, 8, 9))


def test_source_indices_are_the_pairs_source_split(pair16):
    """What the evaluation takes for the builtin network's unseen source images rests on it."""
    from models.data.fashion_mnist import load_fashion_mnist

    (train_x, train_y), _ = load_fashion_mnist()
    chosen = builtin.source_indices(0, len(train_x))
    assert np.array_equal(pair16["source_y"], train_y[chosen])
    assert np.array_equal(pair16["source_x"][:50], builtin.resize(train_x[chosen[:50]], 16))


def test_painted_style_differs_from_grey(pair16):
    target = pair16["target_x"].astype(float)
    channel_spread = np.abs(target[..., 0] - target[..., 2]).mean()
    assert channel_spread > 5                      # coloured, not grey
    corners = target[:, 0, 0].mean()
    assert corners > 5                             # a canvas, not a black background


def test_paint_is_deterministic_across_processes():
    """paint in another interpreter: the same bits for the same seed; another seed, others."""
    grey = (np.arange(3 * 16 * 16) % 256).astype(np.uint8).reshape(3, 16, 16)     # every grey level
    there = in_fresh_process("""
        import numpy as np
        from factories import digest
        from models.data.painted import paint
        print(digest(paint((np.arange(3 * 16 * 16) % 256).astype(np.uint8).reshape(3, 16, 16), 3)))
    """)
    assert there == digest(paint(grey, 3))
    assert digest(paint(grey, 4)) != there


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


# ---------------------------------------------------------------- image modes
def over_white(colour, alpha):
    """Alpha compositing 'over' a white background, by its definition."""
    a = alpha / 255
    return tuple(round(a * c + (1 - a) * 255) for c in colour)


def two_halves(mode, left, right, size=8):
    """An image whose left and right halves hold the two given pixel values."""
    im = Image.new(mode, (size, size), left)
    im.paste(right, (size // 2, 0, size, size))
    return im


def load_as_saved(tmp_path, im, name="x.png", **save):
    path = tmp_path / name
    im.save(path, **save)
    out = ImageFolderSet(tmp_path, im.size[0])[0].permute(1, 2, 0).numpy()
    return tuple(int(v) for v in out[0, 0]), tuple(int(v) for v in out[0, -1])


def test_grey_becomes_rgb(tmp_path):
    assert load_as_saved(tmp_path, two_halves("L", 30, 200)) == ((30, 30, 30), (200, 200, 200))


def test_grey_with_alpha_is_composited_on_white(tmp_path):
    left, right = load_as_saved(tmp_path, two_halves("LA", (200, 0), (60, 128)))
    assert left == (255, 255, 255)                  # fully transparent: the background
    assert all(abs(a - b) <= 1 for a, b in zip(right, over_white((60, 60, 60), 128)))


def test_rgb_is_kept(tmp_path):
    assert load_as_saved(tmp_path, two_halves("RGB", (10, 20, 30), (250, 128, 0))) == ((10, 20, 30),
                                                                                      (250, 128, 0))


def test_rgba_is_composited_on_white(tmp_path):
    left, right = load_as_saved(tmp_path, two_halves("RGBA", (0, 0, 0, 0), (0, 0, 255, 64)))
    assert left == (255, 255, 255)                  # not the black the transparent pixels hold
    assert all(abs(a - b) <= 1 for a, b in zip(right, over_white((0, 0, 255), 64)))


def test_palette_becomes_its_colours_and_transparent_index_the_background(tmp_path):
    im = two_halves("P", 0, 1)
    im.putpalette([255, 0, 0, 0, 90, 0] + [0] * 762)
    assert load_as_saved(tmp_path, im, "opaque.png") == ((255, 0, 0), (0, 90, 0))
    (tmp_path / "opaque.png").unlink()
    assert load_as_saved(tmp_path, im, "clear.png", transparency=0) == ((255, 255, 255), (0, 90, 0))


def test_sixteen_bit_grey_is_scaled_not_white(tmp_path):
    im = Image.fromarray(np.where(np.arange(8) < 4, 128 * 257, 65535)[None].repeat(8, 0).astype(np.uint16))
    assert im.mode == "I;16"
    path = tmp_path / "deep.png"
    im.save(path)
    with Image.open(path) as reread:
        assert reread.mode in ("I;16", "I")          # Pillow keeps the 16 bits on reading
    assert load_as_saved(tmp_path, im, "deep.png") == ((128, 128, 128), (255, 255, 255))
    # a transparent grey level (tRNS) shows the white background, as in 8-bit images
    dark = Image.fromarray(np.where(np.arange(8) < 4, 0, 128 * 257)[None].repeat(8, 0).astype(np.uint16))
    (tmp_path / "deep.png").unlink()
    assert load_as_saved(tmp_path, dark, "clear.png", transparency=0) == ((255, 255, 255), (128, 128, 128))


def test_a_photo_stored_turned_is_loaded_upright(tmp_path):
    """A camera's JPEG stored 8 wide and 4 tall, red left and blue right, with EXIF
    orientation 6 (turn 90 degrees clockwise to show): upright it is 4 wide and 8 tall, red
    on top. The 4 px centre crop must be red above and blue below, not red left and blue
    right as the stored pixels are."""
    stored = two_halves("RGB", (255, 0, 0), (0, 0, 255), size=8).crop((0, 2, 8, 6))
    exif = Image.Exif()
    exif[0x0112] = 6                                   # Orientation
    stored.save(tmp_path / "photo.jpg", exif=exif, quality=100, subsampling=0)
    out = ImageFolderSet(tmp_path, 4)[0].permute(1, 2, 0).numpy().astype(int)
    top, bottom = out[0].mean(axis=0), out[-1].mean(axis=0)
    assert top[0] > 200 and top[2] < 60, top           # red above
    assert bottom[2] > 200 and bottom[0] < 60, bottom  # blue below


def test_scan_finds_a_truncated_png(tmp_path):
    Image.new("RGB", (32, 32), (1, 2, 3)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    assert scan_images(tmp_path) == 1
    (tmp_path / "cut.png").write_bytes(data[: len(data) - 20])
    with pytest.raises(DatasetError, match=r"cut\.png: unreadable"):
        scan_images(tmp_path)


def test_a_large_folder_scan_checks_exactly_its_limit_evenly_spaced(tmp_path, monkeypatch):
    from models.data import folder

    for i in range(30):
        Image.new("RGB", (4, 4), (i, i, i)).save(tmp_path / f"{i:02d}.png")
    opened = []
    real_open = folder.Image.open
    monkeypatch.setattr(folder.Image, "open", lambda path, *a, **k: opened.append(path.name) or real_open(path, *a, **k))
    assert scan_images(tmp_path, limit=20) == 30
    assert len(opened) == 20 and opened[0] == "00.png" and opened[-1] >= "27.png"


def test_a_classifier_made_from_a_folder_is_made_again_when_its_images_change(tmp_path, monkeypatch):
    """The EGSDE domain classifier (and the labelled folds, keyed alike) is cached by the
    folders' paths and listings: the same folders reuse it, images replaced under the same
    path train it again, where a key of paths alone handed back the old network."""
    from models import evaluation_nets

    monkeypatch.setenv("SDFT_CACHE_DIR", str(tmp_path / "cache"))
    trained = []
    monkeypatch.setattr(evaluation_nets, "_train_domain_classifier",
                        lambda source, target, recipe, schedule: trained.append(schedule.kind)
                        or evaluation_nets.DomainClassifier())
    for name in ("source", "target", "held-out"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(tmp_path / name / f"{i}.png")
    source = {"kind": "folder", "path": str(tmp_path / "source"), "resolution": 16}
    target = {"kind": "folder", "path": str(tmp_path / "target"), "reference": str(tmp_path / "held-out"),
              "resolution": 16}
    evaluation_nets.domain_classifier(source, target)
    evaluation_nets.domain_classifier(source, target)
    assert len(trained) == 1
    Image.new("RGB", (24, 24), (0, 200, 0)).save(tmp_path / "held-out" / "1.png")    # replaced in place
    evaluation_nets.domain_classifier(source, target)
    assert len(trained) == 2
    (tmp_path / "source" / "2.png").write_bytes((tmp_path / "source" / "0.png").read_bytes())   # one more
    evaluation_nets.domain_classifier(source, target)
    assert trained == ["linear"] * 3
    # a model of the cosine schedule is guided by a network that saw its noise levels
    evaluation_nets.domain_classifier(source, target, NoiseSchedule(kind="cosine"))
    evaluation_nets.domain_classifier(source, target)
    assert trained == ["linear"] * 3 + ["cosine"]
