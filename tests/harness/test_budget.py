"""Per-method sweeps and equal tuning budgets (runs.budget): the candidates each method
chooses from, counted from the expanded plan, and the submit-time check that they match."""
import json

import pytest

from factories import ROOT, run_module, smoke_grid, write_grid
from runs.budget import candidate_compute, candidates, unequal
from runs.compute import COMPUTE_TOLERANCE, unmatched
from runs.config import load_grid
from runs.errors import UserError
from runs.grid import expand
from runs.methods import METHODS

LRS = [5e-5, 1e-4, 2e-4]
LAMBDAS = [0.3, 1.0, 3.0]


def finetunes(tmp_path, **changes):
    return expand(load_grid(write_grid(tmp_path, smoke_grid(**changes)))).by_stage("finetune")


def by_method(runs):
    out = {}
    for r in runs:
        out.setdefault(r.method if r.weighting is None else f"{r.method}/{r.weighting}", []).append(r)
    return out


def test_per_method_axes_sweep_that_method_only(tmp_path):
    runs = by_method(finetunes(tmp_path, seeds=[0, 1], per_method={
        "naive": {"lr": LRS, "steps": [10, 20]}, "sdft": {"lambda_distill": LAMBDAS}}))
    assert len(runs["naive"]) == len(LRS) * 2 * 2
    assert {(r.spec.lr, r.spec.steps) for r in runs["naive"]} == {(lr, s) for lr in LRS for s in (10, 20)}
    assert len(runs["sdft/sdft"]) == len(LAMBDAS) * 2
    assert {r.spec.lr for r in runs["sdft/sdft"]} == {smoke_grid()["finetune"]["lr"]}
    # scratch has no axis of its own: one run per seed, with the base settings
    assert len(runs["scratch"]) == 2
    assert {(r.spec.lr, r.spec.steps) for r in runs["scratch"]} == {
        (smoke_grid()["finetune"]["lr"], smoke_grid()["finetune"]["steps"])}


@pytest.mark.parametrize("where", ["finetune", "per_method"])
def test_lambda_does_not_multiply_naive_nor_change_its_id(tmp_path, where):
    plain = by_method(finetunes(tmp_path))["naive"]
    sweep = ({"finetune__lambda_distill": LAMBDAS} if where == "finetune"
             else {"per_method": {"naive": {"lambda_distill": LAMBDAS}}})
    swept = by_method(finetunes(tmp_path, **sweep))
    assert [r.run_id for r in swept["naive"]] == [r.run_id for r in plain]
    assert swept["naive"][0].spec.distill is None
    if where == "finetune":
        assert len(swept["sdft/sdft"]) == len(LAMBDAS)


def test_each_weighting_sweeps_its_own_lambda(tmp_path):
    runs = by_method(finetunes(tmp_path, weightings=["sdft", "constant"], per_method={
        "sdft": {"lambda_distill": [1.0, 3.0]}, "sdft/constant": {"lambda_distill": [0.1, 0.3, 1.0]}}))
    assert sorted(r.spec.distill.lambda_distill for r in runs["sdft/sdft"]) == [1.0, 3.0]
    assert sorted(r.spec.distill.lambda_distill for r in runs["sdft/constant"]) == [0.1, 0.3, 1.0]
    # the tie of the base still holds under a weighting's own sweep
    assert all(r.spec.distill.lambda_aux == r.spec.distill.lambda_distill for r in runs["sdft/constant"])


def test_a_weighting_the_grid_does_not_run_is_refused(tmp_path):
    path = write_grid(tmp_path, smoke_grid(per_method={"sdft/min-snr": {"lambda_distill": [1.0]}}))
    with pytest.raises(UserError, match=r"per_method\.sdft/min-snr: .*weightings \['sdft'\]"):
        load_grid(path)


