"""A part of a grid: `--only method=sdft,stage=finetune` or `--runs ID` on submit, for
debugging one corner of an experiment on a laptop.

A selected run brings along the runs it needs (a fine-tune its pretraining, an evaluation
its fine-tune and the source model's evaluation), which the submission then skips where
they are done. Run ids may be shortened to a prefix that names one run, as git's may.
"""
from __future__ import annotations

from typing import Any, Iterable

import yaml

from runs.errors import UserError
from runs.grid import Plan, PlannedRun

# what `--only` matches besides the hyper-parameters a run shows (runs.grid.shown_params)
FIELDS = ("stage", "method", "weighting", "dataset", "target")


def find_run_id(given: str, ids: Iterable[str], where: str, option: str = "") -> str:
    """The one id that is `given` or starts with it; `option` leads the error (`--runs `)."""
    ids = sorted(set(ids))
    if given in ids:
        return given
    found = [i for i in ids if i.startswith(given)] if given else []
    if len(found) == 1:
        return found[0]
    if found:
        raise UserError(f"{option}{given}: names {len(found)} runs of {where} ({', '.join(found[:3])}, ...); "
                        "give more of the id")
    raise UserError(f"{option}{given}: not a run of {where}")


def parse_only(texts: list[str]) -> dict[str, list[str]]:
    """['method=sdft,stage=finetune', 'method=naive'] -> {method: [sdft, naive], stage: [finetune]}:
    values of one key are alternatives, different keys must all match."""
    wanted: dict[str, list[str]] = {}
    for text in texts:
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise UserError(f"--only {text}: expected key=value[,key=value...] (e.g. method=sdft,stage=finetune)")
            wanted.setdefault(key.strip(), []).append(value.strip())
    return wanted


def _same(value: Any, text: str) -> bool:
    if value is None:
        return text in ("none", "null", "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    if str(value) == text:
        return True
    try:
        return yaml.safe_load(text) == value
    except yaml.YAMLError:       # `method=[`: matches nothing, as any other value no run has
        return False


def matches(run: PlannedRun, wanted: dict[str, list[str]]) -> bool:
    for key, values in wanted.items():
        value = getattr(run, key) if key in FIELDS else run.params.get(key, _ABSENT)
        if value is _ABSENT or not any(_same(value, v) for v in values):
            return False
    return True


_ABSENT = object()


def with_prerequisites(plan: Plan, chosen: set[str]) -> set[str]:
    by_id = plan.by_id()
    todo, out = list(chosen), set()
    while todo:
        run_id = todo.pop()
        if run_id not in out:
            out.add(run_id)
            todo.extend(by_id[run_id].depends_on)
    return out


def select(plan: Plan, only: list[str] = (), run_ids: list[str] = ()) -> Plan:
    """The runs that `--only` and `--runs` name (both given: a run either names), with what
    they need; the plan itself when neither is given."""
    if not only and not run_ids:
        return plan
    chosen: set[str] = set()
    ids = [r.run_id for r in plan.runs]
    for given in run_ids:
        chosen.add(find_run_id(given, ids, f"grid {plan.grid.name}", "--runs "))
    if only:
        wanted = parse_only(list(only))
        known = set(FIELDS) | {k for r in plan.runs for k in r.params}
        for key in wanted:
            if key not in known:
                raise UserError(f"--only {key}=...: unknown key (one of {', '.join([*FIELDS, *sorted(known - set(FIELDS))])})")
        picked = {r.run_id for r in plan.runs if matches(r, wanted)}
        if not picked:
            raise UserError(f"--only {','.join(only)}: no run of grid {plan.grid.name} matches")
        chosen |= picked
    keep = with_prerequisites(plan, chosen)
    return Plan(plan.grid, [r for r in plan.runs if r.run_id in keep], plan.paths)
