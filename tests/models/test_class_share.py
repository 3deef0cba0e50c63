"""The corrected missing-class share on synthetic classifiers whose true share and confusion
are known: the correction recovers the truth, its interval covers it (also counting the
calibration's own uncertainty), and a classifier that does not separate says nothing."""
import math

import numpy as np
import pytest

from models.class_share import Calibration, CorrectedShare, adjusted_share, corrected_interval


def _calls(truth: np.ndarray, tpr: float, fpr: float, rng) -> np.ndarray:
    """A classifier with the given confusion: each image called missing at its class's rate."""
    return np.where(truth, rng.random(len(truth)) < tpr, rng.random(len(truth)) < fpr)


def _case(p: float, tpr: float, fpr: float, n: int, n_calibration: int, seed: int):
    rng = np.random.default_rng(seed)
    truth = rng.random(n_calibration) < 0.3
    calibration = Calibration(truth, _calls(truth, tpr, fpr, rng), np.ones(n_calibration, bool))
    hits = _calls(rng.random(n) < p, tpr, fpr, rng)
    return hits, np.ones(n, bool), calibration


def test_the_formula_and_its_clipping():
    assert adjusted_share(0.5 * 0.8 + 0.5 * 0.1, 0.8, 0.1) == pytest.approx(0.5)
    assert adjusted_share(0.05, 0.8, 0.1) == 0.0            # below the false-positive floor
    assert adjusted_share(0.95, 0.8, 0.1) == 1.0
    assert math.isnan(adjusted_share(0.3, 0.2, 0.2))         # tpr == fpr: no information
    assert math.isnan(adjusted_share(0.3, 0.1, 0.2))


def test_the_corrected_share_recovers_a_known_share_that_the_raw_share_misses():
    """The issue's classifier: few missing-class images called missing, some present ones
    called missing. The raw share is far off the truth; the corrected one's interval holds it."""
    hits, kept, calibration = _case(p=0.356, tpr=0.3, fpr=0.02, n=2000, n_calibration=2000, seed=1)
    assert abs(hits.mean() - 0.356) > 0.2
    interval = corrected_interval(hits, kept, calibration, n_resamples=400, seed=0)
    assert interval.low <= 0.356 <= interval.high and interval.high - interval.low < 0.15


def test_the_interval_covers_the_truth_at_its_level_and_grows_with_a_small_calibration():
    """Coverage over independent data sets (both the scored and the calibration images drawn
    anew); fixing the calibration would leave its error out and cover too rarely."""
    covered, widths = 0, {"small": [], "large": []}
    for seed in range(40):
        hits, kept, calibration = _case(p=0.25, tpr=0.7, fpr=0.1, n=300, n_calibration=150, seed=seed)
        interval = corrected_interval(hits, kept, calibration, n_resamples=300, seed=seed)
        covered += interval.low <= 0.25 <= interval.high
        widths["small"].append(interval.high - interval.low)
    assert covered >= 34                       # 95 % nominal; >= 85 % of 40 by chance alone
    for seed in range(5):
        hits, kept, calibration = _case(p=0.25, tpr=0.7, fpr=0.1, n=300, n_calibration=5000, seed=seed)
        interval = corrected_interval(hits, kept, calibration, n_resamples=300, seed=seed)
        widths["large"].append(interval.high - interval.low)
    assert np.mean(widths["small"]) > 1.15 * np.mean(widths["large"])


def test_a_classifier_that_does_not_separate_says_nothing():
    hits, kept, calibration = _case(p=0.4, tpr=0.2, fpr=0.2, n=500, n_calibration=20_000, seed=3)
    interval = corrected_interval(hits, kept, calibration, n_resamples=200, seed=0)
    assert (interval.low, interval.high) == (0.0, 1.0)
    exact = Calibration([True, False], [True, True], [True, True])          # tpr = fpr = 1
    assert math.isnan(corrected_interval(hits, kept, exact, n_resamples=50).value)


def test_paired_models_share_the_calibration_draw():
    """The same resampled indices give the same calibration draw (a paired difference sees
    one calibration), other indices another; the items as they are use the calibration as is."""
    hits, kept, calibration = _case(p=0.3, tpr=0.8, fpr=0.1, n=100, n_calibration=200, seed=4)
    share = CorrectedShare(hits, kept, calibration)
    idx = np.random.default_rng(0).integers(0, 100, 100)
    assert np.array_equal(share.calibration_draw(idx), share.calibration_draw(idx.copy()))
    assert not np.array_equal(share.calibration_draw(idx), share.calibration_draw(idx[::-1]))
    assert share.calibration_draw(np.arange(100)) is None
    assert share(np.arange(100)) == adjusted_share(hits.mean(), *calibration.rates())
