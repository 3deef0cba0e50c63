"""The forgetting curve (evaluation.curve_steps, jobs/curve.py): off by default it changes no
run; on, naive's and sdft's runs keep snapshots at the curve's steps and their evaluations
sample them unconditionally (test split only), rows apart from the metrics; the aggregate's
points, table and figure read those rows. The Ray evaluation end to end is the slow test at
the bottom."""
import math

import numpy as np
import pandas as pd
import pytest

from factories import eval_spec, finetune_spec, run_module, smoke_grid, tiny_unet, write_grid, write_spec
from runs.budget import candidates
from runs.config import load_grid
from runs.errors import UserError
from runs.grid import expand
from report.curve import SHARE, curve_table
from report.results import tidy
from runs.spec import AggregateSpec, EvalSpec, RunSpec
from runs.store import RunFolder
from jobs.evaluation.plan import plan_products
from jobs.weights import raw_twin

STEPS = smoke_grid()["finetune"]["steps"]          # 20
CURVE = [5, 10]


def _plan(tmp_path, **changes):
    return expand(load_grid(write_grid(tmp_path, smoke_grid(**changes), f"g{len(changes)}.yaml")))


def test_off_by_default_and_on_only_for_naive_and_sdft_evaluations(tmp_path):
    off, on = _plan(tmp_path), _plan(tmp_path, evaluation__curve_steps=CURVE + [STEPS * 10])
    # training runs keep their ids (snapshots are bookkeeping); off, the evaluations are today's
    assert [r.run_id for r in off.by_stage("finetune")] == [r.run_id for r in on.by_stage("finetune")]
    assert all(r.spec.snapshot_steps == () for r in off.by_stage("finetune"))
    assert all("curve_steps" not in r.spec.model_dump(exclude_defaults=True)["settings"]
               for r in off.by_stage("evaluate"))
    for run in on.by_stage("finetune"):
        assert run.spec.snapshot_steps == (tuple(CURVE) if run.method in ("naive", "sdft") else ())
    evaluations = {r.method: r for r in on.by_stage("evaluate")}
    assert evaluations["source"].spec.settings.curve_steps == []
    assert evaluations["scratch"].spec.settings.curve_steps == []
    assert evaluations["naive"].spec.settings.curve_steps == CURVE + [STEPS * 10]
    assert evaluations["sdft"].spec.settings.curve_steps == CURVE + [STEPS * 10]
    # the source's and scratch's evaluations are unchanged; naive's and sdft's are new runs
    before = {r.method: r.run_id for r in off.by_stage("evaluate")}
    after = {r.method: r.run_id for r in on.by_stage("evaluate")}
    assert before["source"] == after["source"] and before["scratch"] == after["scratch"]
    assert before["naive"] != after["naive"] and before["sdft"] != after["sdft"]
    # the curve's snapshots are drawn, never selected: no method gains candidates
    assert candidates(on) == candidates(off)


def test_the_curve_needs_unconditional_samples(tmp_path):
    with pytest.raises(UserError, match=r"evaluation.*curve_steps.*unconditional"):
        load_grid(write_grid(tmp_path, smoke_grid(evaluation__curve_steps=[5], evaluation__tasks=["sdedit"])))


def test_curve_checkpoints_are_sampled_unconditionally_on_the_test_split_only():
    spec = EvalSpec.model_validate(eval_spec(tasks=["unconditional", "sdedit"], splits=True, curve_steps=[5, 10],
                                             checkpoint_steps=[10]))
    products = plan_products(spec, [(20, "final"), (5, "s5"), (10, "s10")])
    keys = [p.key for p in products]
    # the final model and the early-stopping checkpoint (10): every task, both splits
    for step in (20, 10):
        assert {k for k in keys if k.endswith(f"_s{step}")} == {
            f"{t}_{s}_s{step}" for t in ("unconditional", "sdedit_t0.5") for s in ("validation", "test")}
    assert [k for k in keys if k.endswith("_s5")] == ["unconditional_test_s5"]


def _row(**columns) -> dict:
    base = {"dataset": "fmnist", "target": "painted", "task": "unconditional", "subset": "missing-classes",
            "reference": "classifier", "extractor": "builtin", "split": None, "seed": 0, "eval_seed": 0}
    return {**base, **columns}


def _points():
    """Rows of one naive run (steps 5, 10, 20), two sdft seeds at step 20, and the source."""
    from jobs.curve import points

    rows = []
    for step, share, fid in ((5, 0.30, 9.0), (10, 0.20, 7.0), (20, 0.10, 5.0)):
        rows.append(_row(eval_id="n", run_id="rn", method="naive", ckpt_step=step, metric=SHARE, value=share,
                         ci_low=share - 0.05, ci_high=share + 0.05, n=100))
        rows.append(_row(eval_id="n", run_id="rn", method="naive", ckpt_step=step, metric="fid", value=fid,
                         ci_low=fid - 1, ci_high=fid + 1, n=100, reference="full-domain", subset="all"))
    for seed, share in ((0, 0.25), (1, 0.35)):
        rows.append(_row(eval_id=f"s{seed}", run_id=f"rs{seed}", method="sdft", weighting="sdft", seed=seed,
                         ckpt_step=20, metric=SHARE, value=share, ci_low=share - 0.1, ci_high=share + 0.1, n=100))
    rows.append(_row(eval_id="src", run_id="src", method="source", seed=None, ckpt_step=None, metric=SHARE,
                     value=0.28, ci_low=0.22, ci_high=0.34, n=100))
    return points(tidy(rows))


