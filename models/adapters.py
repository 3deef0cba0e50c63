"""LoRA on the UNet through peft (the settings: runs/adapters.py).

The training job wraps the student in a peft model (`add_lora`); the engine, the EMA and
the checkpoints hold that wrapped model, so a checkpoint holds the adapter (A, B) beside
the frozen base weights. What leaves a run is a plain UNet: `save_unet` merges the adapter
into the base weights with peft's merge_and_unload (W + (alpha / rank) B A), so every stage
that reads a model folder (evaluation above all) sees a diffusers UNet2DModel, and keeps the
adapter alone beside it in `<model folder>/adapter` (peft's own format:
adapter_config.json, adapter_model.safetensors), for whoever wants the small file.
"""
from __future__ import annotations

import copy
import sys

import torch

ADAPTER_FOLDER = "adapter"


def add_lora(unet: torch.nn.Module, rank: int, alpha: float, targets: str) -> torch.nn.Module:
    """The UNet wrapped with LoRA on the modules named in `targets` (comma-separated suffixes);
    only the adapter's weights train. A target that matches no module is an error (peft's)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets.split(","), lora_dropout=0.0,
                        bias="none")
    return get_peft_model(unet, config)


def is_adapted(model: torch.nn.Module) -> bool:
    # peft not imported: no adapted model exists, and a plain run does not pay for importing it
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """{"trainable": ..., "total": ...} parameters of a (wrapped or plain) network."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": sum(p.numel() for p in model.parameters())}


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """A plain UNet with the adapter merged into its weights (a copy; `model` is unchanged)."""
    return copy.deepcopy(model).merge_and_unload()


def lora_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(the plain UNet's name of the adapted weight, its peft LoRA layer) of every adapted layer."""
    from peft.tuners.lora import LoraLayer

    return [(f"{name.removeprefix('base_model.model.')}.weight", module)
            for name, module in model.named_modules() if isinstance(module, LoraLayer)]
