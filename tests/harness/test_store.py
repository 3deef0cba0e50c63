"""The results store: a corrupt state.json is named in one line, and writes are atomic."""
import fcntl
import json
import os
import shutil

import pytest

import harness.submit as submit_module
from factories import SMOKE_GRID, lock_held_elsewhere, run_module
from runs.config import load_grid
from runs.errors import UserError
from runs.grid import expand
from harness.status import status_table
from runs.store import SUBMIT_LOCK, CorruptFile, RunFolder, Store, atomic_write_json, read_json
from harness.submit import submit


@pytest.fixture
def stored_grid(tmp_path):
    """The smoke grid written into a store as a submission leaves it (no job run), with one
    run's state.json cut off mid-write."""
    grid = load_grid(SMOKE_GRID)
    plan = expand(grid, base_dir=SMOKE_GRID.parent)
    store = Store(tmp_path / "results")
    store.write_grid(grid.name, SMOKE_GRID.read_text(), grid.canonical_json())
    for run in plan.runs:
        store.add_run(grid.name, run.run_id, run.spec.model_dump(mode="json"))
    broken = store.run(plan.runs[0].run_id)
    broken.state_path.write_text('{"status": "runn')
    return store, broken


def test_corrupt_state_at_submit_is_one_line_naming_the_file(stored_grid):
    store, broken = stored_grid
    with pytest.raises(UserError) as err:
        submit(SMOKE_GRID, results=store.root, dry_run=True)
    assert str(err.value).startswith(f"{broken.state_path}: not valid JSON") and "\n" not in str(err.value)
    proc = run_module("harness.submit", str(SMOKE_GRID), "--results", str(store.root), "--dry-run")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and str(broken.state_path) in proc.stderr


def test_status_shows_a_corrupt_run_as_unknown_and_the_others_as_they_are(stored_grid):
    store, broken = stored_grid
    lines = status_table(store, "smoke").splitlines()
    row = next(line for line in lines if line.startswith(broken.run_id))
    assert " unknown " in row and "state.json: not valid JSON" in row
    assert lines[-1] == "smoke: 9 runs: 8 pending, 1 unknown"


def test_a_job_recording_its_state_replaces_a_corrupt_file(stored_grid):
    _, broken = stored_grid
    broken.set_state("running", step=3)
    assert broken.state()["status"] == "running" and broken.state()["step"] == 3


def test_a_state_file_that_is_not_an_object_is_corrupt(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.state_path.write_text("[1, 2]")
    with pytest.raises(CorruptFile, match=r"state\.json: expected a JSON object"):
        folder.state()


def test_a_state_file_with_an_unknown_status_is_corrupt(stored_grid):
    """Not a TypeError from sorting the status table, and not a run taken as pending."""
    store, broken = stored_grid
    broken.state_path.write_text('{"status": 5}')
    with pytest.raises(CorruptFile, match=r"state\.json: status: expected one of pending, .* got 5; move it away"):
        submit(SMOKE_GRID, results=store.root, dry_run=True)
    row = next(line for line in status_table(store, "smoke").splitlines() if line.startswith(broken.run_id))
    assert " unknown " in row and " state.json: status: expected one of " in row and "got 5; move it away" in row


def test_a_state_file_with_a_field_of_the_wrong_type_is_corrupt(stored_grid):
    """A resubmit count written as text (a hand edit) stopped the submission with a
    TypeError, and `logs` as a string was read as one file per character: now the field is
    named, and the status table shows the run as unknown."""
    store, broken = stored_grid
    broken.state_path.write_text('{"status": "lost", "resubmits": "2"}')
    with pytest.raises(CorruptFile, match=r"state\.json: resubmits: input should be a valid integer, got '2'; move it away"):
        submit(SMOKE_GRID, results=store.root, dry_run=True)
    broken.set_state("running", step=3)         # a job's progress keeps what it cannot check
    assert json.loads(broken.state_path.read_text())["resubmits"] == "2"
    broken.state_path.write_text('{"status": "submitted", "logs": "job.out"}')
    row = next(line for line in status_table(store, "smoke").splitlines() if line.startswith(broken.run_id))
    assert " unknown " in row and " state.json: logs: input should be a valid list, got 'job.out'" in row


def test_status_shows_a_run_whose_folder_is_gone(stored_grid):
    """A run folder deleted by hand leaves the grid's link dangling: a row saying so, not a traceback."""
    store, broken = stored_grid
    shutil.rmtree(broken.path.resolve())
    lines = status_table(store, "smoke").splitlines()
    row = next(line for line in lines if line.startswith(broken.run_id))
    assert " unknown " in row and " spec.json: missing; a submission writes it again" in row
    assert lines[-1] == "smoke: 9 runs: 8 pending, 1 unknown"


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"status": "done"})

    def power_cut(fd):
        raise OSError("disk gone")
    monkeypatch.setattr(os, "fsync", power_cut)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_json(path, {"status": "failed"})
    assert read_json(path) == {"status": "done"}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_write_replaces_the_file_in_one_rename(tmp_path, monkeypatch):
    """Readers see the old content or the new, never a part: the new bytes go to a temporary
    file in the same folder, which one os.replace puts in place."""
    path = tmp_path / "state.json"
    atomic_write_json(path, {"status": "done"})
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append((read_json(path), open(src).read()))     # just before the rename
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_json(path, {"status": "failed"})
    assert len(seen) == 1 and seen[0][0] == {"status": "done"} and '"failed"' in seen[0][1]
    assert read_json(path) == {"status": "failed"}


