"""torch.compile for the training step and the samplers, as one switch.

The ADM step's time goes to many small memory-bound kernels (GroupNorm, SiLU, adds);
inductor fuses them. `compile: true|false` in a run's settings (and the evaluation's);
unset, it is on where a GPU is present and off on a CPU, where compiling costs more than it
saves for the short runs made there. Modules are compiled in place (`nn.Module.compile`), so
their state dicts, checkpoints and saved folders keep their keys. The first call compiles
(tens of seconds at the paper's size); the training job logs that first step's time apart
from the steady state.
"""
from __future__ import annotations

import torch


def compile_enabled(setting: bool | None) -> bool:
    """The setting, or where unset: on with a GPU, off on a CPU."""
    return torch.cuda.is_available() if setting is None else bool(setting)


def compile_in_place(module: torch.nn.Module, enabled: bool, backend: str = "inductor") -> torch.nn.Module:
    """`module`, compiled (by inductor) when enabled. Shapes that change (the last, smaller
    batch of an evaluation) recompile once and are then treated as dynamic. `backend`
    "eager" traces without generating code: a smoke test of the compiled path."""
    if enabled:
        module.compile(backend=backend)
    return module
