"""The paper's tables as pivots of the tidy results (`python -m harness.tables` prints them).

Table 1 (translation: SDEdit and EGSDE, PSNR/SSIM/LPIPS/FID/KID), Table 3 (unconditional:
FID/KID/LPIPS/diversity), Table 4 (the distillation weighting ablation) and the attribute
table (missing-class recovery, class preservation). Each cell: the mean over the model's
runs (seeds) and a 95 % interval [low, high]; shares also as k/n. With one run the interval
is the row's own (`ci_low`, `ci_high`: bootstrap over images, Wilson for k/n); over several
runs (training seeds, evaluation seeds) it spans the lowest `ci_low` to the highest
`ci_high` of the runs (INTERVAL_RULE). Calibration rows (real data, same code) open each
table and are never bold; the best model value is bold (report/table.py renders them). The
paired differences' tables are report/differences.py's.

A table whose rows carry a validation split is first narrowed by report.selection:
each method's candidate chosen on the validation rows, its test rows shown; every table then
says what was selected, by which criterion and from how many candidates, and the `selection`
table lists every candidate's validation value.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from runs.adapters import COLUMNS as ADAPTER_COLUMNS
from runs.methods import NAMES as METHOD_NAMES, unit_name
from runs.params import label as param_label
from report import metrics
from report.results import CLASSIFIER_CALIBRATION
from report.selection import (GROUP, VALIDATION, Criterion, Selection, best_candidates, has_validation,
                              reported, select, split_of, tags, with_variant)
from report.table import COST_COLUMNS, COST_GROUP, Table, is_missing, short

if TYPE_CHECKING:
    import pandas as pd

INTERVAL_RULE = "Intervals: 95 %. A cell of one run and one evaluation seed: bootstrap over images (Wilson for k/n)."
SPAN_RULE = ("Cells of several runs or evaluation seeds{which}: the mean of their values and the span from the "
             "lowest to the highest of their intervals (no hierarchical bootstrap available).")
CELL_KEYS = ("task", "t0", "reference", "subset", "extractor", "metric")
CALIBRATION_LABELS = {"held-out-half": "real: held-out half (floor)", "target-train": "real: target-train",
                      "source": "real: source (style gap)",
                      CLASSIFIER_CALIBRATION["target"]: "real: classifier calibration",
                      CLASSIFIER_CALIBRATION["source"]: "real: classifier calibration, source style"}
CALIBRATION_NOTE = ("Real rows: the same measurements of real images at the models' sample count: half of "
                    "the held-out domain against the other half (the noise floor), the target-train set "
                    "and real source images (the style gap) against the held-out domain.")
COST_NOTE = ("Training cost of each model, the mean over its runs: compute = steps × batch × the method's "
             "measured cost per step relative to naive / 1000 (naive kimg; runs/compute.py), and the "
             "measured seconds of its training loop up to the checkpoint (train s).")
SUBSTITUTE_NOTE = ("† FeatDist: cosine distance of the named extractor's features between paired images, "
                   "reported because LPIPS could not be measured ({reason}). It is a substitute, not LPIPS.")


def model_labels(df: "pd.DataFrame") -> "pd.Series":
    """'naive', 'sdft/min-snr λd=1 λa=1', 'naive @1000', 'sdft/sdft-noaux' (a named variant): what
    tells runs apart besides the seed."""
    if "variant" not in df.columns:      # rows written before variants existed
        df = df.assign(variant="")
    params = [c for c in df.columns if c.startswith("p_")]
    keys = ["method", "weighting", "variant"]
    varying = []
    for p in params:
        # an adapter's columns are absent (NaN) from the runs without one: that counts too
        spread = df.groupby(keys, dropna=False)[p].nunique(dropna=p not in ADAPTER_COLUMNS)
        if (spread > 1).any():
            varying.append(p)
    def label(row) -> str:
        if row["method"] == "calibration":
            return CALIBRATION_LABELS.get(row["weighting"], f"real: {row['weighting']}")
        text = unit_name(row["method"], row["weighting"], row["variant"])
        for p in varying:
            if not is_missing(row[p]):
                text += f" {param_label(p[2:])}={short(row[p])}"
        if row.get("is_early"):
            text += f" @{int(row['ckpt_step'])}"
        return text

    return df.apply(label, axis=1)


# the source model, then the methods in the registry's order (runs.methods)
METHOD_ORDER = {"source": 0, **{name: i for i, name in enumerate(METHOD_NAMES, start=1)}}
CALIBRATION_ORDER = {CLASSIFIER_CALIBRATION["target"]: -5, CLASSIFIER_CALIBRATION["source"]: -4, "held-out-half": -3,
                     "target-train": -2, "source": -1}


def prepare(df: "pd.DataFrame") -> "pd.DataFrame":
    """Label the rows, mark earlier checkpoints, keep the main reference and extractor."""
    import pandas as pd

    df = with_variant(df).copy()
    for column in ("value", "ci_low", "ci_high", "k", "n"):
        df[column] = pd.to_numeric(df[column], errors="coerce")
    final = df.groupby("eval_id")["ckpt_step"].transform("max")
    df["is_early"] = df["ckpt_step"].notna() & (df["ckpt_step"] < final)
    df["model"] = model_labels(df)
    df["order"] = df["method"].map(METHOD_ORDER).fillna(9)
    calibration = df["method"] == "calibration"
    df["order"] = df["order"].where(~calibration, df["weighting"].map(CALIBRATION_ORDER).fillna(-1)).astype(float)
    return df


def _select(df, selection: dict):
    for key, value in selection.items():
        df = df[df[key].isna()] if value is None else df[df[key] == value]
    return df


def _calibration_selection(selection: dict) -> dict:
    """The calibration rows beside a column: same reference, extractor and subset; the task
    of the sample count they were measured at (unconditional, or translation)."""
    out = {k: v for k, v in selection.items() if k not in ("task", "t0")}
    if "task" in selection:
        out["task"] = "unconditional" if selection["task"] == "unconditional" else "translation"
    return out


def _plain(value) -> str | None:
    """A key column's value as the cells table and the tidy table both spell it."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return short(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def cell_key(rows: "pd.DataFrame") -> tuple | None:
    """What names one table cell's rows in the cells table: its runs (eval id @ checkpoint
    step) and its measurement (CELL_KEYS); None when the rows are not one measurement."""
    key = [",".join(sorted({f"{e}@{_plain(s)}" for e, s in zip(rows["eval_id"], rows["ckpt_step"])}))]
    for column in CELL_KEYS:
        found = {_plain(v) for v in rows[column]}
        if len(found) != 1:
            return None
        key.append(found.pop())
    return tuple(key)


