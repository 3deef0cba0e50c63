"""The aggregate stage: a grid's evaluations -> one tidy table, the paper's tables, the
trade-off plots, image grids side by side per method, and report.md.

    python -m jobs.aggregate RUN_DIR       # RUN_DIR/spec.json is an AggregateSpec

Everything lands in results/<grid>/: metrics.parquet, cells.parquet (the intervals of
table cells over several runs, jobs/cells.py), tables/ (the paper's tables with
calibration rows first, the paired differences against naive, and each named variant
against its method, jobs/ablations.py), tradeoff.png,
loss_curves.png (jobs/loss_curves.py), images/
(sample grids, per-class histograms), report.md; with evaluation.curve_steps, the
forgetting curve (jobs/curve.py: curve.parquet, forgetting_curve.parquet and .png).

With evaluation splits (`evaluation.splits`), each method's candidate is selected on the
validation rows (report.selection, FID by default): the tables, the paired
differences (against the selected naive) and report.md show the selected candidates'
test rows and say which candidate was selected from how many; the cells, the trade-off plot,
the image grids and the histograms read the test split only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runs.errors import UserError, exit_on_user_error
from report.results import CELLS_FILE, DIFFERENCES_FILE, METRICS_FILE, tidy, write_parquet
from report.selection import (VALIDATION, Criterion, Selection, has_validation, reported, select,
                                      split_of)
from runs.methods import unit_name
from runs.spec import AggregateSpec
from runs.store import RunFolder, atomic_write_bytes, now_iso, store_root_of
from report.curve import curve_table
from report.differences import difference_tables
from report.table import write_tables
from report.tables import paper_tables, prepare
from jobs.curve import collect_curve, forgetting_curve
from jobs.evaluation.manifest import final, read_manifest
from jobs.figures import distinct_colours, pyplot, save_figure
from jobs.loss_curves import loss_curves_plot

SHOWN_PER_ROW = 12


def collect(spec: AggregateSpec, store_root: Path):
    import pandas as pd

    frames = []
    for eval_id, (dataset, target) in spec.evaluations.items():
        path = store_root / eval_id / "metrics.parquet"
        if not path.is_file():
            raise UserError(f"{path}: evaluation {eval_id} has no metrics (not done?)")
        rows = pd.read_parquet(path).assign(grid=spec.grid, dataset=dataset, target=target)
        # once per unit of the grid it belongs to: a run a variant shares with its method is both's
        frames += [rows.assign(variant=variant or None) for variant in spec.variants.get(eval_id, ("",))]
    return tidy(pd.concat(frames, ignore_index=True))


def tradeoff_panels(recovery, kept) -> list[tuple]:
    """(rows, y label) per panel: the missing-class share, then class preservation at each t0
    the evaluation declared; a measurement the grid did not make has no panel."""
    panels = [(recovery, "missing-class share of samples")] if not recovery.empty else []
    by_t0 = [(kept[kept.t0 == t0], f"SDEdit t0={t0:g}: class kept (missing classes)")
             for t0 in sorted(kept.t0.dropna().unique())]
    if not by_t0 and not kept.empty:
        by_t0 = [(kept, "SDEdit: class kept (missing classes)")]
    return panels + by_t0


def tradeoff_plot(df, path: Path) -> Path | None:
    """FID against missing-class recovery and against class preservation: one point per run
    (and per earlier checkpoint, so an early-stopped baseline can be compared at equal FID)."""
    plt = pyplot()

    df = prepare(df)
    fid = df[(df.metric == "fid") & (df.task == "unconditional") & (df.reference == "full-domain")]
    if fid.empty:
        fid = df[(df.metric == "fid") & (df.task == "unconditional")]
    recovery = df[df.metric == "missing_class_share"]
    kept = df[(df.metric == "class_preservation") & (df.task == "sdedit") & (df.subset == "missing-classes")]
    if fid.empty or (recovery.empty and kept.empty):
        return None
    keys = ["eval_id", "ckpt_step", "model"]      # calibration rows share the source model's eval id
    fid = fid[fid.extractor == fid.extractor.iloc[0]].groupby(keys, dropna=False)["value"].mean().rename("x")
    panels = tradeoff_panels(recovery, kept)
    colours = distinct_colours(sorted(df.model.dropna().unique()))     # the same in every panel
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.6), squeeze=False)
    axes = axes[0]
    for ax, (values, label) in zip(axes, panels):
        points = values.groupby(keys, dropna=False).agg(y=("value", "mean")).join(
            fid, how="inner").reset_index()
        for model, group in points.groupby("model"):
            ax.scatter(group.x, group.y, label=model, s=30, color=colours.get(model),
                       marker="x" if "@" in model else "o")
        ax.set_xlabel("unconditional FID (lower: closer to the target domain)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    # one legend for every panel's models (a model may have points in one panel only)
    shown = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
    axes[-1].legend(shown.values(), shown.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("The trade-off: one point per run (x: an earlier checkpoint)")
    return save_figure(fig, path)


def image_grids(df, store_root: Path, out_dir: Path) -> list[tuple[Path, list[str]]]:
    """Per product (task, t0), one row per model (first seed), the same noise / source images."""
    import numpy as np

    from models.images import save_grid

    df = prepare(df)
    df = df[df.method != "calibration"]
    first_seed = df[(df.seed.isna()) | (df.seed == df.seed.min())]
    models = first_seed.drop_duplicates(["eval_id", "model"]).sort_values(["order", "model"])
    written = []
    # each evaluation's final checkpoint's products, by name (task, t0, seed), of the test
    # split (or of no split): the validation split's have other inputs
    finals = {eid: final([e for e in read_manifest(RunFolder(store_root / eid)) if e.split != VALIDATION])
              for eid in models.eval_id}
    tasks = {name: p.task for products in finals.values() for name, p in products.items()}
    for dataset_target, group in models.groupby(["dataset", "target"]):
        for key in sorted(tasks):
            rows, labels = [], []
            if tasks[key] != "unconditional":
                sources = _sources(store_root / group.eval_id.iloc[0])
                if sources is not None:
                    rows.append(sources[:SHOWN_PER_ROW])
                    labels.append("input")
            for _, row in group.iterrows():
                product = finals[row.eval_id].get(key)
                if product is not None:
                    images = np.load(store_root / row.eval_id / "products" / product.file)[:SHOWN_PER_ROW]
                    rows.append(images)
                    labels.append(row.model)
            if len(rows) > 1:
                name = f"{'-'.join(dataset_target)}_{key}.png"
                written.append((save_grid(rows, out_dir / name, scale=3), labels))
    return written


def class_histograms(df, store_root: Path, out_dir: Path) -> list[Path]:
    """Per dataset and target: the share of each class among the full domain's images (true
    labels), the target set's, the held-out half as the classifier sees it, and each model's
    unconditional samples (classified; all its runs' final products pooled, no confidence
    filter). Missing classes are shaded."""
    import numpy as np

    from jobs.evaluation.splits import items_name
    from jobs.paired import final_items, load

    plt = pyplot()

    df = prepare(df)
    split = "test" if (split_of(df) == "test").any() else None
    written = []
    for (dataset, target), group in df.groupby(["dataset", "target"]):
        source = group[(group.method == "source")]
        if source.empty:
            continue
        items = store_root / source.eval_id.iloc[0] / "items"
        if not (items / items_name("references", split)).is_file():
            continue
        with np.load(items / items_name("references", split)) as f:
            refs = dict(f)
        if "class_ids" not in refs:
            continue
        ids, names, missing = refs["class_ids"], refs["class_names"], set(refs["missing"].tolist())
        share = lambda labels: np.array([(labels == c).mean() for c in ids]) if len(labels) else None  # noqa: E731
        bars = [("full domain (true labels)", share(refs.get("labels_full-domain", np.array([])))),
                ("target set (true labels)", share(refs.get("labels_target", np.array([]))))]
        floor = items / items_name("calibration_held-out-half_unconditional", split)
        if floor.is_file():
            with np.load(floor) as f:
                bars.append(("held-out half (classified)", share(f["predicted"])))
        models = group[(group.method != "calibration") & ~group.is_early].drop_duplicates(["eval_id", "model"])
        for model, runs in models.sort_values(["order", "model"]).groupby("model", sort=False):
            predicted = []
            for eid in runs.eval_id:
                product = final_items(store_root / eid, split).products.get(("unconditional", None))
                if product:
                    found = load(product)
                    if "predicted" in found:
                        predicted.append(found["predicted"])
            if predicted:
                bars.append((f"{model} (classified)", share(np.concatenate(predicted))))
        bars = [(label, values) for label, values in bars if values is not None]
        fig, ax = plt.subplots(figsize=(max(8, len(ids) * 1.1), 4.2))
        width = 0.8 / len(bars)
        colours = distinct_colours(label for label, _ in bars)
        for i, (label, values) in enumerate(bars):
            ax.bar(np.arange(len(ids)) + (i - (len(bars) - 1) / 2) * width, values, width, label=label,
                   color=colours[label])
        for j, c in enumerate(ids):
            if int(c) in missing:
                ax.axvspan(j - 0.45, j + 0.45, color="grey", alpha=0.15, lw=0)
        ax.set_xticks(np.arange(len(ids)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("share of images")
        ax.set_title(f"{dataset}/{target}: classes of the samples beside the full domain (shaded: missing "
                     "from the target set)", fontsize=9)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        written.append(save_figure(fig, out_dir / f"{dataset}-{target}_classes.png"))
    return written


def _sources(eval_dir: Path):
    """The evaluation's first translation inputs (of its test split, as the grids' products),
    uint8."""
    import torch

    from runs.spec import EvalSpec
    from jobs.evaluation import splits
    from models.data import open_dataset

    spec = EvalSpec.model_validate(RunFolder(eval_dir).read_spec())
    data = spec.source_data.model_dump()
    ds = open_dataset(data, split="source_test" if data["kind"] == "builtin-source" else None)
    shown = splits.inputs(splits.TEST, spec.settings.num_translations, len(ds))[:SHOWN_PER_ROW]
    return torch.stack([ds[i] for i in shown]).numpy()    # already uint8


def selection_lines(selection: Selection) -> list[str]:
    """report.md's account of the selection: per method, the candidate chosen on the
    validation split, its score, and from how many candidates."""
    counts = selection.counts()
    lines = ["## Selection on the validation split", "",
             f"Each method's candidate was chosen by the {selection.criterion.describe()} on the validation "
             "rows; the tables and the paired differences (against the selected naive) report its test rows.", ""]
    scores = selection.scores
    chosen = selection.chosen().sort_values("_group")
    for _, row in chosen.iterrows():
        method = unit_name(row["method"], row["weighting"], row["variant"])
        target = f"{row['target']}: " if isinstance(row["target"], str) else ""
        # the settings its candidates differ in
        group = scores[scores["_group"] == row["_group"]]
        varying = [c for c in selection.columns if c.startswith("p_") and group[c].nunique(dropna=False) > 1]
        settings = ", ".join(f"{c[2:]}={row[c]}" for c in varying)
        step = row["ckpt_step"]
        at = f" at step {int(step)}" if step is not None and step == step else ""
        lines.append(f"- {target}{method}: {settings or 'its only setting'}{at} (validation score "
                     f"{row['score']:.4g} over {int(row['rows'])} rows; selected of {counts[row['_group']]})")
    if selection.unselected:
        lines.append(f"- not selected (no validation value of the criterion): "
                     f"{', '.join(selection.unselected.values())}")
    return lines + [""]


def commits_made_by(df) -> str:
    """The commits whose code measured the rows: runs shared by run id with an earlier grid
    keep the commit they were measured at, so one grid's rows can come from several."""
    counts = df.git_sha.dropna().value_counts()
    if counts.empty:
        return "commit unknown"
    if len(counts) == 1:
        return f"measured at commit {counts.index[0]}"
    return "measured at commits " + ", ".join(f"{sha} ({n} number{'s' * (n != 1)})" for sha, n in counts.items())


