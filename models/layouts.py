"""Two speed options for low-precision GPU work, each checked in bench/adm.py before use:

- GroupNorm in the working precision: under autocast PyTorch runs group_norm in float32
  (its fp32 list), so a bf16 network upcasts every activation before each norm and casts
  it back after. `group_norm_in_working_precision` makes the network's GroupNorms run in
  their input's dtype (the statistics are still accumulated in float32 by the kernels).
  Without autocast (DeepSpeed's bf16, whose weights are bf16) GroupNorm already runs in bf16.
- channels_last: convolutions in NHWC, which cuDNN's tensor-core kernels prefer.
On a CPU in float32 both change nothing measurable; the GPU decision is bench/gpu_all.sh's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class WorkingPrecisionGroupNorm(torch.nn.GroupNorm):
    """nn.GroupNorm that autocast leaves in its input's dtype (same parameters, same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            weight = None if self.weight is None else self.weight.to(x.dtype)
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return F.group_norm(x, self.num_groups, weight, bias, self.eps)


def group_norm_in_working_precision(module: torch.nn.Module) -> torch.nn.Module:
    """Every nn.GroupNorm of `module` becomes a WorkingPrecisionGroupNorm, in place."""
    for m in module.modules():
        if type(m) is torch.nn.GroupNorm:
            m.__class__ = WorkingPrecisionGroupNorm
    return module


def to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    return module.to(memory_format=torch.channels_last)
