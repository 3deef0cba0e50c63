"""The speed goals of bench/ and the GPU figures' table in the README, made from the
committed figures file (bench/adm-gpu-speed.jsonl), never typed by hand.

GOALS is the one declaration of every goal: bench/run_all.py prints each figure beside its
goal, and `speed_table` gives a GPU setting's figures with theirs (report/readme.py fills
`<!-- tables: bench/adm-gpu-speed.jsonl SETTING -->` blocks with it)."""
from __future__ import annotations

import json
import operator
from pathlib import Path

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
    # machine without a GPU, with the reason beside it); 10,000 samples in 5 minutes by the
    # solvers whose FID was no worse than DDIM-40's on the built-in pair in the fewest steps (docs/speed.md)
    **{f"gpu_{p}_{figure}": goal for p in ("bf16", "fp16") for figure, goal in (
        ("mfu", (">=", 0.35)),
        ("deepspeed_over_torch", ("<=", 1.10)),
        ("ddim40_10k_projected_s", ("<=", 600.0)),
        ("unipc8_10k_projected_s", ("<=", 300.0)),
        ("dpmpp10_10k_projected_s", ("<=", 300.0)))},
}

# the rows of a GPU setting's table: its figure keys in bench/adm.py's output, and their labels
SAMPLERS = {"ddim40": "DDIM-40", "dpmpp20": "dpm-solver++ 20", "unipc20": "unipc 20",
            "dpmpp10": "dpm-solver++ 10", "unipc8": "unipc 8"}
GPU_FIGURES = {"deepspeed_step_s": "SDFT step, s (DeepSpeed)",
               "torch_step_s": "SDFT step, s (plain torch)",
               "mfu": "MFU (of the card's dense bf16 peak; DeepSpeed's where it ran)",
               "torch_mfu": "MFU, plain torch",
               "deepspeed_over_torch": "DeepSpeed over plain torch",
               "peak_memory_gib": "peak memory, GiB",
               **{f"{key}_{figure}": f"{label}: {unit}" for key, label in SAMPLERS.items()
                  for figure, unit in (("samples_per_s", "samples/s"), ("10k_projected_s", "10,000 samples, s"))}}


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


def speed_table(path: Path, setting: str) -> str:
    """The figures of the last line of `path` (bench/gpu_all.sh's jsonl) for `setting`, each
    with its goal and verdict, as Markdown; a figure that line lacks is 'not measured'."""
    from tabulate import tabulate

    from runs.errors import UserError

    lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    found = [line for line in lines if line.get("setting") == setting]
    if not found:
        raise UserError(f"{path}: no line of setting {setting!r}")
    figures = found[-1]
    rows = []
    for key, label in GPU_FIGURES.items():
        value, goal = figures.get(key), GOALS.get(f"{setting}_{key}")
        rows.append((label, "not measured" if value is None else value,
                     f"{goal[0]} {goal[1]}" if goal else "",
                     verdict(f"{setting}_{key}", value, {}) if goal and value is not None else ""))
    where = ", ".join(text.format(figures[k]) for k, text in (
        ("device", "{}"), ("torch", "torch {}"), ("peak_memory_arm", "peak memory of the {} arm")) if figures.get(k))
    return f"**Setting `{setting}` of {Path(path).name}**" + (f" ({where})" if where else "") + "\n\n" + tabulate(
        rows, headers=("figure", "measured", "goal", ""), tablefmt="github", disable_numparse=True)
