"""The paper's tables as pivots of the tidy table: mean and interval over seeds, calibration
rows first, the best model in bold, shares as k/n; paired differences."""
import math

import pandas as pd
import pytest

from factories import ROOT, run_module
from report.results import tidy, write_parquet
from report.tables import paper_tables


def rows():
    out = []
    fids = {("naive", None): [3.0, 3.2], ("sdft", "sdft"): [2.5, 2.7], ("sdft", "constant"): [2.9, 2.9],
            ("scratch", None): [9.0, 11.0]}
    for (method, weighting), values in fids.items():
        for seed, fid in enumerate(values):
            base = dict(run_id=f"{method}{weighting}{seed}", eval_id=f"e{method}{weighting}{seed}", method=method,
                        weighting=weighting, seed=seed, ckpt_step=100, extractor="builtin", n=100)
            out.append({**base, "task": "unconditional", "t0": None, "reference": "full-domain", "subset": "all",
                        "metric": "fid", "value": fid, "ci_low": fid - 0.1 * (seed + 1), "ci_high": fid + 0.2})
            out.append({**base, "task": "unconditional", "t0": None, "reference": "classifier",
                        "subset": "missing-classes", "metric": "missing_class_share", "value": fid / 20,
                        "k": 5 + seed, "n": 100, "ci_low": 0.0, "ci_high": 0.9})
            for task in ("sdedit", "egsde"):
                out.append({**base, "task": task, "t0": 0.5, "reference": "source", "subset": "all",
                            "metric": "psnr", "value": 20 - fid})
                out.append({**base, "task": task, "t0": 0.5, "reference": "source", "subset": "all",
                            "metric": "lpips", "value": math.nan, "note": "not measured: no AlexNet weights"})
                out.append({**base, "task": task, "t0": 0.5, "reference": "source", "subset": "all",
                            "metric": "feature_dist_builtin", "value": fid / 100})
                out.append({**base, "task": task, "t0": 0.5, "reference": "full-domain", "subset": "all",
                            "metric": "fid", "value": fid + 0.5})
    # real data measured by the same code, at each task's sample count
    for kind, fid in (("held-out-half", 0.1), ("target-train", 1.0), ("source", 20.0)):
        base = dict(eval_id="esource", stage="calibration", method="calibration", weighting=kind,
                    extractor="builtin", reference="full-domain", subset="all", metric="fid", t0=None)
        out.append({**base, "task": "unconditional", "value": fid, "n": 100, "ci_low": fid / 2, "ci_high": fid * 2})
        out.append({**base, "task": "translation", "value": fid + 1, "n": 50})
    return tidy(out)


def test_tables_show_the_mean_and_interval_over_seeds_real_rows_first_and_bold_the_best():
    tables = {t.name: t for t in paper_tables(rows())}
    assert {"table1_t0.5", "table3", "table4", "attributes"} <= set(tables)
    t3 = tables["table3"]
    assert t3.means.loc["sdft/sdft", ("unconditional", "fid")] == pytest.approx(2.6)
    # over seeds: from the lowest ci_low (seed 0: 2.5 - 0.1) to the highest ci_high (seed 1: 2.7 + 0.2)
    assert t3.lows.loc["sdft/sdft", ("unconditional", "fid")] == pytest.approx(2.4)
    assert t3.highs.loc["sdft/sdft", ("unconditional", "fid")] == pytest.approx(2.9)
    # the calibration rows open the table, floor first, at the unconditional sample count
    assert list(t3.means.index[:3]) == ["real: held-out half (floor)", "real: target-train",
                                         "real: source (style gap)"]
    assert t3.means.loc["real: source (style gap)", ("unconditional", "fid")] == 20.0
    markdown = t3.render("markdown")
    assert "**2.600 [2.400, 2.900]**" in markdown               # lowest model FID is best ...
    assert "**0.100" not in markdown and "0.100 [0.050, 0.200]" in markdown   # ... real rows never bold
    assert "noise floor" in markdown and "lowest to the highest" in markdown
    t1 = tables["table1_t0.5"]
    # translation tables take the calibration rows measured at the translation count
    assert t1.means.loc["real: target-train", ("sdedit", "fid")] == 2.0
    assert math.isnan(t1.means.loc["real: target-train", ("sdedit", "psnr")])
    latex = t1.render("latex")
    assert r"\textbf{17.4}" in latex                             # highest PSNR is best (no interval given)
    shares = tables["attributes"].render("markdown")
    assert "(11/200)" in shares                                   # k/n summed over the two seeds
    assert "FeatDist" in latex and "not LPIPS" in latex           # the substitute says what it is
    t4 = tables["table4"]
    assert list(t4.means.index) == ["sdft/constant", "sdft/sdft"]


