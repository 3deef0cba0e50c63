"""Adapters: fine-tune a low-rank update of the source's weights instead of every weight.

`adapter: lora` works with any method that starts from the source model (LoRA; Hu et al.,
"LoRA: Low-rank adaptation of large language models", ICLR 2022, through the `peft`
library): each targeted layer W becomes W + (alpha / rank) B A, with A (rank x in) and
B (out x rank) trained and W frozen; for a Conv2d, A is a conv of the layer's kernel and
B a 1x1 conv (peft's Conv2d LoRA). B starts at zero, so training starts from the source.

The targets are module names matched as suffixes (peft's `target_modules`), comma-separated.
The default, `to_q,to_k,to_v,to_out.0,conv1,conv2`, is every attention projection and both
3x3 convolutions of every ResNet block of the diffusers UNet2DModel: every preset has them.
Left frozen: the input/output convolutions, the down/up-samplers, the skip 1x1 convs, the
time embedding and the norms.

The settings are declared once here, as the shared training settings are (runs.params):
the grid takes them under `finetune:` (a list sweeps them: `adapter: [none, lora]`). A
run spec holds them in its `adapter` block only when the adapter is on, so that every run
without one keeps its id. scratch trains a fresh network, which has no source to adapt:
the grid gives its runs no adapter.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

from runs.numbers import Whole
from runs.params import Param, Pos

DEFAULT_TARGETS = "to_q,to_k,to_v,to_out.0,conv1,conv2"
_TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


def _targets(value: str) -> str:
    names = value.split(",")
    bad = [n for n in names if not _TARGET.fullmatch(n)]
    if bad:
        raise ValueError(f"expected comma-separated module names such as {DEFAULT_TARGETS!r}, got {bad[0]!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"module names repeat: {value!r}")
    return value


Targets = Annotated[str, AfterValidator(_targets)]

PARAMS: tuple[Param, ...] = (
    # lora: train a low-rank adapter of the source's weights instead of every weight (any method but scratch)
    Param("adapter", Literal["none", "lora"], "adapter", "none", "adapter", "train"),
    Param("lora_rank", Whole(gt=0, le=4096), "whole number", 8, "LoRA r", "train"),     # r, the adapter's rank
    # the update is scaled by alpha / rank
    Param("lora_alpha", Pos, "number", 8.0, "LoRA α", "train"),
    # comma-separated module names, matched as suffixes (peft's target_modules)
    Param("lora_targets", Targets, "lora_targets", DEFAULT_TARGETS, "LoRA targets", "train"),
)
# the block's keys, by setting name
KEYS = {"lora_rank": "rank", "lora_alpha": "alpha", "lora_targets": "targets"}
_DEFAULTS = {p.name: p.default for p in PARAMS}


class AdapterSpec(BaseModel):
    """A run spec's `adapter` block (absent: every weight is trained)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["lora"]            # no default: the block always says what it is
    rank: Whole(gt=0, le=4096) = _DEFAULTS["lora_rank"]
    alpha: Pos = _DEFAULTS["lora_alpha"]
    targets: Targets = _DEFAULTS["lora_targets"]


def adapter_block(settings: dict[str, Any]) -> dict[str, Any] | None:
    """The run spec's adapter block from a grid's settings (name -> value), or None."""
    if settings.get("adapter", "none") == "none":
        return None
    return {"kind": settings["adapter"], **{KEYS[name]: settings.get(name, _DEFAULTS[name]) for name in KEYS}}


def columns(spec: dict) -> dict[str, Any]:
    """The `p_<name>` columns of a run spec's (as JSON) adapter; none without one."""
    block = spec.get("adapter")
    if not block:
        return {}
    return {"p_adapter": block["kind"], **{f"p_{name}": block.get(key, _DEFAULTS[name]) for name, key in KEYS.items()}}


COLUMNS = tuple(f"p_{p.name}" for p in PARAMS)
