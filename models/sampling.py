"""Samplers as plain functions: deterministic DDIM (eta 0) and guided-diffusion's ancestral
sampler with the learned variance, both on a respaced chain (`models.respacing`).

A step index i runs the model at timestep tau_i and moves the state to tau_{i-1}; the last
step (i = 0) lands on the clean image (alpha_bar = 1, as `set_alpha_to_one`).
With `clip_denoised` (the official default) each step clips the predicted x0 to [-1, 1] and,
in DDIM, re-derives eps from the clipped x0, as guided-diffusion does. Every sampler also
reports, per sample, how far the last step's x0 prediction left [-1, 1] (before clipping).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch

from models.networks import EpsModel, split_output
from models.respacing import respaced_timesteps
from models.schedule import NoiseSchedule
from models.seeding import derived_seed
from models.variance import Chain

# (y, t, y_next) -> y_next corrected: where EGSDE-style guidance plugs into a DDIM step.
StepHook = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]


# `Sampled.clipped` (and the evaluation's `clipped_share`) counts a sample when its last-step
# x0 leaves [-1, 1] by more than this: 5 % of the range (13 of 255 levels). Every sample of a sane model overshoots a little (the
# demo's models: at most 0.04 unconditional, 0.1 under EGSDE's guidance; any overshoot at
# all in 52-100 % of samples), so a zero tolerance reads ~100 % and hides the divergence
# the figure is for (colour noise overshoots by whole units).
CLIP_TOLERANCE = 0.1


class Sampled(NamedTuple):
    images: torch.Tensor
    # per sample: max(|x0| - 1, 0) of the last step's x0 prediction before any clipping
    x0_excess: torch.Tensor

    def clipped(self, tolerance: float = CLIP_TOLERANCE) -> torch.Tensor:
        """Per sample: did the last step's x0 leave [-1, 1] by more than `tolerance`?"""
        return self.x0_excess > tolerance


def range_excess(x0: torch.Tensor) -> torch.Tensor:
    """How far each image's x0 prediction reaches beyond [-1, 1] (its largest excess; 0 within)."""
    return (x0.abs() - 1.0).clamp(min=0).flatten(1).amax(1)


def ddim_timesteps(num_steps: int = 40, num_train_timesteps: int = 1000) -> list[int]:
    """Ascending timesteps tau_0..tau_{N-1} of guided-diffusion's `ddimN`: [0, 25, ..., 975] for 40."""
    if not 0 < num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in 1..{num_train_timesteps}, got {num_steps}")
    return respaced_timesteps(f"ddim{num_steps}", num_train_timesteps)


def sampler_timesteps(respacing: str | None, num_steps: int, num_train_timesteps: int) -> list[int]:
    """The respacing's timesteps, or `ddim{num_steps}` without one."""
    if respacing is None:
        return ddim_timesteps(num_steps, num_train_timesteps)
    return respaced_timesteps(respacing, num_train_timesteps)


def _batch_index(i: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)


