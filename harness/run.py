"""python -m harness.run RUN_ID: one run of a submitted grid, here, in the foreground.

For debugging: the job's whole output comes to this terminal (and to the run's job.log,
as a local submission writes it), and its state is recorded as a submission records it,
so `sdft status` and later submissions see the result. The runs it needs must be done
(the job reads their products); a run cancelled by the user is run all the same, since
asking for it by name is asking for it. Ctrl-C (or SIGTERM, SIGHUP) stops the job, which is
recorded lost: running it again resumes it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from harness.arguments import OneLineParser, path_arg
from runs.errors import UserError, exit_on_stop, exit_on_user_error, quiet_broken_pipe
from harness.logs import find_run
from runs.refs import RunRef
from runs.store import RunFolder, Store


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m harness.run", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run id (or a prefix of one), as `sdft status` lists them")
    parser.add_argument("--results", default="results", type=path_arg, help="results root (default: results)")
    return parser.parse_args(argv)


def needed_runs(spec: dict) -> list[str]:
    """The run ids a spec refers to ("run:<id>" anywhere in it), but an aggregate's
    evaluations, which it reads as far as they are done."""
    found: list[str] = []

    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, str) and (ref := RunRef.parse(value)) is not None:
            found.append(ref.run_id)

    walk({k: v for k, v in spec.items() if k != "evaluations"})
    return found


def check_runnable(store: Store, folder: RunFolder) -> str:
    """The job module of the run; UserError if it is running or needs a run not done."""
    from harness.executors import JOB_MODULES, elsewhere, job_alive, live_slurm_jobs

    spec = folder.read_spec()
    state = folder.state()
    # squeue is asked only about a run recorded as queued on Slurm, never about a done one
    queued = state.get("status") in ("submitted", "running") and state.get("job_id")
    live = live_slurm_jobs([state["job_id"]] if queued else [])
    if job_alive(state, live):
        job = f"Slurm job {state['job_id']}" if state.get("job_id") else \
            f"pid {state.get('pid')} on {state.get('host')}" + (", not checkable from here" if elsewhere(state) else "")
        said = "; squeue did not answer, so it is taken as running" if live is None else ""
        raise UserError(f"{folder.run_id}: already running ({job}{said}); `sdft cancel` it first")
    for needed in needed_runs(spec):
        if store.run(needed).status != "done":
            raise UserError(f"{folder.run_id}: needs run {needed}, which is {store.run(needed).status}, "
                            f"not done (run it first: sdft run {needed})")
    if spec.get("stage") not in JOB_MODULES:
        raise UserError(f"{folder.spec_path}: stage: unknown ({spec.get('stage')!r})")
    return JOB_MODULES[spec["stage"]]


def run(store: Store, folder: RunFolder) -> str:
    """Run the job; return the state it ended in."""
    from harness.executors import local_outcome, oom_kills, run_job
    from runs.runtime import job_environment

    # held from the check to the job's end: a submission or another `sdft run` meanwhile
    # finds the run running (harness.submit.gone_jobs), not free to start
    with folder.job_lock():
        module = check_runnable(store, folder)
        state = folder.state()
        if state.get("cancelled_by"):
            folder.set_state("pending", cancelled_by=None, error=None)
        before = oom_kills()
        code = run_job(module, folder, job_environment({**os.environ, "PYTHONUNBUFFERED": "1"}), echo=True)
        if code != 0 and folder.status not in ("failed", "cancelled"):
            status, error = local_outcome(module, code, before, oom_kills())
            folder.set_state(status, error=error)
        return folder.status


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with quiet_broken_pipe(), exit_on_user_error():
        store = Store(args.results)
        folder = find_run(store, args.run)
        with exit_on_stop(folder.run_id, f"`sdft run {folder.run_id}` resumes it"):
            status = run(store, folder)
    print(json.dumps({"run": folder.run_id, "status": status, "log": str(folder.job_log_path)}))
    sys.exit(0 if status == "done" else 1)


if __name__ == "__main__":
    main()
