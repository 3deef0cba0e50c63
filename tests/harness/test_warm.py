"""Local jobs forked from the warm process (harness/warm.py) behave as `python -m` jobs:
their exit code (a signal's negative), their output in job.log, their own pid in
state.json, and nothing of their environment left in the submitting process."""
import os

import pytest

from factories import pretrain_spec, write_spec
from harness import warm
from harness.executors import run_job
from runs.runtime import job_environment
from runs.store import RunFolder

pytestmark = pytest.mark.skipif(not warm.available("jobs.train"), reason="forked jobs are Linux only")


def test_a_forked_job_trains_records_its_own_pid_and_leaves_this_environment_alone(tmp_path):
    before = dict(os.environ)
    folder = RunFolder(write_spec(tmp_path / "_runs" / "warm", pretrain_spec(steps=2, checkpoint_every=2)))
    assert run_job("jobs.train", folder, job_environment(threads=1)) == 0
    state = folder.state()
    assert state["status"] == "done" and state["executor"] == "local"
    assert state["pid"] not in (os.getpid(), None) and state["logs"] == [str(folder.job_log_path)]
    log = folder.job_log_path.read_text()
    assert log.startswith("==== ") and "jobs.train" in log.splitlines()[0] and "pretrain" in log
    assert (folder.model_dir / "config.json").is_file()
    assert dict(os.environ) == before          # the job's environment went to the fork only


def test_a_forked_job_that_refuses_its_spec_exits_2_with_its_error_in_the_log(tmp_path):
    folder = RunFolder(write_spec(tmp_path / "_runs" / "fp16", pretrain_spec(steps=5, precision="fp16")))
    assert run_job("jobs.train", folder, job_environment(threads=1)) == 2
    last = folder.job_log_path.read_text().strip().splitlines()[-1]
    assert last.startswith("error:") and "fp16" in last


def test_a_forked_job_killed_by_a_signal_reports_it_as_a_negative_code(tmp_path):
    """What executors.local_outcome reads as 'lost' (resumed by the next submission)."""
    import signal
    import threading
    import time

    folder = RunFolder(write_spec(tmp_path / "_runs" / "killed", pretrain_spec(steps=100_000)))

    def kill_once_running():
        deadline = time.time() + 120
        while time.time() < deadline and folder.state().get("status") != "running":
            time.sleep(0.05)
        os.kill(folder.state()["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_once_running)
    killer.start()
    code = run_job("jobs.train", folder, job_environment(threads=1))
    killer.join()
    assert code == -signal.SIGKILL


def test_a_job_started_as_a_fresh_interpreter_restarts_itself_with_the_jobs_environment():
    """What a Slurm node or `python -m jobs.train` by hand gets (the tests' own jobs are forks
    that have it already): the allocator settings glibc reads only at process start, through
    one exec of the same process, not a second one."""
    import subprocess
    import sys

    from factories import ROOT
    from runs.runtime import JOB_ENV

    code = ("import os, sys; from runs.runtime import reexec_with_job_environment; "
            "print(os.getpid(), os.environ.get('GLIBC_TUNABLES'), flush=True); "
            "reexec_with_job_environment(['-c', sys.argv[1], sys.argv[1]])")
    env = {k: v for k, v in os.environ.items() if k not in JOB_ENV}
    lines = subprocess.run([sys.executable, "-c", code, code], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=60, check=True).stdout.split("\n")
    before, after = lines[0].split(" ", 1), lines[1].split(" ", 1)
    assert before == [after[0], "None"] and after[1] == JOB_ENV["GLIBC_TUNABLES"]
    assert lines[2:] == [""]          # restarted once: the second start has the variable
