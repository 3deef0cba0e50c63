"""Paired differences against a baseline model, from the per-item values each evaluation
saved beside its metrics (items/<product>.npz, written by jobs/evaluation/measure.py and listed in
products/manifest.json).

Every model is evaluated on the same noise and the same source images, so item i of one
model and item i of another are a pair: a paired bootstrap (models.intervals
.paired_difference) resamples the items once per replicate and feeds them to both, which
cancels the variation the two share (which noise, which source images). Over evaluation
seeds the items are grouped by seed (two-level); the seeds of a translation translate the
same source images (item i of every seed: input i, jobs/evaluation/splits.inputs), so a
replicate draws those inputs once for all seeds (`units_of`), and `n` is the number of
distinct items (inputs, or noise draws). A model with several runs (training seeds)
enters as the mean of its runs' statistics on the same items; such a difference also gets
a seed-level interval (models.intervals.seed_level_difference: a t-interval over the
training runs, named in `seed_interval`).

One definition of a statistic over several evaluation seeds, shared with the tables and
their cells (jobs/cells.py): the mean over seeds of the per-seed statistic. For FID this
matters (pooling two seeds into one FID at twice the n lowers its small-sample bias), and
the per-seed mean is what the tidy rows and the calibration rows are measured at.

With evaluation splits, items pair within one split only (test with test, validation with
validation): the two splits have other noise and other inputs, so their item i are no pair.
The aggregate passes the rows it reports (the selected candidates' test rows), so that the
baseline is the selected naive.

Measured: unconditional FID (the table's extractor and reference), LPIPS to the source
model's sample, missing-class share and its corrected value (models/class_share.py: the
calibration images, saved in the references' items, are drawn in the same replicate for both
models, each model's in the style of its samples: the source model's share is corrected with
the source-style calibration where the source model's evaluation measured one); per translation task and t0: PSNR, SSIM, LPIPS, FID,
class kept on the missing classes. Shares are ratios of item counts (the confidence
filter's kept items in the denominator).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runs.store import RunFolder
from jobs.evaluation.manifest import final, read_manifest
from jobs.evaluation.splits import items_name
from models.class_share import CALLS_PREFIX, Calibration, CorrectedShare, style_of
from models.feature_intervals import N_RESAMPLES_FEATURE, FrechetReplicates
from models.intervals import N_RESAMPLES, distinct_units, layout, paired_difference, seed_level_difference


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
def item_mean(values):
    """The mean of the values at item indices."""
    return lambda idx: float(values[idx].mean())


class ItemShare:
    """The share of hits among the items of the denominator (`kept`), of item indices."""

    def __init__(self, hits, kept):
        self.hits, self.kept = hits, kept

    def __call__(self, idx) -> float:
        denominator = self.kept[idx].sum()
        return float(self.hits[idx].sum() / denominator) if denominator else float("nan")


def units_of(items: dict, task: str) -> np.ndarray | None:
    """The input of each item that the other evaluation seeds' items share (None: nothing
    shared). Translations: every seed translates the same inputs in the same order, so the
    input is the item's position within its seed (or the saved `inputs`, where there are).
    Unconditional samples: each seed has its own noise, nothing is shared."""
    if "inputs" in items:
        return np.asarray(items["inputs"])
    groups = items["groups"]
    seeds, counts = np.unique(groups, return_counts=True)
    if task == "unconditional" or len(seeds) < 2 or len(set(counts.tolist())) != 1:
        return None
    out = np.empty(len(groups), dtype=np.int64)
    for g in seeds:
        out[groups == g] = np.arange(int(counts[0]))
    return out


def run_value(statistic, groups: np.ndarray, units=None) -> float:
    """A run's statistic on all its items: the mean over evaluation seeds of its per-seed
    value (the tables' mean of the rows)."""
    return float(np.mean([statistic(m) for m in layout(len(groups), groups, units).members]))


def calibration_of(refs: dict, confidence: float, style: str) -> Calibration | None:
    """The classifier's calibration from the references' items (None where none was saved):
    in the source's style where `style` asks for it and it was measured, else the target's
    (as jobs/evaluation/instruments.py References.calls_for chooses)."""
    prefix = CALLS_PREFIX[style if f"{CALLS_PREFIX[style]}_labels" in refs else "target"]
    if f"{prefix}_labels" not in refs:
        return None
    missing = refs.get("missing", np.array([], dtype=np.int64))
    return Calibration.of_calls(refs[f"{prefix}_labels"], refs[f"{prefix}_predicted"], refs[f"{prefix}_confidence"],
                                missing, confidence)


def statistics(items: dict, task: str, extractor: str, reference: np.ndarray | None, missing,
               confidence: float, calibration: Calibration | None = None) -> dict[str, tuple]:
    """metric -> (statistic of item indices, resamples) for one run's product."""
    out: dict[str, tuple] = {}
    if reference is not None and f"features_{extractor}" in items:
        out["fid"] = (FrechetReplicates(items[f"features_{extractor}"], reference), N_RESAMPLES_FEATURE)
    for metric in ("psnr", "ssim", "lpips"):
        if metric in items:
            out[metric] = (item_mean(items[metric]), N_RESAMPLES)
    if "predicted" in items:
        kept = items["confidence"] >= confidence
        if task == "unconditional":
            hits = np.isin(items["predicted"], missing) & kept
            out["missing_class_share"] = (ItemShare(hits, kept), N_RESAMPLES)
            if calibration is not None:
                out["missing_class_share_corrected"] = (CorrectedShare(hits, kept, calibration), N_RESAMPLES)
        elif "labels" in items:
            lacking = np.isin(items["labels"], missing) & kept
            out["class_preservation"] = (ItemShare((items["predicted"] == items["labels"]) & lacking, lacking),
                                         N_RESAMPLES)
    return out


def model_difference(runs: list[dict], baseline: list[dict], groups: np.ndarray, seed: int = 0, units=None):
    """metric -> Interval of mean-over-runs(model) - mean-over-runs(baseline); `runs` and
    `baseline` are lists of statistics() dicts over the same items. Each statistic is
    averaged over the evaluation seeds (per_group), as the tables' cells are; `units`
    (units_of) crosses the seeds with their shared inputs."""
    out = {}
    # in statistics()' order, not a set's: the tables' columns stay put from run to run
    for metric in [m for m in runs[0] if all(m in r for r in runs + baseline)]:
        resamples = runs[0][metric][1]
        a = lambda idx, m=metric: float(np.mean([r[m][0](idx) for r in runs]))  # noqa: E731
        b = lambda idx, m=metric: float(np.mean([r[m][0](idx) for r in baseline]))  # noqa: E731
        several = len(np.unique(groups)) > 1
        out[metric] = paired_difference(a, b, len(groups), groups if several else None, per_group=True,
                                        n_resamples=resamples, seed=seed, units=units if several else None,
                                        centred=metric == "fid")
    return out


def seed_columns(model: dict, baseline: dict, metric: str, groups: np.ndarray, units=None) -> dict:
    """The seed-level interval's columns of one difference (NaN where there is none):
    `model` and `baseline` map each run's training seed to its statistics() dict."""
    found = seed_level_difference({s: run_value(st[metric][0], groups, units) for s, st in model.items()},
                                  {s: run_value(st[metric][0], groups, units) for s, st in baseline.items()})
    if found is None:
        return {"seed_ci_low": float("nan"), "seed_ci_high": float("nan"), "seed_runs": float("nan"),
                "seed_interval": None}
    return {"seed_ci_low": found.interval.low, "seed_ci_high": found.interval.high, "seed_runs": found.runs,
            "seed_interval": found.method}


def _split(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _step(value) -> int | None:
    return None if value is None or value != value else int(value)


def differences(df, store_root: Path, baselines: Sequence[str] = ("naive",), per_seed: bool = True):
    """The paired-differences table's rows against each of `baselines` (its name in the
    `baseline` column; a DataFrame, empty without any of them). Each evaluation's items are
    loaded once for all baselines. `df` is report.tables.prepare()'d tidy results; each split
    in it is paired on its own (its group names the split when there are two). per_seed: also
    the rows of each training seed on its own (`training_seed` set; _per_seed_rows)."""
    import pandas as pd

    splits = sorted({_split(v) for v in df.get("split", pd.Series([None] * len(df)))}, key=str)
    if len(splits) > 1:
        return pd.concat([_differences(df[[_split(v) == split for v in df["split"]]], store_root, baselines, split,
                                       per_seed, f"{split}: ") for split in splits], ignore_index=True)
    return _differences(df, store_root, baselines, splits[0] if splits else None, per_seed)


def _differences(df, store_root: Path, baselines: Sequence[str], split: str | None, per_seed: bool,
                 tag: str = ""):
    import pandas as pd

    from runs.spec import EvalSpec
    from report.tables import reported_extractor, reported_reference

    # an evaluation a named variant shares with its method is a model of both (runs.grid)
    models = df[(df["method"] != "calibration") & ~df["is_early"]].drop_duplicates(["eval_id", "model"])
    baselines = [b for b in baselines if b in set(models["model"])]
    if not baselines:
        return pd.DataFrame()
    rows_of: dict[str, list[dict]] = {b: [] for b in baselines}   # in the order asked for
    ext, ref = reported_extractor(df), reported_reference(df)
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
        # each model's share corrected with the error rates of its samples' style
        calibrations = {style: calibration_of(refs, settings.confidence, style) for style in ("target", "source")}
        # the checkpoint of the rows (a selected earlier checkpoint is an eval id's only one)
        # a run: (eval id, checkpoint step); a model (label) may share one with another
        keys = list(zip(group["eval_id"], map(_step, group["ckpt_step"])))
        runs = {key: final_items(store_root / key[0], split, key[1]) for key in keys}
        members = list(zip(keys, group["model"]))
        # the source model is nobody's training run: its seed does not vary (seed_level_difference)
        seeds = group["seed"] if "seed" in group else [None] * len(group)
        trained = {k: None if m == "source" else s for k, m, s in zip(keys, group["method"], seeds)}
        style = {k: style_of(m) for k, m in zip(keys, group["method"])}
        order = dict(zip(group["model"], group["order"]))
        costs = _training_costs(group)
        prefix = tag + (f"{dataset}/{target} " if len(pairs) > 1 else "")
        for product in sorted({p for r in runs.values() for p in r.products}, key=lambda p: (p[0], p[1] or 0)):
            task, t0 = product
            reference = refs.get(f"features_{ext}_{ref}")
            loaded, stats = {}, {}
            for eid, found in runs.items():
                if product in found.products:
                    loaded[eid] = load(found.products[product])
                    stats[eid] = statistics(loaded[eid], task, ext, reference, missing, settings.confidence,
                                            calibrations[style[eid]])
            by_model: dict[str, list[tuple]] = {}
            for eid, model in members:
                if eid in stats and eid not in by_model.get(model, []):
                    by_model.setdefault(model, []).append(eid)
            name = f"{prefix}{task}" + (f" t0={t0:g}" if t0 is not None else "")
            for baseline in [b for b in baselines if b in by_model]:
                base_runs, rows = by_model[baseline], rows_of[baseline]
                groups = loaded[base_runs[0]]["groups"]
                units = units_of(loaded[base_runs[0]], task)
                for model, eids in by_model.items():
                    if model == baseline or any(not np.array_equal(loaded[e]["groups"], groups) for e in eids):
                        continue
                    found = model_difference([stats[e] for e in eids], [stats[e] for e in base_runs], groups,
                                             units=units)
                    for metric, interval in found.items():
                        # distinct items; of a share, those in a denominator of either model's runs
                        masks = [getattr(stats[e][metric][0], "kept", None) for e in eids + base_runs]
                        distinct = distinct_units(len(groups), groups, units, [m for m in masks if m is not None])
                        baseline_value = float(np.mean([run_value(stats[e][metric][0], groups, units)
                                                        for e in base_runs]))
                        seeded = seed_columns(_by_seed(eids, trained, stats), _by_seed(base_runs, trained, stats),
                                              metric, groups, units)
                        rows.append({"dataset": dataset, "target": target, "model": model, "order": order[model],
                                     "group": name, "baseline": baseline, "metric": metric, **interval.row(),
                                     "n": distinct,
                                     "baseline_value": baseline_value, "runs": len(eids), **seeded,
                                     **_cost_columns(costs, model, baseline),
                                     "note": f"{metric}: {interval.resamples} paired resamples"
                                     + (" (evaluation seeds share their inputs: drawn once)" if units is not None else "")
                                     + (f" ({ext} features, against the {ref} set)" if metric == "fid" else "")})
                    if per_seed:
                        rows += _per_seed_rows(rows[-len(found):] if found else [], _by_seed(eids, trained, stats),
                                               _by_seed(base_runs, trained, stats), groups, units)
    return pd.DataFrame([row for rows in rows_of.values() for row in rows])


def _training_costs(group) -> dict[str, dict[str, float]]:
    """Model -> its training cost as the model tables show it (report.tables.cost_stats: the
    mean over its runs of compute in naive kimg and of the training loop's seconds)."""
    from report.tables import cost_stats

    out: dict[str, dict[str, float]] = {}
    for (_, column), stats in cost_stats(group).items():
        for model, value in stats["mean"].dropna().items():
            out.setdefault(model, {})[column] = float(value)
    return out


def _cost_columns(costs: dict, model: str, baseline: str) -> dict[str, float]:
    """A pooled difference row's training cost: the model's, and its seconds over the
    baseline's (`train_ratio`), so a difference is read beside what it cost."""
    own = dict(costs.get(model, {}))
    base_s = costs.get(baseline, {}).get("train_s")
    if own.get("train_s") and base_s:
        own["train_ratio"] = own["train_s"] / base_s
    return own


def _per_seed_rows(pooled: list[dict], model: dict, baseline: dict, groups, units) -> list[dict]:
    """One model's differences per training seed, beside its pooled `pooled` rows: its run
    of seed s against the baseline's run of seed s (the source model, untrained, against
    each of them), with the item-level paired interval of that pair alone; `training_seed`
    names the seed. Only where the baseline has several seeds, each once."""
    seeds = [s for s in baseline if isinstance(s, int)]
    if len(seeds) < 2 or len(seeds) != len(baseline) or not pooled:
        return []
    untrained = list(model) == [None]
    out = []
    for seed in seeds:
        run = model[None] if untrained else model.get(seed)
        if run is None:
            continue
        found = model_difference([run], [baseline[seed]], groups, units=units)
        for row in pooled:
            if row["metric"] not in found:
                continue
            interval = found[row["metric"]]
            out.append({**{k: row[k] for k in ("dataset", "target", "model", "order", "group", "baseline", "metric",
                                                    "n")},
                        **interval.row(), "runs": 1, "training_seed": seed,
                        "baseline_value": run_value(baseline[seed][row["metric"]][0], groups, units),
                        "note": row["note"]})
    return out


def _by_seed(eids: list, trained: dict, stats: dict) -> dict:
    """Training seed -> statistics() of a model's runs; keyed by eval id where seeds repeat
    (then the seed-level interval does not pair them by seed)."""
    seeds = [None if trained[e] is None or trained[e] != trained[e] else int(trained[e]) for e in eids]
    if len(set(seeds)) < len(seeds):
        return {e: stats[e] for e in eids}
    return {s: stats[e] for s, e in zip(seeds, eids)}
