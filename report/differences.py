"""The paired differences' tables (jobs/paired.py's rows, jobs/ablations.py's for a named
variant): each model minus a baseline on the same noise and source images, with its 95 %
paired bootstrap interval, bold where it excludes 0. Per baseline: pooled over the training
runs (`differences`), with the seed-level intervals (`differences_seeds`) and seed by seed
(`differences_by_seed`); per named variant its ablation tables."""
from __future__ import annotations

from typing import TYPE_CHECKING

from report import metrics
from report.table import COST_COLUMNS, COST_GROUP, RATIO_COLUMN, Table

if TYPE_CHECKING:
    import pandas as pd

DIFFERENCE_COST_NOTE = ("Training cost of each model (not a difference): the mean over its runs of its compute "
                        "(naive kimg; runs/compute.py) and of its training loop's measured seconds, and those "
                        "seconds over the baseline's ({baseline}).")


def difference_table(diffs: "pd.DataFrame", baseline: str = "naive") -> Table | None:
    """Paired differences (model minus `baseline`) with their intervals: `diffs` has one row
    per model, group, metric (value, ci_low, ci_high, note), as jobs/paired.py makes them, and
    a `selected_by` column (the criterion's description) when each method's candidate was
    selected on a validation split: then the baseline is the selected one."""
    import pandas as pd

    diffs = _against_baseline(diffs)
    if diffs is None or diffs.empty:
        return None
    order = list(dict.fromkeys(diffs.sort_values(["order", "model"])["model"]))
    columns = list(dict.fromkeys(zip(diffs["group"], diffs["metric"])))
    frame = lambda key: diffs.pivot_table(index="model", columns=["group", "metric"], values=key,  # noqa: E731
                                          aggfunc="first", dropna=False).reindex(index=order, columns=pd.MultiIndex.from_tuples(columns))
    notes = [f"Each cell: the model's value minus {baseline}'s on the same noise and the same source images, "
             "with a 95 % paired bootstrap interval (the same resampled items for both; over evaluation seeds "
             "two-level); bold where the interval excludes 0. " + metrics.directions(m for _, m in columns)
             ] + sorted(set(diffs["note"].dropna()))
    title = f"Paired differences against {baseline}"
    selected_by = diffs["selected_by"].dropna().unique() if "selected_by" in diffs else []
    if len(selected_by):
        title = f"Paired differences against the selected {baseline} (test split)"
        notes.append(f"Each method's candidate selected on the validation split by the {selected_by[0]}; "
                     "differences on the test split.")
    table = Table("differences", title, frame("value"), frame("ci_low"), frame("ci_high"),
                  frame("value").notna().astype(int), notes, bold_nonzero=True)
    return _with_costs(table, diffs, baseline)


def _with_costs(table: Table, diffs: "pd.DataFrame", baseline: str) -> Table:
    """The differences' table with its models' training cost (jobs/paired.py `_cost_columns`)
    as a last group of columns, never bold; unchanged where the rows carry no cost."""
    import pandas as pd

    columns = [c for c in (*COST_COLUMNS, *RATIO_COLUMN) if c in diffs
               and pd.to_numeric(diffs[c], errors="coerce").notna().any()]
    if not columns:
        return table
    costs = diffs.groupby("model")[columns].first().reindex(table.means.index).apply(pd.to_numeric, errors="coerce")
    costs.columns = pd.MultiIndex.from_tuples([(COST_GROUP, c) for c in columns])
    nothing = costs * float("nan")
    table.means, table.lows, table.highs = (pd.concat([table.means, costs], axis=1),
                                            pd.concat([table.lows, nothing], axis=1),
                                            pd.concat([table.highs, nothing], axis=1))
    table.counts = pd.concat([table.counts, costs.notna().astype(int)], axis=1)
    table.notes = table.notes + [DIFFERENCE_COST_NOTE.format(baseline=baseline)]
    return table


SEED_LEVEL_NOTE = ("Each cell: the same difference (model minus {baseline}, mean over training runs) with a "
                   "95 % interval from the training runs alone ({methods}); the evaluation items are held "
                   "fixed, so this interval sees only how much the training seed moves the difference. Bold "
                   "where it excludes 0: a direction that holds at the level of training seeds.")


def seed_difference_table(diffs: "pd.DataFrame", baseline: str = "naive") -> Table | None:
    """The paired differences' seed-level intervals (jobs/paired.py `seed_ci_low`,
    `seed_ci_high`, named in `seed_interval`): table `differences_seeds`; None where no
    difference has one (one training run, or rows written before they existed)."""
    import pandas as pd

    diffs = _against_baseline(diffs)
    if diffs is None or diffs.empty or "seed_ci_low" not in diffs:
        return None
    diffs = diffs[pd.to_numeric(diffs["seed_ci_low"], errors="coerce").notna()]
    if diffs.empty:
        return None
    table = difference_table(diffs.assign(ci_low=diffs["seed_ci_low"], ci_high=diffs["seed_ci_high"],
                                          note=None), baseline)
    methods = "; ".join(sorted(set(diffs["seed_interval"].dropna())))
    table.name, table.title = "differences_seeds", table.title + ": seed-level intervals"
    table.notes = [SEED_LEVEL_NOTE.format(baseline=baseline, methods=methods)] + [
        n for n in table.notes if n.startswith(("Each method's candidate", "Training cost"))]
    return table


