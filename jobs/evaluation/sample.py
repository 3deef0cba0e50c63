"""One batch of a product: unconditional samples (DDIM, the ancestral sampler or a diffusers
solver) or translations (SDEdit, EGSDE; always DDIM) from one model, and its files in work/.

The noise of image i depends only on the product's seed, its split's stream
(jobs/evaluation/splits.py) and i (models.sampling.indexed_noise), so a batch gives the same
images whichever actor samples it, and every model of a grid gets the same noise.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from runs.spec import EvalSettings
from jobs.evaluation import splits
from jobs.evaluation.plan import Batch
from models.data import to_uint8
from models.sampling import Sampled, ancestral_sample, ddim_sample, egsde, indexed_generators, indexed_noise, sdedit
from models.solvers import SOLVERS, solver_sample


def sample_batch(model, batch: Batch, seed: int, settings: EvalSettings, resolution: int, device,
                 x0: torch.Tensor | None = None, domain=None, schedule=None) -> Sampled:
    """The batch's images. x0: the translation inputs (model range, on `device`); domain:
    EGSDE's domain-classifier features; schedule: the model's (None: linear)."""
    s, p = settings, batch.product
    indices = range(batch.start, batch.stop)
    stream = lambda name: splits.stream(name, p.split)  # noqa: E731
    # translations always run DDIM; the respacing is theirs only when DDIM is the sampler
    ddim = dict(num_steps=s.ddim_steps, clip_denoised=s.clip_denoised, schedule=schedule,
                respacing=s.respacing if s.sampler == "ddim" else None)
    if p.task == "unconditional":
        noise = indexed_noise(seed, stream("unconditional"), indices, (3, resolution, resolution)).to(device)
        if s.sampler == "ancestral":
            return ancestral_sample(model, noise, schedule=schedule, respacing=s.respacing,
                                    clip_denoised=s.clip_denoised,
                                    generator=indexed_generators(seed, stream("ancestral"), indices))
        if s.sampler in SOLVERS:
            return solver_sample(model, noise, s.sampler, s.solver_steps, schedule=schedule,
                                 clip_denoised=s.clip_denoised)
        return ddim_sample(model, noise, **ddim)
    noise = indexed_noise(seed, stream("translation"), indices, tuple(x0.shape[1:])).to(device)
    if p.task == "sdedit":
        return sdedit(model, x0, noise, t0=p.t0, **ddim)
    return egsde(model, x0, noise, domain, t0=p.t0, ls=s.egsde_ls, li=s.egsde_li,
                 low_pass_factor=s.egsde_low_pass_factor, **ddim)


def write_batch(out: Path, sampled: Sampled) -> Path:
    """work/<batch>.npy (uint8 images) and, first, work/<batch>.x0.npy (the last step's x0
    excess): a batch whose images exist has both. Each file atomically."""
    out.parent.mkdir(exist_ok=True)
    excess = out.with_name(f"{out.stem}.x0.npy")
    tmp = out.with_name(f".{excess.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, sampled.x0_excess.cpu().numpy())
    os.replace(tmp, excess)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, to_uint8(sampled.images).cpu().numpy())
    os.replace(tmp, out)
    return out