def lock_is_free(store: Store) -> bool:
    with open(store.runs_root / SUBMIT_LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def test_one_submission_at_a_time_per_results_root(tmp_path, monkeypatch):
    """Two submissions at once would both start the runs they share (two jobs in one run
    folder). While another process holds the lock a submission waits, then says who holds
    it in one line and writes nothing; once that process is gone (SIGKILL: the kernel lets
    go) a submission decides and starts its runs under the lock, and releases it."""
    monkeypatch.setattr(submit_module, "LOCK_WAIT_S", 0.5)
    store = Store(tmp_path / "results")
    with lock_held_elsewhere("Store(path).submission_lock()", store.root) as holder:
        with pytest.raises(UserError, match=rf"another submission to this results root is running \(pid {holder.pid} on "):
            submit(SMOKE_GRID, executor="local", results=store.root)
        assert not store.grid_dir("smoke").exists() and list(store.runs_root.iterdir()) == [store.runs_root / SUBMIT_LOCK]
    held_while_starting = []
    monkeypatch.setattr(submit_module, "submit_plan",
                        lambda runner, plan, store_, todo: held_while_starting.append(not lock_is_free(store_)) or {})
    submit(SMOKE_GRID, executor="local", results=store.root)
    assert held_while_starting == [True] and lock_is_free(store)
    assert store.grid_dir("smoke").is_dir()


def test_a_submission_claims_the_runs_it_starts_and_yields_to_one_started_meanwhile(tmp_path, monkeypatch):
    """A submission holds the job lock of every run it starts (runs/store.py) from before it
    records its decisions until its jobs are out, so that `sdft run` cannot start one of
    them beside it. Before, `sdft run` ran a run that a local submission had planned, and
    the submission ran it again when it came to it. A run whose lock was taken between the
    submission's triage and its claim (`sdft run` starting it) stops the submission before
    it records a decision."""
    store = Store(tmp_path / "results")
    plan = expand(load_grid(SMOKE_GRID), base_dir=SMOKE_GRID.parent)
    pretrain = store.run(plan.by_stage("pretrain")[0].run_id)
    pretrain.write_spec(plan.by_stage("pretrain")[0].spec.model_dump(mode="json"))   # from an earlier grid
    pretrain.set_state("lost", error="killed", resubmits=1)
    triage = submit_module.triage

    def triage_then_sdft_run_starts_it(plan_, store_, *args):
        todo = triage(plan_, store_, *args)
        started.enter_context(pretrain.job_lock())      # another open file: another holder
        return todo

    from contextlib import ExitStack
    with ExitStack() as started:
        monkeypatch.setattr(submit_module, "triage", triage_then_sdft_run_starts_it)
        with pytest.raises(UserError, match=f"{pretrain.run_id}: being started or run on this machine by "
                                            rf"another process \(pid {os.getpid()} on "):
            submit(SMOKE_GRID, executor="local", results=store.root)
    state = pretrain.state()
    assert (state["status"], state["resubmits"]) == ("lost", 1)     # triage's update not recorded
    monkeypatch.setattr(submit_module, "triage", triage)

    claimed = []
    monkeypatch.setattr(submit_module, "submit_plan", lambda runner, plan_, store_, todo: claimed.append(
        {r.run_id for r in plan_.runs if store_.run(r.run_id).job_lock_held()}) or {})
    submit(SMOKE_GRID, executor="local", results=store.root)
    assert claimed == [{r.run_id for r in plan.runs}]
    assert not any(store.run(r.run_id).job_lock_held() for r in plan.runs)
