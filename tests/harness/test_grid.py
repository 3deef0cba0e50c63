"""Grid files: validation (one line, exit 2, nothing touched), expansion, identity, local runs."""
import json
import os

import pytest

from factories import DELETE, ROOT, SMOKE_GRID, from_a_model_folder, run_module, smoke_grid, write_grid
from runs.config import load_grid
from runs.errors import UserError
from runs.grid import expand, sweep

SMOKE = smoke_grid()

BAD_GRIDS = [
    ("unknown top-level key", dict(epochs=3), "epochs: unknown key"),
    ("unknown nested key", dict(finetune__learning_rate=1e-4), "finetune.learning_rate: unknown key"),
    ("unknown method", dict(methods=["naive", "dreambooth"]), "methods[1]"),
    ("unknown weighting", dict(weightings=["cosine"]), "weightings[0]"),
    ("wrong type", dict(finetune__lr="fast"), "finetune.lr"),
    ("zero steps", dict(finetune__steps=0), "finetune.steps: Input should be greater than 0"),
    ("negative pretrain steps", dict(datasets__0__source__pretrain__steps=-5), "datasets[0].source.pretrain.steps"),
    ("negative steps in a sweep", dict(finetune__steps=[10, -1]), "finetune.steps: [1]"),
    ("empty sweep list", dict(finetune__lambda_distill=[]), "finetune.lambda_distill: empty sweep list"),
    ("empty methods", dict(methods=[]), "methods"),
    ("unknown precision", dict(finetune__precision="fp8"), "finetune.precision"),
    ("bad tie", dict(finetune__lambda_aux={"same_as": "lambda"}), "same_as"),
    ("missing grid name", dict(name=DELETE), "name: missing required key"),
    ("bad missing class", dict(datasets__0__targets__0__missing_classes=[5, 12]), "missing_classes"),
    ("source without origin", dict(datasets__0__source__pretrain=DELETE), "pretrain"),
    ("timeout of one minute", dict(cluster__timeout_min=1), "cluster.timeout_min"),
    ("EMA sweep of raw weights", dict(finetune__ema_decay=[0.99, 0.999]), "finetune.ema_decay: a sweep of the EMA"),
    ("a method's EMA sweep of raw weights", dict(per_method={"naive": {"ema_warmup": [True, False]}}),
     "per_method.naive.ema_warmup: a sweep of the EMA"),
    # a repeat made the same products twice (twice the sampling, doubled metric rows)
    ("a task twice", dict(evaluation__tasks=["unconditional", "unconditional"]), "evaluation.tasks: repeat"),
    ("a t0 twice", dict(evaluation__t0=[0.5, 0.5]), "evaluation.t0: repeat"),
]


