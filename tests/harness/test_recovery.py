"""Damage is recoverable: killed jobs resume, broken checkpoints are passed over, missing
products are made again. Faults are injected into real jobs and real submissions."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from factories import ROOT, TINY_PRETRAIN, run_module, smoke_grid, write_grid, write_spec
from runs.config import load_grid
from runs.errors import UserError, one_line
from harness.executors import local_outcome, slurm_outcome
from runs.grid import expand
from runs.store import RunFolder, Store


# ---------------------------------------------------------------- checkpoints (the job alone)
@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A tiny pretraining stopped at step 10 of 15, with checkpoints at steps 5 and 10."""
    run_dir = write_spec(tmp_path_factory.mktemp("ckpt") / "_runs" / "stopped",
                         {**TINY_PRETRAIN, "steps": 15, "checkpoint_every": 5, "log_every": 1})
    run_module("jobs.train", str(run_dir), "--stop-after", "10", check=True)
    return run_dir


def copy_of(run_dir: Path, tmp_path: Path) -> RunFolder:
    target = tmp_path / "_runs" / "copy"
    shutil.copytree(run_dir, target)
    return RunFolder(target)


def resume_rows(folder: RunFolder) -> tuple[list[dict], list[dict], int]:
    rows = folder.log_rows()
    resume = max(i for i, r in enumerate(rows) if r.get("event") == "resume")
    skipped = [r for r in rows if r.get("event") == "checkpoint_skipped"]
    first_step = next(r["step"] for r in rows[resume:] if "loss" in r)
    return rows, skipped, first_step


def test_checkpoints_are_renamed_into_place_with_their_sha256(stopped_run):
    folder = RunFolder(stopped_run)
    tags = sorted(p.name for p in folder.checkpoints.iterdir() if p.is_dir())
    assert tags == ["step00000005", "step00000010"]              # no temporary folder is left
    assert (folder.checkpoints / "latest").read_text() == "step00000010"
    manifest = json.loads((folder.checkpoints / "step00000010" / "sha256.json").read_text())
    assert "mp_rank_00_model_states.pt" in manifest and all(len(h) == 64 for h in manifest.values())


