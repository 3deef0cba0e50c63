"""The training losses: plain diffusion (pretrain, scratch, naive) and SDFT.

    L = L_diff + lambda_distill * L_distill + lambda_aux * L_aux

as JiwanHur/SDFT computes it: the student's output on x_t serves both L_diff and L_distill,
the auxiliary input is the pure-noise tensor itself, and the SNR weights are not normalised.
One student forward runs over the concatenated batch [x_t; noise] and one teacher forward
under inference mode: about 8/3 of a naive step, never more.

A learned-variance network (6 channels for RGB) trains as the official hybrid loss does:
L_diff is the eps MSE plus the variational bound on the variance channels with eps
detached, scaled by T/1000 (guided-diffusion's RESCALED_MSE); the distillation and aux terms
compare eps channels only, and the teacher's variance channels are discarded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from models.networks import EpsModel, split_output
from models.schedule import NoiseSchedule
from models.variance import Chain
from models.weighting import WEIGHTINGS

__all__ = ["EpsModel", "LossTerms", "SDFTLoss"]


@dataclass
class LossTerms:
    """Batch means of each term; `per_sample` is the total before the batch mean."""
    total: torch.Tensor
    diff: torch.Tensor
    per_sample: torch.Tensor
    vb: torch.Tensor | None = None
    distill: torch.Tensor | None = None
    aux: torch.Tensor | None = None

    def as_floats(self) -> dict[str, float]:
        out = {"loss": self.total, "loss_diff": self.diff, "loss_vb": self.vb,
               "loss_distill": self.distill, "loss_aux": self.aux}
        return {k: float(v.detach()) for k, v in out.items() if v is not None}


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


class SDFTLoss:
    """With both lambdas 0 (or no teacher) this is the plain eps-prediction loss, no teacher pass."""

    def __init__(self, schedule: NoiseSchedule | None = None, *, lambda_distill: float = 0.0,
                 lambda_aux: float = 0.0, weighting: str = "sdft", gamma_distill: float = 3.0,
                 gamma_aux: float = 50.0, k: float = 1.0, min_snr_gamma: float = 5.0,
                 aux_timestep: Literal["sampled", "final"] = "sampled"):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; expected one of {sorted(WEIGHTINGS)}")
        self.schedule = schedule or NoiseSchedule()
        self.lambda_distill = lambda_distill
        self.lambda_aux = lambda_aux
        self.weight_fn = WEIGHTINGS[weighting]
        self.gamma_distill, self.gamma_aux, self.k = gamma_distill, gamma_aux, k
        self.min_snr_gamma = min_snr_gamma
        self.aux_timestep = aux_timestep
        self.chain = Chain(self.schedule.alphas_cumprod)     # all T steps: the training chain

    @property
    def needs_teacher(self) -> bool:
        return self.lambda_distill > 0 or self.lambda_aux > 0

    def weight(self, t: torch.Tensor, gamma: float) -> torch.Tensor:
        return self.weight_fn(self.schedule.snr(t), gamma=gamma, k=self.k, min_snr_gamma=self.min_snr_gamma)

    def sample_inputs(self, images: torch.Tensor, generator: torch.Generator | None = None):
        """t ~ U{0..T-1}, noise ~ N(0, I), x_t; one generator makes a step reproducible."""
        t = torch.randint(0, self.schedule.num_timesteps, (images.shape[0],), generator=generator,
                          device=images.device)
        noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        return t, noise, self.schedule.add_noise(images, noise, t)

    def __call__(self, student: EpsModel, images: torch.Tensor, teacher: EpsModel | None = None,
                 generator: torch.Generator | None = None) -> LossTerms:
        t, noise, _ = self.sample_inputs(images, generator)
        return self.terms(student, images, t, noise, teacher)

    def terms(self, student: EpsModel, images: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
              teacher: EpsModel | None = None) -> LossTerms:
        """The loss at given timesteps and noise (`__call__` draws them)."""
        x_t = self.schedule.add_noise(images, noise, t)
        batch, channels = images.shape[:2]
        with_teacher = teacher is not None and self.needs_teacher
        with_aux = with_teacher and self.lambda_aux > 0
        inputs, times = x_t, t
        if with_aux:
            t_aux = t if self.aux_timestep == "sampled" else torch.full_like(t, self.schedule.num_timesteps - 1)
            inputs, times = torch.cat([x_t, noise]), torch.cat([t, t_aux])
        eps_student, var_values = split_output(student(inputs, times), channels)

        per_sample = _per_sample_mean((eps_student[:batch] - noise).square())
        diff = per_sample.mean()
        vb = None
        if var_values is not None:
            # The bound trains the variance only: the mean it sees comes from a detached eps.
            vb_bits = self.chain.vb_bits(images, x_t, t, eps_student[:batch].detach(), var_values[:batch])
            vb_bits = vb_bits * (self.schedule.num_timesteps / 1000.0)
            per_sample = per_sample + vb_bits
            vb = vb_bits.mean()
        if not with_teacher:
            return LossTerms(total=per_sample.mean(), diff=diff, per_sample=per_sample, vb=vb)

        with torch.inference_mode():
            eps_teacher, _ = split_output(teacher(inputs, times), channels)   # sigma channels dropped
        # Inference tensors may not be saved for backward; the difference below is a normal tensor.
        gap = _per_sample_mean((eps_teacher.float() - eps_student).square())
        distill_each = self.weight(t, self.gamma_distill) * gap[:batch]
        per_sample = per_sample + self.lambda_distill * distill_each
        aux = None
        if with_aux:
            aux_each = self.weight(times[batch:], self.gamma_aux) * gap[batch:]
            per_sample = per_sample + self.lambda_aux * aux_each
            aux = aux_each.mean()
        return LossTerms(total=per_sample.mean(), diff=diff, per_sample=per_sample, vb=vb,
                         distill=distill_each.mean(), aux=aux)