@pytest.mark.parametrize("case,changes,expected", BAD_GRIDS, ids=[c[0] for c in BAD_GRIDS])
def test_bad_grid_is_one_line_naming_file_and_field(tmp_path, case, changes, expected):
    path = write_grid(tmp_path, smoke_grid(**changes))
    with pytest.raises(UserError) as err:
        load_grid(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert expected in message, message


def test_an_ema_sweep_is_taken_where_the_ema_is_evaluated(tmp_path):
    grid = smoke_grid(finetune__ema_decay=[0.99, 0.999], evaluation__weights="ema")
    assert load_grid(write_grid(tmp_path, grid)).finetune.ema_decay == [0.99, 0.999]


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmethods: [naive\n")
    with pytest.raises(UserError, match=r"broken\.yaml: line \d+"):
        load_grid(path)


def test_cli_rejects_with_exit_2_and_touches_nothing(tmp_path):
    results = tmp_path / "results"
    (results / "keep").mkdir(parents=True)
    (results / "keep" / "file.txt").write_text("precious")
    before = sorted(p.relative_to(results) for p in results.rglob("*"))
    path = write_grid(tmp_path, smoke_grid(methods=["nope"]))
    proc = run_module("harness.submit", str(path), "--results", str(results), "--executor", "local")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "methods[0]" in lines[0]
    assert sorted(p.relative_to(results) for p in results.rglob("*")) == before


def test_missing_folder_is_an_error_but_a_dry_run_warning(tmp_path):
    grid = smoke_grid(datasets__0__source={"kind": "folder", "path": "no/such/faces", "resolution": 32,
                                        "model": "no/such/model"},
                   datasets__0__targets=[{"name": "metfaces", "kind": "folder", "path": "no/such/metfaces"}],
                   methods=["naive", "sdft"], evaluation={"extractors": ["inception"]})
    path = write_grid(tmp_path, grid)
    results = tmp_path / "results"
    proc = run_module("harness.submit", str(path), "--results", str(results), "--executor", "local")
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr and "datasets[0].source" in proc.stderr
    assert not results.exists()
    dry = run_module("harness.submit", str(path), "--results", str(results), "--dry-run")
    assert dry.returncode == 0 and dry.stderr.count("warning:") == 3
    # 2 fine-tunes, their 2 evaluations, the source model's evaluation, the aggregate
    assert json.loads(dry.stdout.strip().splitlines()[-1])["runs"] == 6
    assert not results.exists()


def test_same_name_different_experiment_is_refused_with_the_way_out(tmp_path):
    """A stored grid of the same name with a run this grid lacks (here a finetune run
    planted by hand) is a different experiment: refused before anything is written."""
    results = tmp_path / "results"
    other = results / "_runs" / "0123456789"
    other.mkdir(parents=True)
    (other / "spec.json").write_text(json.dumps({"stage": "finetune"}))
    (results / "smoke" / "runs").mkdir(parents=True)
    (results / "smoke" / "grid.json").write_text(json.dumps({"name": "smoke", "other": True}))
    (results / "smoke" / "runs" / "0123456789").symlink_to("../../_runs/0123456789")
    before = sorted(p.relative_to(results) for p in results.rglob("*"))
    path = write_grid(tmp_path, SMOKE)
    proc = run_module("harness.submit", str(path), "--results", str(results), "--executor", "local")
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip()
    assert "\n" not in line and "different grid named 'smoke'" in line and "0123456789" in line
    assert "give this grid another name, or move that folder away" in line
    assert sorted(p.relative_to(results) for p in results.rglob("*")) == before


def test_cluster_settings_and_added_runs_keep_the_grid(tmp_path):
    """Changing timeout_min, or adding a seed, is the same grid (a dry run checks the name
    as a submission does); dropping a method is not."""
    from runs.store import Store

    first = write_grid(tmp_path, smoke_grid(), "first.yaml")
    grid = load_grid(first)
    store = Store(tmp_path / "results")
    store.write_grid(grid.name, first.read_text(), grid.canonical_json())
    for run in expand(grid, base_dir=first.parent).runs:
        store.add_run(grid.name, run.run_id, run.spec.model_dump(mode="json"))
    for changes, ok in ((dict(cluster__timeout_min=30), True), (dict(seeds=[0, 1]), True),
                        (dict(methods=["naive", "sdft"]), False)):
        path = write_grid(tmp_path, smoke_grid(**changes))
        proc = run_module("harness.submit", str(path), "--results", str(store.root), "--dry-run")
        assert (proc.returncode == 0) == ok, (changes, proc.stderr[-1000:])
        if not ok:
            assert "different grid named 'smoke'" in proc.stderr


def test_naive_under_three_weightings_is_one_run(tmp_path):
    grid = load_grid(write_grid(tmp_path, smoke_grid(weightings=["sdft", "constant", "min-snr"])))
    plan = expand(grid)
    finetune = plan.by_stage("finetune")
    assert [r.method for r in finetune].count("naive") == 1
    assert sorted(r.weighting for r in finetune if r.method == "sdft") == ["constant", "min-snr", "sdft"]
    assert len({r.run_id for r in plan.runs}) == len(plan.runs)


def test_sweeps_multiply_and_ties_follow(tmp_path):
    grid = load_grid(write_grid(tmp_path, smoke_grid(
        methods=["naive", "sdft"], seeds=[0, 1],
        finetune__lambda_distill=[0.1, 1.0, 3.0], finetune__lr=[1e-4, 2e-4])))
    finetune = expand(grid).by_stage("finetune")
    sdft = [r for r in finetune if r.method == "sdft"]
    naive = [r for r in finetune if r.method == "naive"]
    assert len(sdft) == 3 * 2 * 2 and len(naive) == 2 * 2       # lambda is not naive's axis
    assert all(r.spec.distill.lambda_aux == r.spec.distill.lambda_distill for r in sdft)
    assert all(r.depends_on == (expand(grid).by_stage("pretrain")[0].run_id,) for r in sdft)
    assert sweep({"a": [1, 2], "b": 3}) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]


def test_per_method_overrides(tmp_path):
    grid = load_grid(write_grid(tmp_path, smoke_grid(per_method={"scratch": {"steps": 99, "lr": 1e-3}})))
    by_method = {r.method: r.spec for r in expand(grid).by_stage("finetune")}
    assert by_method["scratch"].steps == 99 and by_method["naive"].steps == SMOKE["finetune"]["steps"]


@pytest.mark.slow
def test_two_grids_share_a_run_folder(tmp_path, ray_env):
    """The same settings in two grids: one folder, trained and evaluated once. ~40 s: the
    first submission really trains and evaluates (its two evaluations on one shared Ray,
    conftest.ray_env), the second must not. The source is a saved model (no pretraining)."""
    results = tmp_path / "results"
    small_eval = {"num_samples": 8, "batch_size": 8, "tasks": ["unconditional"], "ddim_steps": 4,
                  "kid_subset_size": 8, "kid_subsets": 2, "max_reference": 64}
    source = from_a_model_folder(tmp_path)
    one = write_grid(tmp_path, smoke_grid(name="one", methods=["scratch"], finetune__steps=3, finetune__network="tiny",
                                          evaluation=small_eval, **source), "one.yaml")
    two = write_grid(tmp_path, smoke_grid(name="two", methods=["scratch"], finetune__steps=3, finetune__network="tiny",
                                          evaluation=small_eval, **source), "two.yaml")
    first = run_module("harness.submit", str(one), "--results", str(results), "--executor", "local", env=ray_env)
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_module("harness.submit", str(two), "--results", str(results), "--executor", "local", env=ray_env)
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    # scratch and both evaluations are shared: only grid two's own aggregate runs
    assert summary["runs"] == 4 and summary["skipped_done"] == 3 and summary["submitted"] == 1
    link_one = sorted(os.readlink(p) for p in (results / "one" / "runs").iterdir())
    link_two = sorted(os.readlink(p) for p in (results / "two" / "runs").iterdir())
    assert len(set(link_one) & set(link_two)) == 3
    assert (results / "two" / "report.md").is_file() and (results / "two" / "metrics.parquet").is_file()
    assert (results / "two" / "cells.parquet").is_file()      # the cells table, empty with one run a model


def test_scratchs_network_is_required_where_used_and_refused_where_ignored(tmp_path):
    """finetune.network is scratch's network when the source is a model folder: required
    there; where every source is pretrained, scratch trains the pretrained network, and
    another one asked for would be ignored, so it is refused in one line."""
    def scratch_networks(**changes) -> set:
        plan = expand(load_grid(write_grid(tmp_path, smoke_grid(methods=["scratch"], **changes))), tmp_path)
        return {r.spec.network for r in plan.runs if r.stage == "finetune"}

    assert scratch_networks() == {"tiny"}                           # smoke.yaml's pretrained network
    assert scratch_networks(finetune__network="tiny") == {"tiny"}   # the same one: nothing ignored
    with pytest.raises(UserError, match=r"finetune\.network: 'small' would be ignored.*"
                                        r"datasets\[0\]\.source\.pretrain\.network") as err:
        scratch_networks(finetune__network="small")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"^per_method\.scratch\.network: 'small' would be ignored"):
        scratch_networks(per_method={"scratch": {"network": "small"}})       # named where it was given
    folder = from_a_model_folder(tmp_path)
    assert scratch_networks(finetune__network="small", **folder) == {"small"}
    with pytest.raises(UserError, match=r"datasets\[0\]: scratch needs finetune\.network"):
        scratch_networks(**folder)


