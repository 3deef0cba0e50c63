"""naive: fine-tune every weight of the source model on the target with the plain diffusion
loss (models/loss.py's DiffusionLoss), nothing else. The baseline every method is compared with."""
from __future__ import annotations

from runs.methods import Method


def diffusion_loss(*, schedule=None):
    from models.loss import DiffusionLoss

    return DiffusionLoss(schedule)


METHOD = Method(name="naive", loss=diffusion_loss)
