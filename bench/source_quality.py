"""How good a source model is: FID of its DDIM-40 samples against the grey domain.

    python bench/source_quality.py MODEL_DIR [--samples 1000] [--resolution 16]

The same indexed noise as the evaluate job (seed 0, stream "unconditional"), the builtin
feature network, the held-out grey test split as reference, a 95 % bootstrap interval over
the samples; with x0 clipping (the recipe now) and without (the sampler before recipe 2).
The last line is one JSON object of figures.
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--resolution", type=int, default=16)
    args = parser.parse_args()

    from models.data.base import to_uint8
    from models.data.builtin import builtin_split
    from models.feature_intervals import fid_interval
    from models.features import BuiltinExtractor
    from models.networks import as_eps_model, load_unet
    from models.sampling import ddim_sample, indexed_noise

    torch.set_flush_denormal(True)
    extractor = BuiltinExtractor()
    grey = builtin_split("source_test", args.resolution)
    reference = extractor(grey.images)
    model = as_eps_model(load_unet(args.model_dir).eval())
    noise = indexed_noise(0, "unconditional", range(args.samples), (3, args.resolution, args.resolution))
    figures: dict = {"samples": args.samples, "reference": f"grey source_test ({len(grey)} images)",
                     "extractor": extractor.identity}
    for clip in (True, False):
        start = time.perf_counter()
        images = torch.cat([ddim_sample(model, noise[i:i + 250], 40, clip_denoised=clip).images
                            for i in range(0, args.samples, 250)])
        features = extractor(to_uint8(images))
        fid = fid_interval(features, reference, seed=0)
        key = "clipped" if clip else "unclipped"
        figures[f"fid_grey_{key}"] = round(fid.value, 3)
        figures[f"fid_grey_{key}_ci"] = [round(fid.low, 3), round(fid.high, 3)]
        figures[f"seconds_{key}"] = round(time.perf_counter() - start, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
