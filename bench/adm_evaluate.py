"""One evaluate job of the paper's network, end to end: the evaluate stage (Ray, the actor
on the GPU, chunks sized to its memory, Inception features) samples N images of ffhq_p2's
architecture (random weights: the figure is the time, not the FID) and measures their FID
against a folder of N images.

    python bench/adm_evaluate.py [--num-samples 1000] [--sampler dpm-solver++] [--steps 20]
    python bench/adm_evaluate.py --cpu-smoke       # 32 px, width 32, 8 samples: does it run?

The folder is made here (seeded smooth random images), so the job needs nothing from outside.
The last line printed is one JSON object: seconds end to end, samples/s of the whole job,
the FID row, eval.json's summary.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from runs.runtime import reexec_with_job_environment


def write_folder(path: Path, n: int, resolution: int, seed: int = 0) -> Path:
    """n smooth random RGB images (8x8 noise, upsampled), as PNG files."""
    from PIL import Image

    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
        Image.fromarray(small).resize((resolution, resolution), Image.BICUBIC).save(path / f"{i:05d}.png")
    return path


def write_model(path: Path, resolution: int, width: int) -> Path:
    """ffhq_p2's architecture at this size, random weights, as a converted model folder."""
    import torch

    from adm import adm_config      # bench/adm.py, beside this script
    from models.adm import build_unet, diffusion_info
    from models.networks import save_unet

    torch.manual_seed(0)
    config = adm_config(resolution, width)
    model = build_unet(config)
    model.diffusion_info = diffusion_info(config)
    save_unet(model, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--sampler", default="dpm-solver++", choices=("ddim", "dpm-solver++", "unipc"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=250, help="the evaluation's planned batch")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="evaluation.precision (bench/adm.py's sampler figures are bf16)")
    parser.add_argument("--workdir", default=None, help="where the model, the folder and the run go (default: a temporary folder)")
    parser.add_argument("--cpu-smoke", action="store_true", help="32 px, width 32, 8 samples, 2 steps")
    args = parser.parse_args()
    reexec_with_job_environment(sys.argv)
    if args.cpu_smoke:
        args.num_samples, args.resolution, args.width, args.steps, args.batch_size = 8, 32, 32, 2, 4

    from runs.spec import EvalSpec
    from runs.store import RunFolder
    from jobs.evaluation.driver import run

    root = Path(args.workdir or tempfile.mkdtemp(prefix="adm-evaluate-"))
    start = time.perf_counter()
    folder = write_folder(root / "reference", args.num_samples, args.resolution)
    model = write_model(root / "model", args.resolution, args.width)
    made_s = time.perf_counter() - start
    steps = {"ddim_steps": args.steps} if args.sampler == "ddim" else {"sampler_steps": args.steps}
    data = {"kind": "folder", "path": str(folder), "resolution": args.resolution}
    spec = EvalSpec(stage="evaluate", role="source", model=str(model), source_data=data, target_data=data,
                    settings={"num_samples": args.num_samples, "batch_size": min(args.batch_size, args.num_samples),
                              "tasks": ["unconditional"], "extractors": ["inception"], "sampler": args.sampler,
                              **steps, "compile": {"auto": None, "on": True, "off": False}[args.compile],
                              "precision": args.precision,
                              "kid_subset_size": min(1000, args.num_samples), "kid_subsets": 10,
                              "max_reference": args.num_samples,
                              # AlexNet's trunk (10 MB) travels to an offline GPU node where VGG's
                              # (59 MB) would need a transfer of its own (bench/gpu_kit.py)
                              "lpips_net": "alex"})
    run_dir = root / "_runs" / "evaluate"
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(json.dumps(spec.model_dump(mode="json")))
    start = time.perf_counter()
    run(run_dir)
    seconds = time.perf_counter() - start
    import pandas as pd

    rows = pd.read_parquet(RunFolder(run_dir).metrics_path)
    fid = rows[(rows.metric == "fid") & (rows.stage == "evaluate")]
    print(json.dumps({
        "num_samples": args.num_samples, "resolution": args.resolution, "num_channels": args.width,
        "sampler": args.sampler, "steps": args.steps, "compile": args.compile, "precision": args.precision,
        "inputs_made_s": round(made_s, 1), "evaluate_s": round(seconds, 1),
        "samples_per_s_end_to_end": round(args.num_samples / seconds, 3),
        "fid": [round(float(v), 3) for v in fid.value], "eval": json.loads((run_dir / "eval.json").read_text()),
    }))


if __name__ == "__main__":
    main()
