"""Paired differences against a baseline model, from the per-item values each evaluation
saved beside its metrics (items/<product>.npz, written by jobs/evaluation/measure.py and listed in
products/manifest.json).

Every model is evaluated on the same noise and the same source images, so item i of one
model and item i of another are a pair: a paired bootstrap (models.intervals
.paired_difference) resamples the items once per replicate and feeds them to both, which
cancels the variation the two share (which noise, which source images). Over evaluation
seeds the items are grouped by seed (two-level). A model with several runs (training
seeds) enters as the mean of its runs' statistics on the same items.

With evaluation splits, items pair within one split only (test with test, validation with
validation): the two splits have other noise and other inputs, so their item i are no pair.
The aggregate passes the rows it reports (the selected candidates' test rows), so that the
baseline is the selected naive.

Measured: unconditional FID (the table's extractor and reference), LPIPS to the source
model's sample, missing-class share and its corrected value (models/class_share.py: the
calibration images, saved in the references' items, are drawn in the same replicate for both
models); per translation task and t0: PSNR, SSIM, LPIPS, FID,
class kept on the missing classes. Shares are ratios of item counts (the confidence
filter's kept items in the denominator).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.store import RunFolder
from jobs.evaluation.manifest import final, read_manifest
from jobs.evaluation.splits import items_name
from models.class_share import Calibration, CorrectedShare
from models.feature_intervals import N_RESAMPLES_FEATURE, FrechetReplicates
from models.intervals import N_RESAMPLES, paired_difference


@dataclass(frozen=True)
class Items:
    """One run's final products: (task, t0) -> eval seed -> the product's per-item file."""
    eval_id: str
    products: dict


def final_items(eval_dir: Path, split: str | None = None, step: int | None = None) -> Items:
    """The per-item files of one split of a run's final checkpoint (the largest step; or of
    checkpoint `step`), by task and t0, as its manifest lists them (calibration and reference
    items are not products)."""
    found: dict[tuple, dict[int, Path]] = {}
    entries = [e for e in read_manifest(RunFolder(eval_dir)) if e.split == split]
    chosen = [e for e in entries if e.ckpt_step == step] if step is not None else list(final(entries).values())
    for entry in chosen:
        path = eval_dir / "items" / entry.items
        if path.is_file():
            found.setdefault((entry.task, entry.t0), {})[entry.eval_seed] = path
    return Items(eval_dir.name, found)


def load(paths: dict) -> dict[str, np.ndarray]:
    """The arrays of one product over its evaluation seeds, concatenated in seed order, and
    `groups`: the seed of each item."""
    parts = []
    for seed in sorted(paths):
        with np.load(paths[seed]) as f:
            parts.append((seed, dict(f)))
    keys = set.intersection(*(set(p) for _, p in parts))
    out = {k: np.concatenate([p[k] for _, p in parts]) for k in keys}
    out["groups"] = np.concatenate([np.full(len(next(iter(p.values()))), s) for s, p in parts])
    return out


# ---------------------------------------------------------------- statistics of item indices
def _mean(values):
    return lambda idx: float(values[idx].mean())


def _ratio(hits, kept):
    def statistic(idx):
        denominator = kept[idx].sum()
        return float(hits[idx].sum() / denominator) if denominator else float("nan")
    return statistic


def calibration_of(refs: dict, confidence: float) -> Calibration | None:
    """The classifier's calibration from the references' items (None where none was saved)."""
    if "calibration_labels" not in refs:
        return None
    missing = refs.get("missing", np.array([], dtype=np.int64))
    return Calibration(np.isin(refs["calibration_labels"], missing), np.isin(refs["calibration_predicted"], missing),
                       refs["calibration_confidence"] >= confidence)


def statistics(items: dict, task: str, extractor: str, reference: np.ndarray | None, missing,
               confidence: float, calibration: Calibration | None = None) -> dict[str, tuple]:
    """metric -> (statistic of item indices, resamples) for one run's product."""
    out: dict[str, tuple] = {}
    if reference is not None and f"features_{extractor}" in items:
        out["fid"] = (FrechetReplicates(items[f"features_{extractor}"], reference), N_RESAMPLES_FEATURE)
    for metric in ("psnr", "ssim", "lpips"):
        if metric in items:
            out[metric] = (_mean(items[metric]), N_RESAMPLES)
    if "predicted" in items:
        kept = items["confidence"] >= confidence
        if task == "unconditional":
            hits = np.isin(items["predicted"], missing) & kept
            out["missing_class_share"] = (_ratio(hits, kept), N_RESAMPLES)
            if calibration is not None:
                out["missing_class_share_corrected"] = (CorrectedShare(hits, kept, calibration), N_RESAMPLES)
        elif "labels" in items:
            lacking = np.isin(items["labels"], missing) & kept
            out["class_preservation"] = (_ratio((items["predicted"] == items["labels"]) & lacking, lacking),
                                         N_RESAMPLES)
    return out


