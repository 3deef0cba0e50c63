"""python -m harness.submit GRID.yaml: one grid file -> the whole experiment.

    python -m harness.submit GRID.yaml [KEY=VALUE ...] [--executor auto|slurm|local]
                                       [--dry-run] [--print] [--results DIR] [--wait]
                                       [--only KEY=VALUE,...] [--runs ID ...]
                                       [--retry-failed] [--retry-cancelled]
                                       [--no-shipped-weights]

KEY=VALUE overrides a setting of the file (runs.overrides: `finetune.lr=3e-4`); the
grid record (results/<grid>/grid.yaml, grid.json) keeps the grid as resolved, and
--print shows it without submitting. --only and --runs submit a part of the grid
(harness.subset). Only what is not done or running is submitted: a finished grid submits
nothing (a run is done only while its products exist), a run whose job was killed or
lost is resumed (at most MAX_RESUBMITS times), a run that failed by its own error only
with --retry-failed, a run the user cancelled (`sdft cancel`) only with
--retry-cancelled. The last line printed is a JSON summary; with the local executor or
--wait it counts the runs that ended done, failed, cancelled or lost, and the exit code
is 1 if any did not finish.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from harness.arguments import OneLineParser, path_arg
from runs.budget import candidate_compute, candidates, estimate_seconds, unequal
from runs.compute import unmatched
from runs.config import GridConfig, grid_mapping, validate_grid
from runs.errors import UserError, exit_on_stop, exit_on_user_error, quiet_broken_pipe
from harness.executors import array_master
from runs.grid import STAGES, Plan, PlannedRun, expand
from harness.inputs import check_inputs, check_results_root
from runs.overrides import grid_text
from runs.spec import NOT_IN_IDENTITY
from runs.store import USER_CANCEL, Store
from harness.subset import select

MAX_RESUBMITS = 3     # automatic resubmits of one lost run; then it needs --retry-failed
LOCK_WAIT_S = 30.0    # how long a submission waits for another to the same results root
AWAIT_POLL_S = 5.0    # how often a local submission looks whether an earlier one's run has ended


@dataclass
class Triage:
    """What to do with each run of the plan, given what the store says."""
    submit: list[PlannedRun] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    running: dict[str, str] = field(default_factory=dict)     # run id -> live job id
    failed: list[str] = field(default_factory=list)           # failed by its own error, not retried
    cancelled: dict[str, str] = field(default_factory=dict)   # run id -> why (a parent did not finish)
    # what the store should say before anything is submitted: run id -> (status, info)
    updates: dict[str, tuple[str, dict]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)            # said on stderr

    @property
    def skipped_failed(self) -> int:
        return len(self.failed) + len(self.cancelled)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m harness.submit", description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=path_arg, help="the grid file (YAML)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="override a setting of the file, e.g. finetune.lr=3e-4 'seeds=[0,1]'")
    parser.add_argument("--print", dest="show", action="store_true",
                        help="print the resolved grid (file and overrides, defaults filled in) and exit")
    parser.add_argument("--executor", choices=("auto", "slurm", "local"), default="auto",
                        help="auto: Slurm where `sinfo` answers, else this machine")
    parser.add_argument("--dry-run", action="store_true", help="print the expanded runs; submit nothing")
    parser.add_argument("--results", default="results", type=path_arg, help="results root (default: results)")
    parser.add_argument("--wait", action="store_true", help="block until the submitted jobs end")
    parser.add_argument("--retry-failed", action="store_true", help="resubmit failed runs too")
    parser.add_argument("--retry-cancelled", action="store_true",
                        help="resubmit the runs cancelled with `sdft cancel` too")
    parser.add_argument("--only", action="append", default=[], metavar="KEY=VALUE,...",
                        help="submit only the matching runs (and what they need), e.g. method=sdft,stage=finetune")
    parser.add_argument("--runs", nargs="+", default=[], metavar="ID", help="submit only these runs (and what they need)")
    parser.add_argument("--no-shipped-weights", action="store_true",
                        help="pretrain even where the project ships weights of the same run id")
    args = parser.parse_intermixed_args(argv)
    # `--runs ID finetune.lr=1`: what has an `=` is an override, not a run id
    args.overrides += [r for r in args.runs if "=" in r]
    args.runs = [r for r in args.runs if "=" not in r]
    return args


def check_paths(plan: Plan, grid_path: Path, dry_run: bool) -> None:
    """Missing data or model folders: an error when submitting, a warning in a dry run."""
    for where, path in plan.paths:
        if not Path(path).exists():
            message = f"{grid_path}: {where}: no such file or folder: {path}"
            if not dry_run:
                raise UserError(message)
            print(f"warning: {message}", file=sys.stderr)


def missing_products(run: PlannedRun, store: Store, state: dict) -> list[str]:
    """A run is done only if what it made is still there."""
    if run.stage == "aggregate":
        return store.missing_grid_products(run.spec.grid, state.get("products", ()))
    return store.run(run.run_id).missing_products(run.stage, getattr(run.spec, "snapshot_steps", ()))


def unmakeable_snapshots(run: PlannedRun, store: Store) -> tuple[list[int], int]:
    """(the snapshot steps a training run to start lacks and can no longer make, the step it
    has trained to). A snapshot is kept only as the training loop passes its step: a grid
    that adds evaluation.checkpoint_steps or curve_steps after the run trained past them
    would otherwise have the run resubmitted, find nothing to do, and its evaluation fail."""
    folder = store.run(run.run_id)
    lacking = [s for s in getattr(run.spec, "snapshot_steps", ())
               if not (folder.snapshot_dir(s) / "config.json").is_file()]
    if not lacking:
        return [], 0
    reached = run.spec.steps if folder.status == "done" else folder.resumes_from()
    return [s for s in lacking if s <= reached], reached


def check_snapshots(runs: list[PlannedRun], store: Store, grid_path: Path) -> None:
    for run in runs:
        lost, reached = unmakeable_snapshots(run, store)
        if lost:
            raise UserError(
                f"{grid_path}: evaluation.checkpoint_steps or curve_steps: {run.stage} run {run.run_id} "
                f"({run.method}) has trained to step {reached} without keeping a snapshot at step {lost[0]}, "
                f"and a snapshot is kept only as training passes its step; drop that step, or move "
                f"{store.run(run.run_id).path} away to train the run again")


def refresh_bookkeeping(run: PlannedRun, store: Store) -> None:
    """A training run about to run again takes the grid's settings that are no part of its
    identity (snapshot steps, checkpoint_every, log_every, report_to, compile): the job
    reads spec.json, which is written once. Snapshot steps asked for before are kept."""
    folder = store.run(run.run_id)
    stored = folder.read_spec()
    planned = run.spec.model_dump(mode="json")
    fresh = {**stored, **{key: planned[key] for key in NOT_IN_IDENTITY if key in planned}}
    if "snapshot_steps" in planned:
        fresh["snapshot_steps"] = sorted(set(stored.get("snapshot_steps", ())) | set(planned["snapshot_steps"]))
    if fresh != stored:
        folder.write_spec(fresh)


def gone_jobs(states: dict[str, dict], store: Store) -> tuple[set[str], dict]:
    """Which runs' jobs are still alive, and sacct's word on the Slurm ones that are not. A
    run whose job lock another process holds (`sdft run` starting it) is alive whatever its
    state says yet."""
    from harness.executors import job_alive, live_slurm_jobs, slurm_outcomes

    slurm_ids = [s["job_id"] for s in states.values()
                 if s.get("status") in ("submitted", "running") and s.get("executor", "slurm") == "slurm"
                 and s.get("job_id")]
    live = live_slurm_jobs(slurm_ids)
    if live is None:
        print("warning: squeue did not answer; runs recorded as queued are taken as running", file=sys.stderr)
    alive = {run_id for run_id, s in states.items() if job_alive(s, live) or store.run(run_id).job_lock_held()}
    outcomes = slurm_outcomes([j for j in slurm_ids if live is not None and j not in live])
    return alive, outcomes


def triage(plan: Plan, store: Store, retry_failed: bool, retry_cancelled: bool = False) -> Triage:
    """Stage order: a run's dependencies are decided before it. Nothing is written here (a
    dry run triages too); what the store should learn is collected in `updates`."""
    from harness.executors import gone_outcome

    states = {r.run_id: store.run(r.run_id).state() for r in plan.runs}
    alive, outcomes = gone_jobs(states, store)
    out = Triage()
    blocked: dict[str, str] = {}          # run id -> why its dependants cannot run
    for run in plan.runs:
        state = states[run.run_id]
        status = state.get("status", "pending")
        if status == "done":
            missing = missing_products(run, store, state)
            if not missing:
                out.done.append(run.run_id)
                continue
            out.notes.append(f"{run.run_id} ({run.stage}): done, but {', '.join(missing)} is missing: "
                             "running it again")
            if state.get("resubmits"):      # the cap on automatic resubmits counts this run afresh
                out.updates[run.run_id] = ("done", {"resubmits": None})
        if run.run_id in alive:
            out.running[run.run_id] = state.get("job_id") or "local"
            continue
        parents = [blocked[d] for d in run.depends_on if d in blocked]
        if parents:
            out.cancelled[run.run_id] = parents[0]
            out.updates[run.run_id] = ("cancelled", {"error": parents[0]})
            blocked[run.run_id] = parents[0]
            continue
        if status == "cancelled" and state.get("cancelled_by") == USER_CANCEL:
            if not retry_cancelled:
                out.cancelled[run.run_id] = "cancelled by the user (--retry-cancelled runs it again)"
                blocked[run.run_id] = f"parent {run.run_id} was cancelled by the user"
                continue
            out.updates[run.run_id] = ("pending", {"cancelled_by": None, "error": None})
        resubmits = state.get("resubmits", 0)
        if status in ("submitted", "running"):           # its job is gone: how did it end?
            status, error = gone_outcome(state, outcomes)
            out.updates[run.run_id] = (status, {"error": error})
        if status == "lost" and resubmits >= MAX_RESUBMITS and not retry_failed:
            status = "failed"
            out.updates[run.run_id] = ("failed", {"error": f"lost {resubmits + 1} times (automatic "
                                                           f"resubmits: {resubmits}); --retry-failed runs it again"})
        if status == "failed" and not retry_failed:
            out.failed.append(run.run_id)
            blocked[run.run_id] = f"parent {run.run_id} failed"
            continue
        if status == "lost":          # past the cap only with --retry-failed, which counts afresh
            count = 1 if resubmits >= MAX_RESUBMITS else resubmits + 1
            out.updates[run.run_id] = ("lost", {**out.updates.get(run.run_id, ("", {}))[1], "resubmits": count})
        elif status == "failed":                          # --retry-failed: a fresh count
            out.updates[run.run_id] = ("failed", {"resubmits": None})
        out.submit.append(run)
    return out


def settle(plan: Plan, store: Store) -> dict[str, int]:
    """After the jobs ended (local runs, --wait): record how the gone ones ended, mark the
    dependants of those that did not finish cancelled, and count the states."""
    from harness.executors import gone_outcome

    folders = {r.run_id: store.run(r.run_id) for r in plan.runs}
    states = {run_id: f.state() for run_id, f in folders.items()}
    alive, outcomes = gone_jobs(states, store)
    root: dict[str, str] = {}            # run id -> why its dependants cannot run
    for run in plan.runs:
        state = states[run.run_id]
        status = state.get("status", "pending")
        # a queued job that Slurm cancelled because its parent failed never ran: said below
        never_ran = status == "submitted" and any(d in root for d in run.depends_on)
        if status in ("submitted", "running") and run.run_id not in alive and not never_ran:
            status, error = gone_outcome(state, outcomes)
            state = folders[run.run_id].set_state(status, error=error)
        if status == "done":
            continue
        parents = [root[d] for d in run.depends_on if d in root]
        if parents and status in ("pending", "submitted", "cancelled"):
            state = folders[run.run_id].set_state("cancelled", error=parents[0])
            root[run.run_id] = parents[0]
        elif status in ("failed", "lost"):
            root[run.run_id] = f"parent {run.run_id} {'failed' if status == 'failed' else 'was lost'}"
        elif status == "cancelled" and state.get("cancelled_by") == USER_CANCEL:
            root[run.run_id] = f"parent {run.run_id} was cancelled by the user"
        states[run.run_id] = state
    counts = {"done": 0, "failed": 0, "cancelled": 0, "lost": 0}
    for state in states.values():
        status = state.get("status", "pending")
        if status in counts:
            counts[status] += 1
    return counts


# a machine with none of these has no CUDA or ROCm GPU (torch is not imported to ask)
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/kfd")


def make_executor(kind: str, plan: Plan, grid_dir: Path, todo: Triage):
    from harness.executors import LocalExecutor, SlurmExecutor, slurm_available

    if kind == "auto":
        kind = "slurm" if slurm_available() else "local"
    if kind == "slurm":
        if not slurm_available():
            raise UserError("--executor slurm: no Slurm here (`sinfo` does not answer)")
        # afterok takes Slurm job ids only: a parent running as a local process has none
        local = sorted({d for r in todo.submit for d in r.depends_on if d in todo.running
                        and not array_master(todo.running[d]).isdigit()})
        if local:
            raise UserError(f"run {local[0]} is running outside Slurm (a local job), and runs to "
                            f"submit need it; submit again when it has ended (`sdft status {plan.grid.name}`)")
        return SlurmExecutor(plan.grid.cluster, grid_dir / "slurm", plan.grid.name)
    fp16 = [r for r in todo.submit if r.stage in ("pretrain", "finetune") and r.spec.precision == "fp16"]
    if fp16 and not any(Path(node).exists() for node in GPU_DEVICE_NODES):
        # the job would refuse it (jobs/train.py) after its parents had run: refuse it first
        raise UserError(f"{fp16[0].stage} precision fp16 needs a GPU and this machine has none "
                        f"(DeepSpeed has no fp16 on CPU): use bf16 or fp32, or submit to Slurm")
    return LocalExecutor(planned=todo.submit)


def await_runs(run_ids: set[str], store: Store, poll_s: float) -> None:
    """Block while any of the runs is still alive: jobs of an earlier submission that outlived
    it (its terminal closed or killed), or on Slurm."""
    def alive() -> set[str]:
        states = {run_id: store.run(run_id).state() for run_id in run_ids}
        return gone_jobs(states, store)[0] if run_ids else set()

    waiting = alive()
    if waiting:
        print(f"waiting for {', '.join(sorted(waiting))}, started by an earlier submission and still "
              f"running: what needs it starts when it ends", file=sys.stderr, flush=True)
    while waiting:
        time.sleep(poll_s)
        waiting = alive()


def submit_plan(executor, plan: Plan, store: Store, todo: Triage) -> dict[str, str]:
    """Stage by stage; each stage waits (afterok) on the jobs of the runs it depends on."""
    job_ids: dict[str, str] = dict(todo.running)
    failed: set[str] = set(todo.failed) | set(todo.cancelled)
    for stage in STAGES:
        pending = [r for r in todo.submit if r.stage == stage]
        while pending:
            # a wave: the runs whose prerequisites within this stage are already out
            # (the source model's evaluation goes before those that compare with it)
            wave = [r for r in pending if not any(d in {p.run_id for p in pending} for d in r.depends_on)]
            pending = [r for r in pending if r not in wave]
            if executor.name == "local":    # no afterok here: wait for what an earlier submission runs
                elsewhere = {d for r in wave for d in r.depends_on if d in todo.running}
                await_runs(elsewhere, store, AWAIT_POLL_S)
                failed.update(d for d in elsewhere if store.run(d).status != "done")
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


def check_grid_name(store: Store, plan: Plan, grid_path: Path) -> None:
    """A grid may take a name already in the results root if it is the same experiment:
    cluster settings are no part of it, and adding runs (a seed, a method) is allowed. A
    grid that lacks runs the stored one has is a different experiment."""
    taken = store.grid_run_ids(plan.grid.name) - {r.run_id for r in plan.runs}
    if taken:
        raise UserError(
            f"{grid_path}: name: a different grid named {plan.grid.name!r} is already in "
            f"{store.grid_dir(plan.grid.name)} ({len(taken)} of its runs are not in this grid, e.g. "
            f"{sorted(taken)[0]}); give this grid another name, or move that folder away (its runs "
            f"stay in {store.runs_root} and are reused)")


# ---------------------------------------------------------------- the dry-run plan
def plan_table(plan: Plan, todo: Triage | None = None) -> str:
    """One row per run: id, stage, data, method, weighting, the hyper-parameters that vary, deps."""
    from tabulate import tabulate

    from report.table import short

    finetune = [r for r in plan.runs if r.stage == "finetune"]
    keys = sorted({k for r in finetune for k in r.params})
    varying = [k for k in keys if len({repr(r.params[k]) for r in finetune if k in r.params}) > 1]
    shown = sorted({"steps", "lambda_distill", *varying})
    done = set(todo.done) if todo else set()
    running = set(todo.running) if todo else set()
    failed = set(todo.failed) if todo else set()
    cancelled = set(todo.cancelled) if todo else set()
    rows = []
    for r in plan.runs:
        params = " ".join(f"{k}={short(r.params[k])}" for k in shown if k in r.params)
        state = ("done" if r.run_id in done else "running" if r.run_id in running
                 else "failed" if r.run_id in failed else "cancelled" if r.run_id in cancelled
                 else "to submit")
        deps = ",".join(r.depends_on) if len(r.depends_on) <= 2 else f"{len(r.depends_on)} runs"
        rows.append((r.run_id, r.stage, f"{r.dataset}/{r.target}" if r.target else r.dataset,
                     r.method or "", ", ".join(v or r.weighting or "" for v in r.variants).strip(", "),
                     params, deps, state))
    return tabulate(rows, headers=("run", "stage", "data", "method", "weighting / variant", "parameters",
                                   "depends on", "state"), tablefmt="simple", disable_numparse=True)



def check_criterion(grid, grid_path: Path) -> None:
    """The selection criterion in the report's grammar, before anything is written."""
    from report.selection import Criterion

    try:
        Criterion.parse(grid.selection.criterion)
    except ValueError as err:
        raise UserError(f"{grid_path}: selection.criterion: {err}") from None


