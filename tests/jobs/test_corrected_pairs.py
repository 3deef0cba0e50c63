"""Paired differences of the corrected missing-class share: the difference of two models'
corrected shares, with an interval that also draws the calibration images (one draw shared
by both models in each replicate)."""
import numpy as np
import pytest

from jobs.paired import calibration_of, model_difference, statistics


def _refs():
    """Calibration: 100 images of the missing class 5 (50 called missing: tpr 0.5) and 400 of
    present classes (40 called missing: fpr 0.1)."""
    labels = np.array([5] * 100 + [1] * 400)
    predicted = np.array([5] * 50 + [1] * 50 + [5] * 40 + [1] * 360)
    return {"missing": np.array([5]), "calibration_labels": labels, "calibration_predicted": predicted,
            "calibration_confidence": np.ones(500)}


def _items(share: float, n: int = 500):
    predicted = np.where(np.arange(n) < share * n, 5, 1)
    return {"predicted": np.random.default_rng(0).permutation(predicted), "confidence": np.ones(n)}


def test_the_corrected_difference_scales_the_raw_one_and_counts_the_calibration():
    refs = _refs()
    calibration = calibration_of(refs, 0.0, "target")
    assert calibration.rates() == pytest.approx((0.5, 0.1))
    a, b = (statistics(_items(q), "unconditional", "builtin", None, refs["missing"], 0.0, calibration)
            for q in (0.3, 0.1))
    assert {"missing_class_share", "missing_class_share_corrected"} <= set(a)
    found = model_difference([a], [b], np.zeros(500, dtype=int))
    raw, corrected = found["missing_class_share"], found["missing_class_share_corrected"]
    assert raw.value == pytest.approx(0.2)
    assert corrected.value == pytest.approx(0.2 / 0.4)           # (q_a - q_b) / (tpr - fpr), both unclipped
    assert corrected.low <= 0.5 <= corrected.high
    # wider than the raw interval scaled by 1 / (tpr - fpr): the calibration's uncertainty is in it
    assert corrected.high - corrected.low > 1.2 * (raw.high - raw.low) / 0.4


def test_the_source_style_calibration_is_taken_where_saved_and_asked_for():
    refs = _refs()
    assert calibration_of(refs, 0.0, "source").rates() == pytest.approx((0.5, 0.1))   # none saved: the target's
    source = {"source_calibration_labels": np.array([5] * 10 + [1] * 10),
              "source_calibration_predicted": np.array([5] * 9 + [1] * 1 + [5] * 1 + [1] * 9),
              "source_calibration_confidence": np.ones(20)}
    refs.update(source)
    assert calibration_of(refs, 0.0, "source").rates() == pytest.approx((0.9, 0.1))
    assert calibration_of(refs, 0.0, "target").rates() == pytest.approx((0.5, 0.1))


def test_without_saved_calibration_there_is_no_corrected_share():
    refs = {"missing": np.array([5])}
    assert calibration_of(refs, 0.0, "target") is None and calibration_of(refs, 0.0, "source") is None
    stats = statistics(_items(0.3), "unconditional", "builtin", None, refs["missing"], 0.0, None)
    assert "missing_class_share_corrected" not in stats


def test_a_cell_recomputes_the_rows_corrected_share_from_the_items():
    """The cells' statistic of the corrected share on the items as they are is the row's value
    (so the cell is kept), and a bootstrap draw moves it (the calibration is drawn too)."""
    from types import SimpleNamespace

    from jobs.cells import CORRECTED, _statistic
    from models.class_share import adjusted_share

    refs = _refs()
    items = _items(0.3)
    context = {"task": "unconditional", "ext": "builtin", "reference": None, "missing": refs["missing"],
               "seeds": [0], "refs": refs, "style": "target"}
    statistic = _statistic(CORRECTED, "missing-classes", items, SimpleNamespace(confidence=0.0), context)
    assert statistic(np.arange(500)) == pytest.approx(adjusted_share(0.3, 0.5, 0.1))
    draws = {round(statistic(np.random.default_rng(s).integers(0, 500, 500)), 6) for s in range(5)}
    assert len(draws) == 5
    assert _statistic(CORRECTED, "missing-classes", items, SimpleNamespace(confidence=0.0),
                      {**context, "refs": {"missing": refs["missing"]}}) is None