@torch.no_grad()
def ddim_loop(model: EpsModel, x: torch.Tensor, timesteps: list[int], schedule: NoiseSchedule,
              step_hook: StepHook | None = None, progress: bool = False,
              clip_denoised: bool = True) -> Sampled:
    """Run DDIM (eta 0) from state x at timesteps[-1] down to the clean image.

    `timesteps` is ascending (a prefix of a respaced grid): the steps run from its end.
    A learned-variance model contributes its eps channels only.
    """
    chain = Chain(schedule.alphas_cumprod, timesteps)
    order = range(len(chain) - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm
        order = tqdm(order, desc="ddim", leave=False)
    excess = x.new_zeros(x.shape[0])
    for i in order:
        idx = _batch_index(i, x)
        eps, _ = split_output(model(x, chain.model_timesteps(idx)), x.shape[1])
        x0 = chain.predict_x0(x, idx, eps)
        if i == 0:
            excess = range_excess(x0)
        if clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
            eps = chain.predict_eps(x, idx, x0)
        a_prev = chain.at("abar_prev", idx, x)
        x_next = a_prev.sqrt() * x0 + (1.0 - a_prev).sqrt() * eps
        x = x_next if step_hook is None else step_hook(x, timesteps[i], x_next)
    return Sampled(x, excess)


def ddim_sample(model: EpsModel, noise: torch.Tensor, num_steps: int = 40,
                schedule: NoiseSchedule | None = None, progress: bool = False,
                clip_denoised: bool = True, respacing: str | None = None) -> Sampled:
    """Unconditional generation from given initial noise: the same noise, the same image.
    `respacing` (e.g. "ddim40", "50,50") replaces `ddim{num_steps}` when given."""
    schedule = schedule or NoiseSchedule()
    timesteps = sampler_timesteps(respacing, num_steps, schedule.num_timesteps)
    return ddim_loop(model, noise, timesteps, schedule, progress=progress, clip_denoised=clip_denoised)


@torch.no_grad()
def ancestral_sample(model: EpsModel, noise: torch.Tensor, schedule: NoiseSchedule | None = None,
                     respacing: str | None = None, clip_denoised: bool = True,
                     generator: torch.Generator | Sequence[torch.Generator] | None = None,
                     step_noise: Sequence[torch.Tensor] | None = None, progress: bool = False) -> Sampled:
    """guided-diffusion's `p_sample_loop` on a respaced chain (None: all T steps), as the
    official sampling script runs it without --use_ddim: x <- mean + sigma * z, with the
    model's learned-range variance (or, for an eps-only model, guided-diffusion's fixed
    "large" variance) and no noise at the last step.

    z comes from `step_noise[k]` at the k-th step (k = 0 the noisiest) when given; else from
    `generator`, which may be one generator per sample so that a sample's noise does not
    depend on its batch.
    """
    schedule = schedule or NoiseSchedule()
    timesteps = (list(range(schedule.num_timesteps)) if respacing is None
                 else respaced_timesteps(respacing, schedule.num_timesteps))
    chain = Chain(schedule.alphas_cumprod, timesteps)
    if step_noise is not None and len(step_noise) != len(chain):
        raise ValueError(f"step_noise has {len(step_noise)} tensors for {len(chain)} steps")
    if isinstance(generator, Sequence) and len(generator) != noise.shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {noise.shape[0]}")
    x, excess = noise, noise.new_zeros(noise.shape[0])
    order = range(len(chain) - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm
        order = tqdm(order, desc="ancestral", leave=False)
    for k, i in enumerate(order):
        idx = _batch_index(i, x)
        eps, var_values = split_output(model(x, chain.model_timesteps(idx)), x.shape[1])
        if i == 0:
            excess = range_excess(chain.predict_x0(x, idx, eps))
        mean, log_var, _ = chain.p_mean_variance(eps, var_values, x, idx, clip_denoised)
        z = _draw(step_noise[k] if step_noise is not None else None, generator, x)
        x = mean + torch.exp(0.5 * log_var) * z if i > 0 else mean
    return Sampled(x, excess)


def p_mean_variance(model: EpsModel, chain: Chain, x: torch.Tensor, idx: torch.Tensor,
                    clip_denoised: bool = True):
    """(mean, log-variance, x0 prediction) of the model's step at chain indices idx."""
    eps, var_values = split_output(model(x, chain.model_timesteps(idx)), x.shape[1])
    return chain.p_mean_variance(eps, var_values, x, idx, clip_denoised)


def _draw(given: torch.Tensor | None, generator, x: torch.Tensor) -> torch.Tensor:
    if given is not None:
        return given.to(x.device, x.dtype)
    if isinstance(generator, Sequence):
        return torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype) for g in generator]).to(x.device)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype,
                       device=generator.device if generator is not None else x.device).to(x.device)


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
           step_hook: StepHook | None = None, clip_denoised: bool = True,
           respacing: str | None = None) -> Sampled:
    """SDEdit: noise the (source-domain) images to t0 and denoise them with DDIM."""
    schedule = schedule or NoiseSchedule()
    grid = sampler_timesteps(respacing, num_steps, schedule.num_timesteps)
    k = start_index(t0, len(grid))
    if k == 0:
        return Sampled(images.clone(), range_excess(images))
    timesteps = grid[:k]
    t_start = torch.full((images.shape[0],), timesteps[-1], dtype=torch.long, device=images.device)
    x = schedule.add_noise(images, noise, t_start)
    return ddim_loop(model, x, timesteps, schedule, step_hook=step_hook, clip_denoised=clip_denoised)


