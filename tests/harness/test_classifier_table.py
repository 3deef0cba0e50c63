"""The class instrument's calibration as a report table, and the corrected share beside the
raw one in the attribute table."""
import pandas as pd

from report.results import tidy
from report.tables import paper_tables


def _rows():
    out = []
    for seed, (raw, corrected) in enumerate(((0.10, 0.20), (0.12, 0.24))):
        base = dict(run_id=f"naive{seed}", eval_id=f"enaive{seed}", method="naive", weighting=None, seed=seed,
                    ckpt_step=100, extractor="builtin", task="unconditional", t0=None, reference="classifier",
                    subset="missing-classes", n=100)
        out.append({**base, "metric": "missing_class_share", "value": raw, "k": int(raw * 100),
                    "ci_low": raw - 0.05, "ci_high": raw + 0.05})
        out.append({**base, "metric": "missing_class_share_corrected", "value": corrected,
                    "ci_low": corrected - 0.1, "ci_high": corrected + 0.1})
    base = dict(eval_id="esource", stage="calibration", method="calibration", weighting="classifier-calibration",
                extractor="builtin", reference="full-domain", task="unconditional", t0=None)
    for metric, subset, k, n in (("missing_tpr", "missing-classes", 60, 100), ("missing_fpr", "present-classes", 8, 200),
                                 ("class_recall", "all", 250, 300), ("class_recall", "class:bag", 55, 100)):
        out.append({**base, "metric": metric, "subset": subset, "value": k / n, "k": k, "n": n,
                    "ci_low": k / n - 0.05, "ci_high": k / n + 0.05, "note": "classifier: test; calibrated on 300"})
    return tidy(out)


def test_the_classifier_table_shows_its_confusion_as_counts_and_the_attributes_the_corrected_share():
    tables = {t.name: t for t in paper_tables(_rows())}
    markdown = tables["classifier"].render("markdown")
    assert "real: classifier calibration" in markdown
    assert "0.600 [0.550, 0.650] (60/100)" in markdown and "0.040 [-0.010, 0.090] (8/200)" in markdown
    assert "class:bag" in markdown and "calibrated on 300" in markdown
    attributes = tables["attributes"]
    columns = [c[-1] for c in attributes.means.columns]
    assert columns[:2] == ["missing_class_share", "missing_class_share_corrected"]
    assert attributes.means.loc["naive", attributes.means.columns[1]] == pd.Series([0.20, 0.24]).mean()


def test_the_source_style_calibration_is_a_row_of_its_own():
    rows = _rows()
    grey = rows[rows.weighting == "classifier-calibration"].assign(
        weighting="classifier-calibration-source", reference="source-domain", value=0.9, k=90, n=100,
        note="classifier: test; calibrated on grey")
    table = {t.name: t for t in paper_tables(pd.concat([rows, grey], ignore_index=True))}["classifier"]
    assert list(table.means.index) == ["real: classifier calibration", "real: classifier calibration, source style"]
    assert table.means.loc["real: classifier calibration, source style"].eq(0.9).all()
    markdown = table.render("markdown")
    assert "The source-style row" in markdown and "calibrated on grey" in markdown
    assert "The source-style row" not in {t.name: t for t in paper_tables(rows)}["classifier"].render("markdown")