def test_dry_run_prints_the_plan(tmp_path):
    proc = run_module("harness.submit", str(SMOKE_GRID), "--dry-run",
                      "--results", str(tmp_path / "r"))
    assert proc.returncode == 0
    lines = proc.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary == {"grid": "smoke", "runs": 9, "submitted": 0, "skipped_done": 0,
                       "skipped_running": 0, "skipped_failed": 0}
    assert "depends on" in lines[0] and sum("finetune" in line for line in lines) == 3
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ["metfaces", "aahq", "demo", "reproduce", "reproduce-aux", "forgetting",
                                  "benchmark"])
def test_shipped_grids_validate_and_expand(name, tmp_path):
    """The paper's grids name data this machine lacks: warnings in a dry run, not errors."""
    proc = run_module("harness.submit", str(ROOT / "grids" / f"{name}.yaml"), "--dry-run",
                      "--results", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["grid"] == name and summary["runs"] > 5
    if name in ("metfaces", "aahq"):
        assert proc.stderr.count("warning:") == 3
        grid = load_grid(ROOT / "grids" / f"{name}.yaml")
        plan = expand(grid, ROOT / "grids")
        sdft = [r.spec for r in plan.by_stage("finetune") if r.method == "sdft"]
        assert all(s.lr == 2e-5 and s.batch_size == 16 and s.dropout == 0.1 and s.ema_decay == 0.9999
                   and s.steps == 10_000 and s.precision == "fp16" for s in sdft)
        assert all((s.distill.gamma_distill, s.distill.gamma_aux, s.distill.k) == (3, 50, 1)
                   for s in sdft if s.distill.weighting == "sdft")
        lambdas = {(s.distill.lambda_distill, s.distill.lambda_aux) for s in sdft}
        assert lambdas == ({(0.1, 0.1)} if name == "metfaces" else
                           {(a, b) for a in (0.2, 0.3) for b in (0.2, 0.3)})
        assert grid.evaluation.extractors == ["inception"] and grid.evaluation.num_samples == 10_000
        # the official details: flips, no clipping, no EMA warm-up, from the converted ffhq_p2
        finetunes = [r.spec for r in plan.by_stage("finetune")]
        assert all(s.flip and not s.ema_warmup and s.grad_clip is None and s.zero_stage == 2
                   and s.init == "/models/ffhq-p2" for s in finetunes)
        assert all(s.distill.aux_timestep == "sampled" for s in sdft)
        e = grid.evaluation
        assert (e.sampler, e.ddim_steps, e.respacing, e.clip_denoised, e.lpips_net) == ("ddim", 40, None, True, "vgg")
        weights = {r.spec.role: r.spec.settings.weights for r in plan.by_stage("evaluate")}
        assert weights == {"finetuned": "raw", "source": None}


def test_failed_runs_are_resubmitted_only_when_asked(tmp_path):
    """A failed pretraining: submit exits 1 and counts it, every run that needs it is
    cancelled (state and status say which parent failed), a plain resubmit runs nothing."""
    results = tmp_path / "results"
    path = write_grid(tmp_path, smoke_grid(name="fails", methods=["naive"],
                                        datasets__0__source__pretrain__lr=1e9))
    first = run_module("harness.submit", str(path), "--results", str(results), "--executor", "local")
    assert first.returncode == 1, first.stderr[-2000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["submitted"] == 1            # the pretrain ran and failed; nothing after it
    assert summary["failed"] == 1 and summary["cancelled"] == summary["runs"] - 1 and summary["done"] == 0
    from runs.store import Store
    runs = {f.read_spec()["stage"] + str(f.read_spec().get("role", "")): f.state()
            for f in Store(results).grid_runs("fails")}
    pretrain = runs.pop("pretrain")
    assert pretrain["status"] == "failed" and pretrain["error"].startswith("TrainingDiverged: loss is not finite")
    failed_id = next(f.run_id for f in Store(results).grid_runs("fails") if f.read_spec()["stage"] == "pretrain")
    assert all(s["status"] == "cancelled" and s["error"] == f"parent {failed_id} failed" for s in runs.values())
    status = run_module("harness.status", str(results / "fails"))
    assert "failed" in status.stdout and "not finite" in status.stdout
    assert f"parent {failed_id} failed" in status.stdout and "4 cancelled" in status.stdout
    # the job's output is in its run folder; status names it, `sdft logs` prints it
    log = results / "_runs" / failed_id / "job.log"
    assert f"log of {failed_id}: {log}" in status.stdout and "TrainingDiverged" in log.read_text()
    assert "it/s" in log.read_text() and "it/s" not in first.stderr     # the job's progress bar: in its log only
    printed = run_module("harness.cli", "logs", failed_id[:6], "--results", str(results), check=True)
    assert printed.stdout == log.read_text()
    again = run_module("harness.submit", str(path), "--results", str(results), "--executor", "local")
    assert again.returncode == 1
    again = json.loads(again.stdout.strip().splitlines()[-1])
    assert again["submitted"] == 0 and again["skipped_failed"] == summary["runs"]
    retry = json.loads(run_module("harness.submit", str(path), "--results", str(results), "--executor",
                                  "local", "--retry-failed").stdout.strip().splitlines()[-1])
    assert retry["submitted"] == 1 and retry["skipped_failed"] == 0 and retry["failed"] == 1


def test_per_method_tie_follows_its_leader(tmp_path):
    """A tie given in per_method (it reached the run spec as a dict before)."""
    grid = load_grid(write_grid(tmp_path, smoke_grid(
        methods=["sdft"], finetune__lambda_distill=[0.5, 2.0], finetune__lambda_aux=0.1,
        per_method={"sdft": {"lambda_aux": {"same_as": "lambda_distill"}}})))
    finetune = expand(grid).by_stage("finetune")
    pairs = sorted((r.spec.distill.lambda_distill, r.spec.distill.lambda_aux) for r in finetune)
    assert pairs == [(0.5, 0.5), (2.0, 2.0)]


def test_numbers_yaml_reads_as_text_are_taken_as_numbers(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(SMOKE_GRID.read_text()
                    .replace("  steps: 20", "  steps: 1e3").replace("lr: 1.0e-3\n", "lr: 2e-5\n"))
    grid = load_grid(path)
    assert grid.finetune.steps == 1000 and isinstance(grid.finetune.steps, int)
    assert grid.finetune.lr == 2e-5


def test_a_key_repeated_is_an_error_but_a_merged_key_may_be_overridden(tmp_path):
    path = tmp_path / "grid.yaml"
    text = SMOKE_GRID.read_text()
    path.write_text(text.replace("finetune:\n", "finetune:\n  <<: {steps: 5, lr: 0.5}\n"))
    assert load_grid(path).finetune.steps == 20                    # the explicit key wins, as YAML says
    path.write_text(text.replace("  ema_decay: 0.999\n", "  ema_decay: 0.999\n  ema_decay: 0.99\n"))
    with pytest.raises(UserError, match=r"grid\.yaml: line \d+: key 'ema_decay' given twice \(first on line \d+\)"):
        load_grid(path)


def test_a_zero_stage_sweep_gives_two_model_rows(tmp_path):
    """Every declared setting is a result column: runs that differ only in zero_stage must
    not be averaged together as if they were seeds (they once were)."""
    import pandas as pd

    from runs.params import columns
    from report.tables import model_labels

    grid = load_grid(write_grid(tmp_path, smoke_grid(methods=["naive"], finetune__zero_stage=[0, 2])))
    specs = [r.spec for r in expand(grid, tmp_path).by_stage("finetune")]
    assert len({s.run_id for s in specs}) == 2
    rows = pd.DataFrame([{"method": "naive", "weighting": None, **columns(json.loads(s.model_dump_json()))}
                         for s in specs])
    assert sorted(model_labels(rows)) == ["naive ZeRO=0", "naive ZeRO=2"]


def test_a_training_run_two_targets_share_is_trained_once_and_evaluated_for_each(tmp_path):
    """One target folder judged against two references: the fine-tune is the same run (its
    id leaves the reference out), its evaluations are two. Before, the second target got its
    source model's evaluation only, and its rows were missing from every table, unsaid."""
    targets = [{"name": name, "kind": "folder", "path": "d/target", "reference": f"d/reference-{name}"}
               for name in ("A", "B")]
    grid = smoke_grid(datasets__0__source={"kind": "folder", "path": "d/faces", "resolution": 32, "model": "d/model"},
                      datasets__0__targets=targets, methods=["naive"],
                      evaluation={"extractors": ["inception"], "tasks": ["unconditional"]})
    plan = expand(load_grid(write_grid(tmp_path, grid)), base_dir=tmp_path)
    [finetune] = plan.by_stage("finetune")
    evaluations = {(r.target, r.method): r for r in plan.by_stage("evaluate")}
    assert set(evaluations) == {("A", "source"), ("A", "naive"), ("B", "source"), ("B", "naive")}
    for name in ("A", "B"):
        naive = evaluations[(name, "naive")]
        assert naive.depends_on == (finetune.run_id, evaluations[(name, "source")].run_id)
        assert naive.spec.target_data.reference.endswith(f"reference-{name}")
    [aggregate] = plan.by_stage("aggregate")
    assert set(aggregate.depends_on) == {r.run_id for r in evaluations.values()}