# EGSDE's 256 px setting: down_N = 32, so L keeps an 8 x 8 image at any resolution
LOW_PASS_SIZE = 8


def low_pass(x: torch.Tensor, factor: int | None = None) -> torch.Tensor:
    """EGSDE's L: down-sample by `factor` and up-sample back. None: down to 8 x 8 (a factor
    of image_size / 8, as EGSDE's down_N = 32 at 256 px)."""
    if factor is None:
        size = (LOW_PASS_SIZE, LOW_PASS_SIZE)
    else:
        _check_low_pass_factor(factor, x.shape[-2:])
        size = (x.shape[-2] // factor, x.shape[-1] // factor)
    small = torch.nn.functional.interpolate(x, size=size, mode="area")
    return torch.nn.functional.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _check_low_pass_factor(factor: int | None, shape: Sequence[int]) -> None:
    if factor is None:
        return
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1 or any(n % factor for n in shape):
        raise ValueError(f"low-pass factor must be a whole number that divides the image size "
                         f"{tuple(shape)}, got {factor!r}")


def realism_energy(f_y: torch.Tensor, f_x: torch.Tensor) -> torch.Tensor:
    """EGSDE's realism energy per sample: at each location of the feature maps (B, C, H, W)
    the cosine between the two channel vectors, averaged over the locations, as EGSDE's
    code computes it (not one cosine over the flattened maps, which weights the locations
    by their feature norms). Lower: less like the source image's features."""
    cosine = torch.nn.functional.cosine_similarity(f_y, f_x, dim=1)
    return cosine.reshape(f_y.shape[0], -1).mean(1)


def egsde(model: EpsModel, images: torch.Tensor, noise: torch.Tensor,
          features: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], t0: float = 0.5,
          ls: float = 500.0, li: float = 2.0, num_steps: int = 40,
          schedule: NoiseSchedule | None = None, clip_denoised: bool = True,
          respacing: str | None = None, low_pass_factor: int | None = None) -> Sampled:
    """EGSDE on DDIM: SDEdit whose every step is pushed down two energies.

    With x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) e the noised source image (e: the start
    noise, so the whole translation is deterministic) and y the current image:
      realism      ls * `realism_energy(f(y, t), f(x_t, t))` (per location cosine, averaged),
                   f the time-conditioned domain classifier's feature map: lower means less
                   like the source domain;
      faithfulness li * ||L(y) - L(x_t)||^2, L = `low_pass` by `low_pass_factor`: keep the
                   low frequencies.
    y moves down both: y_next - w_t * grad_y(energies), as EGSDE's code (mean - ls * w_t *
    grad cos ...), with w_t = beta_t / sqrt(alpha_t) of the (respaced) step. It is not
    classifier guidance toward a label.
    """
    _check_low_pass_factor(low_pass_factor, images.shape[-2:])
    schedule = schedule or NoiseSchedule()
    abar = schedule.alphas_cumprod
    grid = sampler_timesteps(respacing, num_steps, schedule.num_timesteps)
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
                f_y = features(y_var, tt)
                with torch.no_grad():
                    f_x = features(x_t, tt)
                energy = energy + ls * realism_energy(f_y, f_x).sum()
            if li:
                gap = low_pass(y_var, low_pass_factor) - low_pass(x_t, low_pass_factor)
                energy = energy + li * gap.square().flatten(1).sum(1).sum()
            grad, = torch.autograd.grad(energy, y_var)
        return y_next - w_t * grad

    return sdedit(model, images, noise, t0, num_steps, schedule, step_hook=guide,
                  clip_denoised=clip_denoised, respacing=respacing)


def indexed_generators(seed: int, stream: str, indices) -> list[torch.Generator]:
    """One generator per sample index, seeded by (seed, stream, i): per-step noise that,
    like `indexed_noise`, does not depend on the batching."""
    return [torch.Generator().manual_seed(derived_seed(seed, stream, i)) for i in indices]


def indexed_noise(seed: int, stream: str, indices, shape: tuple[int, ...]) -> torch.Tensor:
    """Noise for sample index i depends on (seed, stream, i) only, not on the batching:
    every model gets the same starting noise for the same index."""
    out = [torch.randn(shape, generator=torch.Generator().manual_seed(derived_seed(seed, stream, i)))
           for i in indices]
    return torch.stack(out)
