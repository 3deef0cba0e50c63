"""The two sets of weights a training run keeps: the EMA (RUN_DIR/model, as before) and the
raw weights the optimizer ended with (RUN_DIR/model-raw), which is what the official SDFT
scripts sample (`model010000.pt`). An evaluation picks one with `evaluation.weights`.

Under bf16/fp16 the raw weights are DeepSpeed's fp32 master weights (guided-diffusion saves
its master weights too): gathered from the ZeRO partitions (stage 1, 2), or taken from the
fp16/bf16 optimizer's fp32 groups without ZeRO; in fp32 they are the module's own.
No torch at import: the evaluate stage's plan (jobs/evaluation/plan.py) imports this.
"""
from __future__ import annotations

from pathlib import Path

RAW_SUFFIX = "-raw"


def raw_twin(model_dir: str | Path) -> Path:
    """The raw-weights folder beside an EMA model folder: model -> model-raw,
    model-step00000250 -> model-step00000250-raw."""
    model_dir = Path(model_dir)
    return model_dir.with_name(model_dir.name + RAW_SUFFIX)


def _unpartitioned_masters(optimizer) -> dict[int, object]:
    """id(low-precision parameter) -> its fp32 master, for DeepSpeed's optimizers without
    ZeRO: FP16_UnfusedOptimizer (one fp32 tensor per parameter) and FP16_Optimizer (one
    flat fp32 tensor per group, in the group's parameter order)."""
    masters: dict[int, object] = {}
    lp_groups = getattr(optimizer, "fp16_groups", None)
    if lp_groups is None:
        return masters
    if hasattr(optimizer, "fp32_groups"):
        for lp_group, hp_group in zip(lp_groups, optimizer.fp32_groups):
            masters.update({id(lp): hp for lp, hp in zip(lp_group, hp_group)})
    elif hasattr(optimizer, "fp32_groups_flat"):
        for lp_group, flat in zip(lp_groups, optimizer.fp32_groups_flat):
            offset = 0
            for lp in lp_group:
                masters[id(lp)] = flat[offset:offset + lp.numel()].view_as(lp)
                offset += lp.numel()
    return masters


def master_weights(engine) -> dict:
    """The engine's parameters as fp32 master weights, on the CPU. A collective under ZeRO:
    every rank must call it."""
    import torch
    from deepspeed.utils import safe_get_full_fp32_param

    masters = _unpartitioned_masters(engine.optimizer)
    out = {}
    for name, param in engine.module.named_parameters():
        full = safe_get_full_fp32_param(param)          # ZeRO 1/2 (and bf16_optimizer)
        if full is None:
            full = masters.get(id(param), param.detach())
        out[name] = full.detach().to("cpu", torch.float32).clone()
    return out


def save_both(ema, engine, model_dir: str | Path, rank: int) -> None:
    """The EMA into `model_dir`, the raw weights into its twin (rank 0 writes; all ranks call)."""
    import copy

    from models.networks import save_unet

    raw = master_weights(engine)
    if rank != 0:
        return
    save_unet(ema.model, model_dir)
    model = copy.deepcopy(ema.model)            # same architecture, config and diffusion.json
    state = model.state_dict()                  # buffers (none in UNet2DModel) stay as the EMA's
    state.update(raw)
    model.load_state_dict(state, strict=True)
    save_unet(model, raw_twin(model_dir))
