"""The plain diffusion loss and what every method's loss shares (runs/methods/ holds the
methods' losses, each beside its settings).

L_diff is guided-diffusion's eps MSE at t ~ U{0..T-1}. A learned-variance network (6
channels for RGB) trains as the official hybrid loss does: L_diff plus the variational bound
on the variance channels with eps detached, scaled by T/1000 (guided-diffusion's
RESCALED_MSE). Pretraining, scratch and naive fine-tuning use `DiffusionLoss` as it is;
a method adds its terms to the `per_sample` it returns.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from models.networks import EpsModel, split_output
from models.schedule import NoiseSchedule
from models.variance import Chain

__all__ = ["DiffusionLoss", "EpsModel", "LossTerms", "per_sample_mean"]


@dataclass
class LossTerms:
    """Batch means of each term; `per_sample` is the total before the batch mean. `extra`:
    a method's own terms by name (logged as loss_<name>)."""
    total: torch.Tensor
    diff: torch.Tensor
    per_sample: torch.Tensor
    vb: torch.Tensor | None = None
    distill: torch.Tensor | None = None
    aux: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def as_floats(self) -> dict[str, float]:
        out = {"loss": self.total, "loss_diff": self.diff, "loss_vb": self.vb,
               "loss_distill": self.distill, "loss_aux": self.aux,
               **{f"loss_{name}": value for name, value in self.extra.items()}}
        return {k: float(v.detach()) for k, v in out.items() if v is not None}


def per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


# ----------------------------------------------------------------------------
# The plain eps-prediction loss, with the official hybrid term for a learned variance.

class DiffusionLoss:
    def __init__(self, schedule: NoiseSchedule | None = None):
        self.schedule = schedule or NoiseSchedule()
        self.chain = Chain(self.schedule.alphas_cumprod)     # all T steps: the training chain

    def sample_inputs(self, images: torch.Tensor, generator: torch.Generator | None = None):
        """t ~ U{0..T-1}, noise ~ N(0, I), x_t; one generator makes a step reproducible."""
        t = torch.randint(0, self.schedule.num_timesteps, (images.shape[0],), generator=generator,
                          device=images.device)
        noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        return t, noise, self.schedule.add_noise(images, noise, t)

    def __call__(self, student: EpsModel, images: torch.Tensor, teacher: EpsModel | None = None,
                 generator: torch.Generator | None = None) -> LossTerms:
        t, noise, _ = self.sample_inputs(images, generator)
        return self.terms(student, images, t, noise)

    def terms(self, student: EpsModel, images: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
              teacher: EpsModel | None = None) -> LossTerms:
        """The loss at given timesteps and noise (`__call__` draws them)."""
        x_t = self.schedule.add_noise(images, noise, t)
        eps, var_values = split_output(student(x_t, t), images.shape[1])
        per_sample, diff, vb = self.diffusion(images, x_t, t, noise, eps, var_values)
        return LossTerms(total=per_sample.mean(), diff=diff, per_sample=per_sample, vb=vb)

    def diffusion(self, images, x_t, t, noise, eps, var_values):
        """(per-sample L_diff [+ L_vb], its batch mean, the L_vb batch mean or None) from the
        student's eps and variance outputs at x_t."""
        per_sample = per_sample_mean((eps - noise).square())
        diff = per_sample.mean()
        vb = None
        if var_values is not None:
            # The bound trains the variance only: the mean it sees comes from a detached eps.
            vb_bits = self.chain.vb_bits(images, x_t, t, eps.detach(), var_values)
            vb_bits = vb_bits * (self.schedule.num_timesteps / 1000.0)
            per_sample = per_sample + vb_bits
            vb = vb_bits.mean()
        return per_sample, diff, vb
