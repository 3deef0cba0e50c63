"""Precision / recall / density / coverage on constructed feature sets, and against prdc."""
import contextlib
import io

import numpy as np
import pytest

from models import manifold


def blobs(rng, centres, per_mode=60, spread=0.3):
    d = centres.shape[1]
    return np.concatenate([c + spread * rng.normal(size=(per_mode, d)) for c in centres])


def test_identical_sets_have_precision_and_recall_one():
    x = np.random.default_rng(0).normal(size=(200, 8))
    m = manifold.manifolds(x, x.copy()).metrics()
    assert m["precision"] == 1 and m["recall"] == 1 and m["coverage"] == 1
    assert m["density"] >= 1        # every point sits in its own ball and at least k others'


def test_disjoint_sets_score_zero():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(150, 8)), rng.normal(size=(150, 8)) + 100.0
    assert manifold.manifolds(real, fake).metrics() == {"precision": 0, "recall": 0, "density": 0, "coverage": 0}


def test_a_missing_mode_has_recall_and_coverage_zero_on_its_subset():
    rng = np.random.default_rng(2)
    centres = 10.0 * np.eye(4)
    real = blobs(rng, centres)                          # four modes in 4-d, 60 images each
    fake = blobs(rng, centres[:3], per_mode=80)         # the fourth mode is never generated
    mode = np.repeat(np.arange(4), 60)
    result = manifold.manifolds(real, fake)
    lacking = result.metrics(subset=mode == 3)
    present = result.metrics(subset=mode < 3)
    assert lacking == {"recall": 0.0, "coverage": 0.0}
    assert present["recall"] > 0.9 and present["coverage"] > 0.9
    assert result.metrics()["precision"] > 0.9            # what is generated is realistic
    # the whole domain's recall is the modes' weighted: three quarters of the present modes'
    assert result.metrics()["recall"] == pytest.approx(0.75 * present["recall"])
    # an index array selects like a mask
    assert result.metrics(subset=np.flatnonzero(mode == 3)) == lacking


@pytest.mark.parametrize("seed, n_real, n_fake, d", [(3, 300, 250, 16), (4, 500, 700, 64)])
def test_random_features_match_the_prdc_package(seed, n_real, n_fake, d):
    import prdc      # a pinned test dependency (pyproject's `test` extra): missing is a failure, not a skip
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n_real, d))
    fake = rng.normal(0.2, 1.3, size=(n_fake, d))
    with contextlib.redirect_stdout(io.StringIO()):       # prdc prints the set sizes
        expected = prdc.compute_prdc(real, fake, nearest_k=3)
    got = manifold.manifolds(real, fake, k=3).metrics()
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1      # a comparison with something in it
    for name in ("precision", "recall", "density", "coverage"):
        assert got[name] == pytest.approx(expected[name], abs=1e-6), name


def test_chunked_distances_give_the_same_answer(monkeypatch):
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(130, 6)), rng.normal(0.3, 1, size=(110, 6))
    whole = manifold.manifolds(real, fake)
    monkeypatch.setattr(manifold, "CHUNK", 17)
    chunked = manifold.manifolds(real, fake)
    for field in ("in_real", "real_balls", "in_fake", "covered"):
        np.testing.assert_array_equal(getattr(whole, field), getattr(chunked, field))


def test_bad_shapes_and_tiny_sets_are_refused():
    with pytest.raises(ValueError, match="features"):
        manifold.manifolds(np.zeros((10, 4)), np.zeros((10, 5)))
    with pytest.raises(ValueError, match="more than k"):
        manifold.manifolds(np.random.default_rng(0).normal(size=(3, 4)), np.zeros((10, 4)))


def test_intervals_bracket_each_metric_and_restrict_to_the_subset():
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(200, 5)), rng.normal(0.5, 1, size=(200, 5))
    result = manifold.manifolds(real, fake)
    subset = np.arange(200) < 50
    for name, ci in result.intervals().items():
        assert ci.value == result.metrics()[name] and ci.low <= ci.value <= ci.high and ci.low < ci.high
    restricted = result.intervals(subset=subset)
    assert set(restricted) == {"recall", "coverage"}
    assert restricted["recall"].value == result.metrics(subset)["recall"]
    # fewer real images in the subset: a wider interval
    assert np.ptp([restricted["recall"].low, restricted["recall"].high]) > \
        np.ptp([result.intervals()["recall"].low, result.intervals()["recall"].high])
