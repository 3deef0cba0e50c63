"""Compute-matched comparisons: the rule of `selection.equal_compute`, and training compute.

A step of sdft costs more than a step of naive (a teacher forward, and a student pass over
the doubled batch), so comparing them at equal steps gives sdft more compute per model.
Each method module declares its measured cost per step relative to naive (runs.methods,
`Method.cost`; where a setting changes it, as sdft's lambda_aux = 0 skips the pure-noise half
of its batch, a function of the run's settings), and from it:

    compute (naive kimg) = steps x batch_size x cost / 1000

the thousands of training images a run has seen, each counted at what it costs that method
relative to a naive step (as NVlabs/edm measures training in kimg). Resolution is left out:
the runs compared in one table train on the same data. An adapter's run counts at its
method's cost: a LoRA step still runs the whole network forward and back through its
activations, and its low-rank products cost about what the skipped weight gradients and
optimizer updates save (bench/adapter_step.py on the 2-core development machine, small
preset, 16 px, batch 32, rank 8, two runs: 1.01-1.06x naive's full step, 1.00-1.02x sdft's).

The rule. Under `selection.equal_compute: true` a grid's `steps` (in `finetune`, or a
method's own in `per_method`) are steps of the grid's most expensive method: every method
trains the number of steps that costs the same, round(steps x c_max / c), where c is the
cost per step of the run's method under its settings and c_max the highest cost among the
grid's methods at their default settings, and its checkpoints (`evaluation.checkpoint_steps`,
`curve_steps`) are scaled with them. Cheaper
methods train longer, so each candidate of one method has trained with the compute of its
counterpart in every other; with the same number of candidates (`selection.equal_budget`),
every method's candidates then get the same total compute. At submit, the total compute of
each method's candidates (the sum over its candidates of their compute, per target,
runs.budget) must agree within COMPUTE_TOLERANCE (what rounding to whole steps leaves);
otherwise the grid is refused, naming each method's total. A grid may thus match compute
with more candidates for a cheaper method instead (a `per_method` sweep of shorter runs):
what is checked is the total. Off by default: grids without it keep their steps and run ids.
"""
from __future__ import annotations

from typing import Any, Mapping

from runs.errors import UserError
from runs.methods import METHODS
from runs.numbers import MAX_STEPS

# the totals may differ by this share: rounding 10 matched steps to whole ones moves them by < 3 %
COMPUTE_TOLERANCE = 0.05


Settings = Mapping[str, Any] | None   # a run's settings; None: the method's defaults


def cost_per_step(method: str, settings: Settings = None) -> float:
    """A method's measured seconds per step relative to naive under a run's settings (its
    module declares it)."""
    return METHODS[method].cost_at(settings)


def kimg(method: str, steps: int, batch_size: int, settings: Settings = None) -> float:
    """Training compute in naive kimg: steps x batch x cost per step / 1000."""
    return steps * batch_size * cost_per_step(method, settings) / 1000.0


def step_factor(methods: list[str], method: str, settings: Settings = None) -> float:
    """How many of its own steps a run trains per step of the grid's most expensive method."""
    return max(cost_per_step(m) for m in methods) / cost_per_step(method, settings)


def matched_steps(methods: list[str], method: str, steps: int, where: str = "steps",
                  settings: Settings = None) -> int:
    """The steps a run trains under equal compute for `steps` of the grid's costliest method."""
    out = max(1, round(steps * step_factor(methods, method, settings)))
    if out > MAX_STEPS:
        raise UserError(f"selection.equal_compute: {method}'s {where} {steps} would be {out} steps at equal "
                        f"compute, above the limit {MAX_STEPS:,}")
    return out


def unmatched(totals: dict[str, float]) -> str | None:
    """'naive 0.61, sdft/sdft 1.22' (naive kimg) when the methods' total compute differs by more
    than COMPUTE_TOLERANCE; None when it agrees."""
    if not totals or max(totals.values()) <= (1 + COMPUTE_TOLERANCE) * min(totals.values()):
        return None
    return ", ".join(f"{label} {value:.3g}" for label, value in totals.items())
