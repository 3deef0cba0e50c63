"""An evaluation with `evaluation.splits` on, end to end on Ray at a tiny size: every row
carries its split, the test split's products are those of an evaluation without splits, the
validation split's are not; with the setting off the rows are as before the setting existed
(committed expected rows, compared with a tolerance); the aggregate selects each method's candidate on the validation rows and
reports its test rows."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factories import eval_spec, finetune_spec, run_module, tiny_unet, write_spec
from runs.spec import AggregateSpec, EvalSpec, RunSpec
from runs.store import RunFolder
from jobs.weights import raw_twin

SETTINGS = dict(tasks=["unconditional", "sdedit"], num_samples=24, batch_size=12, num_translations=12,
                ddim_steps=5, max_reference=64, kid_subset_size=12)
# The rows of the evaluation `plain` below (tiny_unet(0) as a model folder, SETTINGS, no
# splits), written by a fresh process at commit fcfb31a, before evaluation.splits existed: with
# the setting off, the rows stay what they were. Rewritten under evaluation recipe 4 (seeded
# translation inputs and calibration images): its 17 unconditional model rows came out the
# same to 1e-3; the sdedit and calibration rows are those of the new draws. Rewritten again
# when the builtin network began to see 16 px images framed as it trained (builtin_eval 2):
# only the builtin extractor's rows changed (LPIPS, PSNR, SSIM, clipped and intra-cluster
# shares the same to 1e-3). Rewritten again when the real source rows began to take source
# images the builtin network never trained on (source_eval 2): only the 19 calibration rows
# of `source` changed. Floats are compared with a tolerance, since
# another CPU or BLAS build rounds differently (the same code gives these bits on one machine).
EXPECTED_ROWS = Path(__file__).parents[1] / "data" / "evaluate-plain-rows.csv"
# rows added since by the class instrument (docs/evaluation-classes.md): the rows the
# expected ones were written from stay as they were
ADDED_METRICS = ("missing_class_share_corrected", "class_recall", "missing_tpr", "missing_fpr")
EARLY = 50                       # the naive run's snapshot: its second candidate
# paths, time, commit; split: empty; variant: the aggregate's column (runs.grid), empty here
# compute_kimg, train_s: the model's training cost (runs/compute.py), columns added since
IGNORED = ("eval_id", "run_id", "git_sha", "created_at", "split", "variant", "compute_kimg", "train_s")


KEY = ["stage", "weighting", "task", "t0", "reference", "subset", "metric", "extractor"]


def assert_rows_close(actual: pd.DataFrame, expected: pd.DataFrame, rtol=1e-3, atol=1e-5) -> None:
    """The same rows: labels equal, numbers equal within a tolerance (NaN where NaN)."""
    actual = actual[[c for c in actual.columns if c not in IGNORED]]
    assert sorted(actual.columns) == sorted(expected.columns)
    actual, expected = (df[expected.columns].sort_values(KEY, na_position="first").reset_index(drop=True)
                        for df in (actual, expected))
    assert len(actual) == len(expected)
    for column in expected.columns:
        want, got = expected[column], actual[column]
        if pd.api.types.is_numeric_dtype(want) and pd.api.types.is_numeric_dtype(got):
            np.testing.assert_allclose(got.to_numpy(float), want.to_numpy(float), rtol=rtol, atol=atol,
                                       equal_nan=True, err_msg=column)
        else:
            assert (got.astype(str).where(got.notna(), "<NA>") == want.astype(str).where(want.notna(), "<NA>")).all(), column


def _naive_run(store, name: str) -> str:
    """A finished naive fine-tune of 100 steps with a snapshot at step 50 (raw weights: two
    seeded tiny networks): two candidates, the checkpoints, in one evaluation."""
    from models.networks import save_unet

    spec = RunSpec.model_validate(finetune_spec("naive")).model_dump(mode="json")
    run = RunFolder(write_spec(store / name, spec))
    save_unet(tiny_unet(1), run.path / "model-raw")
    save_unet(tiny_unet(2), raw_twin(run.snapshot_dir(EARLY)))
    run.set_state("done")
    return f"run:{name}"


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory, lpips_weights, ray_env):
    """The three evaluations, on one shared Ray (conftest.ray_env). The two with splits
    measure LPIPS with AlexNet, the cheaper trunk: no test here compares their LPIPS rows
    with the plain evaluation's, whose committed rows are VGG's."""
    from models.networks import save_unet

    root = tmp_path_factory.mktemp("splits")
    store = root / "_runs"
    save_unet(tiny_unet(0), root / "source-model")
    runs = {}
    for name, extra in (("plain", {"splits": False}), ("source", {"splits": True, "lpips_net": "alex"})):
        spec = {**eval_spec(**SETTINGS, **extra), "model": str(root / "source-model")}
        runs[name] = write_spec(store / name, spec)
    base = eval_spec(**{**SETTINGS, "tasks": ["unconditional"]}, splits=True, checkpoint_steps=[EARLY],
                     lpips_net="alex")
    spec = EvalSpec.model_validate({**base, "role": "finetuned", "model": _naive_run(store, "naive")})
    runs["eval-naive"] = write_spec(store / "eval-naive", spec.model_dump(mode="json"))
    for run_dir in runs.values():
        run_module("jobs.evaluate", str(run_dir), env=ray_env, check=True)
    return store, runs


@pytest.mark.slow
def test_without_splits_the_rows_are_as_before(evaluations):
    """Slow: the module's three tiny Ray evaluations (one shared Ray) take about 43 s together on 2 cores."""
    _, runs = evaluations
    rows = pd.read_parquet(runs["plain"] / "metrics.parquet")
    assert rows["split"].isna().all()
    assert_rows_close(rows[~rows.metric.isin(ADDED_METRICS)], pd.read_csv(EXPECTED_ROWS))
    manifest = json.loads(RunFolder(runs["plain"]).manifest_path.read_text())
    assert all("split" not in entry for entry in manifest["products"])


