"""Samplers as plain functions: deterministic DDIM (eta 0) on guided-diffusion's `ddimN` grid.

A step index i runs the model at timestep tau_i and moves the state to tau_{i-1}; the last
step (i = 0) lands on the clean image (alpha_bar = 1, as `set_alpha_to_one`).
"""
from __future__ import annotations

from typing import Callable

import torch

from models.loss import EpsModel
from models.schedule import NoiseSchedule
from models.seeding import derived_seed

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


def start_index(t0: float, num_steps: int) -> int:
    """How many of the DDIM steps an edit at t0 (a fraction of T) runs: the last round(t0 * N).

    t0 = 0.5 with N = 40 runs the last 20 steps, starting from the noise level of
    timestep 475 (the state step 20 of 40 hands over); t0 = 0 runs none: the input is returned.
    """
    if not 0.0 <= t0 <= 1.0:
        raise ValueError(f"t0 must be in [0, 1], got {t0}")
    return round(t0 * num_steps)


def sdedit(model: EpsModel, images: torch.Tensor, noise: torch.Tensor, t0: float = 0.5,
           num_steps: int = 40, schedule: NoiseSchedule | None = None,
           step_hook: StepHook | None = None) -> torch.Tensor:
    """SDEdit: noise the (source-domain) images to t0 and denoise them with DDIM."""
    schedule = schedule or NoiseSchedule()
    k = start_index(t0, num_steps)
    if k == 0:
        return images.clone()
    timesteps = ddim_timesteps(num_steps, schedule.num_timesteps)[:k]
    t_start = torch.full((images.shape[0],), timesteps[-1], dtype=torch.long, device=images.device)
    x = schedule.add_noise(images, noise, t_start)
    return ddim_loop(model, x, timesteps, schedule, step_hook=step_hook)


def low_pass(x: torch.Tensor, size: int = 8) -> torch.Tensor:
    """EGSDE's L: down-sample by image_size/8 (to size x size) and up-sample back."""
    small = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    return torch.nn.functional.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)


def egsde(model: EpsModel, images: torch.Tensor, noise: torch.Tensor,
          features: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], t0: float = 0.5,
          ls: float = 500.0, li: float = 2.0, num_steps: int = 40,
          schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """EGSDE on DDIM: SDEdit whose every step is pushed down two energies.

    With x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) e the noised source image (e: the start
    noise, so the whole translation is deterministic) and y the current image:
      realism      ls * cos(f(y, t), f(x_t, t)), f the time-conditioned domain classifier's
                   features: lower means less like the source domain;
      faithfulness li * ||L(y) - L(x_t)||^2, L a low-pass filter: keep the low frequencies.
    Each is scaled by w_t = beta_t / sqrt(alpha_t) of the (respaced) step. It is not
    classifier guidance toward a label.
    """
    schedule = schedule or NoiseSchedule()
    abar = schedule.alphas_cumprod
    grid = ddim_timesteps(num_steps, schedule.num_timesteps)
    previous = {t: (grid[i - 1] if i else -1) for i, t in enumerate(grid)}

    def guide(y: torch.Tensor, t: int, y_next: torch.Tensor) -> torch.Tensor:
        if ls == 0 and li == 0:
            return y_next
        a_prev = float(abar[previous[t]]) if previous[t] >= 0 else 1.0
        alpha = float(abar[t]) / a_prev                 # the respaced step's alpha_t
        w_t = (1.0 - alpha) / alpha ** 0.5
        tt = torch.full((y.shape[0],), t, dtype=torch.long, device=y.device)
        x_t = schedule.add_noise(images, noise, tt)
        with torch.enable_grad():
            y_var = y.detach().requires_grad_(True)
            energy = y_var.new_zeros(())
            if ls:
                f_y = features(y_var, tt).flatten(1)
                with torch.no_grad():
                    f_x = features(x_t, tt).flatten(1)
                energy = energy + ls * torch.nn.functional.cosine_similarity(f_y, f_x, dim=1).sum()
            if li:
                energy = energy + li * (low_pass(y_var) - low_pass(x_t)).square().flatten(1).sum(1).sum()
            grad, = torch.autograd.grad(energy, y_var)
        return y_next - w_t * grad

    return sdedit(model, images, noise, t0, num_steps, schedule, step_hook=guide)


def indexed_noise(seed: int, stream: str, indices, shape: tuple[int, ...]) -> torch.Tensor:
    """Noise for sample index i depends on (seed, stream, i) only, not on the batching:
    every model gets the same starting noise for the same index."""
    out = [torch.randn(shape, generator=torch.Generator().manual_seed(derived_seed(seed, stream, i)))
           for i in indices]
    return torch.stack(out)
