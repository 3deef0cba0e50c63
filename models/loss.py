"""The training losses: plain diffusion (pretrain, scratch, naive) and SDFT.

    L = L_diff + lambda_distill * L_distill + lambda_aux * L_aux

as JiwanHur/SDFT computes it: the student's output on x_t serves both L_diff and L_distill,
the auxiliary input is the pure-noise tensor itself, and the SNR weights are not normalised.
One student forward runs over the concatenated batch [x_t; noise] and one teacher forward
under inference mode: about 8/3 of a naive step, never more.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

from models.schedule import NoiseSchedule
from models.weighting import WEIGHTINGS

# (x, t) -> predicted noise, float32. Casting to the network's precision is the caller's job.
EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class LossTerms:
    total: torch.Tensor
    diff: torch.Tensor
    distill: torch.Tensor | None = None
    aux: torch.Tensor | None = None

    def as_floats(self) -> dict[str, float]:
        out = {"loss": self.total, "loss_diff": self.diff, "loss_distill": self.distill, "loss_aux": self.aux}
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
        t, noise, x_t = self.sample_inputs(images, generator)
        if teacher is None or not self.needs_teacher:
            diff = (student(x_t, t) - noise).square().mean()
            return LossTerms(total=diff, diff=diff)

        batch = images.shape[0]
        with_aux = self.lambda_aux > 0
        inputs, times = x_t, t
        if with_aux:
            t_aux = t if self.aux_timestep == "sampled" else torch.full_like(t, self.schedule.num_timesteps - 1)
            inputs, times = torch.cat([x_t, noise]), torch.cat([t, t_aux])
        eps_student = student(inputs, times)
        with torch.inference_mode():
            eps_teacher = teacher(inputs, times)
        # Inference tensors may not be saved for backward; the difference below is a normal tensor.
        gap = (eps_teacher.float() - eps_student).square()

        eps_xt = eps_student[:batch]
        diff = (eps_xt - noise).square().mean()
        distill = (self.weight(t, self.gamma_distill) * _per_sample_mean(gap[:batch])).mean()
        total = diff + self.lambda_distill * distill
        aux = None
        if with_aux:
            aux = (self.weight(times[batch:], self.gamma_aux) * _per_sample_mean(gap[batch:])).mean()
            total = total + self.lambda_aux * aux
        return LossTerms(total=total, diff=diff, distill=distill, aux=aux)
