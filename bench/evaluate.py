"""Evaluation speed, measured side by side in one process.

- ddim_over_diffusers: our DDIM-40 loop over a diffusers DDIMScheduler loop, same UNet (the
  `small` preset), same batch and noise; goal <= 1.05.
- cached_speedup: feature extraction plus metrics as an evaluation does them (builtin FID/KID
  of the samples against the target set and the 10k-image full target domain), first time
  (features computed) over second (features from the cache); sampling not counted; goal >= 5.
- samples_per_s: unconditional DDIM-40 samples per second with our loop.
The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from runs.runtime import reexec_with_job_environment


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    reexec_with_job_environment(sys.argv)

    from diffusers import DDIMScheduler

    from models import metrics
    from models.data import open_dataset
    from models.data.base import to_uint8
    from models.features import BuiltinExtractor, cached_features, feature_cache_path
    from models.networks import as_eps_model, build_unet
    from models.sampling import ddim_sample

    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    net = build_unet("small", args.resolution).eval()
    eps = as_eps_model(net)
    noise = torch.randn(args.batch, 3, args.resolution, args.resolution)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                              clip_sample=True, set_alpha_to_one=True, steps_offset=0,
                              timestep_spacing="leading")   # x0 clipped, as ours by default
    scheduler.set_timesteps(40)

    @torch.no_grad()
    def diffusers_loop():
        x = noise.clone()
        for t in scheduler.timesteps:
            x = scheduler.step(net(x, t).sample, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
        return x

    ours_s, theirs_s = [], []
    for _ in range(args.repeats):           # interleaved: drift hits both arms alike
        ours_s.append(best_of(lambda: ddim_sample(eps, noise), 1))
        theirs_s.append(best_of(diffusers_loop, 1))
    ours, theirs = statistics.median(ours_s), statistics.median(theirs_s)

    samples = to_uint8(ddim_sample(eps, noise).images)
    spec = {"kind": "builtin-target", "resolution": args.resolution}
    references = [torch.stack([ds[i] for i in range(len(ds))])
                  for ds in (open_dataset(spec), open_dataset(spec, split="heldout"))]
    extractor = BuiltinExtractor()
    for images in (samples, *references):           # a cold cache for these image sets
        feature_cache_path(extractor, images).unlink(missing_ok=True)

    def measure():
        f_samples, _ = cached_features(extractor, samples)
        out = []
        for reference in references:
            f_reference, _ = cached_features(extractor, reference)
            out += [metrics.fid(f_samples, f_reference), metrics.kid(f_samples, f_reference, 64, 100)]
        return out

    first = best_of(measure, 1)
    second = best_of(measure, 1)
    print(json.dumps({
        "batch": args.batch, "resolution": args.resolution, "threads": torch.get_num_threads(),
        "ddim_s": round(ours, 3), "diffusers_ddim_s": round(theirs, 3),
        "ddim_over_diffusers": round(ours / theirs, 3),
        "metrics_first_s": round(first, 3), "metrics_cached_s": round(second, 4),
        "cached_speedup": round(first / second, 1),
        "samples_per_s": round(args.batch / ours, 2),
    }))


if __name__ == "__main__":
    main()
