"""The DDPM noise schedule, eps-prediction over T = 1000 steps: linear betas 1e-4..0.02 (DDPM,
guided-diffusion's "linear": the project's own models and the paper's ADM), or
improved-diffusion's "cosine" (Nichol & Dhariwal 2021), which a converted checkpoint may
name in its diffusion.json (`NoiseSchedule.from_info`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.respacing import NUM_TIMESTEPS

BETA_SCHEDULES = ("linear", "cosine")
# DDPM's linear betas at T = 1000 (guided-diffusion scales both ends by 1000 / T)
LINEAR_BETA_START = 1e-4
LINEAR_BETA_END = 0.02
# improved-diffusion's cosine: alpha_bar(u) = cos((u + s) / (1 + s) * pi / 2)^2, betas capped
COSINE_OFFSET = 0.008
COSINE_MAX_BETA = 0.999


@dataclass(frozen=True)
class NoiseSchedule:
    kind: str = "linear"              # one of BETA_SCHEDULES
    num_timesteps: int = NUM_TIMESTEPS

    def __post_init__(self):
        if self.kind not in BETA_SCHEDULES:
            raise ValueError(f"beta schedule {self.kind!r}: expected one of {list(BETA_SCHEDULES)}")

    @classmethod
    def from_info(cls, schedule: dict | None) -> "NoiseSchedule":
        """The schedule a model folder's diffusion.json names (its `schedule` object, as
        models/adm.py `diffusion_info` writes it); None (a folder without one): linear.
        Anything the losses and samplers here do not implement is a ValueError naming it."""
        if schedule is None:
            return cls()
        if not isinstance(schedule, dict):
            raise ValueError(f"schedule {schedule!r}: expected a JSON object")
        kind, steps = schedule.get("beta_schedule"), schedule.get("num_train_timesteps")
        if kind not in BETA_SCHEDULES or steps != NUM_TIMESTEPS:
            raise ValueError(f"schedule {schedule!r}: the harness trains and samples with "
                             f"{' or '.join(BETA_SCHEDULES)} betas over {NUM_TIMESTEPS} steps only")
        ours = cls(kind=kind)
        if any(not isinstance(schedule.get(k), (int, float)) or abs(schedule[k] - v) > 1e-12
               for k, v in ours.info().items() if k != "beta_schedule"):
            raise ValueError(f"schedule {schedule!r}: the harness's {kind} schedule is {ours.info()!r}")
        return ours

    def info(self) -> dict:
        """The diffusion.json `schedule` object of this schedule (guided-diffusion's terms)."""
        if self.kind == "cosine":
            return {"beta_schedule": "cosine", "s": COSINE_OFFSET, "max_beta": COSINE_MAX_BETA,
                    "num_train_timesteps": self.num_timesteps}
        return {"beta_schedule": "linear", "beta_start": LINEAR_BETA_START, "beta_end": LINEAR_BETA_END,
                "num_train_timesteps": self.num_timesteps}

    def diffusers_config(self) -> dict:
        """The same betas as a diffusers scheduler's config keys (its "squaredcos_cap_v2" is
        improved-diffusion's cosine, capped at 0.999)."""
        if self.kind == "cosine":
            return {"num_train_timesteps": self.num_timesteps, "beta_schedule": "squaredcos_cap_v2"}
        return {"num_train_timesteps": self.num_timesteps, "beta_schedule": "linear",
                "beta_start": LINEAR_BETA_START, "beta_end": LINEAR_BETA_END}

    @property
    def betas(self) -> torch.Tensor:
        # float64 as guided-diffusion computes it; callers cast where they use it
        if self.kind == "cosine":
            return torch.tensor(cosine_betas(self.num_timesteps), dtype=torch.float64)
        return torch.linspace(LINEAR_BETA_START, LINEAR_BETA_END, self.num_timesteps, dtype=torch.float64)

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


def cosine_betas(num_timesteps: int) -> list[float]:
    """beta_i = min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999), in Python floats as
    improved-diffusion's `betas_for_alpha_bar`."""
    def alpha_bar(u: float) -> float:
        return math.cos((u + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

    return [min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), COSINE_MAX_BETA)
            for i in range(num_timesteps)]
