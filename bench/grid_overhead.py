"""Harness overhead: expanding a 10,000-run grid, and Slurm's submit-to-running latency.

- harness_import_s: importing every harness module a CLI needs (no torch), in a fresh process.
- dry_run_10k_s: `python -m harness.submit big.yaml --dry-run` on a 10,003-run grid
  (5,000 fine-tunes, their 5,000 evaluations, pretrain, source evaluation, aggregate:
  process start, validation, expansion, hashing, the printed table); goal <= 2 s.
- submit_to_running_s: from `harness.submit` to Slurm showing the job RUNNING on the
  local cluster (median of a few); submit_to_training_s: until the job reports that it
  is training (Python, DeepSpeed and data start-up included).
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
TENS = lambda scale: [round(scale * (i + 1), 10) for i in range(10)]  # noqa: E731

BIG_GRID = {
    "name": "big",
    "datasets": [{"name": "fmnist", "source": {"kind": "builtin", "resolution": 16,
                                               "pretrain": {"steps": 30, "network": "tiny"}},
                  "targets": [{"name": "painted", "kind": "builtin"}]}],
    "methods": ["sdft"],
    "finetune": {"lambda_distill": TENS(0.1), "lambda_aux": TENS(0.1), "lr": TENS(1e-5)},
    "seeds": list(range(5)),
}


def submit(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.submit", *args], cwd=ROOT,
                          capture_output=True, text=True)


def time_dry_run(tmp: Path, repeats: int = 3) -> float:
    path = tmp / "big.yaml"
    path.write_text(yaml.safe_dump(BIG_GRID))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = submit([str(path), "--dry-run", "--results", str(tmp / "results")])
        times.append(time.perf_counter() - start)
        assert json.loads(proc.stdout.splitlines()[-1])["runs"] == 10_003, proc.stderr
    return statistics.median(times)


def squeue_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%T"], capture_output=True,
                          text=True).stdout.strip()


def time_slurm(tmp: Path, repeats: int = 3) -> tuple[float | None, float | None]:
    from harness.executors import slurm_available
    from runs.store import Store

    if not slurm_available():
        print("no Slurm here (sinfo does not answer): `make slurm-up` first for the submit figures",
              file=sys.stderr)
        return None, None
    smoke = yaml.safe_load((ROOT / "grids" / "smoke.yaml").read_text())
    to_running, to_training = [], []
    for i in range(repeats):
        # a new scratch run each time (its own seed); it needs no source model, so no waiting
        grid = {**smoke, "name": f"latency{i}", "methods": ["scratch"], "seeds": [1000 + i]}
        grid["finetune"] = {**grid["finetune"], "steps": 5000}
        path = tmp / f"latency{i}.yaml"
        path.write_text(yaml.safe_dump(grid))
        start = time.perf_counter()
        proc = submit([str(path), "--executor", "slurm", "--results", str(tmp / "results")])
        assert proc.returncode == 0, proc.stderr
        runs = Store(tmp / "results").grid_runs(f"latency{i}")
        run = next(r for r in runs if r.read_spec().get("method") == "scratch")
        job = run.state()["job_id"]
        deadline = time.time() + 120
        while squeue_state(job) != "RUNNING" and time.time() < deadline:
            time.sleep(0.05)
        to_running.append(time.perf_counter() - start)
        while run.status != "running" and time.time() < deadline:
            time.sleep(0.05)
        to_training.append(time.perf_counter() - start)
        jobs = sorted({r.state().get("job_id") for r in runs if r.state().get("job_id")})
        subprocess.run(["scancel", *jobs])
        while any(squeue_state(j) for j in jobs) and time.time() < deadline + 60:
            time.sleep(0.1)   # a node with a job still completing takes no new one
    return statistics.median(to_running), statistics.median(to_training)


def time_import(repeats: int = 5) -> float:
    code = ("import time; t = time.perf_counter(); import harness.submit, harness.status, harness.tables, "
            "harness.results, harness.executors; print(time.perf_counter() - t)")
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                                                  text=True, check=True).stdout) for _ in range(repeats))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        imports = time_import()
        dry = time_dry_run(Path(tmp))
        running, training = time_slurm(Path(tmp))
    print(json.dumps({"harness_import_s": round(imports, 3), "dry_run_10k_s": round(dry, 3),
                      "submit_to_running_s": running and round(running, 3),
                      "submit_to_training_s": training and round(training, 3)}))


if __name__ == "__main__":
    main()
