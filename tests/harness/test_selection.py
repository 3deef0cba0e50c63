"""Selection on the validation split, reporting on the test split (report.selection):
the choice reads no test row, candidates are counted per method (each sdft weighting one),
the criterion is a setting and the tables name it; tables without a split read as before."""
import numpy as np
import pandas as pd
import pytest

from factories import run_module
from runs.errors import UserError
from report.results import load_results, tidy, write_parquet
from report.selection import Criterion, reported, select
from report.tables import paper_tables

# per method: its candidates as (settings, checkpoint); 4 + 3 + 2 of them
CANDIDATES = {
    ("naive", None): [({"p_lr": lr}, step) for lr in (1e-4, 2e-4) for step in (500, 1000)],
    ("sdft", "sdft"): [({"p_lr": 1e-4, "p_lambda_distill": lam}, 1000) for lam in (0.5, 1.0, 2.0)],
    ("sdft", "constant"): [({"p_lr": 1e-4, "p_lambda_distill": lam}, 1000) for lam in (0.5, 1.0)],
}


def fid(method: str, index: int, count: int, split: str, reference: str, seed: int) -> float:
    """On validation the first candidate has the lowest full-domain FID and the second the
    lowest target FID; on test the order is the other way round, so that a selection that
    read the test rows would choose differently."""
    base = {"naive": 10.0, "sdft": 8.0}[method] + 0.01 * seed
    if split == "validation":
        rank = index if reference == "full-domain" else (index - 1) % count
    else:
        rank = count - 1 - index
    return base + rank


def rows(splits=("validation", "test")) -> pd.DataFrame:
    out = []
    for (method, weighting), candidates in CANDIDATES.items():
        for index, (settings, step) in enumerate(candidates):
            for seed in (0, 1):
                for split in splits:
                    # one run per setting and seed; its checkpoints are evaluated together
                    run = f"{method}{weighting}{sorted(settings.items())}{seed}"
                    base = dict(run_id=run, eval_id=f"e{run}{split}", method=method, weighting=weighting, seed=seed,
                                eval_seed=0 if split == "validation" else 1, split=split, ckpt_step=step,
                                extractor="builtin", n=100, subset="all", **settings)
                    for reference in ("full-domain", "target"):
                        value = fid(method, index, len(candidates), split, reference, seed)
                        out.append({**base, "task": "unconditional", "reference": reference, "metric": "fid",
                                    "value": value, "ci_low": value - 0.5, "ci_high": value + 0.5})
                    out.append({**base, "task": "sdedit", "t0": 0.5, "reference": "source", "metric": "psnr",
                                "value": 15.0 + (index if split == "validation" else -index)})
    for split in splits:
        out.append(dict(eval_id=f"esource{split}", stage="calibration", method="calibration",
                        weighting="held-out-half", split=split, extractor="builtin", reference="full-domain",
                        subset="all", metric="fid", task="unconditional", value=0.1, n=100))
    return tidy(out)


def chosen(selection) -> dict:
    """method label -> (settings, checkpoint) of the chosen candidate."""
    out = {}
    for _, row in selection.chosen().iterrows():
        name = row["method"] + (f"/{row['weighting']}" if isinstance(row["weighting"], str) else "")
        settings = {c: row[c] for c in ("p_lr", "p_lambda_distill") if not pd.isna(row[c])}
        out[name] = (settings, int(row["ckpt_step"]))
    return out


def test_each_method_is_chosen_on_validation_from_its_own_candidates():
    selection = select(rows())
    assert chosen(selection) == {"naive": ({"p_lr": 1e-4}, 500),
                                 "sdft/sdft": ({"p_lr": 1e-4, "p_lambda_distill": 0.5}, 1000),
                                 "sdft/constant": ({"p_lr": 1e-4, "p_lambda_distill": 0.5}, 1000)}
    assert sorted(selection.counts().values()) == [2, 3, 4]
    # each score is the mean over the candidate's validation rows: two training seeds
    assert set(selection.scores["rows"]) == {2}
    assert selection.chosen()["score"].tolist() == pytest.approx([10.005, 8.005, 8.005])
    # the criterion, resolved from the rows: the full domain over the target set
    assert selection.criterion == Criterion("fid", "unconditional", None, "full-domain", "builtin", "all")


def test_the_selection_reads_no_test_row():
    df = rows()
    before = select(df)
    test = df["split"] == "test"
    poisoned = df.copy()
    for column in ("value", "ci_low", "ci_high", "k", "n"):
        poisoned[column] = poisoned[column].astype(float)
        poisoned.loc[test, column] = -1e9           # every test number the best possible
    poisoned.loc[test, "metric"] = "fid"            # ... and every test row an FID row
    shuffled = df.copy()
    shuffled.loc[test, "value"] = np.random.default_rng(0).permutation(df.loc[test, "value"].to_numpy())
    for other in (poisoned, shuffled, df[~test]):
        after = select(other)
        assert after.criterion == before.criterion
        pd.testing.assert_frame_equal(after.scores.reset_index(drop=True), before.scores.reset_index(drop=True))
    # the same change to the validation rows moves the choice: the check above can fail
    moved = df.copy()
    moved.loc[~test & (moved["method"] == "naive") & (moved["p_lr"] == 2e-4), "value"] = 0.0
    assert chosen(select(moved))["naive"][0] == {"p_lr": 2e-4}


