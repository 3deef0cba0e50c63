"""Run every benchmark in bench/ and print one table of their figures with the goal beside each.

    python bench/run_all.py [--only train_step,evaluate]

Each script prints one JSON object as its last line; this collects them, writes them to
bench/results.json and prints the table. The last line printed is one JSON object too.
"""
from __future__ import annotations

import argparse
import json
import operator
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOALS = {  # figure -> (comparison, goal)
    "sdft_over_naive": ("<=", 2.7),
    "deepspeed_over_torch": ("<=", 1.10),
    "dry_run_10k_s": ("<=", 2.0),
    "ddim_over_diffusers": ("<=", 1.05),
    "cached_speedup": (">=", 5.0),
    "forked_speedup": (">=", 3.0),        # bench/local_jobs.py: a local job forked, not started
    # bench/calibration_inception.py: floor < target-train < style gap in Inception FID
    "inception_target_train_over_floor": (">=", 1.0),
    "inception_gap_over_target_train": (">=", 1.0),
    # bench/adm.py: ffhq_p2's network at 256 px on one GPU, in bf16 and in fp16 (null on a
    # machine without a GPU, with the reason beside it)
    **{f"gpu_{p}_{figure}": goal for p in ("bf16", "fp16") for figure, goal in (
        ("mfu", (">=", 0.35)),
        ("deepspeed_over_torch", ("<=", 1.10)),
        ("ddim40_10k_projected_s", ("<=", 600.0)))},
}
SCRIPTS = ("train_step", "grid_overhead", "evaluate", "adm", "calibration_inception", "local_jobs")


def verdict(key: str, value, values: dict) -> str:
    """'met', 'MISSED', or for a figure with a goal but no value, why there is none."""
    goal = GOALS.get(key)
    if goal is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "met" if {"<=": operator.le, ">=": operator.ge}[goal[0]](value, goal[1]) else "MISSED"
    # the reason of the figure itself, else of the longest group it belongs to (gpu_bf16_reason)
    reasons = [(k[:-len("reason")], v) for k, v in values.items() if k.endswith("reason") and v]
    own = values.get(f"{key}_reason")
    group = max(((p, v) for p, v in reasons if key.startswith(p)), default=(None, None), key=lambda pv: len(pv[0]))[1]
    return f"null: {own or group or 'not measured'}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=",".join(SCRIPTS))
    args = parser.parse_args()
    from tabulate import tabulate

    figures: dict[str, dict] = {}
    for name in args.only.split(","):
        start = time.time()
        proc = subprocess.run([sys.executable, str(HERE / f"{name}.py")], capture_output=True, text=True)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            print(f"{name}: failed ({proc.returncode})\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        figures[name] = json.loads(lines[-1])
        print(f"{name}: {time.time() - start:.0f} s", file=sys.stderr)
    rows = []
    for script, values in figures.items():
        for key, value in values.items():
            goal = GOALS.get(key)
            rows.append((script, key, value, f"{goal[0]} {goal[1]}" if goal else "", verdict(key, value, values)))
    print(tabulate(rows, headers=("bench", "figure", "value", "goal", ""), tablefmt="github"))
    # --only refreshes some figures: keep the others from the last full run
    saved = HERE / "results.json"
    merged = {**(json.loads(saved.read_text()) if saved.is_file() else {}), **figures}
    saved.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
