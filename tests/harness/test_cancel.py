"""`sdft cancel`, `sdft run` and `sdft logs`: a cancel by the user is recorded and holds
through resubmissions until --retry-cancelled; one run runs in the foreground with its
output; a job's output is kept in its run folder."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from factories import ROOT, SMOKE_GRID, lock_held_elsewhere, run_module, smoke_grid, write_grid
from runs.config import load_grid
from runs.grid import expand
from runs.errors import UserError
from runs.processes import pid_running
from runs.store import USER_CANCEL, Store


@pytest.fixture
def smoke_store(tmp_path):
    """grids/smoke.yaml's runs in a store, as a submission leaves them before any job ran."""
    plan = expand(load_grid(SMOKE_GRID), base_dir=SMOKE_GRID.parent)
    store = Store(tmp_path / "results")
    for run in plan.runs:
        store.add_run("smoke", run.run_id, run.spec.model_dump(mode="json"))
    return plan, store


def fake_scancel(tmp_path, monkeypatch):
    """A `scancel` first on PATH that writes down its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scancel").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scancel.args'}\n")
    (bin_dir / "scancel").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "scancel.args"


def test_cancel_stops_jobs_records_the_user_and_leaves_done_runs(smoke_store, tmp_path, monkeypatch):
    from harness.cancel import cancel

    plan, store = smoke_store
    pretrain, first_finetune, second_finetune = [store.run(r.run_id) for r in plan.runs[:3]]
    pretrain.set_state("done")
    local_job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    first_finetune.set_state("running", executor="local", host=socket.gethostname(), pid=local_job.pid)
    second_finetune.set_state("submitted", executor="slurm", job_id="41_2")
    args = fake_scancel(tmp_path, monkeypatch)
    counts = cancel(store, "smoke", out=open(os.devnull, "w"))
    assert local_job.wait(timeout=20) == -signal.SIGTERM
    assert args.read_text().split() == ["41_2"]
    assert counts == {"cancelled": len(plan.runs) - 1, "slurm_jobs": 1, "local_jobs": 1, "done": 1, "already": 0}
    assert pretrain.status == "done"
    for run in plan.runs[1:]:
        state = store.run(run.run_id).state()
        assert state["status"] == "cancelled" and state["cancelled_by"] == USER_CANCEL, state
    # a stopping job's last progress line does not undo the cancel
    first_finetune.set_state("running", step=7)
    assert first_finetune.state()["status"] == "cancelled" and first_finetune.state()["step"] == 7


def test_a_run_whose_state_cannot_be_read_does_not_stop_the_cancel_of_the_others(smoke_store, capsys):
    """Before, the cancel stopped at the unreadable state.json midway: the runs before it were
    recorded as cancelled, but their jobs never stopped, and no later cancel stopped them. A
    stray file in the grid's runs/ (a desktop's .DS_Store) is no run: it was a traceback."""
    from harness.cancel import cancel

    plan, store = smoke_store
    running, broken = [store.run(r.run_id) for r in plan.runs[1:3]]
    local_job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    running.set_state("running", executor="local", host=socket.gethostname(), pid=local_job.pid)
    broken.state_path.write_text('{"status": "runn')
    (store.grid_dir("smoke") / "runs" / ".DS_Store").write_text("")
    counts = cancel(store, "smoke", out=open(os.devnull, "w"))
    assert local_job.wait(timeout=20) == -signal.SIGTERM
    assert counts["local_jobs"] == 1 and counts["cancelled"] == len(plan.runs) - 1
    assert f"{broken.run_id}/state.json: not valid JSON" in capsys.readouterr().err

def test_a_plain_resubmit_leaves_cancelled_runs_and_retry_cancelled_runs_them(smoke_store):
    from harness.submit import triage

    plan, store = smoke_store
    finetune = next(r for r in plan.runs if r.stage == "finetune" and r.method == "naive")
    store.run(finetune.run_id).set_state("cancelled", cancelled_by=USER_CANCEL, error="cancelled by the user")
    todo = triage(plan, store, retry_failed=True)
    assert finetune.run_id in todo.cancelled and finetune.run_id not in [r.run_id for r in todo.submit]
    dependants = [r.run_id for r in plan.runs if finetune.run_id in r.depends_on]
    assert dependants and all(todo.updates[d] == ("cancelled", {"error": f"parent {finetune.run_id} was "
                                                                         "cancelled by the user"})
                              for d in dependants)
    todo = triage(plan, store, retry_failed=False, retry_cancelled=True)
    assert finetune.run_id in [r.run_id for r in todo.submit]
    assert todo.updates[finetune.run_id] == ("pending", {"cancelled_by": None, "error": None})


def test_cancel_of_unknown_runs_or_grids_is_one_line(smoke_store):
    _, store = smoke_store
    proc = run_module("harness.cli", "cancel", "smoke", "--results", str(store.root), "--runs", "zz")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --runs zz: not a run of grid smoke"
    proc = run_module("harness.cli", "cancel", str(store.root / "nothing"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a grid results folder" in proc.stderr


def training_submission(tmp_path, name: str):
    """A local submission of a grid whose pretraining would take hours, returned once the
    pretraining is running and has logged a step: (grid, results, plan, the pretraining's
    folder, the submission's process)."""
    grid = write_grid(tmp_path, smoke_grid(name=name, methods=["naive"],
                                           datasets__0__source__pretrain__steps=100_000))
    results = tmp_path / "results"
    plan = expand(load_grid(grid), base_dir=tmp_path)
    pretrain = Store(results).run(plan.by_stage("pretrain")[0].run_id)
    submission = subprocess.Popen([sys.executable, "-m", "harness.submit", str(grid), "--results", str(results),
                                   "--executor", "local"], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (pretrain.state_path.is_file() and pretrain.status == "running"
                                          and pretrain.state().get("step") is not None):
        time.sleep(0.1)
    return grid, results, plan, pretrain, submission


def test_a_local_submission_cancelled_while_it_trains(tmp_path):
    """The whole flow on this machine: the pretraining is stopped, the submission ends, status
    says cancelled, a plain resubmit runs nothing, --retry-cancelled would run it all. 10 s on
    the 2-core machine, with other jobs running."""
    grid, results, plan, pretrain, submission = training_submission(tmp_path, "stopme")
    cancel = run_module("harness.cli", "cancel", str(results / "stopme"), check=True)
    assert f"{pretrain.run_id}: cancelled (local pid" in cancel.stdout
    out, err = submission.communicate(timeout=60)
    assert submission.returncode == 1, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["cancelled"] == len(plan.runs)
    assert pretrain.state()["cancelled_by"] == USER_CANCEL and "step" in pretrain.state()
    status = run_module("harness.cli", "status", str(results / "stopme"), check=True).stdout
    assert f"{len(plan.runs)} cancelled" in status and "cancelled by the user" in status
    again = run_module("harness.submit", str(grid), "--results", str(results), "--executor", "local")
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["submitted"] == 0 and summary["skipped_failed"] == len(plan.runs)
    retry = run_module("harness.submit", str(grid), "--results", str(results), "--retry-cancelled", "--dry-run",
                       check=True)
    assert retry.stdout.count("to submit") == len(plan.runs)
    # the job's output went to its run folder, not to the submission's terminal
    assert pretrain.job_log_path.is_file() and pretrain.run_id in pretrain.job_log_path.read_text()
    assert "it/s" not in err


def test_a_local_submission_stopped_by_sigterm_stops_its_job_which_the_next_one_resumes(tmp_path):
    """`kill PID` of a local submission (a scheduler's time limit, a closed terminal's SIGHUP
    alike): Python's default would end the submission alone, its job running on with no one
    waiting for it (measured before the change). Now the job stops with it and is recorded
    lost, and submitting again runs it."""
    grid, results, plan, pretrain, submission = training_submission(tmp_path, "killme")
    job = pretrain.state()
    submission.send_signal(signal.SIGTERM)                 # the submission only, not its job
    out, err = submission.communicate(timeout=60)
    assert submission.returncode == 128 + signal.SIGTERM, err[-2000:]
    # (multiprocessing's resource tracker may warn after it that it removed the job's semaphore)
    assert ("\nsubmission: stopped by SIGTERM; submitting the grid again resumes what did not finish\n"
            in err), err[-2000:]
    assert not pid_running(job["pid"], job["pid_start"])   # the job did not outlive it
    state = pretrain.state()
    assert state["status"] == "lost" and "stopped with its submission (SIGTERM)" in state["error"]
    again = run_module("harness.submit", str(grid), "--results", str(results), "--dry-run", check=True)
    assert next(line for line in again.stdout.splitlines() if line.startswith(pretrain.run_id)).endswith("to submit")


# ---------------------------------------------------------------- sdft run, sdft logs
SQUEUE_SAYS = {"cannot be asked": "echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1",
               "has it": "echo 4711",
               "no longer has it": "exit 0"}


@pytest.mark.parametrize("squeue", list(SQUEUE_SAYS))
def test_a_slurm_run_is_taken_as_running_unless_squeue_says_it_is_gone(smoke_store, tmp_path, monkeypatch, squeue):
    """`sdft run`, `sdft status` and a submission ask one question of a run recorded as queued
    (harness.executors.job_alive). When squeue cannot be asked, the run is running for all
    three, so that none starts it a second time beside its Slurm job; before, `sdft run` took
    it for gone and ran it."""
    from harness.run import check_runnable
    from harness.status import status_table
    from harness.submit import gone_jobs

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, body in (("squeue", SQUEUE_SAYS[squeue]), ("sacct", "exit 0")):
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    plan, store = smoke_store
    pretrain = store.run(plan.by_stage("pretrain")[0].run_id)
    pretrain.set_state("submitted", executor="slurm", job_id="4711")

    alive = squeue != "no longer has it"
    assert (pretrain.run_id in gone_jobs({pretrain.run_id: pretrain.state()}, store)[0]) == alive
    row = next(line for line in status_table(store, "smoke").splitlines() if line.startswith(pretrain.run_id))
    assert ("submitted" in row.split(), "lost" in row.split()) == (alive, not alive), row
    if alive:
        with pytest.raises(UserError, match=r"already running \(Slurm job 4711"):
            check_runnable(store, pretrain)
    else:
        assert check_runnable(store, pretrain) == "jobs.train"


def test_a_local_job_on_another_machine_is_taken_as_running(smoke_store):
    """`sdft run` on a node (the results on a shared file system) records that node, and its
    process cannot be asked from the login node. Before, `sdft status` there showed the run
    lost, and a submission started it a second time beside its job."""
    from harness.run import check_runnable
    from harness.status import status_table
    from harness.submit import gone_jobs

    plan, store = smoke_store
    pretrain = store.run(plan.by_stage("pretrain")[0].run_id)
    pretrain.set_state("running", executor="local", job_id=None, host="node17-of-elsewhere", pid=4242)
    assert pretrain.run_id in gone_jobs({pretrain.run_id: pretrain.state()}, store)[0]
    row = next(line for line in status_table(store, "smoke").splitlines() if line.startswith(pretrain.run_id))
    assert "running" in row.split() and "node17-of-elsewhere pid 4242 (not checked)" in row, row
    with pytest.raises(UserError, match=r"already running \(pid 4242 on node17-of-elsewhere, not checkable from here"):
        check_runnable(store, pretrain)

def test_a_run_whose_job_lock_is_held_is_running_for_sdft_run_and_submissions(smoke_store):
    """`sdft run` holds the run's job lock from its check to its job's end (runs/store.py).
    While another process holds it, `sdft run` refuses in one line naming the holder, and a
    submission takes the run as running, whatever its state.json says yet. Before, in the
    moment between a check and the job's pid landing in state.json, both could start it."""
    from harness.submit import triage

    plan, store = smoke_store
    pretrain = store.run(plan.by_stage("pretrain")[0].run_id)
    with lock_held_elsewhere("RunFolder(path).job_lock()", pretrain.path) as holder:
        refused = run_module("harness.cli", "run", pretrain.run_id, "--results", str(store.root))
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert f"{pretrain.run_id}: being started or run on this machine by another process (pid {holder.pid} on " \
            in refused.stderr
        todo = triage(plan, store, retry_failed=False)
        assert pretrain.run_id in todo.running and pretrain.run_id not in {r.run_id for r in todo.submit}
    assert pretrain.run_id in {r.run_id for r in triage(plan, store, retry_failed=False).submit}
    assert pretrain.status == "pending"

def test_run_runs_one_run_in_the_foreground_and_logs_prints_its_output(tmp_path):
    """A 3-step pretraining of a grid recorded in a store (no submission ran it). 11 s on the
    2-core machine, with other jobs running."""
    grid = load_grid(SMOKE_GRID, ["datasets.0.source.pretrain.steps=3", "datasets.0.source.pretrain.checkpoint_every=3"])
    plan = expand(grid, base_dir=SMOKE_GRID.parent)
    store = Store(tmp_path / "results")
    for run in plan.runs:
        store.add_run("smoke", run.run_id, run.spec.model_dump(mode="json"))
    finetune = plan.by_stage("finetune")[1]
    refused = run_module("harness.cli", "run", finetune.run_id, "--results", str(store.root))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert f"needs run {finetune.depends_on[0]}, which is pending" in refused.stderr
    pretrain = store.run(plan.by_stage("pretrain")[0].run_id)
    proc = run_module("harness.cli", "run", pretrain.run_id[:5], "--results", str(store.root), check=True)
    *shown, last = proc.stdout.strip().splitlines()
    assert json.loads(last) == {"run": pretrain.run_id, "status": "done", "log": str(pretrain.job_log_path)}
    assert pretrain.status == "done" and (pretrain.model_dir / "config.json").is_file()
    logged = pretrain.job_log_path.read_text()
    assert logged.startswith("==== ") and "3/3" in logged                    # the progress bar's end
    assert logged.split("\n", 1)[1].strip() == "\n".join(shown).strip()     # the terminal saw it all
    printed = run_module("harness.cli", "logs", pretrain.run_id, "--results", str(store.root), check=True)
    assert printed.stdout == logged
    nothing = run_module("harness.cli", "logs", finetune.run_id, "--results", str(store.root))
    assert nothing.returncode == 2 and "no log yet (state pending" in nothing.stderr


def test_logs_follow_prints_what_is_added_until_the_run_ends(tmp_path):
    import io
    import threading

    from harness.logs import show
    from runs.processes import process_identity
    from runs.store import RunFolder

    folder = RunFolder(tmp_path / "_runs" / "abc")
    folder.path.mkdir(parents=True)
    folder.set_state("running", executor="local", **process_identity(os.getpid()))    # this process runs it
    folder.job_log_path.write_text("step 1\n")

    def finish():
        time.sleep(0.3)
        with open(folder.job_log_path, "a") as log:
            log.write("step 2\n")
        folder.set_state("done")

    writer = threading.Thread(target=finish)
    writer.start()
    out = io.StringIO()
    show(folder, follow=True, poll_s=0.05, out=out)
    writer.join()
    assert out.getvalue() == "step 1\nstep 2\n"


def test_logs_follow_ends_when_the_job_is_gone_without_a_word(tmp_path, capsys):
    """A job killed with SIGKILL (or its node lost) leaves its state saying running. Before,
    `sdft logs -f` waited for it for good; now it stops once the job is gone, and says so."""
    import io
    import threading

    from harness.logs import show
    from runs.processes import process_identity
    from runs.store import RunFolder

    job = subprocess.Popen([sys.executable, "-c", "print('step 1', flush=True)"], stdout=subprocess.PIPE, text=True)
    folder = RunFolder(tmp_path / "_runs" / "abc")
    folder.path.mkdir(parents=True)
    folder.set_state("running", executor="local", **process_identity(job.pid))
    folder.job_log_path.write_text(job.stdout.read())
    job.wait()
    out = io.StringIO()
    follower = threading.Thread(target=show, args=(folder, True, 0.05, out), daemon=True)
    follower.start()
    follower.join(timeout=20)
    assert not follower.is_alive() and out.getvalue() == "step 1\n" and folder.status == "running"
    assert "abc: its job is gone without recording how it ended" in capsys.readouterr().err


def test_a_run_cancelled_while_its_sbatch_runs_has_its_job_cancelled(smoke_store, tmp_path, monkeypatch):
    """`sdft cancel` while a Slurm submission's sbatch runs finds the run without a job id and
    records the cancel alone. Before, the job sbatch then queued ran all the same."""
    from types import SimpleNamespace

    import submitit

    from harness.cancel import cancel
    from harness.executors import SlurmExecutor
    from runs.cluster import ClusterConfig

    plan, store = smoke_store
    finetunes = plan.by_stage("finetune")
    folders = {r.run_id: store.run(r.run_id) for r in finetunes}

    class SbatchWhileTheUserCancels:
        def __init__(self, **kwargs):
            pass

        def update_parameters(self, **kwargs):
            pass

        def map_array(self, function, paths):
            cancel(store, "smoke", [finetunes[0].run_id], out=open(os.devnull, "w"))
            return [SimpleNamespace(job_id=f"77_{i}", paths=SimpleNamespace(stdout="out", stderr="err"))
                    for i in range(len(paths))]

    monkeypatch.setattr(submitit, "AutoExecutor", SbatchWhileTheUserCancels)
    args = fake_scancel(tmp_path, monkeypatch)
    executor = SlurmExecutor(ClusterConfig(), tmp_path / "slurm", "smoke")
    job_ids = executor.submit("finetune", finetunes, folders, [])
    assert args.read_text().split() == [job_ids[finetunes[0].run_id]]
    state = folders[finetunes[0].run_id].state()
    assert (state["status"], state["cancelled_by"], state["job_id"]) == ("cancelled", USER_CANCEL, "77_0")
    assert all(folders[r.run_id].status == "submitted" for r in finetunes[1:])