def check_budgets(plan: Plan, grid_path: Path) -> dict[str, int]:
    """Each method's candidate count; unequal counts are an error where the grid asks for
    equal budgets (selection.equal_budget), unequal total compute where it asks for equal
    compute (selection.equal_compute; runs.compute)."""
    counts = candidates(plan)
    if plan.grid.selection.equal_budget and (differ := unequal(counts)):
        raise UserError(f"{grid_path}: selection.equal_budget: the methods have different numbers of "
                        f"candidates (settings x evaluated checkpoints): {differ}")
    if plan.grid.selection.equal_compute and (differ := unmatched(candidate_compute(plan))):
        raise UserError(f"{grid_path}: selection.equal_compute: the methods' candidates have different total "
                        f"training compute (naive kimg): {differ}; give each method as many candidates, "
                        f"or a cheaper one more of them")
    return counts


def budget_lines(plan: Plan, counts: dict[str, int]) -> list[str]:
    """The dry run's summary: each method's candidates and their total training compute, and a
    rough wall time."""
    compute = candidate_compute(plan)
    matched = " (compute-matched: selection.equal_compute)" if plan.grid.selection.equal_compute else ""
    lines = [f"candidates {label}: {n}" for label, n in counts.items()]
    lines += [f"training compute of the candidates {label}: {compute.get(label, 0.0):.3g} naive kimg{matched}"
              for label in counts]
    seconds = estimate_seconds(plan)
    total = sum(seconds.values())
    lines.append(f"rough wall time, jobs one after another on the 2-core dev machine: {total / 3600:.1f} h "
                 f"(training {seconds['finetune'] / 3600:.1f} h, evaluation {seconds['evaluate'] / 3600:.1f} h; "
                 f"pretraining and the aggregate not counted)")
    return lines


