"""python -m harness.status results/<grid>: one row per run of a grid.

Shows stage, state, the step reached, the Slurm job id and, for a run that did not finish,
why: its error's one line, or for a cancelled run which parent did not finish (or that
the user cancelled it, `sdft cancel`). A run recorded as queued or running whose job is
gone shows as 'lost' (resumed by the next submission), or as 'failed' where Slurm says it
ran out of memory. Below the table, the log file of every failed or lost run
(`sdft logs ID` prints it).
"""
from __future__ import annotations

import sys
from pathlib import Path

from harness.arguments import OneLineParser, path_arg
from runs.errors import UserError, clean_text, exit_on_user_error, quiet_broken_pipe
from runs.methods import run_label
from runs.store import CorruptFile, RunFolder, Store


def _job_id(folder: RunFolder) -> str | None:
    try:
        return folder.state().get("job_id")
    except CorruptFile:
        return None


def describe(folder: RunFolder, live: set[str] | None, outcomes: dict | None = None) -> tuple:
    from harness.executors import elsewhere, gone_outcome, job_alive

    try:
        spec, state = folder.read_spec(), folder.state()
    except CorruptFile as err:     # one unreadable run is shown as such; the others still are
        # the row names the run: its files by name, so that a long results path cuts nothing off
        message = str(err).replace(str(folder.state_path), folder.state_path.name)
        return folder.run_id, "?", "", "unknown", "", "", " ".join(message.split())[:200]
    except FileNotFoundError:      # its folder deleted (the grid's link dangles), or its spec.json
        return folder.run_id, "?", "", "unknown", "", "", "spec.json: missing; a submission writes it again"
    status = state.get("status", "pending")
    job = state.get("job_id") or ""
    if status in ("submitted", "running"):
        if not job_alive(state, live):
            status, error = gone_outcome(state, outcomes or {})
            state = {**state, "error": error}
        elif elsewhere(state):
            job = f"{elsewhere(state)} pid {state.get('pid')} (not checked)"
    label = spec.get("stage", "?")
    method = run_label(spec)
    step = f"{state['step']}/{state.get('steps', '?')}" if "step" in state else ""
    error = clean_text(state.get("error") or "") if status in ("failed", "lost", "cancelled") else ""
    return folder.run_id, label, method, status, step, job, error[:160]


def grid_folder(given: str, results: str | Path = "results") -> tuple[Store, str]:
    """results/<grid> as a path, or a grid's name in the results root."""
    path = Path(given)
    if (path / "runs").is_dir():
        return Store(path.parent), path.name
    if "/" not in given and (Path(results) / given / "runs").is_dir():
        return Store(results), given
    raise UserError(f"{path}: not a grid results folder (no runs/)")


def log_lines(folders: list[RunFolder], rows: list[tuple]) -> list[str]:
    """`log of ID: PATH` for every failed or lost run whose job left one."""
    by_id = {f.run_id: f for f in folders}
    lines = []
    for row in rows:
        if row[3] in ("failed", "lost"):
            logs = [p for p in by_id[row[0]].job_logs() if p.is_file()]
            lines.append(f"log of {row[0]}: {', '.join(map(str, logs)) or 'none written'}")
    return lines


def status_table(store: Store, grid: str) -> str:
    from tabulate import tabulate

    from harness.executors import live_slurm_jobs, slurm_outcomes

    folders = store.grid_runs(grid)
    if not folders:
        raise UserError(f"{store.grid_dir(grid)}: no runs (submit the grid first)")
    jobs = [_job_id(f) for f in folders]
    live = live_slurm_jobs([j for j in jobs if j and not j.startswith("local")])
    gone = [j for j in jobs if j and not j.startswith("local") and live is not None and j not in live]
    outcomes = slurm_outcomes(gone)
    rows = [describe(f, live, outcomes) for f in folders]
    order = {"pretrain": 0, "finetune": 1, "evaluate": 2, "aggregate": 3}
    rows.sort(key=lambda r: (order.get(r[1], 9), r[2], r[0]))
    counts = {}
    for r in rows:
        counts[r[3]] = counts.get(r[3], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    table = tabulate(rows, headers=("run", "stage", "method", "state", "step", "job", "error"),
                     tablefmt="simple", disable_numparse=True)
    return "\n".join([table, f"{grid}: {len(rows)} runs: {summary}", *log_lines(folders, rows)])


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m harness.status", description=__doc__.splitlines()[0])
    parser.add_argument("grid_dir", type=path_arg, help="results/<grid>, or a grid's name in --results")
    parser.add_argument("--results", default="results", type=path_arg, help="results root for a grid given by name (default: results)")
    args = parser.parse_args(argv)
    with quiet_broken_pipe(), exit_on_user_error():
        print(status_table(*grid_folder(args.grid_dir, args.results)))


if __name__ == "__main__":
    main()
    sys.exit(0)