def _cell_lookup(cells: "pd.DataFrame | None") -> dict:
    if cells is None or cells.empty:
        return {}
    return {(row["members"], *(_plain(row[c]) for c in CELL_KEYS)): row for _, row in cells.iterrows()}


def _pivot(df, columns: list[tuple], name: str, title: str, notes=None, calibration=True,
           cells: "pd.DataFrame | None" = None) -> Table | None:
    """columns: (group label, selection dict, metric) -> one column: the mean over the model's
    rows and its interval (the row's own; over several rows the cells table's, else
    SPAN_RULE), the calibration rows first."""
    import pandas as pd

    lookup = _cell_lookup(cells)
    hierarchical, spans = set(), set()
    stats: dict[tuple, "pd.DataFrame"] = {}
    models = df[df["method"] != "calibration"]
    real = df[df["method"] == "calibration"] if calibration else df.iloc[:0]
    for group, selection, metric in columns:
        part = _select(models[models["metric"] == metric], selection)
        if part.empty:
            continue
        part = pd.concat([_select(real[real["metric"] == metric], _calibration_selection(selection)), part])
        agg = part.groupby("model").agg(
            mean=("value", "mean"), low=("ci_low", "min"), high=("ci_high", "max"), count=("value", "count"),
            k=("k", lambda v: v.sum(min_count=len(v))), n=("n", "sum"))
        for model, rows in part.groupby("model"):
            if len(rows) < 2 or rows["value"].isna().all():
                continue
            found = lookup.get(cell_key(rows))
            if found is not None and int(found["rows"]) == len(rows):
                agg.loc[model, ["low", "high"]] = [found["ci_low"], found["ci_high"]]
                hierarchical.add(found["note"])
                if not is_missing(agg.loc[model, "k"]) and not is_missing(found.get("k")):
                    # the cell's distinct items, not rows x items (jobs/cells.py)
                    agg.loc[model, ["k", "n"]] = [found["k"], found["n"]]
            else:
                spans.add(metrics.label(metric))
        stats[(group, metric)] = agg
    if not stats:
        return None
    order = df.drop_duplicates("model").sort_values(["order", "model"])["model"].tolist()
    shown = [m for m in order if any(m in s.index for s in stats.values())]
    costs = cost_stats(models[models["model"].isin(shown)])
    stats.update(costs)
    frame = lambda key: pd.DataFrame({c: s[key] for c, s in stats.items()}).reindex(shown)  # noqa: E731
    ks = frame("k")
    ns = frame("n").where(ks.notna())
    labels = set(df.loc[df["method"] == "calibration", "model"])
    extra = [CALIBRATION_NOTE] if labels & set(shown) else []
    rules = [INTERVAL_RULE] + sorted(hierarchical) + ([COST_NOTE] if costs else [])
    if spans:
        rules.append(SPAN_RULE.format(which=f" ({', '.join(sorted(spans))})"))
    return Table(name, title, frame("mean"), frame("low"), frame("high"), frame("count").fillna(0),
                 (notes or []) + extra + rules, ks, ns, tuple(m for m in shown if m in labels))