@pytest.mark.slow
def test_every_row_carries_its_split_and_the_test_split_is_the_plain_evaluation(evaluations):
    """Slow: the module's three tiny Ray evaluations (about 43 s together on 2 cores)."""
    _, runs = evaluations
    plain, split = (pd.read_parquet(runs[n] / "metrics.parquet") for n in ("plain", "source"))
    assert set(split["split"]) == {"validation", "test"}
    for stage in ("evaluate", "calibration"):
        part = split[split.stage == stage]
        assert set(part["split"]) == {"validation", "test"}
        # the same measurements on both splits (per-class rows: the classes among each split's inputs)
        keys = ["weighting", "task", "t0", "reference", "subset", "metric", "extractor"]
        part = part[~part["subset"].str.startswith("class:")]
        by_split = {s: set(map(tuple, g[keys].astype(str).values)) for s, g in part.groupby("split")}
        assert by_split["validation"] == by_split["test"]
    # the test split's products are the evaluation's without splits (same noise, same inputs);
    # the validation split's are other images
    folder = {n: runs[n] / "products" for n in ("plain", "source")}
    for task in ("unconditional", "sdedit_t0.5"):
        test, validation = (np.load(folder["source"] / f"{task}_{s}.npy") for s in ("test", "validation"))
        before = np.load(folder["plain"] / f"{task}.npy")
        assert np.array_equal(test, before) and not np.array_equal(validation, test)
    entries = {(e["task"], e["split"]) for e in json.loads(RunFolder(runs["source"]).manifest_path.read_text())
               ["products"]}
    assert entries == {(t, s) for t in ("unconditional", "sdedit") for s in ("validation", "test")}
    # against the target set (shared by both splits) the test rows equal the plain ones, and
    # say that the reference is shared; against the full domain they are the test half's
    keys = ["stage", "weighting", "task", "t0", "subset", "metric", "extractor"]
    target = lambda df: df[(df.reference == "target") & (df.metric == "fid")].sort_values(keys)  # noqa: E731
    assert np.array_equal(target(split[split.split == "test"])["value"].values, target(plain)["value"].values)
    assert split[split.reference == "target"]["note"].str.contains("reference of both splits").all()
    full = split[(split.reference == "full-domain") & (split.metric == "fid") & (split.stage == "evaluate")]
    assert full["note"].str.contains("half of the held-out domain").all()
    # each split's noise floor is measured within its own half: other images, other values
    floor = split[(split.weighting == "held-out-half") & (split.metric == "fid")]
    for _, rows in floor.groupby(["task", "reference", "extractor"]):
        assert sorted(rows["split"]) == ["test", "validation"] and rows["value"].nunique() == 2


