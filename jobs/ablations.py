"""A named variant against its method, reported twice (docs/intervals.md, "Ablations").

A variant (runs.grid: `sdft/sdft-noaux: {lambda_aux: 0}`) differs from its method in the
settings it gives. Its effect is read two ways, both as paired differences (variant minus
method, jobs/paired.py: the same noise and source images, the item-level interval and the
seed-level one, paired by training seed):

- matched: at each setting the two share. A variant candidate is matched with the method's
  candidate of the same checkpoint and the same value of every setting whose values the two
  have in common (lambda_distill); the settings whose values they never share (lambda_aux 0
  against the method's tied values) are the variant's own. What this isolates is the one
  setting, at equal everything else.
- selected: each at its own setting selected on the validation split (the fair selection,
  report.selection): what a user of either gets.

Both read the test split (or, without splits, every row; then there is no selected
comparison). A candidate the variant shares with its method (one run) is no comparison.
"""
from __future__ import annotations

from pathlib import Path

from runs.methods import unit_name
from runs.params import label as param_label
from report.selection import GROUP, Selection, split_of, tags, with_variant
from report.table import is_missing, short
from report.tables import prepare

MATCHED, SELECTED = "matched", "selected"


def ablations(df, store_root: Path, selection: Selection | None = None):
    """The rows of every variant's two comparisons: paired.differences rows with `ablation`
    (the variant's name as the tables show it), `comparison` (matched or selected),
    `baseline` (its method's) and `model` (what the row compares, as a table row names it)."""
    import pandas as pd

    from jobs.paired import differences

    df = with_variant(df)
    test = df[split_of(df) != "validation"] if selection is not None else df
    models = test[test["method"] != "calibration"]
    source = test[test["method"] == "source"]
    frames = []
    for key, rows in models[models["variant"].notna()].groupby(GROUP, dropna=False):
        dataset, target, method, weighting, variant = key
        base = models[(models["dataset"] == dataset) & (models["target"] == target) & (models["method"] == method)
                      & _same(models["weighting"], weighting) & models["variant"].isna()]
        here = source[(source["dataset"] == dataset) & (source["target"] == target)]
        if base.empty or here.empty:
            continue
        name, baseline = unit_name(method, weighting, variant), unit_name(method, weighting, None)
        for label, pair in comparisons(base, rows, selection):
            # the pooled rows only: the ablation tables pair by training seed in their seed-level
            # table, and a per-seed row would share its model's label there
            found = differences(prepare(pd.concat([here, *pair])), store_root, (baseline,), per_seed=False)
            if found.empty:
                continue
            found = found[found["model"] == name]
            frames.append(found.assign(ablation=name, baseline=baseline, model=label[1], order=len(frames),
                                       comparison=label[0]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def comparisons(base, variant, selection: Selection | None = None) -> list[tuple]:
    """((comparison, row label), (method rows, variant rows)) of one variant: matched at every
    shared setting, then selected (with a selection)."""
    return _matched(base, variant) + _selected(base, variant, selection)


def _same(column, value):
    return column.isna() if not isinstance(value, str) else column == value


def _candidates(rows) -> dict[str, "pd.DataFrame"]:  # noqa: F821
    """A unit's rows by candidate (its settings and checkpoint)."""
    columns = sorted(c for c in rows.columns if c.startswith("p_")) + ["ckpt_step"]
    keys = tags(rows, columns)
    return {k: rows[keys == k] for k in dict.fromkeys(keys)}


def _settings(rows, columns: list[str]) -> dict:
    first = rows.iloc[0]
    return {c: first[c] for c in columns}


def _text(settings: dict) -> str:
    """'λd=0.1 @600' of the settings (p_<name>: value, ckpt_step: step); 'none' where a
    run has no such setting (the method without the variant's adapter)."""
    parts = [f"{param_label(c[2:])}={'none' if is_missing(v) else short(v)}"
             for c, v in settings.items() if c.startswith("p_")]
    parts += [f"@{int(v)}" for c, v in settings.items() if c == "ckpt_step" and v == v and v is not None]
    return " ".join(parts)


def _varying(*frames) -> list[str]:
    """The settings (and the checkpoint) whose value differs among these rows' candidates."""
    import pandas as pd

    rows = pd.concat(frames)
    columns = sorted(c for c in rows.columns if c.startswith("p_")) + ["ckpt_step"]
    return [c for c in columns if rows[c].nunique(dropna=False) > 1]


def _matched(base, variant) -> list[tuple]:
    """((comparison, row label), (method rows, variant rows)) at every shared setting."""
    varying = _varying(base, variant)
    own = [c for c in varying if not set(base[c].dropna()) & set(variant[c].dropna())]
    shared = [c for c in varying if c not in own]
    if not own:                    # the variant's setting has the method's values: nothing to isolate
        return []
    out = []
    for _, rows in _candidates(variant).items():
        at = _settings(rows, shared)
        match = base
        for c, v in at.items():
            match = match[match[c] == v] if v == v and v is not None else match[match[c].isna()]
        if match.empty or len(_candidates(match)) != 1:
            continue
        label = f"matched {_text(at)}".strip() if at else "matched"
        out.append(((MATCHED, label + f" ({_text(_settings(rows, own))} against "
                     f"{_text(_settings(match, own))})"), (match, rows)))
    return out


def _selected(base, variant, selection: Selection | None) -> list[tuple]:
    """((comparison, row label), (method rows, variant rows)) at each one's selected candidate."""
    if selection is None:
        return []
    chosen = set(zip(selection.chosen()["_group"], selection.chosen()["_candidate"]))
    pair = []
    for rows in (base, variant):
        keys = list(zip(tags(rows, GROUP), tags(rows, selection.columns)))
        pair.append(rows[[k in chosen for k in keys]])
    if any(p.empty for p in pair):
        return []
    varying = _varying(base, variant)
    label = (f"selected: {_text(_settings(pair[1], varying)) or 'its only setting'} against "
             f"{_text(_settings(pair[0], varying)) or 'its only setting'}")
    return [((SELECTED, label), tuple(pair))]
