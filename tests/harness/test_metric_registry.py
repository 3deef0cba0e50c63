"""The metric registry is the one declaration of a metric's label, direction and tasks: the
tables bold, label and select by it, a criterion is checked against it, and an unknown name
is an error that names the known ones."""
import pandas as pd
import pytest

from report import metrics
from report.selection import Criterion
from report.table import Table


def test_a_criterion_takes_its_direction_and_label_from_the_registry():
    assert Criterion.parse("sdedit:psnr").higher_is_better
    assert Criterion.parse("egsde@0.5:class_preservation").higher_is_better
    assert not Criterion.parse("fid").higher_is_better
    assert not Criterion.parse("kid/target").higher_is_better
    assert Criterion.parse("kid/target").describe() == "lowest mean unconditional KID×1e3 against the target set"
    assert Criterion.parse("missing_class_share_corrected").describe() == (
        "highest mean unconditional missing-class share, corrected")


def test_an_unknown_metric_or_a_task_it_is_not_measured_on_is_a_clear_error():
    with pytest.raises(metrics.UnknownMetric, match=r"unknown metric 'fdi' \(known: fid, kid,"):
        Criterion.parse("fdi")
    with pytest.raises(ValueError, match="psnr is measured on sdedit, egsde only, not on unconditional"):
        Criterion.parse("psnr")
    with pytest.raises(ValueError, match="intra_cluster_lpips is measured on unconditional only, not on sdedit"):
        Criterion.parse("sdedit:intra_cluster_lpips")
    with pytest.raises(ValueError, match="missing_tpr is measured on the classifier's calibration rows only"):
        Criterion.parse("missing_tpr")
    with pytest.raises(metrics.UnknownMetric, match="'fdi'"):
        metrics.label("fdi")


def test_the_tables_bold_and_label_each_metric_by_its_direction():
    lower = ["fid", "kid", "lpips", "missing_fpr", "clipped_share"]
    higher = ["psnr", "ssim", "missing_class_share_corrected", "class_preservation", "recall", "coverage"]
    columns = pd.MultiIndex.from_tuples([("g", m) for m in lower + higher])
    means = pd.DataFrame([[1.0] * len(columns), [2.0] * len(columns)], index=["a", "b"], columns=columns)
    empty = means * float("nan")
    table = Table("t", "t", means, empty, empty, means.notna().astype(int))
    assert all(table.best(("g", m)) == {"a"} for m in lower)
    assert all(table.best(("g", m)) == {"b"} for m in higher)
    headers = [c[-1] for c in table.formatted("markdown").columns]
    assert headers[:2] == ["FID", "KID×1e3"] and "class kept" in headers


def test_a_tables_direction_note_names_its_metrics_by_the_registry():
    assert metrics.directions(["psnr", "fid", "lpips", "ssim", "fid"]) == (
        "Lower is better for FID/LPIPS, higher for PSNR/SSIM.")
    assert metrics.directions(["kid"]) == "Lower is better for KID×1e3."