@pytest.mark.slow
def test_the_aggregate_selects_on_validation_and_reports_test(evaluations):
    """Slow: the module's three tiny Ray evaluations (about 43 s together on 2 cores) and the aggregate."""
    from report.selection import reported, select

    store, runs = evaluations
    names = {RunFolder(runs[n]).run_id: ("fmnist", "shoes") for n in ("source", "eval-naive")}
    spec = AggregateSpec(stage="aggregate", grid="splits", evaluations=names).model_dump(mode="json")
    run_module("jobs.aggregate", str(write_spec(store / "agg", spec)), check=True)
    grid = store.parent / "splits"
    df = pd.read_parquet(grid / "metrics.parquet")
    # the naive candidate with the lower mean validation FID (builtin features, full domain)
    fid = df[(df.split == "validation") & (df.metric == "fid") & (df.task == "unconditional")
             & (df.reference == "full-domain") & (df.method == "naive")]
    means = fid.groupby("ckpt_step")["value"].mean()
    assert sorted(means.index) == [EARLY, 100]
    best = means.idxmin()
    selection = select(df)
    chosen = selection.chosen()
    assert chosen[chosen.method == "naive"]["ckpt_step"].tolist() == [best]
    shown = reported(df, selection)
    assert set(shown["split"].dropna()) == {"test"} and set(shown[shown.method == "naive"]["ckpt_step"]) == {best}
    report = (grid / "report.md").read_text()
    assert "## Selection on the validation split" in report and f"at step {int(best)}" in report
    assert "selected of 2" in report
    differences = (grid / "tables" / "differences.md").read_text()
    assert "against the selected naive" in differences


def test_the_report_names_each_methods_selected_candidate():
    """report.md's selection section from a table of two naive candidates (lr) and one
    source: the chosen one by its validation FID, and from how many."""
    from report.selection import select
    from jobs.aggregate import selection_lines

    rows = []
    for split, values in (("validation", {1e-3: 5.0, 2e-3: 3.0, None: 9.0}),
                          ("test", {1e-3: 1.0, 2e-3: 8.0, None: 7.0})):
        for lr, value in values.items():
            rows.append({"dataset": "d", "target": None, "method": "naive" if lr else "source", "weighting": None,
                         "split": split, "ckpt_step": 100, "task": "unconditional", "t0": None,
                         "reference": "full-domain", "extractor": "builtin", "subset": "all", "metric": "fid",
                         "value": value, "p_lr": lr, "p_steps": 100 if lr else None})
    lines = selection_lines(select(pd.DataFrame(rows)))
    found = [line for line in lines if line.startswith("- ")]
    assert found == ["- naive: lr=0.002 at step 100 (validation score 3 over 1 rows; selected of 2)",
                     "- source: its only setting at step 100 (validation score 9 over 1 rows; selected of 1)"]
    assert "lowest mean unconditional FID" in lines[2]


def test_the_report_names_every_commit_that_measured_its_rows():
    """A grid that shares runs by run id with an earlier one (reproduce-aux with reproduce)
    holds rows measured by two commits; the report's first line names both, not the first
    row's alone."""
    from jobs.aggregate import commits_made_by

    assert commits_made_by(pd.DataFrame({"git_sha": ["a688a32", "a688a32", None]})) == "measured at commit a688a32"
    assert commits_made_by(pd.DataFrame({"git_sha": ["e08457b", "a688a32", "a688a32"]})) == \
        "measured at commits a688a32 (2 numbers), e08457b (1 number)"
    assert commits_made_by(pd.DataFrame({"git_sha": [None, None]})) == "commit unknown"
