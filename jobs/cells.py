"""Table cells over several runs: a hierarchical bootstrap from the per-item files.

A paper-table cell (one model, one measurement) made of several rows (training seeds,
evaluation seeds) gets the interval of models.intervals.runs_bootstrap: draw the runs with
replacement, then the evaluation seeds and the images within each drawn seed (one draw for
all runs, which share noise and source images), and recompute each run's statistic per
seed from its items (items/<product>.npz, written by jobs/measure.py):
- psnr, ssim, lpips: the mean of the per-image values;
- fid, kid: from the saved features against the source evaluation's reference features
  (items/references.npz), the tables' extractor and reference set; centred intervals, as
  for one row (KID with each evaluation's own subsets and seed, x1e3);
- missing_class_share_corrected: the same share corrected for the classifier's measured
  errors (models/class_share.py) in the style of the model's samples, the calibration images
  (items/references.npz) drawn in each replicate as well (within a cell of several
  evaluation seeds, once per seed's part);
- missing_class_share and class_preservation (all, missing-classes, present-classes): shares
  of the per-sample predictions among the kept ones (the evaluation's confidence filter),
  widened where needed to the Wilson interval of the share at n distinct items: a share at
  0 or 1 in every run bootstraps to a point, which the counts do not support.
The evaluation seeds of a translation translate the same source images: a replicate draws
those inputs once for all seeds (jobs.paired.units_of). `n` is the number of distinct items
behind the cell (source images, or noise draws; for shares those in the denominator of any
run): the 27 missing-class inputs of 3 runs x 2 seeds are n = 27, not 162; `k` is the
cell's share as a count of them (value x n, fractional where runs disagree).
A statistic over several evaluation seeds is the mean of its per-seed values (FID at one
seed's sample count), as in the tidy rows and in the paired differences (jobs/paired.py).
With evaluation splits, a cell holds rows of one split only, and reads that split's items and
reference features (items/references_<split>.npz): item i of the validation split is no
pair of item i of the test split.
A cell's value is the tables' (the mean of its rows); the recomputed one must agree with it,
or the items do not belong to the rows and the cell is left out. So are cells without
per-item values (intra-cluster LPIPS, FeatDist, P/R/D/C): the tables then show the span of
the rows' intervals and say so.

The aggregate writes the result as results/<grid>/cells.parquet beside metrics.parquet;
report.tables matches its rows to table cells by `cell_key`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from report.tables import CELL_KEYS, cell_key, reported_extractor, reported_reference
from runs.store import RunFolder
from jobs.evaluation.splits import items_name
from jobs.paired import ItemShare, calibration_of, final_items, item_mean, load, units_of
from models.class_share import CorrectedShare, style_of
from models.feature_intervals import N_RESAMPLES_FEATURE, FrechetReplicates, KernelReplicates
from models.intervals import (N_RESAMPLES, Interval, Run, centered_interval, distinct_units,
                              percentile_interval, runs_replicates, same_items, wilson_share)

ITEM_METRICS = ("psnr", "ssim", "lpips")
FEATURE_METRICS = ("fid", "kid")
SHARE_METRICS = ("missing_class_share", "class_preservation")
CORRECTED = "missing_class_share_corrected"
SHARE_SUBSETS = ("all", "missing-classes", "present-classes")
TOLERANCE = 1e-4       # relative: the items' statistic against the rows' value (float32 features)


def _none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def product_paths(eval_dir: Path, task: str, t0: float | None, step: int | None, split: str | None = None) -> dict:
    """eval seed -> the items file of one product of one checkpoint and split, as the
    evaluation's manifest lists them (jobs.paired.final_items reads it)."""
    for (found_task, found_t0), paths in final_items(eval_dir, split, step).products.items():
        if found_task == task and ((found_t0 is None and t0 is None) or (
                found_t0 is not None and t0 is not None and math.isclose(found_t0, t0))):
            return paths
    return {}


class _PerSeed:
    """A statistic built per evaluation seed (KID's subsets are drawn with the seed), called
    with indices into the run's items that lie in one seed (per_group resampling)."""

    def __init__(self, groups: np.ndarray, make):
        self.groups = groups
        self.parts = {}
        for g in np.unique(groups):
            rows = np.flatnonzero(groups == g)
            self.parts[g] = (rows[0], make(rows, g))

    def __call__(self, idx: np.ndarray) -> float:
        offset, statistic = self.parts[self.groups[idx[0]]]
        return statistic(idx - offset)


