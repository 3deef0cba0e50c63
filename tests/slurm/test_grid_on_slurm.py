"""The smoke grid through real sbatch: arrays, afterok, kill-on-invalid-dep, requeue, resume."""
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from factories import from_a_model_folder, run_module, smoke_grid, write_grid
from runs.config import load_grid
from runs.grid import expand
from runs.store import Store
from tests.slurm.conftest import sacct_states

pytestmark = pytest.mark.slurm


def grid_file(tmp_path: Path, name: str, **changes) -> Path:
    return write_grid(tmp_path, smoke_grid(name=name, **changes), f"{name}.yaml")


def submit(grid: Path, results: Path, *extra: str, code: int = 0) -> dict:
    proc = run_module("harness.submit", str(grid), "--executor", "slurm", "--results", str(results), *extra)
    assert proc.returncode == code, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def states(results: Path, grid: str) -> dict[str, dict]:
    return {f.run_id: {**f.state(), "spec": f.read_spec()} for f in Store(results).grid_runs(grid)}


@pytest.fixture(autouse=True)
def cancel_leftovers(tmp_path):
    """Whatever a test leaves queued is cancelled by id (never by a broad name)."""
    yield
    jobs = {f.state().get("job_id") for grid in (tmp_path / "results").glob("*/runs")
            for f in Store(tmp_path / "results").grid_runs(grid.parent.name)}
    jobs = sorted(j for j in jobs if j and not j.startswith("local"))
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True)


# Evaluations at the smallest size that still gives both actors of a two-node Ray a batch:
# what the tests here check is where and after what the jobs ran, not what they measured
# (the smoke grid's evaluations are checked in tests/jobs/test_evaluate.py).
SMALL_EVALUATION = {"num_samples": 16, "batch_size": 8, "tasks": ["unconditional"], "ddim_steps": 4,
                    "kid_subset_size": 8, "kid_subsets": 2, "max_reference": 64}


def test_smoke_grid_goes_through_sbatch_to_done(slurm, tmp_path):
    """~85 s: the smoke grid's nine real jobs (its evaluations at the smallest size) go through
    sbatch one dependency level at a time; nothing shorter shows the dependencies hold. The
    jobs themselves take the time (four Ray evaluations, two at a time on two CPUs):
    slurmctld starts each dependent job within 0.5 s of its parent's end (its log on a cold
    run; slurm/local-slurm.sh)."""
    results = tmp_path / "results"
    grid = grid_file(tmp_path, "smoke", evaluation=SMALL_EVALUATION)
    summary = submit(grid, results, "--wait")
    assert summary["submitted"] == summary["runs"] == 9
    runs = states(results, "smoke")
    assert all(s["status"] == "done" for s in runs.values()), runs
    pretrain = [s for s in runs.values() if s["spec"]["stage"] == "pretrain"]
    finetune = [s for s in runs.values() if s["spec"]["stage"] == "finetune"]
    from_source = [s for s in finetune if s["spec"]["method"] != "scratch"]
    arrays = {s["job_id"].split("_")[0] for s in from_source}
    assert len(arrays) == 1 and all("_" in s["job_id"] for s in from_source)   # one job array
    array_id = arrays.pop()
    script = next((results / "smoke" / "slurm" / array_id).glob("*_submission.sh")).read_text()
    assert f"--dependency=afterok:{pretrain[0]['job_id'].split('_')[0]}" in script
    # Read from what persists: slurmctld forgets finished jobs after MinJobAge (300 s), so a
    # live `scontrol show job` record is no evidence; the submitted script is.
    for job in [pretrain[0]["job_id"], *(s["job_id"] for s in finetune)]:
        script = next((results / "smoke" / "slurm" / job.split("_")[0]).glob("*_submission.sh")).read_text()
        assert "#SBATCH --kill-on-invalid-dep=yes" in script, job
        assert sacct_states(job) == ["COMPLETED"], (job, sacct_states(job))

    # each evaluation's array waits on the jobs of every run it needs (its fine-tune, the
    # source model's evaluation it compares with; the source's on the pretraining)
    plan = expand(load_grid(grid), base_dir=grid.parent)
    evaluations = [r for r in plan.runs if r.stage == "evaluate"]
    assert len(evaluations) == 4
    for evaluation in evaluations:
        job = runs[evaluation.run_id]["job_id"].split("_")[0]
        script = next((results / "smoke" / "slurm" / job).glob("*_submission.sh")).read_text()
        after = set(re.search(r"--dependency=afterok:([\d:]+)", script).group(1).split(":"))
        needed = {runs[d]["job_id"].split("_")[0] for d in evaluation.depends_on}
        assert needed and needed <= after, (evaluation.run_id, needed, after)
    assert (results / "smoke" / "report.md").is_file() and (results / "smoke" / "metrics.parquet").is_file()
    assert (results / "smoke" / "tables" / "table3.tex").is_file()

    again = submit(grid, results)
    assert again["submitted"] == 0 and again["skipped_done"] == 9

    status = run_module("harness.status", str(results / "smoke"))
    assert status.returncode == 0 and "9 done" in status.stdout


