"""At how many steps is each solver's FID as good as DDIM-40's? The shipped source model of
the built-in pair (models/weights/fmnist16-source, 16 px), its builtin-feature FID against the
source domain (the first --reference images of its train split), with the instrument's
centred bootstrap intervals (models/feature_intervals.py).

    python bench/solver_steps.py [--num-samples 1000] [--steps 5,8,10,15,20,25]

The same noise for every sampler (models.sampling.indexed_noise), so sample i of a solver and
sample i of DDIM-40 share their noise: the difference FID(solver) - FID(DDIM-40) gets a paired
bootstrap interval (models.intervals.paired_difference, the harness's method for differences
between models), which is far narrower than the two FIDs' own intervals. A solver is "no worse"
at a step count when that interval's low end is <= 0 (not significantly worse; a solver that
is significantly better counts too), and "equal" when the interval holds 0. The last line
printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from runs.runtime import reexec_with_job_environment

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--reference", type=int, default=10_000)
    parser.add_argument("--steps", default="5,8,10,15,20,25")
    parser.add_argument("--batch", type=int, default=250)
    args = parser.parse_args()
    reexec_with_job_environment(sys.argv)
    torch.set_flush_denormal(True)

    from models.data import to_uint8
    from models.data.builtin import builtin_split
    from models.feature_intervals import N_RESAMPLES_FEATURE, FrechetReplicates, fid_interval
    from models.intervals import paired_difference
    from models.features import BuiltinExtractor
    from models.networks import as_eps_model, load_unet
    from models.sampling import ddim_sample, indexed_noise
    from models.solvers import solver_sample

    model = as_eps_model(load_unet(ROOT / "models" / "weights" / "fmnist16-source").eval())
    extractor = BuiltinExtractor()
    reference = extractor(builtin_split("source", 16).images[:args.reference])
    noise = indexed_noise(0, "unconditional", range(args.num_samples), (3, 16, 16))

    features: dict[str, np.ndarray] = {}       # each setting's, for the paired differences

    def fid_of(key: str, draw) -> dict:
        start = time.perf_counter()
        with torch.no_grad():
            images = torch.cat([to_uint8(draw(noise[i:i + args.batch]).images)
                                for i in range(0, args.num_samples, args.batch)])
        seconds = time.perf_counter() - start
        features[key] = extractor(images)
        found = fid_interval(features[key], reference)
        return {"fid": round(found.value, 3), "low": round(found.low, 3), "high": round(found.high, 3),
                "sampling_s": round(seconds, 1)}

    rows = {"ddim40": fid_of("ddim40", lambda x: ddim_sample(model, x, 40))}
    for solver in ("dpm-solver++", "unipc"):
        for n in (int(s) for s in args.steps.split(",")):
            rows[f"{solver}{n}"] = fid_of(f"{solver}{n}", lambda x, n=n, solver=solver: solver_sample(model, x, solver, n))
    ddim = FrechetReplicates(features["ddim40"], reference)
    for key, row in rows.items():
        if key != "ddim40":
            diff = paired_difference(FrechetReplicates(features[key], reference), ddim,
                                     args.num_samples, n_resamples=N_RESAMPLES_FEATURE, seed=0)
            row.update({"minus_ddim40": round(diff.value, 3), "minus_ddim40_low": round(diff.low, 3),
                        "minus_ddim40_high": round(diff.high, 3)})

    def fewest(solver: str, test) -> int | None:
        fits = [int(k[len(solver):]) for k, r in rows.items() if k.startswith(solver) and test(r)]
        return min(fits) if fits else None
    no_worse = {s: fewest(s, lambda r: r["minus_ddim40_low"] <= 0) for s in ("dpm-solver++", "unipc")}
    equal = {s: fewest(s, lambda r: r["minus_ddim40_low"] <= 0 <= r["minus_ddim40_high"])
             for s in ("dpm-solver++", "unipc")}
    for key, row in rows.items():
        paired = (f"  - DDIM-40 {row['minus_ddim40']:+.3f} [{row['minus_ddim40_low']:+.3f}, "
                  f"{row['minus_ddim40_high']:+.3f}]" if "minus_ddim40" in row else "")
        print(f"{key:>16}  FID {row['fid']:7.3f}  [{row['low']:.3f}, {row['high']:.3f}]  "
              f"{row['sampling_s']:6.1f} s{paired}", file=sys.stderr)
    print(json.dumps({"num_samples": args.num_samples, "reference": len(reference), "rows": rows,
                      "fewest_steps_no_worse_than_ddim40": no_worse, "fewest_steps_equal_to_ddim40": equal}))


if __name__ == "__main__":
    main()
