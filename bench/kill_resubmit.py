"""Kill a local submission with SIGKILL, again and again, and resubmit: do the results come out
as an undisturbed submission's?

    python bench/kill_resubmit.py [--kills 12] [--seed 11] [--out bench/kill_resubmit.json]

The smoke grid (grids/smoke.yaml, its training 400 and 200 steps long) runs twice in a temporary results root: once undisturbed,
and once under a submission that is killed, its whole process group (the submission, its
jobs, their Ray) as a node that dies takes them, after a random 3 to 27 s, then submitted
again with --retry-failed, until one submission ends on its own (at most --kills times). Each
kill's line says which runs were running. The last line is one JSON object: the kills, the
rows of the two tidy tables and how many of their values are identical.
Sequential and CPU-heavy: about 8 minutes on the 2-core machine; run nothing beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "grids" / "smoke.yaml"
# training long enough that kills land in it too, with checkpoints to resume from
OVERRIDES = ["datasets.0.source.pretrain.steps=400", "datasets.0.source.pretrain.checkpoint_every=50",
             "finetune.steps=200", "finetune.checkpoint_every=50"]
KEYS = ["run_id", "eval_id", "split", "ckpt_step", "task", "t0", "reference", "subset", "metric", "extractor", "k"]


def submission(results: Path, log: Path) -> subprocess.Popen:
    """A submission in a process group of its own, so that one signal takes it and its jobs."""
    return subprocess.Popen([sys.executable, "-m", "harness.submit", str(GRID), *OVERRIDES, "--results", str(results),
                             "--executor", "local", "--retry-failed"], cwd=ROOT, start_new_session=True,
                            stdout=log.open("a"), stderr=subprocess.STDOUT)


def running_stages(results: Path) -> list[str]:
    from runs.store import RunFolder

    stages = []
    for folder in sorted((results / "_runs").glob("*/")):
        run = RunFolder(folder)
        try:
            if run.status in ("submitted", "running"):
                stages.append(f"{run.read_spec().get('stage')} {run.run_id}")
        except Exception:               # a file being replaced: the line is only for people
            continue
    return stages


def killed_until_done(results: Path, log: Path, kills: int, rng: random.Random) -> list[dict]:
    record = []
    for _ in range(kills):
        proc = submission(results, log)
        delay = rng.uniform(3, 27)
        try:
            proc.wait(timeout=delay)
            return record                 # ended on its own
        except subprocess.TimeoutExpired:
            stages = running_stages(results)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            record.append({"after_s": round(delay, 1), "running": stages})
            print(f"kill {len(record)} after {delay:.1f} s; running: {', '.join(stages) or 'nothing'}", flush=True)
            time.sleep(1)
    proc = submission(results, log)
    proc.wait()
    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import numpy as np
    import pandas as pd

    start = time.time()
    with tempfile.TemporaryDirectory(prefix="kill-resubmit-") as tmp:
        tmp = Path(tmp)
        kills = killed_until_done(tmp / "killed", tmp / "killed.log", args.kills, random.Random(args.seed))
        final = subprocess.run([sys.executable, "-m", "harness.submit", str(GRID), *OVERRIDES, "--results", str(tmp / "killed"),
                                "--executor", "local", "--retry-failed"], cwd=ROOT, capture_output=True, text=True)
        summary = json.loads(final.stdout.strip().splitlines()[-1])
        subprocess.run([sys.executable, "-m", "harness.submit", str(GRID), *OVERRIDES, "--results", str(tmp / "clean"),
                        "--executor", "local"], cwd=ROOT, capture_output=True, check=True)
        a = pd.read_parquet(tmp / "clean" / "smoke" / "metrics.parquet").set_index(KEYS).sort_index()
        b = pd.read_parquet(tmp / "killed" / "smoke" / "metrics.parquet").set_index(KEYS).sort_index()
    same_rows = a.index.equals(b.index)
    identical = {}
    for column in ("value", "ci_low", "ci_high", "n"):
        x, y = a[column].to_numpy(float), (b[column].to_numpy(float) if same_rows else np.full(len(a), np.nan))
        identical[column] = int(((x == y) | (np.isnan(x) & np.isnan(y))).sum())
    figures = {"kills": len(kills), "kills_in_training": sum(any(s.split()[0] in ("pretrain", "finetune")
                                                                 for s in k["running"]) for k in kills),
               "kills_in_evaluation": sum(any(s.startswith("evaluate") for s in k["running"]) for k in kills),
               "runs_done_after": summary.get("skipped_done"), "runs": summary.get("runs"),
               "rows": len(a), "same_rows": bool(same_rows), **{f"identical_{c}": n for c, n in identical.items()},
               "seed": args.seed, "seconds": round(time.time() - start)}
    if args.out:
        args.out.write_text(json.dumps({"kills": kills, "figures": figures}, indent=2) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