def cost_stats(models: "pd.DataFrame") -> dict[tuple, "pd.DataFrame"]:
    """(COST_GROUP, column) -> per model the mean cost over its runs (one value per evaluation
    and checkpoint), for the cost columns the rows carry; no interval."""
    import pandas as pd

    out = {}
    runs = models.drop_duplicates(["model", "eval_id", "ckpt_step"])
    for column in COST_COLUMNS:
        values = pd.to_numeric(runs[column], errors="coerce") if column in runs else None
        if values is None or values.isna().all():
            continue
        by_model = values.groupby(runs["model"])
        nothing = by_model.mean() * float("nan")
        out[(COST_GROUP, column)] = pd.DataFrame({"mean": by_model.mean(), "low": nothing, "high": nothing,
                                                  "count": by_model.count(), "k": nothing, "n": nothing})
    return out


def _span(values, fmt) -> str:
    low, high = min(values), max(values)
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"


def compute_note(df: "pd.DataFrame") -> str | None:
    """How the methods' training compute compares: each method's steps and compute at the
    checkpoints shown, and whether it was matched by steps (cheaper methods trained longer,
    selection.equal_compute) or not; None without cost columns."""
    import pandas as pd

    from runs.compute import COMPUTE_TOLERANCE

    if "compute_kimg" not in df:
        return None
    rows = df[(df["method"] != "calibration") & pd.to_numeric(df["compute_kimg"], errors="coerce").notna()]
    if rows.empty:
        return None
    rows = rows.assign(_unit=[unit_name(*key) for key in zip(rows["method"], rows["weighting"], rows["variant"])])
    parts, steps, computes = [], {}, {}
    for unit, group in rows.sort_values(["order", "_unit"]).groupby("_unit", sort=False):
        steps[unit] = set(group["ckpt_step"].astype(int))
        computes[unit] = set(pd.to_numeric(group["compute_kimg"]).round(6))
        parts.append(f"{unit}: {_span(steps[unit], str)} steps, {_span(computes[unit], lambda v: f'{v:.3g}')} "
                     "naive kimg")
    text = "Training compute of the models shown: " + "; ".join(parts) + "."
    highest = [max(c) for c in computes.values()]
    if len(computes) > 1 and len({frozenset(s) for s in steps.values()}) > 1 \
            and max(highest) <= (1 + COMPUTE_TOLERANCE) * min(highest):
        text += " Matched in compute: the methods cheaper per step trained more steps (selection.equal_compute)."
    elif len(computes) > 1 and max(highest) > (1 + COMPUTE_TOLERANCE) * min(highest):
        text += " Not matched in compute: the methods differ in training compute by up to " \
                f"{max(highest) / min(highest):.2f}×."
    return text