def report(spec: AggregateSpec, df, tables, plot: Path | None, grids: list[tuple[Path, list[str]]],
           grid_dir: Path, histograms: list[Path] = (), selection: Selection | None = None,
           curves: Path | None = None, forgetting: Path | None = None) -> Path:
    lines = [f"# {spec.grid}: results", "",
             f"{df.eval_id.nunique()} evaluated models, {len(df)} numbers; generated {now_iso()} "
             f"({commits_made_by(df)}).",
             "Query them with `harness.results.load_results('" + str(grid_dir) + "')`.", ""]
    if selection is not None:
        lines += selection_lines(selection)
    for table in tables:
        lines += [table.render("markdown"), ""]
    if plot is not None:
        lines += ["## The trade-off", "", f"![trade-off]({plot.relative_to(grid_dir)})", ""]
    if forgetting is not None:
        lines += ["## The forgetting curve", "", "The corrected missing-class share and FID of naive and sdft "
                  "at earlier checkpoints (evaluation.curve_steps) and at the end; dashed: the source model's "
                  "share (the table `forgetting_curve` above holds the numbers):", "",
                  f"![forgetting curve]({forgetting.relative_to(grid_dir)})", ""]
    if curves is not None:
        lines += ["## Training", "", "The loss of every training run (train.jsonl; TensorBoard: "
                  f"`tensorboard --logdir {grid_dir / 'runs'}`):", "",
                  f"![loss curves]({curves.relative_to(grid_dir)})", ""]
    if histograms:
        lines += ["## Classes of the samples", ""]
        lines += [f"![{path.stem}]({path.relative_to(grid_dir)})" for path in histograms] + [""]
    if grids:
        lines += ["## Samples and translations", "",
                  "Same noise (or the same source images) in every row; rows top to bottom:", ""]
        for path, labels in grids:
            lines += [f"**{path.stem}**: " + ", ".join(labels), "",
                      f"![{path.stem}]({path.relative_to(grid_dir)})", ""]
    out = grid_dir / "report.md"
    atomic_write_bytes(out, "\n".join(lines).encode())
    return out