def test_reported_rows_are_the_chosen_candidates_test_rows():
    df = rows()
    shown = reported(df, select(df))
    models = shown[shown["method"] != "calibration"]
    assert set(models["split"]) == {"test"}
    per_method = models.groupby(["method", "weighting"], dropna=False).apply(
        lambda g: g[["p_lr", "p_lambda_distill", "ckpt_step"]].drop_duplicates().shape[0], include_groups=False)
    assert set(per_method) == {1}
    assert len(models) == 3 * 2 * 3        # 3 methods x 2 seeds x 3 rows
    assert set(shown.loc[shown["method"] == "calibration", "split"]) == {"test"}


def test_tables_report_the_test_split_and_say_what_was_selected_from_how_many():
    tables = {t.name: t for t in paper_tables(rows())}
    t3 = tables["table3"]
    # the chosen naive candidate (index 0 of 4) on test: rank 3, seeds 0 and 1
    assert t3.means.loc["naive", ("unconditional", "fid")] == pytest.approx(13.005)
    assert t3.means.loc["sdft/sdft", ("unconditional", "fid")] == pytest.approx(10.005)
    markdown = t3.render("markdown")
    assert "lowest mean unconditional FID against the full-domain set (builtin features)" in markdown
    assert "validation split" in markdown and "test split" in markdown
    for text in ("naive lr=0.0001 @500 (selected of 4)", "sdft/sdft λd=0.5 lr=0.0001 (selected of 3)",
                 "sdft/constant λd=0.5 lr=0.0001 (selected of 2)"):
        assert text in markdown
    # each weighting at its chosen lambda; no second, test-split choice of lambda
    assert "table4_sweep" not in tables and list(tables["table4"].means.index) == ["sdft/constant", "sdft/sdft"]
    sel = tables["selection"]
    assert len(sel.means) == 9                                 # every candidate, on validation
    assert sel.means.loc["naive lr=0.0002 @500", ("validation", "fid")] == pytest.approx(12.005)
    assert set(sel.best(("validation", "fid"))) == {m for m in sel.means.index if "selected of" in m}


def test_the_criterion_is_a_setting_and_the_tables_name_it():
    df = rows()
    by_target = select(df, Criterion.parse("fid/target"))
    assert chosen(by_target)["naive"] == ({"p_lr": 1e-4}, 1000)    # the second candidate
    by_psnr = select(df, Criterion.parse("sdedit@0.5:psnr"))
    assert chosen(by_psnr)["naive"] == ({"p_lr": 2e-4}, 1000)      # higher is better: the last
    markdown = {t.name: t for t in paper_tables(df, criterion=Criterion.parse("sdedit:psnr"))}["table3"].render("markdown")
    assert "highest mean SDEdit PSNR at t0 = 0.5 against the source images" in markdown
    for bad in ("", "painting:fid", "unconditional@0.5:fid", "fid/"):
        with pytest.raises(ValueError, match="criterion|t0"):
            Criterion.parse(bad)
    with pytest.raises(UserError, match="lowest mean unconditional KID.*no validation row"):
        select(df, Criterion.parse("kid"))


def test_a_method_without_validation_rows_is_shown_as_it_is_and_named():
    df = rows()
    df = df[~((df["weighting"] == "constant") & (df["split"] == "validation"))]
    tables = {t.name: t for t in paper_tables(df)}
    assert {"sdft/constant λd=0.5", "sdft/constant λd=1"} <= set(tables["table3"].means.index)
    assert "Not selected (no validation value of the criterion), all candidates shown: sdft/constant" in \
        tables["table3"].render("markdown")


def test_tables_without_a_split_are_read_as_before(tmp_path):
    old = rows(splits=(None,)).drop(columns="split")
    write_parquet(tmp_path / "metrics.parquet", old)
    loaded = load_results(tmp_path / "metrics.parquet")
    assert "split" in loaded and loaded["split"].isna().all()
    tables = {t.name: t for t in paper_tables(loaded)}
    assert "selection" not in tables and "table4_sweep" in tables          # every lambda, as before
    assert "naive lr=0.0002 @500" in tables["table3"].means.index
    assert not any("Selection" in note for t in tables.values() for note in t.notes)
    # a table whose split is empty everywhere is the same
    assert {t.name for t in paper_tables(rows(splits=(None,)))} == set(tables)


def test_tables_cli_takes_the_criterion_and_refuses_a_bad_one(tmp_path):
    grid = tmp_path / "grid"
    grid.mkdir()
    write_parquet(grid / "metrics.parquet", rows())
    proc = run_module("harness.tables", str(grid), "--select-by", "sdedit:psnr")
    assert proc.returncode == 0 and "highest mean SDEdit PSNR" in proc.stdout, proc.stderr
    for bad, named in (("painting:fid", "--select-by"), ("kid", "KID")):
        proc = run_module("harness.tables", str(grid), "--select-by", bad)
        assert proc.returncode == 2 and named in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
            proc.stderr


def test_the_selection_table_shows_each_candidates_cost_and_each_methods_total():
    df = rows()
    cost = {"naive": 1.0, "sdft": 1.9}
    df["compute_kimg"] = [s * 16 * cost[m] / 1000 if m in cost else None for s, m in zip(df["ckpt_step"], df["method"])]
    sel = {t.name: t for t in paper_tables(df)}["selection"]
    assert sel.means.loc["naive lr=0.0002 @500", ("training cost", "compute_kimg")] == pytest.approx(8.0)
    assert ("training cost", "train_s") not in sel.means.columns         # no seconds measured: no column
    # naive: 2 settings x (500 + 1000 steps); sdft/sdft: 3 candidates of 1000 steps at 1.9
    assert ("naive: 4 candidates, 48 naive kimg; sdft/constant: 2 candidates, 60.8 naive kimg; "
            "sdft/sdft: 3 candidates, 91.2 naive kimg") in sel.render("markdown")
