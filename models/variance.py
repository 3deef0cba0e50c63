"""The Gaussian side of diffusion: the posterior q(x_{t-1} | x_t, x0), the model's
p(x_{t-1} | x_t) with a fixed or learned variance, and the variational-bound terms.

A guided-diffusion `learn_sigma` network (ffhq_p2) predicts, next to eps, values v in
[-1, 1] that place its log-variance between the posterior's (v = -1) and beta_t's (v = 1):
the "learned range". The official code trains v with the variational bound and samples
with it; this module holds what both need, for any chain of kept timesteps (respacing).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

LN2 = math.log(2.0)


# ---------------------------------------------------------------- likelihood helpers
def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor,
              logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats."""
    return 0.5 * (logvar2 - logvar1 - 1.0 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2).square() * torch.exp(-logvar2))


def _standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    # The tanh approximation, not erf: the official loss values are defined with it.
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor,
                                        log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per element, in nats, of N(mean, e^(2 log_scale)) integrated over x's
    8-bit bin (width 2/255 in [-1, 1]); the two end bins take the tails."""
    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_upper = _standard_normal_cdf(inv_std * (centred + 1.0 / 255.0))
    cdf_lower = _standard_normal_cdf(inv_std * (centred - 1.0 / 255.0))
    tiny = 1e-12
    log_below = torch.log(cdf_upper.clamp(min=tiny))
    log_above = torch.log((1.0 - cdf_lower).clamp(min=tiny))
    log_bin = torch.log((cdf_upper - cdf_lower).clamp(min=tiny))
    return torch.where(x < -0.999, log_below, torch.where(x > 0.999, log_above, log_bin))


def _flat_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


# ---------------------------------------------------------------- the chain
class Chain:
    """The Markov chain over kept timesteps tau_0 < ... < tau_{N-1} of a schedule.

    Index i of the chain is timestep tau_i of the network; its step goes to tau_{i-1}
    (alpha_bar = 1 below tau_0) with beta_i = 1 - abar(tau_i) / abar(tau_{i-1}). All T
    timesteps give the training chain. Tables are float64 and cast to float32 after
    indexing, as guided-diffusion does.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, timesteps: Sequence[int] | None = None):
        full = alphas_cumprod.double().cpu()
        kept = list(range(len(full))) if timesteps is None else list(timesteps)
        if not kept or sorted(set(kept)) != kept:
            raise ValueError("timesteps must be a non-empty ascending list without repeats")
        self.timesteps = torch.tensor(kept, dtype=torch.long)
        abar = full[self.timesteps]
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        betas = 1.0 - abar / abar_prev
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        # The posterior variance is 0 at i = 0; its log takes the next step's value there.
        first = post_var[1:2] if len(kept) > 1 else betas[:1]
        self.tables = {
            "abar": abar, "abar_prev": abar_prev, "log_beta": betas.log(),
            "post_log_var": torch.cat([first, post_var[1:]]).log(),
            "fixed_large_log_var": torch.cat([first, betas[1:]]).log(),
            "sqrt_recip_abar": (1.0 / abar).sqrt(), "sqrt_recipm1_abar": (1.0 / abar - 1.0).sqrt(),
            "coef_x0": betas * abar_prev.sqrt() / (1.0 - abar),
            "coef_xt": (1.0 - abar_prev) * (1.0 - betas).sqrt() / (1.0 - abar),
        }
        self._on_device: dict[torch.device, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.timesteps)

    def at(self, name: str, i: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table `name` at chain indices i (batch,), shaped to broadcast against `like`."""
        if i.device not in self._on_device:     # one copy per device, not one per call
            self._on_device[i.device] = {k: v.to(i.device) for k, v in self.tables.items()}
        value = self._on_device[i.device][name][i].float()
        return value.view(-1, *([1] * (like.dim() - 1)))

    def model_timesteps(self, i: torch.Tensor) -> torch.Tensor:
        """The network's timestep for chain index i."""
        return self.timesteps.to(i.device)[i]

    def predict_x0(self, x_t, i, eps):
        return self.at("sqrt_recip_abar", i, x_t) * x_t - self.at("sqrt_recipm1_abar", i, x_t) * eps

    def predict_eps(self, x_t, i, x0):
        return (self.at("sqrt_recip_abar", i, x_t) * x_t - x0) / self.at("sqrt_recipm1_abar", i, x_t)

    def posterior(self, x0, x_t, i) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (clipped) log-variance of q(x_{tau_{i-1}} | x_{tau_i}, x0)."""
        mean = self.at("coef_x0", i, x_t) * x0 + self.at("coef_xt", i, x_t) * x_t
        return mean, self.at("post_log_var", i, x_t).expand_as(x_t)

    def log_variance(self, var_values: torch.Tensor | None, i, x_t) -> torch.Tensor:
        """The learned range (values in [-1, 1] from the posterior's to beta's log-variance),
        or without learned values guided-diffusion's fixed "large" variance (beta)."""
        if var_values is None:
            return self.at("fixed_large_log_var", i, x_t).expand_as(x_t)
        frac = (var_values + 1.0) / 2.0
        return frac * self.at("log_beta", i, x_t) + (1.0 - frac) * self.at("post_log_var", i, x_t)

    def p_mean_variance(self, eps, var_values, x_t, i, clip_denoised: bool):
        """(mean, log-variance, x0 prediction) of p(x_{tau_{i-1}} | x_{tau_i}), with x0
        clipped to [-1, 1] before the mean is formed when `clip_denoised`."""
        x0 = self.predict_x0(x_t, i, eps)
        if clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        mean, _ = self.posterior(x0, x_t, i)
        return mean, self.log_variance(var_values, i, x_t), x0

    def vb_bits(self, x0, x_t, i, eps, var_values) -> torch.Tensor:
        """Per sample: KL(q || p) in bits per dimension, or at i = 0 the decoder's NLL of x0.

        Gradients reach only what the caller leaves attached (the official hybrid loss
        detaches eps, so the bound trains the variance alone)."""
        mean, log_var, _ = self.p_mean_variance(eps, var_values, x_t, i, clip_denoised=False)
        true_mean, true_log_var = self.posterior(x0, x_t, i)
        kl = _flat_mean(normal_kl(true_mean, true_log_var, mean, log_var)) / LN2
        nll = -_flat_mean(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)) / LN2
        return torch.where(i == 0, nll, kl)
