"""python -m harness.cancel results/<grid> [--runs ID ...]: stop a grid's jobs, or some of them.

Every run of the grid (or of --runs) that is not done is recorded as cancelled by the user
first, then its job is stopped: Slurm jobs with one `scancel` for all of them (submitit's
Job.cancel runs scancel once per job), local jobs with SIGTERM (SIGKILL after a grace
time). Recording first means that neither the job's last progress line nor a local
submission that sees its job end can record anything else (runs.store.set_state). A
plain resubmission leaves these runs, and the runs that need them, alone;
`sdft submit GRID.yaml --retry-cancelled` runs them again, and `sdft run ID` runs one.
"""
from __future__ import annotations

import argparse
import socket
import sys

from harness.arguments import OneLineParser, path_arg
from harness.executors import cancel_jobs
from runs.errors import exit_on_user_error, quiet_broken_pipe
from harness.status import grid_folder
from runs.processes import process_running, stop_processes
from runs.store import USER_CANCEL, CorruptFile, RunFolder, Store, now_iso
from harness.subset import find_run_id


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m harness.cancel", description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=path_arg, help="results/<grid>, or a grid's name in --results")
    parser.add_argument("--runs", nargs="+", default=[], metavar="ID", help="only these runs (an id or its prefix)")
    parser.add_argument("--results", default="results", type=path_arg, help="results root for a grid given by name (default: results)")
    return parser.parse_args(argv)


def chosen_runs(store: Store, grid: str, given: list[str]) -> list[RunFolder]:
    folders = store.grid_runs(grid)
    if not given:
        return folders
    by_id = {f.run_id: f for f in folders}
    return [by_id[find_run_id(g, by_id, f"grid {grid}", "--runs ")] for g in given]


def cancel(store: Store, grid: str, given: list[str] = (), out=sys.stdout) -> dict[str, int]:
    counts = {"cancelled": 0, "slurm_jobs": 0, "local_jobs": 0, "done": 0, "already": 0}
    slurm_jobs: list[str] = []
    local_pids: list[int] = []
    # every state read first: one that cannot be read must not stop the loop midway, after
    # runs were recorded as cancelled but before their jobs were stopped (below)
    readable = []
    for folder in chosen_runs(store, grid, list(given)):
        try:
            readable.append((folder, folder.state()))
        except CorruptFile as err:
            print(f"warning: {err}; left as it is, its job (if it has one) not stopped", file=sys.stderr)
    for folder, state in readable:
        status = state.get("status", "pending")
        if status == "done":
            counts["done"] += 1
            continue
        if status == "cancelled" and state.get("cancelled_by") == USER_CANCEL:
            counts["already"] += 1
            continue
        live = status in ("submitted", "running")
        job = ""
        if live and state.get("executor") == "local":
            if process_running(state):
                local_pids.append(int(state["pid"]))
                job = f"local pid {state['pid']}"
            elif state.get("host") not in (None, socket.gethostname()):
                print(f"warning: {folder.run_id} runs on {state['host']} (pid {state.get('pid')}): "
                      "recorded as cancelled, but only a cancel there stops its process", file=sys.stderr)
        elif live and state.get("job_id"):
            slurm_jobs.append(state["job_id"])
            job = f"Slurm job {state['job_id']}"
        folder.set_state("cancelled", cancelled_by=USER_CANCEL,
                         error=f"cancelled by the user at {now_iso()}; --retry-cancelled runs it again")
        counts["cancelled"] += 1
        print(f"{folder.run_id}: cancelled{f' ({job})' if job else ''}", file=out)
    if slurm_jobs:
        cancel_jobs(slurm_jobs)
        counts["slurm_jobs"] = len(set(slurm_jobs))
    if local_pids:
        stop_processes(local_pids)
        counts["local_jobs"] = len(local_pids)
    return counts


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with quiet_broken_pipe(), exit_on_user_error():
        store, grid = grid_folder(args.grid, args.results)
        counts = cancel(store, grid, args.runs)
        print(f"{grid}: {counts['cancelled']} runs cancelled ({counts['slurm_jobs']} Slurm jobs, "
              f"{counts['local_jobs']} local jobs stopped); {counts['done']} done and "
              f"{counts['already']} cancelled before left as they are")


if __name__ == "__main__":
    main()