def test_children_of_a_failed_job_are_cancelled(slurm, tmp_path):
    grid = grid_file(tmp_path, "doomed", datasets__0__source__pretrain__lr=1.0e9)
    results = tmp_path / "results"
    summary = submit(grid, results, "--wait", code=1)          # --wait: a failed run is an exit 1
    assert (summary["failed"], summary["cancelled"], summary["done"]) == (1, 7, 1), summary
    runs = states(results, "doomed")
    pretrain_id, pretrain = next((i, s) for i, s in runs.items() if s["spec"]["stage"] == "pretrain")
    assert pretrain["status"] == "failed" and "not finite" in pretrain["error"]
    children = [s for s in runs.values() if s["spec"].get("method") in ("naive", "sdft")
                or s["spec"]["stage"] in ("evaluate", "aggregate")]
    assert len(children) == 7
    for child in children:
        # never started: Slurm cancelled the job (kill-on-invalid-dep), the store says why
        assert child["status"] == "cancelled" and child["error"] == f"parent {pretrain_id} failed"
        assert "CANCELLED" in sacct_states(child["job_id"]), child["job_id"]
    scratch = next(s for s in runs.values() if s["spec"].get("method") == "scratch")
    assert scratch["status"] == "done"        # it needs no source model: its own array, no wait
    status = run_module("harness.status", str(results / "doomed"))
    assert "failed" in status.stdout and "not finite" in status.stdout
    assert f"parent {pretrain_id} failed" in status.stdout and "7 cancelled" in status.stdout


def test_preempted_training_is_requeued_and_resumes(slurm, tmp_path):
    """The signal lands at step 40 or a little later; the 160 steps after it (about 6 s
    on one CPU) leave it time to land before the training could finish."""
    steps = 200
    grid = grid_file(tmp_path, "preempt", methods=["naive"], finetune__steps=steps,
                     finetune__checkpoint_every=20, finetune__batch_size=32,
                     evaluation=SMALL_EVALUATION,        # the source's, beside the training, is cheap
                     **from_a_model_folder(tmp_path))
    results = tmp_path / "results"
    submit(grid, results)
    store = Store(results)
    run = next(f for f in store.grid_runs("preempt") if f.read_spec()["stage"] == "finetune")
    deadline = time.time() + 240
    while time.time() < deadline and not (run.status == "running" and run.state().get("step", 0) >= 40):
        time.sleep(0.2)
    assert run.status == "running", run.state()
    job_id = run.state()["job_id"]
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)    # how a cluster preempts
    deadline, pending_since = time.time() + 300, None
    while time.time() < deadline and run.status != "done":
        # Slurm holds a requeued job back for a while (BeginTime); release it sooner, but not
        # within the second of the requeue: slurmd refuses a launch whose credential is no
        # newer than the revoked one ("Job credential revoked"), and the job fails
        state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                               text=True).stdout.strip()
        if state == "PENDING":
            pending_since = pending_since or time.time()
            if time.time() - pending_since > 2:
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
        time.sleep(0.5)
    assert run.status == "done", run.state()
    resumes = [r for r in run.log_rows() if r.get("event") == "resume"]
    assert resumes and 0 < resumes[0]["step"] < steps
    attempts = sacct_states(job_id)
    assert len(attempts) >= 2 and attempts[0] == "REQUEUED", attempts      # a second attempt


def test_two_tasks_per_node_train_one_run_with_deepspeed(slurm, tmp_path):
    """~100 s: two Slurm tasks start DeepSpeed (gloo) and train ZeRO-2 shards; only a real
    two-process launch shows the shards and the rank handling. Then two evaluations, each on
    a two-node Ray that it starts and stops. The source model is a saved one: no pretraining."""
    grid = grid_file(tmp_path, "twotasks", methods=["sdft"], cluster={
        "cpus_per_task": 1, "mem_gb": 2, "timeout_min": 10, "tasks_per_node": 2},
        finetune__zero_stage=2, finetune__checkpoint_every=20, evaluation=SMALL_EVALUATION,
        **from_a_model_folder(tmp_path))
    results = tmp_path / "results"
    submit(grid, results, "--wait")
    runs = Store(results).grid_runs("twotasks")
    folder = next(f for f in runs if f.read_spec()["stage"] == "finetune")
    assert folder.status == "done", folder.state()
    shards = list((folder.checkpoints / "step00000020").glob("*optim_states.pt"))
    assert len(shards) == 2          # ZeRO-2 across the two Slurm tasks
    # the evaluations ran on a Ray cluster of two nodes, one per task, head on the first
    evaluations = [f for f in runs if f.read_spec()["stage"] == "evaluate"]
    assert evaluations and all(f.status == "done" for f in evaluations)
    for f in evaluations:
        assert json.loads((f.path / "eval.json").read_text())["ray_nodes"] == 2
    assert (results / "twotasks" / "report.md").is_file()
    for f in evaluations:       # by its head's address: another test's Ray may be running beside
        [address] = (f.path / "ray").glob("*/address")      # the folder of the job's one attempt
        head = address.read_text().strip()
        leftovers = subprocess.run(["pgrep", "-f", f"ray/core/src/ray/raylet.*--gcs-address={head}( |$)"],
                                   capture_output=True, text=True)
        assert leftovers.stdout.strip() == "", f"a Ray node of {head} outlived its job"