def reported_reference(df) -> str:
    """The FID reference a table reports: the full domain where it was measured, else the target."""
    return "full-domain" if (df["reference"] == "full-domain").any() else "target"


def reported_extractor(df) -> str:
    """The feature extractor a table reports: Inception where it was measured, else the first other."""
    extractors = set(df.loc[df["metric"] == "fid", "extractor"].dropna())
    return "inception" if "inception" in extractors else (sorted(extractors) or ["builtin"])[0]


def _distance(df) -> tuple[str, list[str]]:
    """LPIPS where measured, else its named substitute and a note saying why."""
    lpips = df[df["metric"] == "lpips"]
    if lpips["value"].notna().any():
        return "lpips", []
    substitutes = sorted(m for m in df["metric"].unique() if m.startswith("feature_dist_"))
    if not substitutes:
        return "lpips", []
    reason = (lpips["note"].dropna().iloc[0] if lpips["note"].notna().any() else "no weights")
    return substitutes[0], [SUBSTITUTE_NOTE.format(reason=reason.removeprefix("not measured: "))]


def best_lambda_rows(sdft: "pd.DataFrame", criterion: Criterion | None = None
                     ) -> "tuple[pd.DataFrame, Criterion] | None":
    """The sdft rows of each weighting at the lambda with the best mean `criterion` (the
    grid's selection criterion; default: the lowest mean unconditional FID), resolved and
    chosen by the selection's rule (report.selection.best_candidates) on these rows,
    and the resolved criterion; None when no weighting was swept over lambda or no row
    measures the criterion. These are the rows the table reports: its caption says so."""
    from runs.errors import UserError

    lam = "p_lambda_distill"
    if lam not in sdft or sdft.groupby("weighting")[lam].nunique().max() < 2:
        return None
    try:
        criterion = (criterion or Criterion()).resolve(sdft)
    except UserError:
        return None
    scores = best_candidates(sdft, criterion, ["weighting"], [lam])
    best = {row["weighting"]: row[lam] for _, row in scores[scores["chosen"]].iterrows()}
    return sdft[sdft.apply(lambda r: best.get(r["weighting"]) == r[lam], axis=1)], criterion


REPORTED_DATA_NOTE = ("Each weighting's lambda was chosen on the reported data (the rows this table shows): "
                      "without a validation split, the choice favours whichever lambda drew lucky noise on them "
                      "(`evaluation.splits` selects on a disjoint validation split instead).")


def paper_tables(results: "pd.DataFrame", cells: "pd.DataFrame | None" = None, *,
                 criterion: Criterion | None = None) -> list[Table]:
    """The paper's tables. `cells`: the cells table (jobs/cells.py) that gives cells of
    several runs their hierarchical bootstrap interval (without it: SPAN_RULE). With
    validation rows, of each method's selected candidate on the test split (by `criterion`,
    default: FID against the full domain), and the `selection` table. Without them (older
    tables, no split) of every row, as before the split existed."""
    if results.empty:
        return []
    if not has_validation(results):
        return _paper_tables(results, cells=cells, criterion=criterion)
    selection = select(results, criterion)
    chosen = _selection_labels(results, selection)
    tables = _paper_tables(reported(results, selection), [selection_note(selection, chosen)], cells=cells,
                           criterion=selection.criterion)
    table = selection_table(results, selection, chosen)
    return tables + ([table] if table else [])


