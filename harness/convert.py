"""python -m harness.convert adm CHECKPOINT.pt OUT_DIR: a guided-diffusion ADM checkpoint
becomes a diffusers model folder that every stage loads like any other.

    python -m harness.convert adm ffhq_p2.pt models/ffhq-p2 --preset ffhq-p2
    python -m harness.convert adm model.pt OUT_DIR --image_size 64 --num_channels 128 \\
        --num_res_blocks 2 --attention_resolutions 16,8 --learn_sigma True ...

The network flags are guided-diffusion's own, with its defaults; a preset sets them as the
named checkpoint was trained, and flags given beside it win. The mapping lives in
models/adm.py; this module only parses arguments (torch is imported when it runs).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.arguments import OneLineParser, path_arg
from runs.errors import UserError, exit_on_user_error

# guided-diffusion's script flags: (type, help). Defaults stay in models.adm.ADMConfig.
ADM_FLAGS: dict[str, tuple[object, str]] = {
    "image_size": (int, "default 64"),
    "num_channels": (int, "default 128"),
    "num_res_blocks": (int, "default 2"),
    "channel_mult": (str, "comma list, e.g. 1,1,2,2,4,4; default: guided-diffusion's for the size"),
    "attention_resolutions": (str, "pixels, comma list; default 16,8"),
    "num_heads": (int, "default 4 (ignored when --num_head_channels is set)"),
    "num_heads_upsample": (int, "default -1 (= --num_heads)"),
    "num_head_channels": (int, "default -1"),
    "learn_sigma": ("bool", "6 output channels; default False"),
    "use_scale_shift_norm": ("bool", "default True"),
    "resblock_updown": ("bool", "default False"),
    "use_new_attention_order": ("bool", "default False"),
    "dropout": (float, "stored in config.json; default 0.0"),
    "class_cond": ("bool", "must be False"),
    "use_fp16": ("bool", "accepted; weights are written in fp32"),
    "use_checkpoint": ("bool", "accepted; no effect on the weights"),
    "diffusion_steps": (int, "default 1000"),
    "noise_schedule": (str, "linear | cosine; default linear"),
}


def str2bool(value: str) -> bool:
    """As guided-diffusion's script_util.str2bool."""
    lowered = value.lower()
    if lowered in ("yes", "true", "t", "y", "1"):
        return True
    if lowered in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m harness.convert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    adm = sub.add_parser("adm", help="a guided-diffusion UNetModel state dict (.pt)",
                         description="Flags are guided-diffusion's, under its names and with its defaults.")
    adm.add_argument("checkpoint", type=path_arg, help="the .pt state dict (loaded with weights_only=True)")
    adm.add_argument("out_dir", type=path_arg, help="the model folder to write; must not exist")
    adm.add_argument("--preset", help="ffhq-p2: P2-weighting's ffhq_p2.pt (the paper's source model)")
    for name, (kind, text) in ADM_FLAGS.items():
        adm.add_argument(f"--{name}", type=str2bool if kind == "bool" else kind, default=argparse.SUPPRESS,
                         metavar="BOOL" if kind == "bool" else None, help=text)
    return parser.parse_args(argv)


def convert_adm(checkpoint: str | Path, out_dir: str | Path, flags: dict, preset: str | None = None) -> dict:
    """Check the paths, convert, and return what was written (the sidecar's contents)."""
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: no such checkpoint file")
    if out_dir.exists():
        raise UserError(f"{out_dir}: already exists; not overwriting it (remove it or choose another OUT_DIR)")
    from models.adm import ADMConfig, ConversionError, convert_checkpoint, read_diffusion_info

    try:
        config = ADMConfig.from_flags(flags, preset)
        folder = convert_checkpoint(checkpoint, out_dir, config)
    except ConversionError as err:
        raise UserError(str(err)) from None
    return {"out_dir": str(folder), **read_diffusion_info(folder)}


def main(argv: list[str] | None = None) -> None:
    with exit_on_user_error():
        args = parse_args(argv)
        flags = {name: getattr(args, name) for name in ADM_FLAGS if hasattr(args, name)}
        info = convert_adm(args.checkpoint, args.out_dir, flags, args.preset)
    source = info["source"]
    print(json.dumps({"out_dir": info["out_dir"], "parameters": source["parameters"],
                      "sha256": source["sha256"], "variance": info["variance"]["type"]}))


if __name__ == "__main__":
    main()