def aggregate(spec: AggregateSpec, run_dir: str | Path) -> Path:
    run = RunFolder(run_dir)
    run.set_state("running", error=None)
    store_root = store_root_of(run.path)
    grid_dir = store_root.parent / spec.grid
    df = collect(spec, store_root)
    write_parquet(grid_dir / METRICS_FILE, df)
    import pandas as pd

    from jobs.ablations import ablations
    from jobs.cells import cells
    from jobs.paired import differences

    # with splits: what is reported is the test split (the cells of every candidate, so that
    # another criterion in harness.tables finds its cells too) and, for the paired
    # differences, the selected candidates' test rows: the baseline is the selected naive
    criterion = Criterion.parse(spec.criterion)
    selection = select(df, criterion) if has_validation(df) else None
    test = df[split_of(df) != VALIDATION]
    cell_table = cells(prepare(test), store_root)
    write_parquet(grid_dir / CELLS_FILE, cell_table)
    tables = paper_tables(df, cell_table, criterion=criterion)
    shown = reported(df, selection) if selection is not None else df
    # against each baseline in its own rows (`baseline`), the first's as before
    diffs = differences(prepare(shown), store_root, spec.baselines)
    if selection is not None and not diffs.empty:
        diffs = diffs.assign(selected_by=selection.criterion.describe())
    # each named variant against its method, matched and selected: rows of the same file
    variants = ablations(df, store_root, selection)
    if selection is not None and not variants.empty:
        variants = variants.assign(selected_by=selection.criterion.describe())
    diffs = pd.concat([d for d in (diffs, variants) if not d.empty], ignore_index=True) if not variants.empty else diffs
    write_parquet(grid_dir / DIFFERENCES_FILE, diffs)      # the docs' tables re-render it (published)
    tables += difference_tables(diffs)
    found, forgetting = forgetting_curve(df, collect_curve(spec, store_root), shown, store_root, grid_dir)
    tables += [t for t in (curve_table(found),) if t is not None]
    written = write_tables(tables, grid_dir / "tables")
    plot = tradeoff_plot(test, grid_dir / "tradeoff.png")
    grids = image_grids(test, store_root, grid_dir / "images")
    histograms = class_histograms(test, store_root, grid_dir / "images")
    curves = loss_curves_plot(spec, store_root, grid_dir / "loss_curves.png")
    path = report(spec, df, tables, plot, grids, grid_dir, histograms, selection, curves, forgetting)
    # what a later submission checks still exists (a deleted grid folder is rebuilt)
    run.set_state("done", products=sorted([CELLS_FILE, DIFFERENCES_FILE] + [str(p.relative_to(grid_dir)) for p in written]))
    return path


def run(run_dir: str | Path) -> Path:
    folder = RunFolder(run_dir)
    spec = AggregateSpec.model_validate(folder.read_spec())
    with folder.recording_failure():
        return aggregate(spec, run_dir)


def slurm_run(run_dir: str | Path):
    return run(run_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    with exit_on_user_error(FileNotFoundError):
        print(run(args.run_dir))


if __name__ == "__main__":
    main()
    sys.exit(0)
