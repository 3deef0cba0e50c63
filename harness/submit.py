"""python -m harness.submit GRID.yaml: one grid file -> the whole experiment.

    python -m harness.submit GRID.yaml [--executor auto|slurm|local] [--dry-run]
                                       [--results DIR] [--wait] [--retry-failed]
                                       [--no-shipped-weights]

Only what is not done or running is submitted: a finished grid submits nothing, a
failed run only with --retry-failed. The last line printed is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import load_grid
from harness.errors import UserError, exit_on_user_error, quiet_broken_pipe
from harness.executors import array_master
from harness.grid import STAGES, Plan, PlannedRun, expand
from harness.inputs import check_inputs, check_results_root
from harness.store import Store


@dataclass
class Triage:
    """What to do with each run of the plan, given what the store says."""
    submit: list[PlannedRun] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    running: dict[str, str] = field(default_factory=dict)     # run id -> live job id
    failed: list[str] = field(default_factory=list)           # failed, or waiting on a failed run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.submit", description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="the grid file (YAML)")
    parser.add_argument("--executor", choices=("auto", "slurm", "local"), default="auto",
                        help="auto: Slurm where `sinfo` answers, else this machine")
    parser.add_argument("--dry-run", action="store_true", help="print the expanded runs; submit nothing")
    parser.add_argument("--results", default="results", help="results root (default: results)")
    parser.add_argument("--wait", action="store_true", help="block until the submitted jobs end")
    parser.add_argument("--retry-failed", action="store_true", help="resubmit failed runs too")
    parser.add_argument("--no-shipped-weights", action="store_true",
                        help="pretrain even where the project ships weights of the same run id")
    return parser.parse_args(argv)


def check_paths(plan: Plan, grid_path: Path, dry_run: bool) -> None:
    """Missing data or model folders: an error when submitting, a warning in a dry run."""
    for where, path in plan.paths:
        if not Path(path).exists():
            message = f"{grid_path}: {where}: no such file or folder: {path}"
            if not dry_run:
                raise UserError(message)
            print(f"warning: {message}", file=sys.stderr)


def triage(plan: Plan, store: Store, retry_failed: bool) -> Triage:
    from harness.executors import live_slurm_jobs, local_process_alive

    states = {r.run_id: store.run(r.run_id).state() for r in plan.runs}
    slurm_ids = [s["job_id"] for s in states.values()
                 if s.get("status") in ("submitted", "running") and s.get("executor", "slurm") == "slurm"
                 and s.get("job_id")]
    live = live_slurm_jobs(slurm_ids) if slurm_ids else set()
    if live is None:   # Slurm cannot be asked: do not run anything twice
        print("warning: squeue did not answer; runs recorded as queued are taken as running", file=sys.stderr)
        live = set(slurm_ids)
    out = Triage()
    blocked: set[str] = set()
    for run in plan.runs:                       # stage order: dependencies come first
        state = states[run.run_id]
        status = state.get("status", "pending")
        if status == "done":
            out.done.append(run.run_id)
        elif status in ("submitted", "running") and (
                state.get("job_id") in live or (state.get("executor") == "local" and local_process_alive(state))):
            out.running[run.run_id] = state.get("job_id") or "local"
        elif (status == "failed" and not retry_failed) or any(d in blocked for d in run.depends_on):
            out.failed.append(run.run_id)
            blocked.add(run.run_id)
        else:
            out.submit.append(run)
    return out


def make_executor(kind: str, plan: Plan, grid_dir: Path, todo: Triage):
    from harness.executors import LocalExecutor, SlurmExecutor, slurm_available

    if kind == "auto":
        kind = "slurm" if slurm_available() else "local"
    if kind == "slurm":
        if not slurm_available():
            raise UserError("--executor slurm: no Slurm here (`sinfo` does not answer)")
        return SlurmExecutor(plan.grid.cluster, grid_dir / "slurm", plan.grid.name)
    return LocalExecutor(planned=todo.submit)


def submit_plan(executor, plan: Plan, store: Store, todo: Triage) -> dict[str, str]:
    """Stage by stage; each stage waits (afterok) on the jobs of the runs it depends on."""
    job_ids: dict[str, str] = dict(todo.running)
    failed: set[str] = set(todo.failed)
    for stage in STAGES:
        pending = [r for r in todo.submit if r.stage == stage]
        while pending:
            # a wave: the runs whose prerequisites within this stage are already out
            # (the source model's evaluation goes before those that compare with it)
            wave = [r for r in pending if not any(d in {p.run_id for p in pending} for d in r.depends_on)]
            pending = [r for r in pending if r not in wave]
            runs = [r for r in wave if not any(d in failed for d in r.depends_on)]
            failed.update(r.run_id for r in wave if r not in runs)
            # one array per set of prerequisites: a run waits only for what it needs
            groups: dict[tuple[str, ...], list[PlannedRun]] = {}
            for run in runs:
                after = () if executor.name == "local" else tuple(sorted(
                    {array_master(job_ids[d]) for d in run.depends_on if d in job_ids}))
                groups.setdefault(after, []).append(run)
            for after, group in groups.items():
                folders = {r.run_id: store.run(r.run_id) for r in group}
                job_ids.update(executor.submit(stage, group, folders, list(after)))
                if executor.name == "local":
                    failed.update(r.run_id for r in group if folders[r.run_id].status != "done")
    return job_ids


def submit(grid_path: str | Path, *, executor: str = "auto", results: str | Path = "results",
           dry_run: bool = False, wait: bool = False, retry_failed: bool = False) -> dict:
    grid_path = Path(grid_path)
    grid = load_grid(grid_path)
    check_results_root(results, grid_path, grid.name)
    plan = expand(grid, base_dir=grid_path.resolve().parent)
    check_paths(plan, grid_path, dry_run)
    check_inputs(grid, grid_path.resolve().parent, grid_path, dry_run)
    store = Store(results)
    conflict = store.grid_conflict(grid.name, grid.canonical_json())
    if conflict is not None:
        raise UserError(f"{grid_path}: name: a different grid named {grid.name!r} is already in "
                        f"{conflict.parent} (rename this grid, or remove that folder)")
    todo = triage(plan, store, retry_failed)
    summary = {"grid": grid.name, "runs": len(plan.runs), "submitted": 0, "skipped_done": len(todo.done),
               "skipped_running": len(todo.running), "skipped_failed": len(todo.failed)}
    if dry_run:
        from harness.tables import plan_table
        print(plan_table(plan, todo))
        return summary

    # Everything is valid: only now is anything written.
    grid_dir = store.write_grid(grid.name, grid_path.read_text(), grid.canonical_json())
    for run in plan.runs:
        store.add_run(grid.name, run.run_id, run.spec.model_dump(mode="json"))
    runner = make_executor(executor, plan, grid_dir, todo)
    job_ids = submit_plan(runner, plan, store, todo)
    summary["submitted"] = len([r for r in todo.submit if r.run_id in job_ids])
    summary["executor"] = runner.name
    if wait and runner.name == "slurm":
        from harness.executors import wait_for_slurm
        wait_for_slurm([job_ids[r.run_id] for r in todo.submit if r.run_id in job_ids])
    if wait or runner.name == "local":
        from harness.status import status_table
        print(status_table(store, grid.name))
    return summary


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.no_shipped_weights:
        os.environ["SDFT_SHIPPED_WEIGHTS"] = "0"     # the jobs inherit it (sbatch exports the env)
    with quiet_broken_pipe():
        with exit_on_user_error():
            summary = submit(args.grid, executor=args.executor, results=args.results, dry_run=args.dry_run,
                             wait=args.wait, retry_failed=args.retry_failed)
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