def _selection_labels(results: "pd.DataFrame", selection: Selection) -> "pd.DataFrame":
    """The validation rows of the criterion, prepared, with each candidate's label and tags,
    and the table label of each: '<label> (selected of N)' for the chosen ones."""
    rows = prepare(selection.criterion.rows(results[(split_of(results) == VALIDATION)
                                                    & (results["method"] != "calibration")]))
    rows = rows.assign(_group=tags(rows, GROUP), _candidate=tags(rows, selection.columns))
    # checkpoints evaluated by separate evaluations share a label: tell them apart
    shared = rows.groupby(["_group", "model"])["_candidate"].transform("nunique") > 1
    at_step = lambda r: "" if r["is_early"] or is_missing(r["ckpt_step"]) else f" @{int(r['ckpt_step'])}"  # noqa: E731
    rows.loc[shared, "model"] = rows.loc[shared].apply(lambda r: r["model"] + at_step(r), axis=1)
    counts = selection.counts()
    chosen = set(zip(selection.chosen()["_group"], selection.chosen()["_candidate"]))
    targets = rows["target"].nunique(dropna=True) > 1 or rows["dataset"].nunique(dropna=True) > 1
    def label(row) -> str:
        text = (f"{row['target']}: " if targets else "") + row["model"]
        if (row["_group"], row["_candidate"]) in chosen:
            text += f" (selected of {counts[row['_group']]})"
        return text
    rows["model"] = rows.apply(label, axis=1) if not rows.empty else rows["model"]
    rows["chosen"] = [pair in chosen for pair in zip(rows["_group"], rows["_candidate"])]
    return rows


def selection_note(selection: Selection, rows: "pd.DataFrame") -> str:
    chosen = rows[rows["chosen"]].drop_duplicates("model").sort_values(["order", "model"])["model"]
    units = "each sdft weighting is a method" + (", and so is each named variant"
                                                 if "variant" in rows and rows["variant"].notna().any() else "")
    text = (f"Selection: each method's candidate (its setting at one evaluated checkpoint; {units}) was chosen "
            f"on the validation split by the {selection.criterion.describe()}, and is reported on the disjoint "
            f"test split: {'; '.join(chosen)}.")
    if selection.unselected:
        text += (f" Not selected (no validation value of the criterion), all candidates shown: "
                 f"{'; '.join(selection.unselected.values())}.")
    return text


def selection_table(results: "pd.DataFrame", selection: Selection, rows: "pd.DataFrame") -> Table | None:
    """Every candidate's criterion on the validation split, the selected ones bold."""
    c = selection.criterion
    table = _pivot(rows, [("validation", {}, c.metric)], "selection",
                   f"Selection on the validation split: every candidate's {c.quantity()}",
                   [f"Per method, the candidate with the {c.describe()} (bold) is the one the other tables "
                    "report, on the test split."], calibration=False)
    if table is not None:
        table.bold_rows = tuple(rows.loc[rows["chosen"], "model"].unique())
        total = candidates_compute(rows)
        table.notes += [total] if total else []
    return table


def candidates_compute(rows: "pd.DataFrame") -> str | None:
    """'naive: 2 candidates, 0.912 naive kimg; ...': each method's candidates' total training
    compute, the sum over its candidates (as runs/budget.py counts it)."""
    import pandas as pd

    compute = pd.to_numeric(rows["compute_kimg"], errors="coerce") if "compute_kimg" in rows else None
    if compute is None or compute.isna().all():
        return None
    each = rows.assign(_compute=compute).groupby(["_group", "_candidate"], sort=False).first()
    several = rows["target"].nunique(dropna=True) > 1 or rows["dataset"].nunique(dropna=True) > 1
    parts = []
    for _, group in each.groupby(level=0, sort=False):
        first, n = group.iloc[0], len(group)
        name = (f"{first['target']}: " if several else "") + unit_name(first["method"], first["weighting"],
                                                                         first["variant"])
        parts.append((first["order"], name, f"{name}: {n} candidate{'s' if n != 1 else ''}, "
                                            f"{group['_compute'].sum():.3g} naive kimg"))
    return "Training compute of each method's candidates in all: " + "; ".join(p for *_, p in sorted(parts)) + "."


def _paper_tables(results: "pd.DataFrame", extra_notes: list[str] = (), cells=None,
                  criterion: Criterion | None = None) -> list[Table]:
    """The tables of each target on its own where the rows span several (or several
    datasets): one table's best, its calibration rows and its means are a target's, never
    taken over targets. Their names end in the target's ('table3_painted')."""
    import dataclasses

    df = prepare(results)
    datasets = df["dataset"].nunique(dropna=True)
    places = df[["dataset", "target"]].drop_duplicates().dropna()
    if len(places) <= 1:
        return _target_tables(df, extra_notes, cells, criterion)
    tables = []
    for dataset, target in places.itertuples(index=False):
        where = f"{dataset}/{target}" if datasets > 1 else str(target)
        part = df[(df["dataset"] == dataset) & (df["target"] == target)]
        tables += [dataclasses.replace(t, name=f"{t.name}_{re.sub(r'[^A-Za-z0-9.-]+', '-', where)}",
                                       title=f"{where}: {t.title}")
                   for t in _target_tables(part, extra_notes, cells, criterion)]
    return tables