def test_candidates_are_settings_times_evaluated_checkpoints(tmp_path):
    steps = smoke_grid()["finetune"]["steps"]
    grid = load_grid(write_grid(tmp_path, smoke_grid(
        seeds=[0, 1, 2],                                    # seeds repeat a candidate
        weightings=["sdft", "constant"],
        finetune__gamma_distill=[1.0, 3.0],                 # acts on the sdft weighting only
        finetune__lambda_distill=[0.3, 1.0],                # acts on neither naive nor scratch
        per_method={"naive": {"lr": LRS}},
        evaluation__checkpoint_steps=[steps // 2, steps * 10],   # the second lies past the end
        evaluation__checkpoint_methods=["naive", "sdft"])))
    counts = candidates(expand(grid))
    assert counts == {"naive": len(LRS) * 2, "scratch": 1,
                      "sdft/constant": 2 * 2, "sdft/sdft": 2 * 2 * 2}
    assert unequal(counts) == f"naive {len(LRS) * 2}, scratch 1, sdft/constant 4, sdft/sdft 8"


def test_a_steps_sweep_shares_the_checkpoints_it_already_evaluates(tmp_path):
    """A 10-step run and the step-10 snapshot of a 20-step run are one candidate."""
    grid = load_grid(write_grid(tmp_path, smoke_grid(
        methods=["naive"], finetune__steps=[10, 20], evaluation__checkpoint_steps=[10],
        evaluation__checkpoint_methods=["naive"])))
    assert candidates(expand(grid)) == {"naive": 2}


def test_equal_budgets_pass(tmp_path):
    grid = load_grid(write_grid(tmp_path, smoke_grid(
        per_method={"naive": {"lr": LRS}, "scratch": {"lr": LRS}, "sdft": {"lambda_distill": LAMBDAS}},
        selection={"equal_budget": True})))
    counts = candidates(expand(grid))
    assert set(counts.values()) == {len(LRS)} and unequal(counts) is None


def test_unequal_budgets_are_refused_at_submit_with_exit_2_writing_nothing(tmp_path):
    results = tmp_path / "results"
    path = write_grid(tmp_path, smoke_grid(per_method={"naive": {"lr": LRS}},
                                           selection={"equal_budget": True}))
    for extra in ((), ("--dry-run",)):
        proc = run_module("harness.submit", str(path), "--results", str(results), "--executor", "local", *extra)
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert "selection.equal_budget" in lines[0] and f"naive {len(LRS)}" in lines[0]
        assert "scratch 1" in lines[0] and "sdft/sdft 1" in lines[0]
        assert not results.exists()


def test_budgets_are_not_checked_unless_asked(tmp_path):
    path = write_grid(tmp_path, smoke_grid(per_method={"naive": {"lr": LRS}}))
    grid = load_grid(path)
    assert grid.selection.equal_budget is False and grid.selection.criterion == "fid"
    assert unequal(candidates(expand(grid))) is not None
    proc = run_module("harness.submit", str(path), "--dry-run", "--results", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr[-2000:]                       # and yet it submits


@pytest.mark.parametrize("name, methods", [
    ("reproduce", ["naive", "scratch", "sdft/constant", "sdft/min-snr", "sdft/sdft"]),
    ("reproduce-aux", ["naive", "sdft/sdft", "sdft/sdft-noaux"])])
def test_the_reproduction_expands_with_equal_budgets(tmp_path, name, methods):
    proc = run_module("harness.submit", str(ROOT / "grids" / f"{name}.yaml"), "--dry-run",
                      "--results", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    budget = dict(line.removeprefix("candidates ").split(": ") for line in lines if line.startswith("candidates "))
    assert sorted(budget) == methods
    assert set(budget.values()) == {"2"}
    assert any(line.startswith("rough wall time") for line in lines)
    grid = load_grid(ROOT / "grids" / f"{name}.yaml")
    demo = load_grid(ROOT / "grids" / "demo.yaml")
    assert grid.datasets[0].source == demo.datasets[0].source         # the shipped weights' run id
    assert grid.seeds == [0, 1, 2] and grid.evaluation.seeds == [0, 1] and grid.evaluation.splits
    assert json.loads(lines[-1])["grid"] == name
    sdft = [r for r in expand(grid, ROOT / "grids").by_stage("finetune") if r.weighting == "sdft"]
    assert 0.1 in {r.spec.distill.lambda_distill for r in sdft}      # the official lambda is a candidate


def test_the_aux_ablation_shares_naive_and_the_source_with_the_reproduction():
    plans = {name: expand(load_grid(ROOT / "grids" / f"{name}.yaml"), ROOT / "grids")
             for name in ("reproduce", "reproduce-aux")}
    shared = {r.run_id for r in plans["reproduce"].runs} & {r.run_id for r in plans["reproduce-aux"].runs}
    aux_only = [r for r in plans["reproduce-aux"].runs if r.run_id not in shared and r.stage == "finetune"]
    assert {r.spec.distill.lambda_aux for r in aux_only} == {0.0} and len(aux_only) == 6
    naive = [r for r in plans["reproduce-aux"].runs if r.method == "naive"]
    assert naive and all(r.run_id in shared for r in naive)


def test_the_selection_criterion_reaches_the_aggregate_and_only_a_set_one_enters_its_id(tmp_path):
    plain = expand(load_grid(write_grid(tmp_path, smoke_grid(), "plain.yaml"))).by_stage("aggregate")[0]
    kid = expand(load_grid(write_grid(tmp_path, smoke_grid(selection={"criterion": "kid/target"}), "kid.yaml")))
    kid = kid.by_stage("aggregate")[0]
    assert plain.spec.criterion == "fid" and kid.spec.criterion == "kid/target"
    assert "criterion" not in json.dumps(plain.spec.model_dump(mode="json", exclude_defaults=True))
    assert kid.run_id != plain.run_id


# ---------------------------------------------------------------- equal compute (runs.compute)
def compute_grid(tmp_path, equal: bool, **changes):
    changes = {"evaluation__checkpoint_steps": [10], "evaluation__checkpoint_methods": ["naive", "sdft"], **changes}
    return expand(load_grid(write_grid(tmp_path, smoke_grid(
        methods=["naive", "sdft"], selection={"equal_compute": equal}, **changes))))


def test_equal_compute_trains_the_cheaper_method_longer(tmp_path):
    """naive trains sdft's steps times sdft's cost per step (its module's measured ratio),
    checkpoints included; sdft, the costliest, keeps its steps and its run id."""
    ratio = METHODS["sdft"].cost_at() / METHODS["naive"].cost_at()
    assert ratio > 1.5                               # an sdft step is the dearer one
    plain, matched = compute_grid(tmp_path, False), compute_grid(tmp_path, True)
    runs = {r.method: r for r in matched.by_stage("finetune")}
    assert runs["sdft"].spec.steps == 20 and runs["sdft"].spec.snapshot_steps == (10,)
    assert runs["naive"].spec.steps == round(20 * ratio) and runs["naive"].spec.snapshot_steps == (round(10 * ratio),)
    evaluated = {r.method: r.spec.settings.checkpoint_steps for r in matched.by_stage("evaluate")}
    assert evaluated["naive"] == [round(10 * ratio)] and evaluated["sdft"] == [10]
    before = {r.method: r.run_id for r in plain.by_stage("finetune")}
    assert runs["sdft"].run_id == before["sdft"] and runs["naive"].run_id != before["naive"]
    # as many candidates, each with its counterpart's compute: the totals agree
    assert candidates(matched) == candidates(plain) == {"naive": 2, "sdft/sdft": 2}
    compute = candidate_compute(matched)
    assert compute["sdft/sdft"] == pytest.approx((20 + 10) * 16 * METHODS["sdft"].cost_at() / 1000)
    assert compute["naive"] == pytest.approx(compute["sdft/sdft"], rel=COMPUTE_TOLERANCE)
    assert unmatched(compute) is None
    # without it, naive's candidates get about 1/ratio of sdft's compute
    assert candidate_compute(plain)["naive"] == pytest.approx(compute["sdft/sdft"] / ratio)
    assert unmatched(candidate_compute(plain)) is not None


def test_a_runs_compute_and_its_matched_steps_follow_its_own_settings(tmp_path):
    """sdft without its aux term skips the pure-noise half of the batch: its step costs less
    than sdft's (runs/methods/sdft.py), so it is counted at that cost and, under equal
    compute, trains longer than sdft, checkpoints included."""
    sdft = METHODS["sdft"]
    full, noaux = sdft.cost_at(), sdft.cost_at({"lambda_aux": 0.0, "lr": 1e-4})
    assert 1.0 < noaux < full and sdft.cost_at({"lambda_aux": 0.0, "lambda_distill": 0.0}) == 1.0
    assert sdft.cost_at({"weighting": "min-snr"}) == full
    variant = {"per_method": {"sdft/sdft-noaux": {"lambda_aux": 0.0}}}
    plain, matched = compute_grid(tmp_path, False, **variant), compute_grid(tmp_path, True, **variant)
    runs = {r.variants: r for r in matched.by_stage("finetune") if r.method == "sdft"}
    assert runs[("",)].spec.steps == 20
    steps, snapshot = round(20 * full / noaux), round(10 * full / noaux)
    assert runs[("sdft-noaux",)].spec.steps == steps and runs[("sdft-noaux",)].spec.snapshot_steps == (snapshot,)
    evaluated = {r.variants: r.spec.settings.checkpoint_steps for r in matched.by_stage("evaluate")
                 if r.method == "sdft"}
    assert evaluated == {("",): [10], ("sdft-noaux",): [snapshot]}
    assert candidate_compute(plain)["sdft/sdft-noaux"] == pytest.approx((20 + 10) * 16 * noaux / 1000)
    assert unmatched(candidate_compute(matched)) is None


def test_equal_compute_accepts_more_candidates_instead_of_longer_runs(tmp_path):
    """naive's two shorter candidates (grid steps are the costliest method's: 10 of them
    are about 19 of naive's) hold as much compute as sdft's one."""
    matched = compute_grid(tmp_path, True, evaluation__checkpoint_steps=[],
                           per_method={"naive": {"lr": [1e-3, 2e-3], "steps": 10}})
    assert candidates(matched) == {"naive": 2, "sdft/sdft": 1}
    assert unmatched(candidate_compute(matched)) is None


def test_equal_compute_refuses_unequal_totals_at_submit_with_exit_2(tmp_path):
    results = tmp_path / "results"
    path = write_grid(tmp_path, smoke_grid(methods=["naive", "sdft"], per_method={"naive": {"lr": LRS}},
                                           selection={"equal_compute": True}))
    proc = run_module("harness.submit", str(path), "--results", str(results), "--dry-run")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "selection.equal_compute" in lines[0] and "naive" in lines[0], lines
    assert not results.exists()


def test_equal_compute_must_be_true_or_false(tmp_path):
    path = write_grid(tmp_path, smoke_grid(selection={"equal_compute": "yes"}))
    with pytest.raises(UserError, match=r"selection\.equal_compute") as err:
        load_grid(path)
    assert "\n" not in str(err.value)
