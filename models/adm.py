"""guided-diffusion ADM checkpoints as diffusers `UNet2DModel` folders.

The paper's source model (P2-weighting's `ffhq_p2.pt`) is an ADM `UNetModel` state dict.
Stock `UNet2DModel` expresses that architecture exactly, so a checkpoint becomes an ordinary
model folder that every stage loads like any other (`models.networks.load_unet`). What the
diffusers config cannot say (that channels 3..5 are a learned-range variance, the noise
schedule, where the weights came from) goes into `diffusion.json` beside `config.json`.

Traps, each checked by tests/models/test_adm.py against guided-diffusion's own UNetModel:
- the legacy attention stores qkv per head as (heads, 3, ch): splitting with `chunk(3)`
  (as diffusers' consistency-model converter does) mixes q, k and v across heads;
- under scale_shift the mid block's attention has no GroupNorm unless
  `attn_norm_num_groups` is given;
- ADM's time embedding is [cos, sin] with frequencies over `half` (flip_sin_to_cos, freq_shift 0).
ADM also runs GroupNorm in fp32 (GroupNorm32); for fp32 weights, as written here, that is moot
(for bf16/fp16 training see docs/recipe.md: PyTorch's own kernels keep the statistics in fp32).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import torch
from diffusers import UNet2DModel

from models.networks import SIDECAR, read_diffusion_info
from models.schedule import COSINE_MAX_BETA, COSINE_OFFSET, LINEAR_BETA_END, LINEAR_BETA_START
from models.shipped import sha256_of

SIDECAR_FORMAT = "sdft-bench/adm-1"


class ConversionError(ValueError):
    """The checkpoint or the flags do not describe a convertible ADM network (one line)."""


# ----------------------------------------------------------------------------
# Flags, under guided-diffusion's own names and defaults (script_util.model_and_diffusion_defaults)

@dataclass(frozen=True)
class ADMConfig:
    image_size: int = 64
    num_channels: int = 128
    num_res_blocks: int = 2
    channel_mult: str = ""               # "" = guided-diffusion's default for the image size
    attention_resolutions: str = "16,8"  # in pixels, as the scripts take them
    num_heads: int = 4
    num_heads_upsample: int = -1
    num_head_channels: int = -1
    learn_sigma: bool = False
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    use_new_attention_order: bool = False
    dropout: float = 0.0
    class_cond: bool = False
    use_fp16: bool = False               # how it trained; the checkpoint is converted to fp32
    use_checkpoint: bool = False         # gradient checkpointing: no effect on the weights
    diffusion_steps: int = 1000
    noise_schedule: str = "linear"

    @classmethod
    def from_flags(cls, flags: dict | None = None, preset: str | None = None) -> "ADMConfig":
        """guided-diffusion defaults, then the preset, then the given flags."""
        values: dict = {}
        if preset is not None:
            if preset not in PRESETS:
                raise ConversionError(f"--preset: unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
            values.update(PRESETS[preset])
        values.update(flags or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConversionError(f"unknown ADM flag --{unknown[0]}")
        return cls(**values)

    @property
    def mults(self) -> tuple[int, ...]:
        if self.channel_mult == "":
            defaults = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
            if self.image_size not in defaults:
                raise ConversionError(f"--channel_mult: no default for --image_size {self.image_size}; give it")
            return defaults[self.image_size]
        try:
            return tuple(int(m) for m in self.channel_mult.split(","))
        except ValueError:
            raise ConversionError(f"--channel_mult: expected integers like 1,2,2, got {self.channel_mult!r}"
                                  " (fractional multipliers are not supported)") from None

    @property
    def attention_levels(self) -> set[int]:
        """Levels (0 = full resolution) with attention, found as create_model does (ds = size // res)."""
        try:
            ds = {self.image_size // int(r) for r in str(self.attention_resolutions).split(",") if r.strip()}
        except (ValueError, ZeroDivisionError):
            raise ConversionError(f"--attention_resolutions: expected pixels like 32,16,8, "
                                  f"got {self.attention_resolutions!r}") from None
        return {level for level in range(len(self.mults)) if 2 ** level in ds}

    @property
    def out_channels(self) -> int:
        return 6 if self.learn_sigma else 3


# P2-weighting's README and the SDFT scripts (dropout 0 as trained; SDFT fine-tunes with 0.1).
PRESETS: dict[str, dict] = {
    "ffhq-p2": dict(image_size=256, num_channels=128, num_res_blocks=1, channel_mult="1,1,2,2,4,4",
                    attention_resolutions="16", num_heads=4, num_head_channels=64, learn_sigma=True,
                    resblock_updown=True, use_scale_shift_norm=True, dropout=0.0,
                    diffusion_steps=1000, noise_schedule="linear"),
}


# ----------------------------------------------------------------------------
# The diffusers architecture for a config

def head_dim(config: ADMConfig) -> int:
    """UNet2DModel has one head width for every attention layer; ADM may fix heads instead."""
    widths = [config.num_channels * m for m in config.mults]
    if config.num_head_channels != -1:
        for level in sorted(config.attention_levels) + [len(widths) - 1]:
            if widths[level] % config.num_head_channels:
                raise ConversionError(f"--num_head_channels {config.num_head_channels} does not divide "
                                      f"the {widths[level]} channels of level {level}")
        return config.num_head_channels
    up_heads = config.num_heads if config.num_heads_upsample == -1 else config.num_heads_upsample
    dims = {widths[-1] / config.num_heads}                    # the middle block
    for level in config.attention_levels:
        dims |= {widths[level] / config.num_heads, widths[level] / up_heads}
    if len(dims) != 1 or not float(next(iter(dims))).is_integer():
        raise ConversionError(f"--num_heads {config.num_heads}: the attention layers would need head widths "
                              f"{sorted(dims)}; UNet2DModel has one width for all (give --num_head_channels)")
    return int(dims.pop())


def unet_config(config: ADMConfig) -> dict:
    """UNet2DModel keyword arguments that reproduce the ADM network."""
    mults = config.mults
    if mults[0] != 1:
        raise ConversionError(f"--channel_mult: the first multiplier must be 1 (the time embedding is "
                              f"sized by the first level in UNet2DModel), got {mults[0]}")
    if config.class_cond:
        raise ConversionError("--class_cond True: class-conditional models are not supported")
    if config.image_size % 2 ** (len(mults) - 1):
        raise ConversionError(f"--image_size {config.image_size} is not divisible by 2^{len(mults) - 1}")
    widths = tuple(config.num_channels * m for m in mults)
    if any(w % 32 for w in widths):
        raise ConversionError(f"--num_channels {config.num_channels}: ADM's GroupNorm has 32 groups; "
                              f"every width {widths} must be a multiple of 32")
    attn = config.attention_levels
    down_plain = "ResnetDownsampleBlock2D" if config.resblock_updown else "DownBlock2D"
    up_plain = "ResnetUpsampleBlock2D" if config.resblock_updown else "UpBlock2D"
    sample = "resnet" if config.resblock_updown else "conv"
    return dict(
        sample_size=config.image_size, in_channels=3, out_channels=config.out_channels,
        block_out_channels=widths, layers_per_block=config.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if i in attn else down_plain for i in range(len(widths))),
        up_block_types=tuple("AttnUpBlock2D" if i in attn else up_plain for i in reversed(range(len(widths)))),
        downsample_type=sample, upsample_type=sample,
        resnet_time_scale_shift="scale_shift" if config.use_scale_shift_norm else "default",
        attention_head_dim=head_dim(config), norm_num_groups=32, attn_norm_num_groups=32, norm_eps=1e-5,
        flip_sin_to_cos=True, freq_shift=0, act_fn="silu", dropout=config.dropout,
    )


def build_unet(config: ADMConfig) -> UNet2DModel:
    return UNet2DModel(**unet_config(config))


# ----------------------------------------------------------------------------
# The key map: one rule per ADM parameter, in ADM's own order

@dataclass(frozen=True)
class Rule:
    adm_key: str
    adm_shape: tuple[int, ...]
    convert: Callable[[torch.Tensor], dict[str, torch.Tensor]]


def _rules(config: ADMConfig, shapes: dict[str, tuple[int, ...]]) -> list[Rule]:
    """Walk ADM's UNetModel as its __init__ builds it, pairing each parameter with UNet2DModel's."""
    rules: list[Rule] = []

    def same(adm: str, diff: str) -> None:
        for p in ("weight", "bias"):
            if f"{diff}.{p}" in shapes:
                rules.append(Rule(f"{adm}.{p}", shapes[f"{diff}.{p}"], lambda w, k=f"{diff}.{p}": {k: w}))

    def resblock(adm: str, diff: str) -> None:
        same(f"{adm}.in_layers.0", f"{diff}.norm1")
        same(f"{adm}.in_layers.2", f"{diff}.conv1")
        same(f"{adm}.emb_layers.1", f"{diff}.time_emb_proj")
        same(f"{adm}.out_layers.0", f"{diff}.norm2")
        same(f"{adm}.out_layers.3", f"{diff}.conv2")
        same(f"{adm}.skip_connection", f"{diff}.conv_shortcut")

    def attention(adm: str, diff: str) -> None:
        same(f"{adm}.norm", f"{diff}.group_norm")
        channels = shapes[f"{diff}.to_q.weight"][0]
        heads = channels // head_width
        for p, extra in (("weight", (channels, 1)), ("bias", ())):
            names = [f"{diff}.to_{n}.{p}" for n in "qkv"]

            def split(w: torch.Tensor, names=names) -> dict[str, torch.Tensor]:
                w = w.reshape(3 * channels, -1)
                if config.use_new_attention_order:     # QKVAttention: [q; k; v], each head-major
                    parts = w.reshape(3, channels, -1)
                else:                                  # QKVAttentionLegacy: per head [q; k; v]
                    parts = w.reshape(heads, 3, channels // heads, -1).transpose(0, 1).reshape(3, channels, -1)
                return {n: parts[i].reshape(shapes[n]).contiguous() for i, n in enumerate(names)}

            rules.append(Rule(f"{adm}.qkv.{p}", (3 * channels, *extra), split))
        rules.append(Rule(f"{adm}.proj_out.weight", (channels, channels, 1),
                          lambda w, k=f"{diff}.to_out.0.weight": {k: w.reshape(shapes[k])}))
        rules.append(Rule(f"{adm}.proj_out.bias", (channels,), lambda w, k=f"{diff}.to_out.0.bias": {k: w}))

    head_width = head_dim(config)
    mults, attn, n = config.mults, config.attention_levels, config.num_res_blocks
    same("time_embed.0", "time_embedding.linear_1")
    same("time_embed.2", "time_embedding.linear_2")
    same("input_blocks.0.0", "conv_in")
    i = 1
    for level in range(len(mults)):
        for j in range(n):
            resblock(f"input_blocks.{i}.0", f"down_blocks.{level}.resnets.{j}")
            if level in attn:
                attention(f"input_blocks.{i}.1", f"down_blocks.{level}.attentions.{j}")
            i += 1
        if level != len(mults) - 1:
            if config.resblock_updown:
                resblock(f"input_blocks.{i}.0", f"down_blocks.{level}.downsamplers.0")
            else:
                same(f"input_blocks.{i}.0.op", f"down_blocks.{level}.downsamplers.0.conv")
            i += 1
    resblock("middle_block.0", "mid_block.resnets.0")
    attention("middle_block.1", "mid_block.attentions.0")
    resblock("middle_block.2", "mid_block.resnets.1")
    i = 0
    for up, level in enumerate(reversed(range(len(mults)))):
        for j in range(n + 1):
            resblock(f"output_blocks.{i}.0", f"up_blocks.{up}.resnets.{j}")
            k = 1
            if level in attn:
                attention(f"output_blocks.{i}.1", f"up_blocks.{up}.attentions.{j}")
                k = 2
            if level and j == n:
                if config.resblock_updown:
                    resblock(f"output_blocks.{i}.{k}", f"up_blocks.{up}.upsamplers.0")
                else:
                    same(f"output_blocks.{i}.{k}.conv", f"up_blocks.{up}.upsamplers.0.conv")
            i += 1
    same("out.0", "conv_norm_out")
    same("out.2", "conv_out")
    return rules


def convert_state_dict(state: dict[str, torch.Tensor], config: ADMConfig,
                       source: str = "checkpoint") -> UNet2DModel:
    """A UNet2DModel holding the ADM weights; ConversionError names the first key that does not fit."""
    model = build_unet(config)
    target = model.state_dict()
    rules = _rules(config, {k: tuple(v.shape) for k, v in target.items()})
    expected = {r.adm_key for r in rules}
    bad = [f"missing key {r.adm_key}" for r in rules if r.adm_key not in state]
    bad += [f"unexpected key {k}" for k in state if k not in expected]
    bad += [f"key {r.adm_key} has shape {tuple(state[r.adm_key].shape)}, the flags expect {r.adm_shape}"
            for r in rules if r.adm_key in state and tuple(state[r.adm_key].shape) != r.adm_shape]
    if bad:
        more = f" (and {len(bad) - 1} more mismatches: check the flags)" if len(bad) > 1 else ""
        raise ConversionError(f"{source}: {bad[0]}{more}")
    converted: dict[str, torch.Tensor] = {}
    for rule in rules:
        converted.update(rule.convert(state[rule.adm_key].to(torch.float32)))
    # every UNet2DModel parameter is written exactly once: strict loading checks the other side
    model.load_state_dict(converted, strict=True)
    return model


# ----------------------------------------------------------------------------
# Files

def load_adm_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # any failure here means the file is not a plain tensor checkpoint
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConversionError(f"{path}: not a readable torch checkpoint "
                              f"(torch.load(weights_only=True) failed: {first})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    return state


def diffusion_info(config: ADMConfig) -> dict:
    """What diffusers' config.json cannot record, as guided-diffusion's create_gaussian_diffusion sets it."""
    if config.noise_schedule == "linear":
        scale = 1000 / config.diffusion_steps      # get_named_beta_schedule("linear", T)
        schedule = {"beta_schedule": "linear", "beta_start": scale * LINEAR_BETA_START,
                    "beta_end": scale * LINEAR_BETA_END,
                    "num_train_timesteps": config.diffusion_steps}
    elif config.noise_schedule == "cosine":
        schedule = {"beta_schedule": "cosine", "s": COSINE_OFFSET, "max_beta": COSINE_MAX_BETA,
                    "num_train_timesteps": config.diffusion_steps}
    else:
        raise ConversionError(f"--noise_schedule: expected linear or cosine, got {config.noise_schedule!r}")
    return {
        "format": SIDECAR_FORMAT,
        "prediction": "epsilon",
        "eps_channels": [0, 3],
        # learn_sigma: channels 3..5 are v in [-1, 1], log-variance = mix of log beta_t and log beta~_t
        "variance": ({"type": "learned_range", "channels": [3, 6]} if config.learn_sigma
                     else {"type": "fixed_large"}),
        "schedule": schedule,
    }


def convert_checkpoint(checkpoint: str | Path, out_dir: str | Path, config: ADMConfig) -> Path:
    """Checkpoint -> model folder (config.json, safetensors, diffusion.json). Nothing is
    written unless the whole conversion succeeds: the folder appears by one rename."""
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if out_dir.exists():
        raise ConversionError(f"{out_dir}: already exists; not overwriting it")
    info = diffusion_info(config)
    model = convert_state_dict(load_adm_state_dict(checkpoint), config, source=str(checkpoint))
    info["source"] = {"checkpoint": checkpoint.name, "sha256": sha256_of(checkpoint),
                      "flags": asdict(config), "parameters": sum(p.numel() for p in model.parameters())}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / SIDECAR).write_text(json.dumps(info, indent=2) + "\n")
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


__all__ = ["ADMConfig", "PRESETS", "ConversionError", "build_unet", "convert_checkpoint", "convert_state_dict",
           "diffusion_info", "load_adm_state_dict", "read_diffusion_info", "unet_config", "SIDECAR"]