def _target_tables(df: "pd.DataFrame", extra_notes: list[str] = (), cells=None,
                   criterion: Criterion | None = None) -> list[Table]:
    pivot = lambda *args, **kwargs: _pivot(*args, cells=cells, **kwargs)  # noqa: E731
    ref, ext = reported_reference(df), reported_extractor(df)
    distance, notes = _distance(df)
    notes = notes + list(extra_notes) + [n for n in [compute_note(df)] if n]
    realism = lambda task, **extra: [  # noqa: E731
        (task, {"task": task, "reference": ref, "extractor": ext, **extra}, "fid"),
        (task, {"task": task, "reference": ref, "extractor": ext, **extra}, "kid")]
    tables = []
    t0s = sorted(df.loc[df["task"] != "unconditional", "t0"].dropna().unique())
    for t0 in t0s:
        columns = []
        for task in ("sdedit", "egsde"):
            sel = {"task": task, "t0": t0, "subset": "all"}
            columns += [(task, {**sel, "reference": "source"}, "psnr"),
                        (task, {**sel, "reference": "source"}, "ssim"),
                        (task, {**sel, "reference": "source"}, distance)]
            columns += realism(task, t0=t0)
        table = pivot(df[df["method"] != "source"], columns, f"table1_t{t0:g}",
                      f"Table 1: translation from the source domain (t0 = {t0:g}; {ext} features, "
                      f"FID/KID against the {ref} set)", notes)
        if table:
            tables.append(table)
    uncond = realism("unconditional") + [("unconditional", {"task": "unconditional",
                                                            "reference": "source-model"}, distance),
                                         ("unconditional", {"task": "unconditional", "reference": "target"},
                                          "intra_cluster_lpips")]
    table3 = pivot(df, uncond, "table3", f"Table 3: unconditional generation ({ext} features, "
                   f"FID/KID against the {ref} set; {metrics.label(distance)} to the source "
                   "model's sample from the same noise)", notes)
    tables += [table3] if table3 else []
    # the weightings themselves: a named variant is an ablation of its own (ablation_tables)
    sdft = df[(df["method"] == "sdft") & ~df["is_early"] & df["variant"].isna()]
    if sdft["weighting"].nunique() > 1:
        # SDEdit's faithfulness at every t0 the evaluation declared (one column group each)
        sdedit_t0s = sorted(df.loc[df["task"] == "sdedit", "t0"].dropna().unique())
        columns = uncond + [(f"sdedit t0={t0:g}" if len(sdedit_t0s) > 1 else "sdedit",
                             {"task": "sdedit", "t0": t0, "subset": "all", "reference": "source"}, m)
                            for t0 in sdedit_t0s for m in ("psnr", "ssim")]
        at = f" (SDEdit at t0 = {', '.join(f'{t0:g}' for t0 in sdedit_t0s)})" if sdedit_t0s else ""
        found = best_lambda_rows(sdft, criterion)
        if found is not None:
            best, chosen_by = found
            table4 = pivot(best, columns, "table4", "Table 4: distillation weighting ablation, each weighting "
                           f"at its own best lambda (the {chosen_by.describe()}, chosen on the reported data; "
                           "weights are unnormalised, so a shared lambda would compare their scale, not their "
                           f"shape){at}", notes + [REPORTED_DATA_NOTE], calibration=False)
            sweep = pivot(sdft, columns, "table4_sweep", f"Table 4, every lambda of the sweep{at}", notes,
                          calibration=False)
            tables += [t for t in (table4, sweep) if t]
        else:
            table4 = pivot(sdft, columns, "table4", f"Table 4: distillation weighting ablation (sdft method){at}",
                           notes, calibration=False)
            tables += [table4] if table4 else []
    columns = [("unconditional", {"task": "unconditional"}, "missing_class_share"),
               ("unconditional", {"task": "unconditional"}, "missing_class_share_corrected")]
    for task in ("sdedit", "egsde"):
        for t0 in t0s:
            for subset in ("missing-classes", "present-classes"):
                columns.append((f"{task} t0={t0:g} {subset}", {"task": task, "t0": t0, "subset": subset},
                                "class_preservation"))
    # tables of results measured before the correction existed say only what they show
    corrected = (", raw and corrected for the classifier's measured errors"
                 if (df["metric"] == "missing_class_share_corrected").any() else "")
    attributes = pivot(df, columns, "attributes", "Attribute recovery: share of samples classified into "
                       f"the classes the target set lacks{corrected} (the real rows: the same classifier "
                       "on real images), and the share of translated source images that keep their class")
    tables += [attributes] if attributes else []
    classifier = classifier_table(df)
    tables += [classifier] if classifier else []
    # the missing classes by the samples' features (precision / recall / coverage of k-NN
    # balls, models/manifold.py): recall and coverage of the real missing-class images say
    # whether the model draws near them at all, which a classifier's share cannot
    unconditional = {"task": "unconditional", "reference": ref, "extractor": ext}
    columns = [("all", {**unconditional, "subset": "all"}, m) for m in ("precision", "recall", "coverage")]
    columns += [("missing classes", {**unconditional, "subset": "missing-classes"}, m) for m in ("recall", "coverage")]
    manifold = pivot(df, columns, "manifold", f"Unconditional samples against the real {ref} set by {ext} "
                     "features: precision, recall and coverage (k-NN balls), overall and of the real images "
                     "of the classes the target set lacks")
    tables += [manifold] if manifold else []
    return tables