def test_the_manifold_table_shows_recall_and_coverage_of_the_missing_classes():
    df = rows()
    extra = []
    for (method, weighting), recall in {("naive", None): 0.10, ("sdft", "sdft"): 0.30}.items():
        base = dict(run_id=f"{method}{weighting}0", eval_id=f"e{method}{weighting}0", method=method,
                    weighting=weighting, seed=0, ckpt_step=100, extractor="builtin", task="unconditional",
                    reference="full-domain")
        extra += [{**base, "subset": "all", "metric": "precision", "value": 0.8},
                  {**base, "subset": "missing-classes", "metric": "recall", "value": recall},
                  {**base, "subset": "missing-classes", "metric": "coverage", "value": recall / 2},
                  {**base, "subset": "all", "reference": "target", "metric": "recall", "value": 0.99}]
    assert "manifold" not in {t.name for t in paper_tables(df)}          # nothing measured, no table
    table = {t.name: t for t in paper_tables(tidy(pd.concat([df, tidy(extra)])))}["manifold"]
    assert table.means.loc["sdft/sdft", ("missing classes", "recall")] == pytest.approx(0.30)
    assert table.means.loc["naive", ("missing classes", "coverage")] == pytest.approx(0.05)
    assert ("all", "recall") not in table.means.columns                   # the target reference is not mixed in
    assert "**0.300**" in table.render("markdown")                        # higher recall is better


