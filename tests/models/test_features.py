"""FID on the Inception extractor's features: a closed form and a known ordering, on a few
built-in images (the network is the wheel's offline copy unless clean-fid's file is present).

FID is taken in feature_intervals' form, equal to clean-fid's (tests/models/test_feature_intervals.py)
without its 2048 x 2048 sqrtm, which costs 15-45 s per call on one core."""
import numpy as np
import pytest
import torch

from models.data import open_dataset, to_model_range
from models.feature_intervals import FrechetReplicates
from models.features import InceptionExtractor

N = 8        # per set: 24 images through Inception at 299 px take ~8 s on one core


def fid(samples, reference) -> float:
    return FrechetReplicates(samples, reference)(np.arange(len(samples)))


@pytest.fixture(scope="module")
def inception_sets():
    """(painted A, painted B, grey): two disjoint sets of the painted target domain and one of
    the grey source domain, embedded once."""
    painted = open_dataset({"kind": "builtin-target", "resolution": 16, "size": 200}, split="heldout")
    grey = open_dataset({"kind": "builtin-source", "resolution": 16})
    extractor = InceptionExtractor()
    embed = lambda ds, start: extractor(torch.stack([ds[i] for i in range(start, start + N)]))  # noqa: E731
    return embed(painted, 0), embed(painted, N), embed(grey, 0)


def test_inception_features_are_pool3(inception_sets):
    a, b, grey = inception_sets
    assert a.shape == b.shape == grey.shape == (N, 2048)
    assert (a >= 0).all()              # pool3 follows a ReLU


def test_fid_of_a_set_against_itself_is_zero(inception_sets):
    """Equal means and covariances: ||mu - mu||^2 + tr(S + S - 2 (S S)^1/2) = 0."""
    a, _, _ = inception_sets
    assert fid(a, a.copy()) == pytest.approx(0.0, abs=1e-2)


def test_fid_ranks_the_same_domain_closer_than_the_other_domain(inception_sets):
    """Two disjoint sets of painted images are closer than painted and grey ones (measured
    here: about 250 against 400 at N = 8), whichever set is the reference."""
    a, b, grey = inception_sets
    assert 1.0 < fid(a, b) < 0.8 * fid(a, grey)
    assert 1.0 < fid(b, a) < 0.8 * fid(grey, a)


def test_the_builtin_network_sees_16_px_images_framed_as_it_trained():
    """The network trained on 32 px images, the 28 px garment with a 2 px border; a 16 px
    built-in image is the garment with no border. Framed (as_trained: scaled to 28, padded
    in its corners' colour) it names the class of more held-out images, grey and painted,
    than scaled straight to 32 as before (0.82 against 0.68 grey, 0.68 against 0.60
    painted, measured on 4,000 of each); 32 px images reach it unchanged."""
    from models.features import BuiltinExtractor, as_trained

    extractor = BuiltinExtractor()
    for kind, split, margin in (("builtin-source", "source_test", 0.08), ("builtin-target", "heldout", 0.04)):
        data = {"kind": kind, "resolution": 16} | ({"size": 200} if kind == "builtin-target" else {})
        ds = open_dataset(data, split=split)
        images = torch.stack([ds[i] for i in range(1000)])
        labels = np.asarray(ds.labels[:1000])
        framed = (extractor.classify(images).argmax(1) == labels).mean()
        with torch.no_grad():
            plain = (extractor.net(to_model_range(images))[0].argmax(1).numpy() == labels).mean()
        assert framed >= plain + margin, (split, framed, plain)
    big = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(as_trained(big), big)
    # two images, each with its own canvas colour per channel and a garment in the middle: each
    # is framed in its own corners' colour, its garment scaled to the middle 28 px
    canvas = torch.tensor([[-0.8, -0.6, -0.7], [-0.2, 0.1, -0.4]])[:, :, None, None]
    small = canvas.expand(2, 3, 16, 16).clone()
    small[:, :, 4:12, 5:11] = 0.9
    framed = as_trained(small)
    assert framed.shape == (2, 3, 32, 32)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.equal(framed[..., border], canvas[..., 0].expand(2, 3, int(border.sum())))
    inner = torch.nn.functional.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False)
    assert torch.allclose(framed[..., 2:30, 2:30], inner, atol=1e-6)
