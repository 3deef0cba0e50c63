"""The forgetting curve as a table: one row per method and evaluated step, the corrected
missing-class share and FID with their intervals, the source model's first (the level
fine-tuning starts from). The points are computed by the aggregate (jobs/curve.py) and
written beside the grid's tables as forgetting_curve.parquet; this renders them, for
report.md and for `python -m harness.tables`.
"""
from __future__ import annotations

from pathlib import Path

from report.table import Table

SHARE = "missing_class_share_corrected"
CURVE_METRICS = (SHARE, "fid")
NOTE = ("The forgetting curve (evaluation.curve_steps): each method's unconditional samples at earlier "
        "checkpoints of its runs and at the final step. Share: the missing-class share corrected for the "
        "classifier's measured errors (docs/evaluation-classes.md); FID: the mean of per-seed FIDs "
        "(docs/intervals.md). Intervals: one run and seed, the row's own; several, the hierarchical bootstrap "
        "of the table cells. The earlier checkpoints are drawn here only: no table selects them.")


def curve_table(found) -> Table | None:
    """The table of the curve's points (a DataFrame as jobs.curve.points makes), or None."""
    import pandas as pd

    if found is None or found.empty:
        return None
    several = found[["dataset", "target"]].drop_duplicates().shape[0] > 1
    found = found.assign(_source=found["model"] != "source").sort_values(
        ["dataset", "target", "_source", "order", "model", "step"], na_position="first")

    def label(row) -> str:
        where = f"{row['dataset']}/{row['target']}: " if several else ""
        at = "" if pd.isna(row["step"]) else f" @{int(row['step'])}"
        return f"{where}{row['model']}{at}"

    found = found.assign(_row=found.apply(label, axis=1))
    order = list(dict.fromkeys(found["_row"]))
    columns = [("unconditional", m) for m in CURVE_METRICS if m in set(found["metric"])]

    def frame(field: str):
        wide = found.pivot_table(index="_row", columns="metric", values=field, aggfunc="first", dropna=False)
        wide = wide.reindex(index=order, columns=[m for _, m in columns])
        wide.columns = pd.MultiIndex.from_tuples(columns)
        return wide

    means = frame("value")
    sources = tuple(r for r in order if r.split(": ")[-1] == "source")
    return Table("forgetting_curve", "The forgetting curve: missing classes and FID against the fine-tuning step",
                 means, frame("ci_low"), frame("ci_high"), frame("rows"), [NOTE], calibration=sources,
                 bold_rows=())


def load_points(folder: Path):
    """A grid folder's (or a published one's) curve points, or None where it has none."""
    from report.results import companion, read_metrics

    path = companion(folder, "points")
    return read_metrics(path) if path is not None else None
