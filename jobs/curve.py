"""The forgetting curve: the corrected missing-class share and FID against the fine-tuning
step, per method (naive and each sdft weighting), with the source model's share as the level
that fine-tuning starts from.

The points are the evaluations' unconditional rows at every evaluated checkpoint: the
snapshots that `evaluation.curve_steps` kept (their rows in each evaluation's curve.parquet,
apart from the metrics, so that no table or selection takes them for early-stopping
candidates), any `checkpoint_steps` snapshot, and the final model. Only the reported
evaluations enter (with evaluation splits: the selected candidates, their test rows). A
point's value is the tables' (the mean of its rows: per-seed FIDs averaged, docs/intervals.md)
and its interval is the tables' too: one row's own (the corrected share's bootstrap with the
calibration drawn in each replicate, docs/evaluation-classes.md; FID's centred bootstrap), or
for several runs or seeds the hierarchical bootstrap of jobs/cells.py.

The aggregate writes results/<grid>/curve.parquet (the curve's own tidy rows),
forgetting_curve.parquet (the points, read by report.curve for the table) and
forgetting_curve.png.
"""
from __future__ import annotations

import math
from pathlib import Path

from report import metrics
from report.curve import CURVE_METRICS, SHARE
from report.results import POINTS_FILE, tidy, write_parquet
from report.selection import VALIDATION, split_of
from report.tables import cell_key, model_labels, prepare, reported_extractor, reported_reference
from jobs.figures import distinct_colours, pyplot, save_figure

CURVE_FILE = "curve.parquet"


def collect_curve(spec, store_root: Path):
    """The curve rows of a grid's evaluations (their curve.parquet), or None where none has any."""
    import pandas as pd

    frames = [pd.read_parquet(store_root / eval_id / CURVE_FILE).assign(grid=spec.grid, dataset=d, target=t)
              for eval_id, (d, t) in spec.evaluations.items() if (store_root / eval_id / CURVE_FILE).is_file()]
    return tidy(pd.concat(frames, ignore_index=True)) if frames else None


def curve_rows(df, curve, shown):
    """The rows behind the curve: every unconditional row of the shown evaluations that have
    curve rows, at every checkpoint, and the source model's (the reference level); of the
    test split (or of no split), the tables' FID extractor and reference."""
    import pandas as pd

    ids = set(curve["eval_id"]) & set(shown["eval_id"])
    if not ids:
        return curve.iloc[:0]
    source = df[(df["method"] == "source") & df[["dataset", "target"]].apply(tuple, axis=1).isin(
        set(curve[curve["eval_id"].isin(ids)][["dataset", "target"]].apply(tuple, axis=1)))]
    rows = pd.concat([df[df["eval_id"].isin(ids)], curve[curve["eval_id"].isin(ids)], source], ignore_index=True)
    rows = rows[(split_of(rows) != VALIDATION) & (rows["task"] == "unconditional")
                & rows["metric"].isin(CURVE_METRICS)]
    ext, ref = reported_extractor(rows), reported_reference(rows)
    fid = (rows["metric"] == "fid") & (rows["extractor"] == ext) & (rows["reference"] == ref)
    share = (rows["metric"] == SHARE) & (rows["subset"] == "missing-classes")
    return rows[fid | share]