def _against_baseline(diffs: "pd.DataFrame | None") -> "pd.DataFrame | None":
    """The pooled differences against the baseline: without the ablations' rows
    (ablation_tables) and the per-seed ones (seed_by_seed_table)."""
    if diffs is None:
        return diffs
    if "training_seed" in diffs:
        diffs = diffs[diffs["training_seed"].isna()]
    if "ablation" in diffs:
        diffs = diffs[diffs["ablation"].isna()]
    return diffs


PER_SEED_NOTE = ("Each row: one training seed's run minus {baseline}'s run of the same seed (the source model, "
                 "untrained, against each of {baseline}'s runs), on the same noise and the same source images, "
                 "with a 95 % paired bootstrap interval over the evaluation items of that pair alone; bold where "
                 "it excludes 0. A direction that holds in every row holds in every training seed.")


def seed_by_seed_table(diffs: "pd.DataFrame | None", baseline: str = "naive") -> Table | None:
    """The differences per training seed (jobs/paired.py rows with `training_seed`): table
    `differences_by_seed`, a row per model and seed; None without such rows."""
    if diffs is None or diffs.empty or "training_seed" not in diffs:
        return None
    rows = diffs[diffs["training_seed"].notna()]
    if "ablation" in rows:
        rows = rows[rows["ablation"].isna()]
    if rows.empty:
        return None
    labelled = rows.assign(model=[f"{m}, against {baseline}'s seed {int(s)}" if m == "source" else f"{m}, seed {int(s)}"
                                  for m, s in zip(rows["model"], rows["training_seed"])],
                           order=rows["order"] + rows["training_seed"] / 1000)
    table = difference_table(labelled.drop(columns=["training_seed"]), baseline)
    table.name, table.title = "differences_by_seed", table.title + ", per training seed"
    table.notes = [PER_SEED_NOTE.format(baseline=baseline)] + table.notes[1:]
    return table


def difference_tables(diffs: "pd.DataFrame | None") -> list[Table]:
    """Every table made from the paired differences' rows: pooled, seed-level and per seed
    against each baseline (the first's named `differences*`, the others' with
    `_vs_<baseline>` added), and each named variant's ablation."""
    if diffs is None or diffs.empty:
        return []
    found = []
    for i, (baseline, rows) in enumerate(_by_baseline(diffs)):
        for table in (difference_table(rows, baseline), seed_difference_table(rows, baseline),
                      seed_by_seed_table(rows, baseline)):
            if table is not None:
                table.name += f"_vs_{baseline.replace('/', '_')}" if i else ""
                found.append(table)
    return found + ablation_tables(diffs)


def _by_baseline(diffs: "pd.DataFrame"):
    """(baseline, its rows) of the differences that are not an ablation's, in the order the
    aggregate wrote them (grid: selection.baselines); rows written before the column
    existed are naive's."""
    import pandas as pd

    if "ablation" in diffs:
        diffs = diffs[diffs["ablation"].isna()]
    names = diffs.get("baseline", pd.Series("naive", index=diffs.index)).fillna("naive")
    for name in dict.fromkeys(names):
        yield name, diffs[names == name]


ABLATION_NOTE = ("The variant {name} differs from {baseline} in the settings it gives. Rows: its paired difference "
                 "from {baseline} (variant minus method; the same noise and source images) at each setting the two "
                 "share (`matched`: the same checkpoint and the same value of every other setting, so only the "
                 "variant's own setting differs) and at each one's own candidate selected on the validation split "
                 "(`selected`: the fair comparison of what each gives). Test split; jobs/ablations.py.")


def ablation_tables(diffs: "pd.DataFrame | None") -> list[Table]:
    """Per named variant (jobs/ablations.py rows, `ablation` set): table `ablation_<variant>`
    of its differences from its method, matched and selected, with the item-level intervals,
    and `ablation_<variant>_seeds` with the seed-level ones (paired by training seed)."""
    if diffs is None or diffs.empty or "ablation" not in diffs:
        return []
    out = []
    for name, rows in diffs[diffs["ablation"].notna()].groupby("ablation", sort=False):
        baseline = rows["baseline"].iloc[0]
        rows = rows.drop(columns=["ablation"])
        slug = f"ablation_{name.rpartition('/')[2]}"
        note = ABLATION_NOTE.format(name=name, baseline=baseline)
        for table, suffix, what in ((difference_table(rows, baseline), "", "item-level intervals"),
                                    (seed_difference_table(rows, baseline), "_seeds", "seed-level intervals")):
            if table is None:
                continue
            table.name = slug + suffix
            table.title = f"Ablation: {name} against {baseline}, matched and selected ({what})"
            table.notes = [note] + table.notes
            out.append(table)
    return out
