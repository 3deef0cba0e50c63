"""Samplers as plain functions: deterministic DDIM (eta 0) on guided-diffusion's `ddimN` grid.

A step index i runs the model at timestep tau_i and moves the state to tau_{i-1}; the last
step (i = 0) lands on the clean image (alpha_bar = 1, as `set_alpha_to_one`).
"""
from __future__ import annotations

from typing import Callable

import torch

from models.loss import EpsModel
from models.schedule import NoiseSchedule

# (y, t, y_next) -> y_next corrected: where EGSDE-style guidance plugs into a DDIM step.
StepHook = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]


def ddim_timesteps(num_steps: int = 40, num_train_timesteps: int = 1000) -> list[int]:
    """Ascending timesteps tau_0..tau_{N-1}: [0, 25, ..., 975] for N = 40 ('leading' spacing)."""
    if not 0 < num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in 1..{num_train_timesteps}, got {num_steps}")
    stride = num_train_timesteps // num_steps
    return list(range(0, num_train_timesteps, stride))[:num_steps]


@torch.no_grad()
def ddim_loop(model: EpsModel, x: torch.Tensor, timesteps: list[int], schedule: NoiseSchedule,
              step_hook: StepHook | None = None, progress: bool = False) -> torch.Tensor:
    """Run DDIM (eta 0) from state x at timesteps[-1] down to the clean image.

    `timesteps` is ascending (a prefix of `ddim_timesteps`): the steps run from its end.
    """
    abar = schedule.alphas_cumprod
    order = list(reversed(timesteps))
    iterator = order
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(order, desc="ddim", leave=False)
    batch = x.shape[0]
    for i, t in enumerate(iterator):
        t_prev = order[i + 1] if i + 1 < len(order) else -1
        a_t = float(abar[t])
        a_prev = float(abar[t_prev]) if t_prev >= 0 else 1.0
        eps = model(x, torch.full((batch,), t, device=x.device, dtype=torch.long))
        x0 = (x - (1.0 - a_t) ** 0.5 * eps) / a_t ** 0.5
        x_next = a_prev ** 0.5 * x0 + (1.0 - a_prev) ** 0.5 * eps
        x = x_next if step_hook is None else step_hook(x, t, x_next)
    return x


def ddim_sample(model: EpsModel, noise: torch.Tensor, num_steps: int = 40,
                schedule: NoiseSchedule | None = None, progress: bool = False) -> torch.Tensor:
    """Unconditional generation from given initial noise: the same noise, the same image."""
    schedule = schedule or NoiseSchedule()
    return ddim_loop(model, noise, ddim_timesteps(num_steps, schedule.num_timesteps), schedule,
                     progress=progress)
