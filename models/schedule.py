"""The DDPM noise schedule: linear betas 1e-4..0.02 over T=1000 steps, eps-prediction."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.respacing import NUM_TIMESTEPS


@dataclass(frozen=True)
class NoiseSchedule:
    num_timesteps: int = NUM_TIMESTEPS
    beta_start: float = 1e-4
    beta_end: float = 0.02

    @property
    def betas(self) -> torch.Tensor:
        # float64 as guided-diffusion computes it; callers cast where they use it
        return torch.linspace(self.beta_start, self.beta_end, self.num_timesteps, dtype=torch.float64)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return torch.cumprod(1.0 - self.betas, dim=0)

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """abar_t for integer timesteps t (any shape), as float32 on t's device."""
        return self.alphas_cumprod.to(t.device)[t.long()].float()

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """SNR(t) = abar_t / (1 - abar_t), computed in float64 before the cast."""
        abar = self.alphas_cumprod.to(t.device)[t.long()]
        return (abar / (1.0 - abar)).float()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, t of shape (batch,).

        The square roots are taken in float64 before the cast, as guided-diffusion does: near
        t = 0 the decoder likelihood's narrow bins magnify a one-ulp difference in x_t."""
        abar = self.alphas_cumprod.to(t.device)[t.long()].view(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt().to(x0.dtype) * x0 + (1.0 - abar).sqrt().to(x0.dtype) * noise
