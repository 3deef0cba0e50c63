"""Distillation weightings as pure functions of SNR(t). Not normalised, as in the official code.
Their settings' defaults are declared with sdft's settings (runs/methods/sdft.py)."""
from __future__ import annotations

from typing import Callable

import torch


def constant(snr: torch.Tensor, **_: float) -> torch.Tensor:
    return torch.ones_like(snr)


def sdft(snr: torch.Tensor, *, gamma: float, k: float, **_: float) -> torch.Tensor:
    """(k + SNR)^-gamma: the weight sits on the noisy end, where the source's prior matters."""
    return (k + snr).pow(-gamma)


def min_snr(snr: torch.Tensor, *, min_snr_gamma: float, **_: float) -> torch.Tensor:
    """min(SNR, gamma) / SNR: the Min-SNR weight in its eps-prediction form (official code)."""
    return snr.clamp(max=min_snr_gamma) / snr


WEIGHTINGS: dict[str, Callable[..., torch.Tensor]] = {
    "constant": constant,
    "sdft": sdft,
    "min-snr": min_snr,
}
