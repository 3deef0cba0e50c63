"""ewc: the pull of l2sp weighted by how much each weight mattered to the source (elastic
weight consolidation; Kirkpatrick et al., "Overcoming catastrophic forgetting in neural
networks", PNAS 2017):

    L = L_diff + lambda_ewc * sum_i F_i (theta_i - theta_src_i)^2

F is the diagonal Fisher of the diffusion loss on the source's own data, estimated once
before fine-tuning: the mean over `fisher_batches` batches (the run's batch size, eps
MSE at random t and noise, the source model in eval mode) of the squared gradient of the
batch loss. F is not normalised, so lambda_ewc carries its scale: sweep it. On the built-in
pair's source model mean(F) is 8.3e-9, so the default 100 barely pulls; lambda_ewc =
lambda_l2sp / mean(F) gives l2sp's mean pull, spread by F (grids/benchmark.yaml: 1.2e6).

The estimate depends on the source model, its data, the number of batches and the batch
size only, so every ewc run that shares them shares it: it is cached in the results
store under _cache/ewc-fisher/, named by a hash of those settings (the source model by
its run id, `run:<id>`, or its folder).
"""
from __future__ import annotations

import hashlib
import json
import os

from runs.methods import Method
from runs.methods.l2sp import PullToSource
from runs.numbers import Whole
from runs.params import NonNeg, Param

PARAMS = (
    Param("lambda_ewc", NonNeg, "number", 100.0, "λewc", "method"),
    Param("fisher_batches", Whole(gt=0, le=100_000), "whole number", 50, "Fisher batches", "method"),
)


# ----------------------------------------------------------------------------
# The diagonal Fisher.

def diagonal_fisher(model, batch_loss, batches) -> dict:
    """name -> mean over `batches` of the squared gradient of batch_loss(model, batch)."""
    import torch

    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in model.named_parameters() if p.requires_grad}
    count = 0
    for batch in batches:
        model.zero_grad(set_to_none=True)
        batch_loss(model, batch).backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                fisher[n] += p.grad.detach().float().square()
        count += 1
    model.zero_grad(set_to_none=True)
    return {n: f / max(count, 1) for n, f in fisher.items()}


def fisher_key(spec, fisher_batches: int) -> str:
    """The cache's name for a Fisher: what computes it, the source's working precision included
    (the job loads the source in the run's precision; the fp32 copy keeps bf16's rounding)."""
    what = {"init": spec.init, "source_data": spec.source_data.model_dump(mode="json"),
            "fisher_batches": fisher_batches, "batch_size": spec.batch_size, "precision": spec.precision}
    return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:10]


def source_fisher(source, context, fisher_batches: int) -> dict:
    """The source model's diagonal Fisher on its data: from the store's cache, or computed
    (and cached) on an fp32 copy of the source."""
    import copy

    import torch
    from safetensors.torch import load_file, save_file

    from runs.store import store_root_of
    from models.data import open_dataset, to_model_range
    from models.loss import DiffusionLoss
    from models.networks import as_eps_model, schedule_of
    from models.seeding import derived_seed

    spec = context.spec
    cache = store_root_of(context.run_dir).parent / "_cache" / "ewc-fisher" / f"{fisher_key(spec, fisher_batches)}.safetensors"
    if cache.is_file():
        return load_file(cache)
    model = copy.deepcopy(source).float().eval().requires_grad_(True)
    dataset = open_dataset(spec.source_data.model_dump())
    loss = DiffusionLoss(schedule_of(source))       # the source's data, the source's schedule
    generator = torch.Generator(device=context.device)

    def batch_loss(net, step):
        picks = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(derived_seed(0, step, "fisher")))
        images = to_model_range(torch.stack([dataset[int(i)] for i in picks[:spec.batch_size]]))
        generator.manual_seed(derived_seed(0, step, "fisher-noise"))
        return loss(as_eps_model(net), images.to(context.device), generator=generator).total

    fisher = diagonal_fisher(model, batch_loss, range(fisher_batches))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp")
    save_file({n: f.contiguous().cpu() for n, f in fisher.items()}, tmp)
    os.replace(tmp, cache)          # ranks that computed it too replace it with the same values
    return fisher


# ----------------------------------------------------------------------------
# The loss.

class EWCLoss(PullToSource):
    def __init__(self, *, lambda_ewc: float, fisher_batches: int, schedule=None):
        super().__init__(lambda_pull=lambda_ewc, name="ewc", schedule=schedule)
        self.fisher_batches = fisher_batches

    def prepare(self, student, source, context=None, importance: dict | None = None) -> None:
        if importance is None:
            importance = source_fisher(source, context, self.fisher_batches)
        super().prepare(student, source, context, importance=importance)


# measured as l2sp's (runs/methods/l2sp.py): 0.178 s a step against naive's 0.158 s, the
# one-off Fisher estimate (fisher_batches forward-backward passes) not counted
METHOD = Method(name="ewc", loss=EWCLoss, params=PARAMS, needs_source_model=True, needs_source_data=True,
                cost=1.13)