def test_points_hold_each_step_with_its_interval_and_the_source_level():
    found = _points()
    naive = found[(found.model == "naive") & (found.metric == SHARE)].sort_values("step")
    assert naive["step"].tolist() == [5, 10, 20]
    np.testing.assert_allclose(naive["value"], [0.30, 0.20, 0.10])
    np.testing.assert_allclose(naive["ci_low"], [0.25, 0.15, 0.05])
    sdft = found[(found.model == "sdft/sdft") & (found.metric == SHARE)].iloc[0]
    # two runs without per-item values: their mean, and the span of their intervals
    assert math.isclose(sdft["value"], 0.30) and (sdft["ci_low"], sdft["ci_high"]) == pytest.approx((0.15, 0.45))
    assert sdft["runs"] == 2 and "span" in sdft["interval"]
    source = found[found.model == "source"].iloc[0]
    assert math.isnan(source["step"]) and source["value"] == pytest.approx(0.28)


def test_the_table_and_the_figure_show_the_points(tmp_path):
    from jobs.curve import curve_plot

    found = _points()
    text = curve_table(found).render("markdown")
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines[1:]] == [
        "source", "naive @5", "naive @10", "naive @20", "sdft/sdft @20"]
    assert "0.300 [0.250, 0.350]" in lines[2] and "9.0 [8.0, 10.0]" in lines[2]
    path = curve_plot(found, tmp_path / "forgetting_curve.png")
    assert path.stat().st_size > 10_000


# ---------------------------------------------------------------- end to end, on Ray
def _naive_with_snapshots(store) -> str:
    """A finished naive run of 100 steps, its raw weights at 50 and 100 two tiny networks."""
    from models.networks import save_unet

    spec = RunSpec.model_validate(finetune_spec("naive", snapshot_steps=(50,))).model_dump(mode="json")
    run = RunFolder(write_spec(store / "naive", spec))
    save_unet(tiny_unet(1), run.path / "model-raw")
    save_unet(tiny_unet(2), raw_twin(run.snapshot_dir(50)))
    run.set_state("done")
    return "run:naive"


@pytest.mark.slow
def test_an_evaluation_with_a_curve_end_to_end(tmp_path, ray_env):
    """Slow: two tiny Ray evaluations (two seeds each) and the aggregate: under 56 s in a cold run
    of the whole suite on the 2-core machine (not among its 10 slowest)."""
    from models.networks import save_unet

    store = tmp_path / "_runs"
    save_unet(tiny_unet(0), tmp_path / "source-model")
    settings = dict(num_samples=24, batch_size=12, ddim_steps=5, max_reference=64, kid_subset_size=12, seed=[0, 1],
                    lpips_net="alex")      # the cheaper trunk (tests/factories.py, smoke_grid)
    source = write_spec(store / "src", {**eval_spec(**settings), "model": str(tmp_path / "source-model")})
    spec = EvalSpec.model_validate({**eval_spec(**settings, curve_steps=[50]), "role": "finetuned",
                                    "model": _naive_with_snapshots(store), "source_samples": "run:src"})
    naive = write_spec(store / "ev", spec.model_dump(mode="json"))
    for run_dir in (source, naive):
        run_module("jobs.evaluate", str(run_dir), env=ray_env, check=True)
    metrics, curve = pd.read_parquet(naive / "metrics.parquet"), pd.read_parquet(naive / "curve.parquet")
    assert set(metrics["ckpt_step"]) == {100} and set(curve["ckpt_step"]) == {50}
    assert {SHARE, "fid"} <= set(curve["metric"]) and set(curve["eval_seed"]) == {0, 1}
    assert not (source / "curve.parquet").exists()

    names = {"src": ("fmnist", "painted"), "ev": ("fmnist", "painted")}
    agg = write_spec(store / "agg", AggregateSpec(stage="aggregate", grid="g", evaluations=names).model_dump(mode="json"))
    run_module("jobs.aggregate", str(agg), check=True)
    grid = tmp_path / "g"
    found = pd.read_parquet(grid / "forgetting_curve.parquet")
    naive_points = found[found.model == "naive"]
    assert sorted(naive_points["step"].unique()) == [50, 100]
    # two evaluation seeds per point: the cells' hierarchical bootstrap, around the rows' mean
    for (step, metric), point in naive_points.groupby(["step", "metric"]):
        rows = (curve if step == 50 else metrics)
        rows = rows[rows.metric == metric] if metric == SHARE else rows[(rows.metric == "fid") & (
            rows.reference == "full-domain") & (rows.extractor == "builtin")]
        assert point["value"].iloc[0] == pytest.approx(rows["value"].mean())
        assert "hierarchical" in point["interval"].iloc[0]
        assert point["ci_low"].iloc[0] <= point["value"].iloc[0] <= point["ci_high"].iloc[0]
    assert (grid / "forgetting_curve.png").stat().st_size > 10_000
    report = (grid / "report.md").read_text()
    assert "![forgetting curve](forgetting_curve.png)" in report and "naive @50" in report
    # the tables and the tidy table hold no curve row; harness.tables prints the curve too
    assert set(pd.read_parquet(grid / "metrics.parquet")["ckpt_step"].dropna()) == {100}
    out = run_module("harness.tables", str(grid), check=True).stdout
    assert "The forgetting curve" in out and "naive @50" in out