CLASSIFIER_NOTE = ("The class instrument's confusion on held-out real images in the target's style that it never "
                   "trained on (its calibration images): recall per class, tpr = P(called missing | truly "
                   "missing), fpr = P(called missing | truly present). The corrected missing-class share is "
                   "(q - fpr) / (tpr - fpr) clipped to [0, 1]; docs/evaluation-classes.md.")
SOURCE_STYLE_NOTE = ("The source-style row: the same on held-out real images in the source's style; its rates "
                     "correct the source model's samples and the real source images.")


def classifier_table(df: "pd.DataFrame") -> Table | None:
    """The classifier-calibration rows (jobs/evaluation/measure.py) as one table: a row per
    target (and split), a column per rate, each a count k/n with its Wilson interval."""
    import pandas as pd

    rows = df[(df["method"] == "calibration") & df["weighting"].isin(list(CLASSIFIER_CALIBRATION.values()))]
    if rows.empty:
        return None
    split = rows["split"] if "split" in rows else pd.Series([None] * len(rows), index=rows.index)
    # one target's rows: a grid of several gets a table per target (_paper_tables)
    label = [m + (f" ({s})" if isinstance(s, str) and s else "") for m, s in zip(rows["model"], split)]
    rows = rows.assign(_label=label, _column=list(zip(rows["subset"], rows["metric"])))
    order = ([("missing-classes", "missing_tpr"), ("present-classes", "missing_fpr"), ("all", "class_recall")]
             + sorted({c for c in rows["_column"] if c[1] == "class_recall" and c[0] != "all"}))
    order = [c for c in order if c in set(rows["_column"])]
    frame = lambda key: rows.pivot_table(index="_label", columns="_column", values=key, aggfunc="first",  # noqa: E731
                                         dropna=False).reindex(columns=order)
    means = frame("value")
    means.columns = pd.MultiIndex.from_tuples(order)
    parts = [means] + [frame(k).set_axis(means.columns, axis=1) for k in ("ci_low", "ci_high", "k", "n")]
    source_style = [SOURCE_STYLE_NOTE] if (rows["weighting"] == CLASSIFIER_CALIBRATION["source"]).any() else []
    notes = [CLASSIFIER_NOTE, *source_style] + sorted(set(rows["note"].dropna()))
    return Table("classifier", "The class instrument, calibrated", *parts[:3], means.notna().astype(int), notes,
                 parts[3], parts[4], tuple(means.index))
