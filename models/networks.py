"""Networks: diffusers UNet2DModel presets and loading a `save_pretrained` model folder.

The architecture lives here; what the loss and the samplers see is an eps-model,
`(x, t) -> network output` in float32 (see `as_eps_model`), and `split_output` tells its
channels apart: eps alone, or eps followed by a learned-range variance (guided-diffusion's
`learn_sigma`, as ffhq_p2: twice the image's channels).

A folder converted from an ADM checkpoint (models/adm.py) carries `diffusion.json`, which
says the same in words; `load_unet` refuses one that disagrees with what `split_output` and
the harness's noise schedule will do with the network, and `save_unet` passes it on, so a
fine-tuned model's folder still says what its channels are.

diffusers is imported where a network is built or loaded, not with this module: it brings
transformers, peft and torch._dynamo (about 3 s a process on 2 cores), and the samplers,
the losses and the evaluation's driver need only the eps-model interface.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from diffusers import UNet2DModel

    from models.schedule import NoiseSchedule

# (x, t) -> the network's output in float32: predicted noise in the first C channels of
# x's C, and for a learned-variance model the variance values in the next C.
# Casting to the network's precision is the wrapper's job.
EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Channel widths per resolution level and attention placement. `tiny` is for tests
# (seconds on a CPU), `small` for the demo, `base` for longer CPU/GPU runs.
PRESETS: dict[str, dict] = {
    "tiny": dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                 down_block_types=("DownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "UpBlock2D")),
    "small": dict(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16,
                  down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                  up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")),
    "base": dict(block_out_channels=(64, 128, 128), layers_per_block=2, norm_num_groups=32,
                 down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
}


def build_unet(preset: str, resolution: int, dropout: float = 0.0, channels: int = 3,
               learned_variance: bool = False) -> UNet2DModel:
    """`learned_variance`: also predict a learned-range variance (guided-diffusion's learn_sigma)."""
    from diffusers import UNet2DModel

    if preset not in PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; expected one of {sorted(PRESETS)}")
    return UNet2DModel(sample_size=resolution, in_channels=channels,
                       out_channels=channels * (2 if learned_variance else 1),
                       dropout=dropout, **PRESETS[preset])


def split_output(output: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(eps, learned-range variance values in [-1, 1] or None) of an eps-model's output for
    images of `channels` channels."""
    if output.shape[1] == channels:
        return output, None
    if output.shape[1] == 2 * channels:
        eps, var_values = output.split(channels, dim=1)
        return eps, var_values
    raise ValueError(f"the network gives {output.shape[1]} output channels for {channels}-channel "
                     f"images: expected {channels} (eps) or {2 * channels} (eps and learned variance)")


# ---------------------------------------------------------------- diffusion.json
SIDECAR = "diffusion.json"


class ModelFolderError(ValueError):
    """A model folder whose diffusion.json contradicts its network or the harness (one line)."""


def read_diffusion_info(folder: str | Path) -> dict | None:
    """The sidecar of a converted folder, or None for an ordinary diffusers folder."""
    path = Path(folder) / SIDECAR
    return json.loads(path.read_text()) if path.is_file() else None


def check_diffusion_info(info: dict, in_channels: int, out_channels: int, where: str = SIDECAR) -> None:
    """The sidecar must say what `split_output` does with the network's output (eps in the
    first `in_channels`, a learned-range variance in the next ones, if any) and name a
    schedule the losses and samplers here implement (models/schedule.py)."""
    from models.schedule import NoiseSchedule

    c = in_channels
    learned = out_channels == 2 * c
    variance = info.get("variance", {})
    if info.get("prediction") != "epsilon":
        raise ModelFolderError(f"{where}: prediction {info.get('prediction')!r}; only epsilon-prediction is supported")
    if info.get("eps_channels") != [0, c]:
        raise ModelFolderError(f"{where}: eps_channels {info.get('eps_channels')!r}, but the loss and the "
                               f"samplers take eps from channels [0, {c}] of the {out_channels}")
    want = {"type": "learned_range", "channels": [c, 2 * c]} if learned else {"type": "fixed_large"}
    if variance != want:
        raise ModelFolderError(f"{where}: variance {variance!r} does not fit a network with {out_channels} "
                               f"output channels (expected {want!r})")
    try:
        NoiseSchedule.from_info(info.get("schedule") or {})
    except ValueError as err:
        raise ModelFolderError(f"{where}: {err}") from None


def schedule_of(model) -> NoiseSchedule:
    """The noise schedule a network was trained with, as its folder's diffusion.json names it
    (`load_unet` keeps it on the model); linear for any other network."""
    from models.schedule import NoiseSchedule

    info = getattr(model, "diffusion_info", None)
    return NoiseSchedule.from_info(info["schedule"] if info else None)


# ---------------------------------------------------------------- folders
def load_unet(folder: str | Path, dropout: float | None = None,
              dtype: torch.dtype = torch.float32) -> UNet2DModel:
    """A diffusers model folder (config.json + weights), e.g. a real pretrained face model.

    `dropout` overrides the saved value (the paper fine-tunes with 0.1). A converted folder's
    diffusion.json is checked and kept on the model (`diffusion_info`) for `save_unet`.
    """
    from diffusers import UNet2DModel

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: not a diffusers model folder (no config.json)")
    extra = {} if dropout is None else {"dropout": dropout}
    model = UNet2DModel.from_pretrained(folder, torch_dtype=dtype, low_cpu_mem_usage=False, **extra)
    info = read_diffusion_info(folder)
    if info is not None:
        check_diffusion_info(info, model.config.in_channels, model.config.out_channels, str(folder / SIDECAR))
    model.diffusion_info = info
    return model


def save_unet(model: UNet2DModel, folder: str | Path) -> None:
    """Write the model folder atomically: a crash leaves the old folder or none, never half.
    The diffusion.json of the folder the model was loaded from goes with it. A LoRA-wrapped
    UNet is saved merged, its adapter in the folder's `adapter/` (models/adapters.py)."""
    from models.adapters import ADAPTER_FOLDER, is_adapted, merged

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if is_adapted(model):       # a LoRA-wrapped UNet: the merged UNet, and the adapter beside it
        model.save_pretrained(tmp / ADAPTER_FOLDER, safe_serialization=True)
        model = merged(model)
    model.save_pretrained(tmp, safe_serialization=True)
    info = getattr(model, "diffusion_info", None)
    if info is not None:
        (tmp / SIDECAR).write_text(json.dumps(info, indent=2) + "\n")
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


# the `precision` settings (training and evaluation) as torch dtypes
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def as_eps_model(module: torch.nn.Module, dtype: torch.dtype | None = None, autocast: str = "fp32"):
    """Wrap a UNet (or a DeepSpeed engine around one) as an `EpsModel`: (x, t) -> output in float32.
    `autocast` "bf16"/"fp16": the network runs under torch.autocast in that dtype (convolutions
    and matmuls in half precision; GroupNorm and softmax stay in float32 on a GPU, as autocast
    keeps them)."""
    if dtype is None:
        dtype = next(module.parameters()).dtype
    half = None if autocast == "fp32" else DTYPES[autocast]

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if half is None:       # no autocast of its own (a caller's still applies)
            return module(x.to(dtype), t).sample.float()
        with torch.autocast(x.device.type, dtype=half):
            return module(x.to(dtype), t).sample.float()

    return eps