def points(rows, cell_table=None):
    """One point per (dataset, target, model, step, metric): the mean of its rows and its
    interval (a row's own; for several rows the cells table's, else the span of the rows'
    intervals, named in `interval`)."""
    import pandas as pd

    if rows.empty:
        return pd.DataFrame()
    rows = prepare(rows)
    rows["line"] = model_labels(rows.assign(is_early=False))
    cells = {} if cell_table is None or cell_table.empty else {
        (c["members"], c["metric"]): c for _, c in cell_table.iterrows()}
    out = []
    keys = ["dataset", "target", "line", "ckpt_step", "metric"]
    for (dataset, target, line, step, metric), group in rows.groupby(keys, dropna=False):
        source = group["method"].iloc[0] == "source"
        value = float(group["value"].mean())
        if len(group) == 1:
            low, high, how = group["ci_low"].iloc[0], group["ci_high"].iloc[0], "one row: its own interval"
            n = group["n"].iloc[0]
        else:
            found = cells.get((cell_key(group)[0], metric)) if cell_key(group) is not None else None
            if found is not None:
                low, high, n = found["ci_low"], found["ci_high"], found["n"]
                how = f"{len(group)} rows: hierarchical bootstrap (jobs/cells.py)"
            else:
                low, high, n = group["ci_low"].min(), group["ci_high"].max(), group["n"].sum()
                how = f"{len(group)} rows: the span of their intervals (no per-item values)"
        out.append({"dataset": dataset, "target": target, "model": "source" if source else line,
                     "method": group["method"].iloc[0], "order": float(group["order"].iloc[0]),
                     "step": None if source or _missing(step) else int(step), "metric": metric,
                     "value": value, "ci_low": _float(low), "ci_high": _float(high), "n": _float(n),
                     "rows": len(group), "runs": group["eval_id"].nunique(), "interval": how})
    return pd.DataFrame(out)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _float(value) -> float:
    return math.nan if _missing(value) else float(value)


def forgetting_curve(df, curve, shown, store_root: Path, grid_dir: Path):
    """The curve's points (written to forgetting_curve.parquet) and its figure, or (None,
    None) where the grid evaluated no curve. `df` the grid's tidy rows, `curve` its curve
    rows, `shown` the rows the tables report."""
    from jobs.cells import cells

    if curve is None or curve.empty:
        return None, None
    write_parquet(grid_dir / CURVE_FILE, curve)
    rows = curve_rows(df, curve, shown)
    found = points(rows, cells(prepare(rows), store_root))
    if found.empty:
        return None, None
    write_parquet(grid_dir / POINTS_FILE, found)
    return found, curve_plot(found, grid_dir / "forgetting_curve.png")


def curve_plot(found, path: Path) -> Path:
    """Per (dataset, target): the corrected share against the step (interval bands, the
    source model's share as a dashed level) and FID against the step (error bars)."""
    plt = pyplot()

    pairs = sorted(found.groupby(["dataset", "target"]).groups)
    models = [m for m in found.sort_values(["order", "model"])["model"].unique() if m != "source"]
    colours = distinct_colours(models)
    fig, axes = plt.subplots(len(pairs), 2, figsize=(11, 4.2 * len(pairs)), squeeze=False)
    for (share_ax, fid_ax), (dataset, target) in zip(axes, pairs):
        here = found[(found["dataset"] == dataset) & (found["target"] == target)]
        for metric, ax in ((SHARE, share_ax), ("fid", fid_ax)):
            for model in models:
                line = here[(here["model"] == model) & (here["metric"] == metric)].sort_values("step")
                if line.empty:
                    continue
                ax.plot(line["step"], line["value"], "o-", color=colours[model], label=model, ms=4)
                ax.fill_between(line["step"], line["ci_low"], line["ci_high"], color=colours[model], alpha=0.15)
            level = here[(here["model"] == "source") & (here["metric"] == metric)]
            if metric == SHARE and not level.empty:
                row = level.iloc[0]
                ax.axhline(row["value"], color="black", ls="--", lw=1, label="source model")
                ax.axhspan(row["ci_low"], row["ci_high"], color="black", alpha=0.06)
            ax.set_xlabel("fine-tuning step")
            ax.grid(alpha=0.3)
        share_ax.set_ylabel(metrics.label(SHARE))
        fid_ax.set_ylabel("unconditional FID")
        share_ax.set_title(f"{dataset}/{target}: missing classes", fontsize=9)
        fid_ax.set_title(f"{dataset}/{target}: FID", fontsize=9)
        share_ax.legend(fontsize=7)
    fig.suptitle("The forgetting curve (bands: 95 % intervals)")
    return save_figure(fig, path)
