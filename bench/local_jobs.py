"""A local job's start-up: the same 2-step tiny pretraining run as a fresh interpreter
(`python -m jobs.train`) and forked from the warm process (harness/warm.py), side by side.

- fresh_job_s, forked_job_s: wall seconds of one job, the median of REPEATS each;
- first_forked_job_s: the first fork, which waits for the warm process's imports (once per
  submission);
- forked_speedup: fresh_job_s / forked_job_s; goal >= 3 (the imports are most of a job here).
The last line printed is one JSON object.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REPEATS = 3
SPEC = {"stage": "pretrain", "data": {"kind": "builtin-source", "resolution": 16}, "network": "tiny",
        "batch_size": 16, "lr": 1e-3, "steps": 2, "checkpoint_every": 2}


def new_run(store: Path, name: str):
    from runs.store import RunFolder

    folder = store / name
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(json.dumps(SPEC))
    return RunFolder(folder)


def timed(job) -> float:
    start = time.perf_counter()
    code = job()
    if code != 0:
        raise SystemExit(f"a job exited with {code}")
    return time.perf_counter() - start


def main() -> None:
    from harness import warm
    from harness.executors import run_job
    from runs.runtime import job_environment

    env = job_environment(threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "_runs"
        def fresh_job(name: str) -> int:
            command = [sys.executable, "-m", "jobs.train", str(new_run(store, name).path)]
            return subprocess.run(command, cwd=ROOT, env=env, capture_output=True).returncode

        fresh_job("warmup")          # the built-in pair is made once, outside the timing
        fresh = [timed(lambda i=i: fresh_job(f"f{i}")) for i in range(REPEATS)]
        forked = [timed(lambda i=i: run_job("jobs.train", new_run(store, f"w{i}"), env))
                  for i in range(REPEATS + 1)]
    out = {"fresh_job_s": round(statistics.median(fresh), 2), "first_forked_job_s": round(forked[0], 2),
           "forked_job_s": round(statistics.median(forked[1:]), 2),
           "forked_available": warm.available("jobs.train")}
    out["forked_speedup"] = round(out["fresh_job_s"] / out["forked_job_s"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
