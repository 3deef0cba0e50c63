"""An exponential moving average of the weights, kept in fp32 whatever the training precision.

Not diffusers' EMAModel: its constant decay is the same (min_decay = decay), but its warm-up
copies the weights at the first update where this one uses decay 1/10, and a switch would
change every run id (tests/jobs/test_ema.py); it also keeps the average in the weights' dtype.
"""
from __future__ import annotations

import copy

import torch


class EMA:
    """With `warmup`, decay_n = min(decay, (1 + n) / (10 + n)), which lets short fine-tunes
    move the EMA: a plain 0.9999 over 1,500 steps keeps 86 % of the starting model, while
    with the warm-up 10k steps keep nothing of it (3.6e-31). The official code has none.
    """

    def __init__(self, module: torch.nn.Module, decay: float, warmup: bool = False):
        self.decay = decay
        self.warmup = warmup
        self.model = copy.deepcopy(module).float().eval().requires_grad_(False)
        self.updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        decay = self.current_decay()
        ema_params = list(self.model.parameters())
        new_params = [p.detach().float() for p in module.parameters()]
        torch._foreach_lerp_(ema_params, new_params, 1.0 - decay)
        for ema_buf, buf in zip(self.model.buffers(), module.buffers()):
            ema_buf.copy_(buf)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.updates = state["updates"]
        self.model.load_state_dict(state["weights"])
