"""Fewer-step samplers for unconditional generation: diffusers' multistep ODE solvers
(DPM-Solver++ and UniPC) configured for the project's schedule, so that the same model
draws samples as DDIM-40 would in fewer network evaluations.

Nothing here is a hand-written solver: the update rules are diffusers'
`DPMSolverMultistepScheduler` (algorithm "dpmsolver++", second order) and
`UniPCMultistepScheduler` (bh2, x0 prediction). This module only sets them up as the DDIM
path runs (models/sampling.py):
- the schedule: the model's betas over T steps (linear or cosine), eps prediction
  (`NoiseSchedule`);
- the timesteps: N evaluations at diffusers' default spacing for these solvers (from T-1
  down, the last step to the clean image: sigma 0, as DDIM's alpha_bar = 1), or a given
  respaced grid (DDIM's `ddim{N}`, with which first-order DPM-Solver++ is DDIM exactly);
- clipping: with `clip_denoised`, each step's x0 prediction is clipped to [-1, 1], through
  diffusers' thresholding with `sample_max_value` 1 (the percentile s is clamped to [1, 1],
  so it is a plain per-pixel clip, as guided-diffusion's clip_denoised);
- a learned-variance network contributes its eps channels only.
Both solvers are deterministic given the start noise, and every sample's update depends on
that sample alone, so a sample does not depend on its batch.

SDEdit and EGSDE keep DDIM: their guidance plugs into a DDIM step (models/sampling.py).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from models.networks import EpsModel, split_output
from models.sampling import Sampled, range_excess
from models.schedule import NoiseSchedule

Solver = Literal["dpm-solver++", "unipc"]
SOLVERS: tuple[str, ...] = ("dpm-solver++", "unipc")


def make_scheduler(solver: str, num_steps: int, schedule: NoiseSchedule, clip_denoised: bool = True,
                   order: int = 2, timesteps: list[int] | None = None):
    """The diffusers scheduler of `solver` for `num_steps` steps at its own spacing, or set to
    visit `timesteps` (ascending, as a respacing gives them) from the last one down."""
    common = dict(**schedule.diffusers_config(), prediction_type="epsilon", solver_order=order,
                  thresholding=clip_denoised, sample_max_value=1.0,
                  final_sigmas_type="zero", lower_order_final=True)
    if solver == "dpm-solver++":
        from diffusers import DPMSolverMultistepScheduler

        scheduler = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_type="midpoint", **common)
        if timesteps is None:
            scheduler.set_timesteps(num_steps)
        else:
            scheduler.set_timesteps(timesteps=[int(t) for t in reversed(timesteps)])
        return scheduler
    if solver == "unipc":
        from diffusers import UniPCMultistepScheduler

        scheduler = UniPCMultistepScheduler(predict_x0=True, solver_type="bh2", **common)
        scheduler.set_timesteps(num_steps if timesteps is None else len(timesteps))
        if timesteps is None:
            return scheduler
        descending = [int(t) for t in reversed(timesteps)]
        # UniPC's set_timesteps has no custom timesteps: put the grid in, with the sigmas its
        # default branch derives from integer timesteps (the table's entries) and a final 0
        table = ((1 - scheduler.alphas_cumprod) / scheduler.alphas_cumprod) ** 0.5
        sigmas = np.concatenate([table.numpy()[descending], [0.0]]).astype(np.float32)
        scheduler.sigmas = torch.from_numpy(sigmas)
        scheduler.timesteps = torch.tensor(descending, dtype=torch.int64)
        return scheduler
    raise ValueError(f"unknown solver {solver!r}; expected one of {list(SOLVERS)}")


@torch.no_grad()
def solver_sample(model: EpsModel, noise: torch.Tensor, solver: str, num_steps: int = 40,
                  schedule: NoiseSchedule | None = None, clip_denoised: bool = True,
                  timesteps: list[int] | None = None, order: int = 2, progress: bool = False) -> Sampled:
    """Unconditional generation with a diffusers solver from given initial noise: the same
    noise, the same image. `num_steps` network evaluations at the solver's own spacing
    (diffusers' "linspace": from T-1 down, the last step to the clean image), or
    `timesteps` (ascending, a respaced grid such as DDIM's) when given.

    Why not DDIM's grid by default: `ddimN` ends with an evaluation at t = 0, after a long
    jump in log-SNR from t = T/N; a multistep solver extrapolates its x0 predictions over
    that jump and loses its order (on a Gaussian with a known answer it is then no better
    than DDIM; tests/models/test_solvers.py)."""
    schedule = schedule or NoiseSchedule()
    scheduler = make_scheduler(solver, num_steps, schedule, clip_denoised, order, timesteps)
    abar = schedule.alphas_cumprod
    x, excess = noise, noise.new_zeros(noise.shape[0])
    order_of_steps = scheduler.timesteps
    if progress:
        from tqdm.auto import tqdm
        order_of_steps = tqdm(order_of_steps, desc=solver, leave=False)
    last = int(scheduler.timesteps[-1])
    for t in order_of_steps:
        t_batch = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
        eps, _ = split_output(model(x, t_batch), x.shape[1])
        if int(t) == last:
            # the last step's x0 prediction before clipping, as the DDIM path reports it
            a = float(abar[last])
            excess = range_excess((x - (1.0 - a) ** 0.5 * eps) / a ** 0.5)
        x = scheduler.step(eps, t, x).prev_sample
    return Sampled(x, excess)
