"""Every training hyper-parameter, declared once.

A declaration holds the name, the type of one value, the default, where it applies (the
settings of some weightings only), the short label tables use, and whether it counts for
a run's identity. The settings every method shares are declared here; a method's own
settings are declared beside its loss, in its module under runs/methods/. The grid
schema (runs.config), the run spec (runs.spec), the grid's expansion (runs.grid),
the loss's arguments (jobs.train), the result columns `p_<name>` and the table labels are
all derived from these declarations, so a new setting is one line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import StrictBool

from runs.numbers import MAX_BATCH, MAX_STEPS, NoBool, Real, Whole

Precision = Literal["fp32", "bf16", "fp16"]
NetworkPreset = Literal["tiny", "small", "base"]
Steps = Whole(gt=0, le=MAX_STEPS)
Batch = Whole(gt=0, le=MAX_BATCH)
ZeroStage = Annotated[Literal[0, 1, 2], NoBool]
NonNeg = Real(ge=0)
Pos = Real(gt=0)
Fraction = Real(ge=0, lt=1)


@dataclass(frozen=True)
class Param:
    name: str
    kind: Any                  # the pydantic type of one value
    family: str                # `same_as` ties only settings of one family
    default: Any
    label: str                 # the short name in tables and model labels
    group: Literal["train", "method"]           # shared by all methods, or one method's own
    weightings: frozenset[str] | None = None   # a method's settings used by some weightings only
    identity: bool = True      # False: changes when work is saved, not what is computed
    axis: bool = True          # a list of values in a grid is a sweep

    def applies_to(self, weighting: str) -> bool:
        return self.weightings is None or weighting in self.weightings


PARAMS: tuple[Param, ...] = (
    Param("dropout", Fraction, "number", 0.0, "dropout", "train"),
    Param("lr", Pos, "number", 2e-5, "lr", "train"),
    Param("batch_size", Batch, "whole number", 16, "batch", "train"),    # global, split over ranks
    Param("steps", Steps, "whole number", 10_000, "steps", "train"),
    Param("ema_decay", Fraction, "number", 0.9999, "EMA", "train"),
    # decay_n = min(decay, (1+n)/(10+n)); the official code has none
    Param("ema_warmup", StrictBool, "bool", False, "EMA warm-up", "train"),
    Param("grad_clip", Pos | None, "number", None, "clip", "train"),      # none in the official code
    # None: on for image folders (official random_flip=True), off for the built-in pair
    Param("flip", StrictBool | None, "bool", None, "flip", "train"),
    Param("precision", Precision, "precision", "fp32", "precision", "train"),
    Param("zero_stage", ZeroStage, "zero_stage", 0, "ZeRO", "train"),
    Param("checkpoint_every", Steps, "whole number", 500, "checkpoint every", "train",
          identity=False, axis=False),
    # torch.compile of the training step (models/compiling.py); None: on with a GPU
    Param("compile", StrictBool | None, "bool", None, "compile", "train", identity=False, axis=False),
)

TRAIN = PARAMS                  # the settings every method shares (a run spec's own fields)
NOT_IN_IDENTITY = frozenset(p.name for p in PARAMS if not p.identity)


def label(name: str) -> str:
    from runs.methods import ALL_PARAMS

    return ALL_PARAMS[name].label if name in ALL_PARAMS else name


def columns(spec: dict) -> dict[str, Any]:
    """The tidy table's `p_<name>` columns of a run spec (as JSON): every declared setting
    that applies to the run, so runs that differ in any of them never share a label."""
    from runs import adapters
    from runs.methods import settings_of

    out = {f"p_{p.name}": spec[p.name] for p in TRAIN if p.identity and p.name in spec}
    out.update({f"p_{name}": value for name, value in settings_of(spec).items() if name != "weighting"})
    out.update(adapters.columns(spec))
    return out
