"""Tables for people: the dry-run plan, and (harness.tables CLI) the paper's tables."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.grid import Plan
    from harness.submit import Triage


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def plan_table(plan: "Plan", todo: "Triage | None" = None) -> str:
    """One row per run: id, stage, data, method, weighting, the hyper-parameters that vary, deps."""
    from tabulate import tabulate

    varying = []
    keys = sorted({k for r in plan.runs for k in r.params})
    for key in keys:
        values = {repr(r.params.get(key)) for r in plan.runs}
        if len(values) > 1:
            varying.append(key)
    shown = varying or ["steps"]
    done = set(todo.done) if todo else set()
    running = set(todo.running) if todo else set()
    failed = set(todo.failed) if todo else set()
    rows = []
    for r in plan.runs:
        params = " ".join(f"{k}={_short(r.params[k])}" for k in shown if k in r.params)
        state = ("done" if r.run_id in done else "running" if r.run_id in running
                 else "failed" if r.run_id in failed else "to submit")
        rows.append((r.run_id, r.stage, f"{r.dataset}/{r.target}" if r.target else r.dataset,
                     r.method or "", r.weighting or "", params, ",".join(r.depends_on), state))
    return tabulate(rows, headers=("run", "stage", "data", "method", "weighting", "parameters",
                                   "depends on", "state"), tablefmt="simple", disable_numparse=True)
