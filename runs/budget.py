"""Tuning budgets: how many candidates each method chooses its reported setting from.

A method that is tried in more settings gets more chances at a lucky one, so a comparison is
fair only when every method has the same number of candidates (docs/architecture.md,
"Numbers that can be trusted"). A
candidate is one setting of the hyper-parameters that apply to the method, at one evaluated
checkpoint (the final step, or an earlier one kept by evaluation.checkpoint_steps); training
seeds repeat a candidate, they are not candidates. Every weighting of sdft is a method of its
own, and so is every named variant (the report layer's selection groups the same way); a run
that a variant shares with its method is a candidate of both. Settings that have no effect on a
method (lambda for naive, gamma for a constant weighting) never reach its run specs, so they
cannot add candidates here either.

With a constant learning rate (jobs.train has no schedule) the checkpoint at step s of a
longer run is the model a run of s steps would have made, so sweeping steps through
checkpoints costs evaluations only, not training runs.

Under `selection.equal_compute` the methods' candidates must also get the same total
training compute (candidate_compute; the rule: runs.compute).

Also a rough wall-time estimate of a plan from costs measured on the 2-core development
machine (RoughCost); it is printed by the dry run and is no more than a guide.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from runs.compute import cost_per_step, kimg
from runs.grid import Plan, PlannedRun, snapshots_for

# what repeats a candidate rather than making a new one, and what the checkpoint axis replaces
NOT_A_SETTING = frozenset({"seed", "steps"})


def method_label(run: PlannedRun, variant: str = "") -> str:
    """'naive', 'scratch', 'sdft/min-snr', 'sdft/sdft-noaux' (a named variant): the unit that
    gets a budget."""
    last = variant or run.weighting
    if run.weighting:
        return f"{run.method}/{last}"
    return variant or str(run.method)


def evaluated_steps(run: PlannedRun, grid=None) -> tuple[int, ...]:
    """The steps of a finetune run whose models are evaluated as candidates: its snapshots
    and its end (given the grid, without the forgetting curve's snapshots, which are drawn,
    never selected)."""
    early = run.spec.snapshot_steps
    if grid is not None:
        early = tuple(s for s in early if s in snapshots_for(grid, run.method, run.settings))
    return (*early, run.spec.steps)


def _candidates(plan: Plan) -> dict[tuple, float]:
    """(dataset, target, label, setting, step) of every candidate -> its training compute
    (naive kimg, runs.compute)."""
    seen: dict[tuple, float] = {}
    for run in plan.by_stage("finetune"):
        setting = tuple(sorted((k, repr(v)) for k, v in run.params.items() if k not in NOT_A_SETTING))
        for step, variant in ((s, v) for s in evaluated_steps(run, plan.grid) for v in run.variants):
            key = (run.dataset, run.target, method_label(run, variant), setting, step)
            seen[key] = kimg(run.method, step, run.spec.batch_size, run.settings)
    return seen


def _per_label(per_target: dict[tuple, float]) -> dict[str, float]:
    """The largest value of each label over the targets (every target runs the same sweep)."""
    out: dict[str, float] = {}
    for (_, _, label), value in sorted(per_target.items()):
        out[label] = max(out.get(label, 0), value)
    return out


def candidates(plan: Plan) -> dict[str, int]:
    """Method label -> its number of candidates, per target (every target of a grid runs the
    same sweep). Two runs that differ only in steps share their common checkpoints: a run
    of 300 steps and the 300-step snapshot of a 600-step run are one candidate."""
    return _per_label(Counter((dataset, target, label) for dataset, target, label, _, _ in _candidates(plan)))


def candidate_compute(plan: Plan) -> dict[str, float]:
    """Method label -> the total training compute of its candidates, per target, in naive kimg:
    the sum over its candidates of steps x batch x the method's cost per step (runs.compute).
    A checkpoint that is a candidate counts with the steps it trained, though a longer run
    shares them: this is the compute that selection chose among, as the budget counts it."""
    totals: dict[tuple, float] = {}
    for (dataset, target, label, _, _), compute in _candidates(plan).items():
        totals[(dataset, target, label)] = totals.get((dataset, target, label), 0.0) + compute
    return _per_label(totals)


def unequal(counts: dict[str, int]) -> str | None:
    """'naive 3, scratch 4, ...' when the methods' budgets differ; None when they are equal."""
    if len(set(counts.values())) <= 1:
        return None
    return ", ".join(f"{label} {n}" for label, n in counts.items())


# ---------------------------------------------------------------- a rough wall-time estimate
@dataclass(frozen=True)
class RoughCost:
    """Seconds on the 2-core development machine, measured on the demo's settings (16 px,
    batch 32, 600 steps; 500 samples, 300 SDEdit + 300 EGSDE translations at t0 0.5, all
    metrics). Training scales with steps x batch x pixels, times the method's cost per step
    relative to naive (runs.methods); an evaluation with the images it makes times their
    DDIM steps (a translation runs t0 of them), once per evaluation seed."""
    train_naive: float = 47.0 / (600 * 32 * 16 * 16)      # per step x image x pixel
    sample: float = 25.0 / (500 * 16 * 16)                # unconditional half of the 50 s
    translate: float = 25.0 / (300 * 0.5 * 16 * 16)       # SDEdit + EGSDE half, per t0 unit
    job_start: float = 5.0


def estimate_seconds(plan: Plan, cost: RoughCost = RoughCost()) -> dict[str, float]:
    """Rough seconds per stage (pretraining left out: the demo's source is shipped). Jobs run
    one after another; the local executor's parallelism is not counted."""
    out = {"finetune": 0.0, "evaluate": 0.0}
    e = plan.grid.evaluation
    by_id = plan.by_id()
    for run in plan.runs:
        if run.stage == "finetune":
            s = run.spec
            pixels = s.data.resolution ** 2
            rate = cost.train_naive * cost_per_step(s.method, run.settings)
            out["finetune"] += cost.job_start + rate * s.steps * s.batch_size * pixels
        elif run.stage == "evaluate":
            pixels = run.spec.source_data.resolution ** 2
            trained = by_id.get(run.depends_on[0]) if run.depends_on else None
            finetuned = trained is not None and trained.stage == "finetune"
            models = len(evaluated_steps(trained, plan.grid)) if finetuned else 1
            per_model = 0.0
            if "unconditional" in e.tasks:
                per_model += cost.sample * e.num_samples * pixels
            translations = [t for t in e.tasks if t != "unconditional"]
            per_model += (cost.translate * e.num_translations * pixels * sum(e.t0)
                          * len(translations) / 2)
            splits = 2 if e.splits else 1        # a validation and a test split of everything
            # the forgetting curve's snapshots: unconditional samples of the test split only
            curve = len(evaluated_steps(trained)) - models if finetuned else 0
            out["evaluate"] += (cost.job_start + per_model * models * len(e.seeds) * splits
                                + cost.sample * e.num_samples * pixels * curve * len(e.seeds))
    return out
