"""The two sets of weights a training run keeps: the EMA (RUN_DIR/model, as before) and the
raw weights the optimizer ended with (RUN_DIR/model-raw), which is what the official SDFT
scripts sample (`model010000.pt`). An evaluation picks one with `evaluation.weights`.

Under bf16/fp16 the raw weights are DeepSpeed's fp32 master weights (what guided-diffusion
saves too), gathered from the ZeRO partitions; only fp16 without ZeRO (DeepSpeed's
FP16_Optimizer exposes no master copy) falls back to the module's fp16 weights.
No torch at import: jobs.evaluate's driver imports this.
"""
from __future__ import annotations

from pathlib import Path

RAW_SUFFIX = "-raw"


def raw_twin(model_dir: str | Path) -> Path:
    """The raw-weights folder beside an EMA model folder: model -> model-raw,
    model-step00000250 -> model-step00000250-raw."""
    model_dir = Path(model_dir)
    return model_dir.with_name(model_dir.name + RAW_SUFFIX)


def master_weights(engine) -> dict:
    """The engine's parameters as fp32 master weights, on the CPU. A collective under ZeRO:
    every rank must call it."""
    import torch
    from deepspeed.utils import safe_get_full_fp32_param

    out = {}
    for name, param in engine.module.named_parameters():
        full = safe_get_full_fp32_param(param)
        out[name] = (full if full is not None else param.detach()).to("cpu", torch.float32).clone()
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
