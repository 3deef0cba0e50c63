"""At how many steps does each solver's FID match DDIM-40's? The shipped source model of the
built-in pair (models/weights/fmnist16-source, 16 px), its builtin-feature FID against the
source domain (the first --reference images of its train split), with the instrument's
centred bootstrap intervals (models/feature_intervals.py).

    python bench/solver_steps.py [--num-samples 1000] [--steps 10,15,20,25]

The same noise for every sampler (models.sampling.indexed_noise). A solver "matches" at a
step count when its FID interval overlaps DDIM-40's. The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from runs.runtime import reexec_with_job_environment

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--reference", type=int, default=10_000)
    parser.add_argument("--steps", default="10,15,20,25")
    parser.add_argument("--batch", type=int, default=250)
    args = parser.parse_args()
    reexec_with_job_environment(sys.argv)
    torch.set_flush_denormal(True)

    from models.data import to_uint8
    from models.data.builtin import builtin_split
    from models.feature_intervals import fid_interval
    from models.features import BuiltinExtractor
    from models.networks import as_eps_model, load_unet
    from models.sampling import ddim_sample, indexed_noise
    from models.solvers import solver_sample

    model = as_eps_model(load_unet(ROOT / "models" / "weights" / "fmnist16-source").eval())
    extractor = BuiltinExtractor()
    reference = extractor(builtin_split("source", 16).images[:args.reference])
    noise = indexed_noise(0, "unconditional", range(args.num_samples), (3, 16, 16))

    def fid_of(draw) -> dict:
        start = time.perf_counter()
        with torch.no_grad():
            images = torch.cat([to_uint8(draw(noise[i:i + args.batch]).images)
                                for i in range(0, args.num_samples, args.batch)])
        seconds = time.perf_counter() - start
        found = fid_interval(extractor(images), reference)
        return {"fid": round(found.value, 3), "low": round(found.low, 3), "high": round(found.high, 3),
                "sampling_s": round(seconds, 1)}

    rows = {"ddim40": fid_of(lambda x: ddim_sample(model, x, 40))}
    for solver in ("dpm-solver++", "unipc"):
        for n in (int(s) for s in args.steps.split(",")):
            rows[f"{solver}{n}"] = fid_of(lambda x, n=n, solver=solver: solver_sample(model, x, solver, n))
    ddim = rows["ddim40"]
    matches = {}
    for solver in ("dpm-solver++", "unipc"):
        fits = [int(k[len(solver):]) for k, r in rows.items() if k.startswith(solver)
                and r["low"] <= ddim["high"] and ddim["low"] <= r["high"]]
        matches[solver] = min(fits) if fits else None
    for key, row in rows.items():
        print(f"{key:>16}  FID {row['fid']:7.3f}  [{row['low']:.3f}, {row['high']:.3f}]  {row['sampling_s']:6.1f} s",
              file=sys.stderr)
    print(json.dumps({"num_samples": args.num_samples, "reference": len(reference), "rows": rows,
                      "fewest_steps_matching_ddim40": matches}))


if __name__ == "__main__":
    main()
