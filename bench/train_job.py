"""The real training job (`python -m jobs.train`), one SDFT fine-tune per precision, ZeRO-2.

It needs no data or weights: it writes a folder of PNGs and a freshly built source model
folder, then fine-tunes from it with the folder dataset, so it runs on a bare GPU node.
fp16 is measured only where there is a GPU (DeepSpeed has no fp16 on CPU; the job refuses it
with exit code 2 there, which tests/jobs/test_train.py checks). The last line printed is JSON.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_images(folder: Path, count: int, resolution: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        # smooth colour blobs: something a UNet can learn, unlike white noise
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((resolution, resolution), Image.BICUBIC).save(folder / f"{i:04d}.png")


def run_finetune(workdir: Path, source: Path, images: Path, precision: str, args) -> dict:
    run_dir = workdir / "_runs" / f"sdft-{precision}"
    run_dir.mkdir(parents=True)
    spec = {"stage": "finetune", "method": "sdft", "init": str(source),
            "data": {"kind": "folder", "path": str(images), "resolution": args.resolution},
            "distill": {"lambda_distill": 1.0, "lambda_aux": 1.0},
            "steps": args.steps, "batch_size": args.batch, "precision": precision, "zero_stage": 2,
            "checkpoint_every": args.steps, "log_every": max(1, args.steps // 4)}
    (run_dir / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "jobs.train", str(run_dir)], cwd=ROOT,
                          capture_output=True, text=True)
    state = json.loads((run_dir / "state.json").read_text()) if (run_dir / "state.json").is_file() else {}
    rows = [json.loads(line) for line in (run_dir / "train.jsonl").read_text().splitlines()] \
        if (run_dir / "train.jsonl").is_file() else []
    rows = [r for r in rows if "loss" in r]
    result = {"exit_code": proc.returncode, "state": state.get("status"), "steps": rows[-1]["step"] if rows else 0}
    if rows:
        result.update(first_loss=round(rows[0]["loss"], 4), last_loss=round(rows[-1]["loss"], 4),
                      # the first window holds start-up (kernel selection, allocator warm-up)
                      images_per_s=round(rows[-1]["images_per_s"], 1))
    if proc.returncode != 0:
        result["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="small")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    args = parser.parse_args()

    import torch
    from models.networks import build_unet, save_unet

    has_gpu = torch.cuda.is_available()
    out = {"device": torch.cuda.get_device_name() if has_gpu else "cpu", "torch": torch.__version__,
           "preset": args.preset, "resolution": args.resolution, "batch": args.batch, "steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        write_images(workdir / "images", 256, args.resolution)
        torch.manual_seed(0)
        save_unet(build_unet(args.preset, args.resolution), workdir / "source")
        for precision in args.precisions:
            if precision == "fp16" and not has_gpu:
                out["fp16"] = {"skipped": "no GPU: DeepSpeed has no fp16 on CPU"}
                continue
            out[precision] = run_finetune(workdir, workdir / "source", workdir / "images", precision, args)
            print(precision, out[precision], flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