@pytest.mark.parametrize("damage", ["truncated", "folder deleted (stale latest)"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(stopped_run, tmp_path, damage):
    folder = copy_of(stopped_run, tmp_path)
    newest = folder.checkpoints / "step00000010"
    if damage == "truncated":
        states = newest / "mp_rank_00_model_states.pt"
        states.write_bytes(states.read_bytes()[: states.stat().st_size // 2])
    else:
        shutil.rmtree(newest)
    proc = run_module("jobs.train", str(folder.path), check=True)
    assert folder.status == "done" and (folder.model_dir / "config.json").is_file()
    rows, skipped, first_step = resume_rows(folder)
    assert first_step == 6                                       # resumed from step 5's checkpoint
    if damage == "truncated":
        assert [r["tag"] for r in skipped] == ["step00000010"] and "sha256" in skipped[0]["reason"]
        assert "checkpoint step00000010 passed over" in proc.stdout
    else:
        assert skipped == []
    assert "resumed from checkpoint at step 5" in proc.stdout
    # the measured training seconds go on from the checkpoint's (jobs/train.py: the tables' cost)
    seconds = [r["train_s"] for r in rows if "train_s" in r]
    assert len(seconds) == 15 and seconds[0] > 0 and seconds == sorted(seconds)


def test_a_checkpoint_that_would_run_code_is_not_loaded(stopped_run, tmp_path):
    """A planted pickle whose hash was rewritten too (the sha256 cannot catch that): the
    weights-only loader refuses it, the code does not run, the resume falls back."""
    folder = copy_of(stopped_run, tmp_path)
    marker = tmp_path / "code-ran"

    class Planted:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    newest = folder.checkpoints / "step00000010"
    torch.save({"module": Planted(), "step": 10}, newest / "mp_rank_00_model_states.pt")
    from jobs.checkpoints import write_manifest
    write_manifest(newest)
    proc = run_module("jobs.train", str(folder.path), check=True)
    assert not marker.exists()
    _, skipped, first_step = resume_rows(folder)
    assert first_step == 6 and skipped[0]["tag"] == "step00000010"
    assert "Weights only load failed" in skipped[0]["reason"], skipped
    assert "passed over" in proc.stdout


# ---------------------------------------------------------------- how an ended job is classified
def test_a_signal_is_lost_but_the_oom_killer_and_errors_are_failures():
    assert local_outcome("jobs.train", -9, 0, 0)[0] == "lost"
    assert "SIGKILL" in local_outcome("jobs.train", -9, 0, 0)[1]
    assert local_outcome("jobs.train", -15, None, None)[0] == "lost"
    status, error = local_outcome("jobs.train", -9, 2, 3)
    assert status == "failed" and "out of memory" in error
    assert local_outcome("jobs.train", 1, 0, 0) == ("failed", "jobs.train exited with code 1")
    assert slurm_outcome("7_1", "OUT_OF_MEMORY", "0:125")[0] == "failed"
    assert slurm_outcome("7_1", "FAILED", "1:0")[0] == "failed"
    for state in ("CANCELLED", "NODE_FAIL", "TIMEOUT", "PREEMPTED", None):
        assert slurm_outcome("7_1", state, "0:9")[0] == "lost", state


def test_errors_are_stored_as_the_root_cause_line(tmp_path):
    from ray.exceptions import RayTaskError

    try:
        raise FileNotFoundError(2, "No such file or directory", "/data/x.npy")
    except FileNotFoundError as err:
        wrapped = RayTaskError("EvalWorker.sample", "Traceback ...\n", err,
                               proctitle="ray::EvalWorker.sample()").as_instanceof_cause()
    assert "\x1b[" in str(wrapped) and "ray::" in str(wrapped)          # what Ray's own text holds
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    with pytest.raises(FileNotFoundError):
        with folder.recording_failure():
            raise wrapped
    assert folder.state()["error"] == "FileNotFoundError: [Errno 2] No such file or directory: '/data/x.npy'"
    assert one_line(ValueError("two\n  lines \x1b[31mred\x1b[0m")) == "ValueError: two lines red"


# ---------------------------------------------------------------- a grid through submissions
GRID = {
    "name": "faults",
    "datasets": [{"name": "fmnist", "source": {
        "kind": "builtin", "resolution": 16,
        "pretrain": {"steps": 60, "network": "tiny", "batch_size": 16, "lr": 1.0e-3, "checkpoint_every": 10}},
        "targets": [{"name": "painted", "kind": "builtin", "size": 100, "missing_classes": [5, 8, 9]}]}],
    "methods": ["naive"],
    "finetune": {"steps": 6, "batch_size": 16, "lr": 1.0e-3, "checkpoint_every": 3},
    "evaluation": {"num_samples": 8, "batch_size": 8, "tasks": ["unconditional"], "ddim_steps": 4,
                   "kid_subset_size": 8, "kid_subsets": 2, "max_reference": 64,
                   "lpips_net": "alex"},     # the cheaper trunk: faults, not the metric, are tested here
    "cluster": {"cpus_per_task": 1, "mem_gb": 2, "timeout_min": 10},
}


def submit(grid: Path, results: Path, *extra, env: dict | None = None) -> tuple[int, dict, str]:
    proc = run_module("harness.submit", str(grid), "--results", str(results), "--executor", "local", *extra,
                      env=env, timeout=2400)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory, ray_env):
    """The grid submitted; its pretraining killed with SIGKILL once it has checkpointed step
    20; then a plain resubmit. Module-scoped: the damage tests below start from the result.
    The evaluations join the worker's shared Ray (conftest.ray_env)."""
    tmp = tmp_path_factory.mktemp("faults")
    grid_path = tmp / "faults.yaml"
    grid_path.write_text(yaml.safe_dump(GRID))
    results = tmp / "results"
    plan = expand(load_grid(grid_path), base_dir=tmp)
    pretrain = Store(results).run(plan.by_stage("pretrain")[0].run_id)
    first = subprocess.Popen([sys.executable, "-m", "harness.submit", str(grid_path), "--results", str(results),
                              "--executor", "local"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, **ray_env})
    latest = pretrain.checkpoints / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and not (latest.is_file() and latest.read_text() >= "step00000020"):
        time.sleep(0.05)
    state = pretrain.state()
    os.kill(state["pid"], signal.SIGKILL)          # the training job, not the submission
    killed_at = int(latest.read_text().removeprefix("step"))
    out, err = first.communicate(timeout=300)
    first_summary = json.loads(out.strip().splitlines()[-1])
    lost_state = pretrain.state()
    second = submit(grid_path, results, env=ray_env)
    return dict(grid=grid_path, results=results, plan=plan, pretrain=pretrain, killed_at=killed_at,
                first=(first.returncode, first_summary, err), lost_state=lost_state, second=second)


@pytest.mark.slow
def test_kill9_then_a_plain_resubmit_resumes_from_the_checkpoint(killed_and_resumed):
    """Slow: after the kill a whole grid runs, with two Ray evaluations and, on a cold cache,
    the built-in feature network's training (about 2 minutes on an idle 2-core machine; over
    10 on a loaded one). The kill itself comes within seconds."""
    k = killed_and_resumed
    code, summary, err = k["first"]
    assert code == 1, err[-2000:]
    assert summary["lost"] == 1 and summary["cancelled"] == summary["runs"] - 1, summary
    assert k["lost_state"]["status"] == "lost" and "SIGKILL" in k["lost_state"]["error"]
    code, summary, err = k["second"]
    assert code == 0, err[-3000:]
    assert summary["submitted"] == summary["runs"] and summary["done"] == summary["runs"]
    pretrain = k["pretrain"]
    assert pretrain.status == "done" and pretrain.state()["resubmits"] == 1
    rows = pretrain.log_rows()
    resumes = [i for i, r in enumerate(rows) if r.get("event") == "resume"]
    assert len(resumes) == 1 and rows[resumes[0]]["step"] == k["killed_at"]
    first_after = next(r["step"] for r in rows[resumes[0]:] if "loss" in r)
    assert first_after == k["killed_at"] + 1          # a restart from step 0 would log step 1 here


@pytest.mark.slow
def test_a_missing_model_is_made_again(killed_and_resumed):
    """Slow only through its fixture (shared with the test above)."""
    k = killed_and_resumed
    finetune = Store(k["results"]).run(k["plan"].by_stage("finetune")[0].run_id)
    weights = (finetune.model_dir / "diffusion_pytorch_model.safetensors").read_bytes()
    shutil.rmtree(finetune.model_dir)
    code, summary, err = submit(k["grid"], k["results"])
    assert code == 0, err[-2000:]
    assert f"{finetune.run_id} (finetune): done, but model/config.json" in err
    assert summary["submitted"] == 1 and summary["skipped_done"] == summary["runs"] - 1
    # made again from the final checkpoint: the same EMA weights
    assert (finetune.model_dir / "diffusion_pytorch_model.safetensors").read_bytes() == weights


@pytest.mark.slow
def test_a_deleted_grid_folder_is_rebuilt(killed_and_resumed):
    """Slow only through its fixture (shared with the tests above)."""
    k = killed_and_resumed
    grid_dir = k["results"] / "faults"
    report = (grid_dir / "report.md").read_text()
    shutil.rmtree(grid_dir)
    code, summary, err = submit(k["grid"], k["results"])
    assert code == 0, err[-2000:]
    assert summary["submitted"] == 1 and summary["skipped_done"] == summary["runs"] - 1
    assert (grid_dir / "metrics.parquet").is_file() and any((grid_dir / "tables").glob("*.md"))
    assert (grid_dir / "report.md").read_text().splitlines()[0] == report.splitlines()[0]
    assert len(list((grid_dir / "runs").iterdir())) == summary["runs"]


# ---------------------------------------------------------------- triage, without running jobs
@pytest.fixture
def smoke_store(tmp_path):
    smoke = ROOT / "grids" / "smoke.yaml"
    plan = expand(load_grid(smoke), base_dir=smoke.parent)
    store = Store(tmp_path / "results")
    for run in plan.runs:
        store.add_run("smoke", run.run_id, run.spec.model_dump(mode="json"))
    return plan, store


def test_a_lost_run_is_resubmitted_three_times_then_needs_retry_failed(smoke_store):
    from harness.submit import MAX_RESUBMITS, triage

    plan, store = smoke_store
    pretrain = store.run(plan.by_stage("pretrain")[0].run_id)
    pretrain.set_state("lost", error="jobs.train was killed by SIGKILL", resubmits=MAX_RESUBMITS - 1)
    todo = triage(plan, store, retry_failed=False)
    assert pretrain.run_id in [r.run_id for r in todo.submit]
    assert todo.updates[pretrain.run_id] == ("lost", {"resubmits": MAX_RESUBMITS})
    pretrain.set_state("lost", resubmits=MAX_RESUBMITS)
    todo = triage(plan, store, retry_failed=False)
    assert todo.failed == [pretrain.run_id] and "lost 4 times" in todo.updates[pretrain.run_id][1]["error"]
    assert set(todo.cancelled.values()) == {f"parent {pretrain.run_id} failed"}
    assert len(todo.cancelled) == len([r for r in plan.runs if pretrain.run_id in r.depends_on
                                       or r.stage in ("evaluate", "aggregate")])
    todo = triage(plan, store, retry_failed=True)
    assert todo.updates[pretrain.run_id] == ("lost", {"resubmits": 1})      # counted afresh
    # so is a finished run run again (its model gone): lost then, it is resubmitted. Before, the
    # count of its first training stood, and one loss made it failed
    pretrain.set_state("done", resubmits=MAX_RESUBMITS)
    todo = triage(plan, store, retry_failed=False)
    assert todo.updates[pretrain.run_id] == ("done", {"resubmits": None})
    status, info = todo.updates[pretrain.run_id]
    pretrain.set_state(status, **info)
    pretrain.set_state("lost", error="jobs.train was killed by SIGKILL")
    assert triage(plan, store, retry_failed=False).updates[pretrain.run_id] == ("lost", {"resubmits": 1})


def test_a_done_run_without_its_model_is_submitted_again(smoke_store):
    from harness.submit import triage

    plan, store = smoke_store
    pretrain = store.run(plan.by_stage("pretrain")[0].run_id)
    pretrain.set_state("done")
    todo = triage(plan, store, retry_failed=False)
    assert pretrain.run_id in [r.run_id for r in todo.submit] and "model/config.json" in todo.notes[0]
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        (pretrain.model_dir / name).parent.mkdir(exist_ok=True)
        (pretrain.model_dir / name).write_text("{}")
    assert pretrain.run_id in triage(plan, store, retry_failed=False).done


class RecordingLocalExecutor:
    """The local executor's interface, recording what it was asked to start (and the state
    of the source model's pretraining at that moment) instead of running it."""
    name = "local"

    def __init__(self, pretrain: RunFolder):
        self.pretrain, self.started = pretrain, []

    def submit(self, stage, runs, folders, after):
        self.started += [(r.run_id, self.pretrain.status) for r in runs]
        for run in runs:
            folders[run.run_id].set_state("done")
        return {r.run_id: "local-0" for r in runs}


@pytest.mark.parametrize("ends", ["done", "killed"])
def test_a_local_submission_waits_for_a_run_an_earlier_one_left_running(smoke_store, monkeypatch, ends):
    """An earlier local submission was killed and its pretraining job lives on. The next one
    has no afterok: it waits for that job, then starts what needs it if it ended done, and
    nothing that needs it if it died without a word (then lost, its dependants cancelled;
    the next plain submission resumes it). Before, the dependants started at once and failed
    ("the run to start from is not done")."""
    import harness.submit as submit_module

    monkeypatch.setattr(submit_module, "AWAIT_POLL_S", 0.1)
    plan, store = smoke_store
    pretrain = store.run(plan.by_stage("pretrain")[0].run_id)
    last_words = f"RunFolder({str(pretrain.path)!r}).set_state('done')" if ends == "done" else "pass"
    job = subprocess.Popen([sys.executable, "-c", f"import time; from runs.store import RunFolder; "
                                                  f"time.sleep(1.5); {last_words}"], cwd=ROOT)
    reaper = threading.Thread(target=job.wait)     # an orphan's end is seen once it is reaped
    reaper.start()
    pretrain.set_state("running", executor="local", job_id=None, pid=job.pid, host=socket.gethostname())
    todo = submit_module.triage(plan, store, retry_failed=False)
    assert set(todo.running) == {pretrain.run_id}
    executor = RecordingLocalExecutor(pretrain)
    submit_module.submit_plan(executor, plan, store, todo)
    reaper.join()
    needs_it = {r.run_id for r in plan.runs if pretrain.run_id in r.depends_on}
    if ends == "done":
        assert needs_it <= {run_id for run_id, _ in executor.started}
        assert all(status == "done" for run_id, status in executor.started if run_id in needs_it)
    else:
        assert not needs_it & {run_id for run_id, _ in executor.started}
        submit_module.settle(plan, store)
        assert pretrain.status == "lost"
        assert {store.run(run_id).status for run_id in needs_it} == {"cancelled"}


def test_a_slurm_submission_refuses_a_parent_running_outside_slurm(smoke_store, monkeypatch):
    """afterok takes Slurm job ids only; `afterok:local` would be sbatch's error halfway through."""
    import harness.executors
    import harness.submit as submit_module

    plan, store = smoke_store
    pretrain = store.run(plan.by_stage("pretrain")[0].run_id)
    pretrain.set_state("running", executor="local", job_id=None, pid=os.getpid(), host=socket.gethostname())
    todo = submit_module.triage(plan, store, retry_failed=False)
    monkeypatch.setattr(harness.executors, "slurm_available", lambda: True)
    with pytest.raises(submit_module.UserError, match=f"run {pretrain.run_id} is running outside Slurm"):
        submit_module.make_executor("slurm", plan, store.grid_dir("smoke"), todo)
    pretrain.set_state("running", executor="slurm", job_id="4711_0", pid=None, host=None)
    todo.running[pretrain.run_id] = "4711_0"
    assert submit_module.make_executor("slurm", plan, store.grid_dir("smoke"), todo).name == "slurm"


def test_snapshots_a_later_grid_adds_go_to_a_resumed_run_and_are_refused_past_its_step(tmp_path, monkeypatch):
    """evaluation.curve_steps and checkpoint_steps are no part of a fine-tune's id, so a grid
    that adds them finds the run an earlier grid made. A run that resumes before the step
    gets it into its spec.json (the job reads that file, written once); a run trained past
    the step can no longer keep it, and the submission says so in one line, writing nothing.
    Before, such a run was resubmitted, found nothing to do, and its evaluation failed, at
    every submission."""
    import harness.submit as submit_module

    monkeypatch.setattr(submit_module, "submit_plan", lambda *args: {})
    results = tmp_path / "results"
    submit_module.submit(write_grid(tmp_path, smoke_grid(methods=["naive"])), executor="local", results=results)
    later = write_grid(tmp_path, smoke_grid(name="later", methods=["naive"], evaluation__curve_steps=[5]))
    finetune = Store(results).run(expand(load_grid(later)).by_stage("finetune")[0].run_id)
    assert finetune.read_spec()["snapshot_steps"] == []
    (finetune.checkpoints / "step00000003").mkdir(parents=True)
    finetune.set_state("lost", error="killed")
    submit_module.submit(later, executor="local", results=results)
    assert finetune.read_spec()["snapshot_steps"] == [5]

    finetune.set_state("done")
    state = finetune.state()
    with pytest.raises(UserError, match=rf"{later}: evaluation.checkpoint_steps or curve_steps: finetune run "
                                        rf"{finetune.run_id} \(naive\) has trained to step 20 without keeping a "
                                        "snapshot at step 5"):
        submit_module.submit(later, executor="local", results=results)
    assert finetune.state() == state