def resolved_grid(grid: GridConfig) -> dict:
    """The grid with every default filled in, as a mapping that loads back to the same grid:
    per_method keeps only what each method overrides (a default written there would
    override the base)."""
    out = grid.model_dump(mode="json")
    out["per_method"] = {key: s.model_dump(mode="json", exclude_unset=True) for key, s in grid.per_method.items()}
    return out


def resolved_text(grid_path: Path, overrides: list[str]) -> str:
    """`--print`: the resolved grid as YAML (a grid file of its own)."""
    grid = validate_grid(grid_mapping(grid_path, overrides), grid_path, overrides)
    return grid_text(resolved_grid(grid), str(grid_path), overrides)


def submit(grid_path: str | Path, *, executor: str = "auto", results: str | Path = "results",
           dry_run: bool = False, wait: bool = False, retry_failed: bool = False,
           overrides: list[str] = (), only: list[str] = (), runs: list[str] = (),
           retry_cancelled: bool = False) -> dict:
    grid_path, overrides = Path(grid_path), list(overrides)
    raw = grid_mapping(grid_path, overrides)
    grid = validate_grid(raw, grid_path, overrides)
    check_results_root(results, grid_path, grid.name)
    try:
        whole = expand(grid, base_dir=grid_path.resolve().parent)
    except UserError as err:          # what only the expansion sees: named with the grid file
        raise UserError(f"{grid_path}: {err}") from None
    plan = select(whole, list(only), list(runs))
    check_criterion(grid, grid_path)
    counts = check_budgets(whole, grid_path)
    check_paths(plan, grid_path, dry_run)
    check_inputs(grid, grid_path.resolve().parent, grid_path, dry_run)
    store = Store(results)
    check_grid_name(store, whole, grid_path)
    # a dry run reads; a submission decides what to start and records it under the lock
    with nullcontext() if dry_run else store.submission_lock(wait_s=LOCK_WAIT_S):
        todo = triage(plan, store, retry_failed, retry_cancelled)
        check_snapshots(todo.submit, store, grid_path)
        for note in todo.notes:
            print(f"note: {note}", file=sys.stderr)
        summary = {"grid": grid.name, "runs": len(plan.runs), "submitted": 0, "skipped_done": len(todo.done),
                   "skipped_running": len(todo.running), "skipped_failed": todo.skipped_failed}
        if plan is not whole:
            summary["grid_runs"] = len(whole.runs)
        if dry_run:
            print(plan_table(plan, todo))
            print("\n".join(budget_lines(plan, counts)))
            return summary

        # Everything is valid: only now is anything written. The record is the whole grid,
        # as resolved: the file's own text, or with overrides the mapping they made.
        runner = make_executor(executor, plan, store.grid_dir(grid.name), todo)
        text = grid_text(raw, str(grid_path), overrides) if overrides else grid_path.read_text()
        store.write_grid(grid.name, text, grid.canonical_json())
        store.keep_grid_runs(grid.name, {r.run_id for r in whole.runs})     # an earlier aggregate's link
        for run in whole.runs:
            store.add_run(grid.name, run.run_id, run.spec.model_dump(mode="json"))
        with ExitStack() as claims:
            # `sdft run` may have started one of them since triage: then this submission stops
            # here, before it records a decision; held until the jobs are out (local: ended)
            for run in todo.submit:
                claims.enter_context(store.run(run.run_id).job_lock())
            for run_id, (status, info) in todo.updates.items():
                store.run(run_id).set_state(status, **info)
            for run in todo.submit:
                if run.stage in ("pretrain", "finetune"):
                    refresh_bookkeeping(run, store)
            job_ids = submit_plan(runner, plan, store, todo)
    summary["submitted"] = len([r for r in todo.submit if r.run_id in job_ids])
    summary["executor"] = runner.name
    if wait and runner.name == "slurm":
        from harness.executors import wait_for_slurm
        wait_for_slurm([job_ids[r.run_id] for r in todo.submit if r.run_id in job_ids])
    if wait or runner.name == "local":
        from harness.status import status_table
        summary.update(settle(plan, store))
        print(status_table(store, grid.name))
    return summary


def finished_badly(summary: dict) -> bool:
    """After the jobs ended (local, --wait): did any run of the grid not finish?"""
    return any(summary.get(key, 0) for key in ("failed", "cancelled", "lost"))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.no_shipped_weights:
        os.environ["SDFT_SHIPPED_WEIGHTS"] = "0"     # the jobs inherit it (sbatch exports the env)
    with quiet_broken_pipe(), exit_on_stop("submission", "submitting the grid again resumes what did not finish"):
        if args.show:
            with exit_on_user_error():
                print(resolved_text(Path(args.grid), args.overrides), end="")
            return
        with exit_on_user_error():
            summary = submit(args.grid, executor=args.executor, results=args.results, dry_run=args.dry_run,
                             wait=args.wait, retry_failed=args.retry_failed, overrides=args.overrides,
                             only=args.only, runs=args.runs, retry_cancelled=args.retry_cancelled)
        print(json.dumps(summary))
    if finished_badly(summary):
        sys.exit(1)


if __name__ == "__main__":
    main()