class _Store:
    """What the cells read, each once: evaluation settings, items, statistics."""

    def __init__(self, store_root: Path):
        self.root = store_root
        self._settings, self._items, self._stats = {}, {}, {}

    def settings(self, eval_id: str):
        if eval_id not in self._settings:
            from runs.spec import EvalSpec

            self._settings[eval_id] = EvalSpec.model_validate(RunFolder(self.root / eval_id).read_spec()).settings
        return self._settings[eval_id]

    def items(self, eval_id: str, task: str, t0, step, seeds: list, split: str | None = None) -> dict | None:
        key = (eval_id, task, t0, step, split)
        if key not in self._items:
            paths = product_paths(self.root / eval_id, task, t0, step, split)
            self._items[key] = load(paths) if paths else None
        found = self._items[key]
        if found is None:
            return None
        tags = set(np.unique(found["groups"]).tolist())      # -1: a file without a seed tag (one seed)
        return found if tags == set(seeds) or (tags == {-1} and len(seeds) == 1) else None

    def statistic(self, eval_id, product, metric, subset, items, context) -> object | None:
        key = (eval_id, product, metric, subset)
        if key not in self._stats:
            self._stats[key] = _statistic(metric, subset, items, self.settings(eval_id), context)
        return self._stats[key]


def _statistic(metric: str, subset: str, items: dict, settings, context: dict):
    """statistic(indices into the items) -> float, or None where the items cannot give it."""
    task, ext, reference, missing, seeds = (context[k] for k in ("task", "ext", "reference", "missing", "seeds"))
    if metric in ITEM_METRICS:
        return item_mean(items[metric]) if metric in items else None
    if metric in FEATURE_METRICS:
        features = items.get(f"features_{ext}")
        if features is None or reference is None:
            return None
        if metric == "fid":
            return FrechetReplicates(features, reference)
        seed_of = lambda g: seeds[0] if g == -1 else int(g)  # noqa: E731
        return _PerSeed(items["groups"], lambda rows, g: (lambda idx, k=KernelReplicates(
            features[rows], reference, settings.kid_subset_size, settings.kid_subsets, seed_of(g)):
            1e3 * k(idx)))
    if "predicted" not in items or missing is None:
        return None
    kept = items["confidence"] >= settings.confidence
    if metric == "missing_class_share" and task == "unconditional":
        return ItemShare(np.isin(items["predicted"], missing) & kept, kept)
    if metric == CORRECTED and task == "unconditional":
        calibration = calibration_of(context["refs"], settings.confidence, context["style"])
        return None if calibration is None else CorrectedShare(np.isin(items["predicted"], missing) & kept, kept,
                                                               calibration)
    if metric == "class_preservation" and "labels" in items and subset in SHARE_SUBSETS:
        labels = items["labels"]
        lacking = np.isin(labels, missing)
        mask = {"all": labels >= 0, "missing-classes": lacking, "present-classes": (labels >= 0) & ~lacking}[subset]
        return ItemShare((items["predicted"] == labels) & mask & kept, mask & kept)
    return None


def _measurable(df, ext: str, ref: str):
    """The rows whose cells the items can give (the tables' extractor and reference for FID/KID)."""
    features = df["metric"].isin(FEATURE_METRICS) & (df["extractor"] == ext) & (df["reference"] == ref)
    items = df["metric"].isin(ITEM_METRICS)
    shares = (df["metric"].isin(["missing_class_share", CORRECTED])
              | ((df["metric"] == "class_preservation") & df["subset"].isin(SHARE_SUBSETS)))
    return df[features | items | shares]