def model_difference(runs: list[dict], baseline: list[dict], groups: np.ndarray, seed: int = 0):
    """metric -> Interval of mean-over-runs(model) - mean-over-runs(baseline); `runs` and
    `baseline` are lists of statistics() dicts over the same items."""
    out = {}
    for metric in set.intersection(*(set(r) for r in runs + baseline)):
        resamples = runs[0][metric][1]
        a = lambda idx, m=metric: float(np.mean([r[m][0](idx) for r in runs]))  # noqa: E731
        b = lambda idx, m=metric: float(np.mean([r[m][0](idx) for r in baseline]))  # noqa: E731
        several = len(np.unique(groups)) > 1
        out[metric] = paired_difference(a, b, len(groups), groups if several else None,
                                        n_resamples=resamples, seed=seed)
    return out


def _split(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _step(value) -> int | None:
    return None if value is None or value != value else int(value)


def differences(df, store_root: Path, baseline: str = "naive"):
    """The paired-differences table's rows (a DataFrame; empty without the baseline).
    `df` is harness.report.tables.prepare()'d tidy results; each split in it is paired on
    its own (its group names the split when there are two)."""
    import pandas as pd

    splits = sorted({_split(v) for v in df.get("split", pd.Series([None] * len(df)))}, key=str)
    if len(splits) > 1:
        return pd.concat([_differences(df[[_split(v) == split for v in df["split"]]], store_root, baseline, split,
                                       f"{split}: ") for split in splits], ignore_index=True)
    return _differences(df, store_root, baseline, splits[0] if splits else None)


def _differences(df, store_root: Path, baseline: str, split: str | None, tag: str = ""):
    import pandas as pd

    from harness.spec import EvalSpec
    from harness.report.tables import _extractor, _reference

    rows = []
    models = df[(df["method"] != "calibration") & ~df["is_early"]].drop_duplicates("eval_id")
    if baseline not in set(models["model"]):
        return pd.DataFrame()
    ext, ref = _extractor(df), _reference(df)
    pairs = models.groupby(["dataset", "target"])
    for (dataset, target), group in pairs:
        source = group[group["method"] == "source"]
        if source.empty:
            continue
        references = store_root / source["eval_id"].iloc[0] / "items" / items_name("references", split)
        if not references.is_file():
            continue
        with np.load(references) as f:
            refs = dict(f)
        missing = refs.get("missing", np.array([], dtype=np.int64))
        settings = EvalSpec.model_validate(RunFolder(store_root / source["eval_id"].iloc[0]).read_spec()).settings
        calibration = calibration_of(refs, settings.confidence)
        # the checkpoint of the rows (a selected earlier checkpoint is an eval id's only one)
        runs = {eid: final_items(store_root / eid, split, _step(step))
                for eid, step in zip(group["eval_id"], group["ckpt_step"])}
        labels = dict(zip(group["eval_id"], group["model"]))
        order = dict(zip(group["model"], group["order"]))
        prefix = tag + (f"{dataset}/{target} " if len(pairs) > 1 else "")
        for product in sorted({p for r in runs.values() for p in r.products}, key=lambda p: (p[0], p[1] or 0)):
            task, t0 = product
            reference = refs.get(f"features_{ext}_{ref}")
            loaded, stats = {}, {}
            for eid, found in runs.items():
                if product in found.products:
                    loaded[eid] = load(found.products[product])
                    stats[eid] = statistics(loaded[eid], task, ext, reference, missing, settings.confidence,
                                            calibration)
            by_model: dict[str, list[str]] = {}
            for eid in stats:
                by_model.setdefault(labels[eid], []).append(eid)
            if baseline not in by_model:
                continue
            base_runs = by_model[baseline]
            groups = loaded[base_runs[0]]["groups"]
            name = f"{prefix}{task}" + (f" t0={t0:g}" if t0 is not None else "")
            for model, eids in by_model.items():
                if model == baseline or any(not np.array_equal(loaded[e]["groups"], groups) for e in eids):
                    continue
                found = model_difference([stats[e] for e in eids], [stats[e] for e in base_runs], groups)
                for metric, interval in found.items():
                    rows.append({"dataset": dataset, "target": target, "model": model, "order": order[model],
                                 "group": name, "metric": metric, **interval.row(), "n": len(groups),
                                 "note": f"{metric}: {interval.resamples} paired resamples"
                                 + (f" ({ext} features, against the {ref} set)" if metric == "fid" else "")})
    return pd.DataFrame(rows)