def test_tables_cli_formats_and_bad_path(tmp_path):
    grid = tmp_path / "grid"
    grid.mkdir()
    write_parquet(grid / "metrics.parquet", rows())
    for fmt, marker in (("latex", r"\begin{tabular}"), ("markdown", "| model"), ("csv", "model,")):
        proc = run_module("harness.tables", str(grid), "--format", fmt, "--out", str(tmp_path / fmt))
        assert proc.returncode == 0 and marker in proc.stdout, proc.stderr
    assert (tmp_path / "latex" / "table3.tex").is_file()
    bad = run_module("harness.tables", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "nowhere" in bad.stderr


def _lambda_sweep():
    """rows() with sdft at lambda 1 and 10: by FID constant is best at 1 and sdft at 10, by
    SDEdit PSNR the other way round."""
    df = rows()
    swept = []
    for lam, shift in ((1.0, 0.0), (10.0, -1.0)):
        part = df[df.method == "sdft"].copy()
        part["p_lambda_distill"] = lam
        part["eval_id"] = part["eval_id"] + str(lam)
        bonus = part.weighting.map({"sdft": shift, "constant": -shift})
        part.loc[part.metric == "fid", "value"] += bonus[part.metric == "fid"]
        part.loc[part.metric == "psnr", "value"] += 2 * bonus[part.metric == "psnr"]
        swept.append(part)
    return tidy(pd.concat([df[df.method != "sdft"], *swept], ignore_index=True))


def test_weighting_ablation_takes_each_weighting_at_its_best_lambda():
    tables = {t.name: t for t in paper_tables(_lambda_sweep())}
    assert set(tables["table4"].means.index) == {"sdft/sdft λd=10", "sdft/constant λd=1"}
    assert len(tables["table4_sweep"].means) == 4
    # no validation split: chosen by the selection's default criterion, on the rows it shows
    table4 = tables["table4"].render("markdown")
    assert "lowest mean unconditional FID against the full-domain set (builtin features), chosen on the " \
           "reported data" in table4
    assert "chosen on the reported data (the rows this table shows)" in table4


def test_the_best_lambda_is_chosen_by_the_grids_criterion():
    from report.selection import Criterion

    tables = {t.name: t for t in paper_tables(_lambda_sweep(), criterion=Criterion.parse("sdedit:psnr"))}
    assert set(tables["table4"].means.index) == {"sdft/sdft λd=1", "sdft/constant λd=10"}   # higher is better
    assert "highest mean SDEdit PSNR at t0 = 0.5 against the source images" in tables["table4"].title


def test_load_results_reads_a_grid_folder(tmp_path):
    from harness.results import load_results

    grid = tmp_path / "g"
    grid.mkdir()
    write_parquet(grid / "metrics.parquet", rows())
    df = load_results(grid)
    assert isinstance(df, pd.DataFrame) and len(df) == len(rows())
    assert df.query("metric == 'fid' and method == 'naive' and task == 'unconditional'").value.mean() == pytest.approx(3.1)


# ---------------------------------------------------------------- damaged tables, closed pipes
def test_a_corrupt_run_table_is_one_line_naming_it(tmp_path):
    grid = tmp_path / "grid"
    (grid / "runs" / "e1").mkdir(parents=True)
    bad = grid / "runs" / "e1" / "metrics.parquet"
    bad.write_bytes(b"PAR1 cut off")
    proc = run_module("harness.tables", str(grid))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {bad}: not a readable parquet table")


def test_a_corrupt_grid_table_falls_back_to_the_runs(tmp_path):
    from harness.results import load_results

    grid = tmp_path / "grid"
    (grid / "runs" / "e1").mkdir(parents=True)
    write_parquet(grid / "runs" / "e1" / "metrics.parquet", rows())
    (grid / "metrics.parquet").write_bytes(b"\x00" * 64)
    proc = run_module("harness.tables", str(grid))
    assert proc.returncode == 0 and "Table 3" in proc.stdout
    assert proc.stderr.startswith(f"warning: {grid / 'metrics.parquet'}: not a readable parquet table")
    assert len(load_results(grid)) == len(rows())


def test_a_closed_pipe_is_no_traceback(tmp_path):
    """`python -m harness.tables ... | head`: the reader is gone before the first write."""
    import os
    import subprocess
    import sys

    grid = tmp_path / "grid"
    grid.mkdir()
    write_parquet(grid / "metrics.parquet", rows())
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([sys.executable, "-m", "harness.tables", str(grid)], stdout=write,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120)
    os.close(write)
    assert proc.stderr == "" and proc.returncode == 141


def _at_t0s(*t0s):
    """rows() with its translation rows repeated at each t0 (PSNR lower by t0 x 10)."""
    df = rows()
    translation = df[df.task.isin(["sdedit", "egsde"])]
    parts = [df[~df.task.isin(["sdedit", "egsde"])]]
    for t0 in t0s:
        part = translation.copy()
        part["t0"] = t0
        part.loc[part.metric == "psnr", "value"] -= 10 * t0
        parts.append(part)
    return tidy(pd.concat(parts, ignore_index=True))


def test_the_ablation_shows_sdedit_at_every_declared_t0_and_says_which():
    one = {t.name: t for t in paper_tables(_at_t0s(0.3))}["table4"]
    assert "SDEdit at t0 = 0.3" in one.title
    assert one.means.loc["sdft/sdft", ("sdedit", "psnr")] == pytest.approx(20 - 2.6 - 3)
    two = {t.name: t for t in paper_tables(_at_t0s(0.3, 0.7))}["table4"]
    assert "SDEdit at t0 = 0.3, 0.7" in two.title
    assert [c for c in two.means.columns if c[1] == "psnr"] == [("sdedit t0=0.3", "psnr"), ("sdedit t0=0.7", "psnr")]
    assert two.means.loc["sdft/sdft", ("sdedit t0=0.7", "psnr")] == pytest.approx(20 - 2.6 - 7)


def test_the_tradeoff_plot_has_a_panel_per_t0_and_none_for_what_was_not_measured(tmp_path):
    from report.tables import prepare
    from jobs.aggregate import tradeoff_panels, tradeoff_plot

    df = prepare(_at_t0s(0.3, 0.5))
    kept = df[df.metric == "psnr"]                  # any rows with a t0 stand in for class preservation
    labels = [label for _, label in tradeoff_panels(df.iloc[:0], kept)]
    assert labels == ["SDEdit t0=0.3: class kept (missing classes)", "SDEdit t0=0.5: class kept (missing classes)"]
    # a grid without SDEdit gets no empty panel beside its missing-class share
    assert [label for _, label in tradeoff_panels(kept, kept.iloc[:0])] == ["missing-class share of samples"]
    assert [label for _, label in tradeoff_panels(df.iloc[:0], kept.assign(t0=float("nan")))] == [
        "SDEdit: class kept (missing classes)"]
    rows = _at_t0s(0.3)
    kept = rows[(rows.metric == "psnr") & (rows.task == "sdedit")].assign(metric="class_preservation",
                                                                        subset="missing-classes")
    drawn = tradeoff_plot(tidy(pd.concat([rows, kept])), tmp_path / "plots" / "tradeoff.png")   # its folder made
    assert drawn.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def with_costs(df, steps: dict, cost: dict, seconds_per_kimg: float = 50.0):
    """The rows with their models' training cost columns, as the evaluation writes them
    (jobs/evaluation/plan.py): method -> its steps and its cost per step relative to naive."""
    df = df.copy()
    models = df["method"].isin(list(steps))
    df.loc[models, "ckpt_step"] = df.loc[models, "method"].map(steps)
    df["compute_kimg"] = [steps[m] * 16 * cost[m] / 1000 if m in steps else None for m in df["method"]]
    df["train_s"] = [c * seconds_per_kimg + seed if c == c and c is not None else None
                     for c, seed in zip(df["compute_kimg"], df["seed"].fillna(0))]
    return tidy(df)


def test_every_model_table_carries_the_training_cost_and_never_ranks_it():
    steps, cost = {"naive": 100, "scratch": 100, "sdft": 100}, {"naive": 1.0, "scratch": 1.0, "sdft": 1.9}
    tables = {t.name: t for t in paper_tables(with_costs(rows(), steps, cost))}
    for name in ("table1_t0.5", "table3", "table4", "attributes"):
        assert ("training cost", "compute_kimg") in tables[name].means.columns, name
    t3 = tables["table3"]
    assert t3.means.loc["sdft/sdft", ("training cost", "compute_kimg")] == pytest.approx(100 * 16 * 1.9 / 1000)
    # measured seconds: the mean over the model's two runs (seeds 0 and 1 add 0 and 1 s)
    assert t3.means.loc["naive", ("training cost", "train_s")] == pytest.approx(1.6 * 50 + 0.5)
    assert math.isnan(t3.means.loc["real: held-out half (floor)", ("training cost", "compute_kimg")])
    assert t3.best(("training cost", "compute_kimg")) == set()         # a cost is no score
    markdown = t3.render("markdown")
    assert "compute (naive kimg)" in markdown and "train s" in markdown and "runs/compute.py" in markdown
    assert "Not matched in compute" in markdown and "naive: 100 steps, 1.6 naive kimg" in markdown
    # tables of rows written before the cost columns existed have none
    assert ("training cost", "compute_kimg") not in paper_tables(rows())[0].means.columns


def test_a_compute_matched_table_says_the_cheaper_methods_trained_longer():
    steps, cost = {"naive": 190, "scratch": 190, "sdft": 100}, {"naive": 1.0, "scratch": 1.0, "sdft": 1.9}
    markdown = {t.name: t for t in paper_tables(with_costs(rows(), steps, cost))}["table3"].render("markdown")
    assert "naive: 190 steps, 3.04 naive kimg" in markdown and "sdft/sdft: 100 steps, 3.04 naive kimg" in markdown
    assert "Matched in compute: the methods cheaper per step trained more steps" in markdown


def test_latex_writes_greek_letters_of_labels_as_math():
    """pdflatex has no Greek letters set up as text: "LoRA α=8" in an ablation's row label
    stopped the document (five committed .tex files had it). Each becomes a math symbol."""
    import re

    import pandas as pd

    from report.table import Table

    frame = lambda value: pd.DataFrame({("unconditional", "fid"): [value]}, index=["naive LoRA α=8 λ=1 Δ"])  # noqa: E731
    latex = Table("t", "t", frame(1.5), frame(1.0), frame(2.0), frame(1)).render("latex")
    assert r"naive LoRA $\alpha$=8 $\lambda$=1 $\Delta$" in latex
    assert not re.findall(r"[^\x00-\x7f–]", latex)      # an en dash is set up (LaTeX's UTF-8 default)


def test_each_target_of_a_grid_gets_tables_of_its_own():
    """The published demo's rows and the same rows as a second target, FID 100 higher. Before,
    one Table 3 row per model was the mean over both targets (naive 53.3, with the span rule
    for its interval), and its real rows were averaged too."""
    from harness.results import load_results

    demo = load_results(ROOT / "docs" / "results" / "demo" / "metrics.csv.gz")
    shifted = {c: demo[c] + 100 for c in ("value", "ci_low", "ci_high")}
    tables = {t.name: t for t in paper_tables(pd.concat([demo, demo.assign(target="other", **shifted)]))}
    alone = {t.name: t for t in paper_tables(demo)}
    assert set(tables) == {f"{name}_{target}" for name in alone for target in ("painted", "other")}
    fid = ("unconditional", "fid")
    for target, offset in (("painted", 0), ("other", 100)):
        table = tables[f"table3_{target}"]
        assert table.title == f"{target}: {alone['table3'].title}"
        assert list(table.means.index) == list(alone["table3"].means.index)
        assert table.means[fid].to_numpy() == pytest.approx(alone["table3"].means[fid].to_numpy() + offset)


def test_every_table_names_its_row_column_model():
    """The classifier table pivots on an inner column: its LaTeX header read `\\_label` and
    its CSV's first column `_label`, where every other table has `model`."""
    from report.table import Table

    frame = lambda value: pd.DataFrame({("all", "class_recall"): [value]}, index=pd.Index(["naive"], name="_label"))  # noqa: E731
    table = Table("classifier", "t", frame(0.5), frame(0.4), frame(0.6), frame(1))
    assert "_label" not in table.render("latex") and "\nmodel &" in table.render("latex")
    assert table.render("csv").startswith("model,")