def cells(df, store_root: Path, seed: int = 0):
    """The cells table (a DataFrame): one row per cell of several rows that the items can
    give. `df` is report.tables.prepare()'d tidy results."""
    import pandas as pd

    store, out = _Store(Path(store_root)), []
    models = df[df["method"] != "calibration"]
    if models.empty:
        return pd.DataFrame()
    ext, ref = reported_extractor(df), reported_reference(df)
    models = models.assign(_split=[_split(v) for v in models["split"]] if "split" in models else None)
    for (dataset, target, split), pair in _measurable(models, ext, ref).groupby(["dataset", "target", "_split"],
                                                                                 dropna=False):
        split = _split(split)
        source = models[(models["dataset"] == dataset) & (models["target"] == target)
                        & (models["method"] == "source")]
        refs, name = {}, items_name("references", split)
        if not source.empty and (store.root / source["eval_id"].iloc[0] / "items" / name).is_file():
            with np.load(store.root / source["eval_id"].iloc[0] / "items" / name) as f:
                refs = dict(f)
        for keys, rows in pair.groupby(["model", *CELL_KEYS], dropna=False):
            if len(rows) < 2 or rows["value"].isna().any():
                continue
            found = _cell(rows, store, refs, ext, ref, seed, split)
            if found is not None:
                out.append({"members": cell_key(rows)[0], "dataset": dataset, "target": target, "model": keys[0],
                            **{c: _none(v) for c, v in zip(CELL_KEYS, keys[1:])}, **found})
    return pd.DataFrame(out)


def _split(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _cell(rows, store: _Store, refs: dict, ext: str, ref: str, seed: int, split: str | None = None) -> dict | None:
    first = rows.iloc[0]
    task, metric, subset = first["task"], first["metric"], first["subset"]
    t0 = None if _none(first["t0"]) is None else float(first["t0"])
    runs = []
    for eval_id, own in rows.groupby("eval_id", sort=True):
        step = own["ckpt_step"].iloc[0]
        step = None if _none(step) is None else int(step)
        seeds = sorted(int(s) for s in own["eval_seed"].dropna())
        if own["ckpt_step"].nunique(dropna=False) != 1 or len(seeds) != len(own):
            return None
        items = store.items(eval_id, task, t0, step, seeds, split)
        if items is None:
            return None
        context = {"task": task, "ext": ext, "reference": refs.get(f"features_{ext}_{ref}"),
                   "missing": refs.get("missing"), "seeds": seeds, "refs": refs, "style": style_of(first["method"])}
        statistic = store.statistic(eval_id, (task, t0, step, split), metric, subset, items, context)
        if statistic is None:
            return None
        runs.append(Run(statistic, len(items["groups"]), items["groups"], units_of(items, task)))
    resamples = N_RESAMPLES_FEATURE if metric in FEATURE_METRICS else N_RESAMPLES
    recomputed, reps = runs_replicates(runs, n_resamples=resamples, seed=seed)
    value = float(rows["value"].mean())
    if not math.isclose(recomputed, value, rel_tol=TOLERANCE, abs_tol=1e-9):
        return None
    interval = (centered_interval if metric in FEATURE_METRICS else percentile_interval)(value, reps, resamples)
    share = metric in SHARE_METRICS and rows["k"].notna().all() and rows["n"].notna().all()
    n = distinct_items(runs)
    if share:     # never narrower than the counts allow: a bootstrap of 35/35 cannot leave 1
        floor = wilson_share(value, n)
        interval = Interval(value, min(interval.low, floor.low), max(interval.high, floor.high), resamples)
    what = "FID, KID" if metric in FEATURE_METRICS else ("shares" if share else "means")
    note = (f"Cells of several runs or evaluation seeds ({what}): hierarchical bootstrap from the per-item "
            f"values, {resamples} resamples{', centred' if metric in FEATURE_METRICS else ''}: training runs, "
            "then evaluation seeds, then images, each drawn with replacement (runs on the same noise and inputs "
            "share each draw; evaluation seeds that translate the same source images share each draw of them)"
            + ("; at least the Wilson interval of the share at n distinct items." if share else ".")
            + " n: distinct items (source images or noise draws) behind the cell, not rows x items.")
    return {**interval.row(), "rows": len(rows), "runs": len(runs), "resamples": resamples, "n": n,
            "k": value * n if share else math.nan, "note": note}


def distinct_items(runs: list[Run]) -> int:
    """The distinct items behind a cell: units (a translation's source images are shared by
    its evaluation seeds; runs on the same items share them all), counting for a share
    only the items in some run's denominator."""
    masks = [getattr(r.statistic, "kept", np.ones(r.n_items, dtype=bool)) for r in runs]
    if same_items(runs):
        first = runs[0]
        return distinct_units(first.n_items, first.groups, first.units, masks)
    return sum(distinct_units(r.n_items, r.groups, r.units, [m]) for r, m in zip(runs, masks))

