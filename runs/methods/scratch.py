"""scratch: train a fresh network of the same preset on the target alone, with the plain
diffusion loss: what the target set teaches without any source model."""
from __future__ import annotations

from runs.methods import Method
from runs.methods.naive import diffusion_loss

METHOD = Method(name="scratch", loss=diffusion_loss, starts_from_source=False)
