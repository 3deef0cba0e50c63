"""FID / KID replicates equal clean-fid on the resampled rows, and their intervals cover the
expected value of the estimator at this number of images (simulated Gaussians)."""
import numpy as np
import pytest

from models import feature_intervals as fi
from models import metrics


def gaussians(seed, n=300, m=400, d=12):
    rng = np.random.default_rng(seed)
    return rng.normal(0.2, 1.0, size=(n, d)), rng.normal(0.0, 1.2, size=(m, d))


def test_fid_replicate_equals_clean_fid_on_the_resampled_rows():
    x, r = gaussians(0)
    replicate = fi.FrechetReplicates(x, r)
    idx = np.random.default_rng(1).integers(0, len(x), len(x))
    assert replicate(np.arange(len(x))) == pytest.approx(metrics.fid(x, r), rel=1e-9)
    assert replicate(idx) == pytest.approx(metrics.fid(x[idx], r), rel=1e-9)
    few = x[:8]                      # fewer distinct rows than dimensions: the Gram branch
    idx = np.random.default_rng(2).integers(0, 8, 8)
    assert fi.FrechetReplicates(few, r)(idx) == pytest.approx(metrics.fid(few[idx], r), rel=1e-6)


def test_fid_with_a_rank_deficient_reference():
    rng = np.random.default_rng(3)
    x, r = rng.normal(size=(200, 40)), rng.normal(size=(30, 40))    # reference covariance of rank 29
    idx = rng.integers(0, 200, 200)
    assert fi.FrechetReplicates(x, r)(idx) == pytest.approx(metrics.fid(x[idx], r), rel=1e-5)
    # fewer images than dimensions (the SVD of the rows) and more (the covariance's
    # eigen-decomposition): F F^T is the covariance either way
    for reference in (r, x):
        mean, trace, factor = fi.reference_factor(reference)
        assert factor.shape[1] == min(len(reference) - 1, reference.shape[1])
        np.testing.assert_allclose(factor @ factor.T, np.cov(reference, rowvar=False), atol=1e-10)
        assert trace == pytest.approx(np.trace(np.cov(reference, rowvar=False)), rel=1e-12)


def test_the_reference_factor_is_kept_per_reference():
    """The factored reference is reused for the same features and made again for others."""
    x, r = gaussians(8)
    other = r[::-1].copy() * 1.5
    for reference in (r, other, r):
        assert fi.FrechetReplicates(x, reference).value() == pytest.approx(metrics.fid(x, reference), rel=1e-9)
    assert fi.reference_factor(r.copy()) is fi.reference_factor(r)
    first = fi.reference_factor(r)          # an evaluation's few references are all kept
    fi.reference_factor(other)
    assert fi.reference_factor(r) is first


def test_kid_replicate_equals_clean_fid_with_the_same_seed():
    x, r = gaussians(4)
    replicate = fi.KernelReplicates(x, r, subset_size=100, subsets=10, seed=7)
    idx = np.random.default_rng(5).integers(0, len(x), len(x))
    assert replicate(np.arange(len(x))) == pytest.approx(metrics.kid(x, r, 100, 10, seed=7)[0], rel=1e-9)
    assert replicate(idx) == pytest.approx(metrics.kid(x[idx], r, 100, 10, seed=7)[0], rel=1e-9)


def test_interval_values_are_clean_fids_and_hold_them():
    x, r = gaussians(6)
    f = fi.fid_interval(x, r, n_resamples=100)
    k, size = fi.kid_interval(x, r, 100, 10, seed=1, n_resamples=100)
    assert f.value == pytest.approx(metrics.fid(x, r), rel=1e-9) and f.low < f.value < f.high and f.resamples == 100
    assert (k.value, size) == metrics.kid(x, r, 100, 10, seed=1) and k.low < k.value < k.high


def test_fid_over_seeds_is_the_mean_of_per_seed_fids():
    x, r = gaussians(7)
    groups = np.repeat([0, 1, 2], 100)
    f = fi.fid_interval(x, r, groups, n_resamples=50)
    assert f.value == pytest.approx(np.mean([metrics.fid(x[groups == g], r) for g in range(3)]))
    assert f.low < f.value < f.high


@pytest.mark.parametrize("metric", ["fid", "kid"])
def test_intervals_cover_the_expected_value_at_this_n(metric):
    """Truth: the estimator's mean over 2000 fresh draws (FID is biased at finite n; the
    interval is for what the table's value estimates). 200 draws of 200 replicates each."""
    d, n, mean_shift = 6, 150, 0.3
    rng = np.random.default_rng(8)
    reference = rng.normal(size=(300, d))
    shifted = lambda g, size: g.normal(mean_shift, 1.1, size=(size, d))     # noqa: E731
    if metric == "fid":
        estimate = lambda x: fi.FrechetReplicates(x, reference)(np.arange(len(x)))    # noqa: E731
        interval = lambda x, s: fi.fid_interval(x, reference, seed=s)                  # noqa: E731
    else:
        estimate = lambda x: fi.KernelReplicates(x, reference, 100, 5)(np.arange(len(x)))   # noqa: E731
        interval = lambda x, s: fi.kid_interval(x, reference, 100, 5, n_resamples=200, seed=0)[0]  # noqa: E731
    truth_rng = np.random.default_rng(9)
    truth = np.mean([estimate(shifted(truth_rng, n)) for _ in range(2000)])
    hits = []
    for draw in range(200):
        ci = interval(shifted(np.random.default_rng(100 + draw), n), draw)
        hits.append(ci.low <= truth <= ci.high)
    assert 0.90 <= np.mean(hits) <= 0.99
