"""The results store on disk: run folders, their spec and state, written atomically.

Layout (DESIGN.md section 5):
    <root>/_runs/<run_id>/            the work, shared by every grid that has this run
        spec.json  state.json  train.jsonl  checkpoints/  model/  samples/  metrics.parquet
    <root>/<grid>/runs/<run_id> -> ../../_runs/<run_id>
A run folder is found by its id, so two grids with the same run share one training.
"""
from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STATUSES = ("pending", "submitted", "running", "done", "failed")
RUNS_DIR = "_runs"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


class RunFolder:
    """One run's folder. Cheap to construct; touches the disk only when asked."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    spec_path = property(lambda self: self.path / "spec.json")
    state_path = property(lambda self: self.path / "state.json")
    log_path = property(lambda self: self.path / "train.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    model_dir = property(lambda self: self.path / "model")
    samples_dir = property(lambda self: self.path / "samples")
    metrics_path = property(lambda self: self.path / "metrics.parquet")

    def read_spec(self) -> dict:
        spec = read_json(self.spec_path)
        if spec is None:
            raise FileNotFoundError(f"{self.spec_path}: no spec.json in run folder")
        return spec

    def write_spec(self, spec: dict) -> None:
        atomic_write_json(self.spec_path, spec)

    def state(self) -> dict:
        return read_json(self.state_path, {"status": "pending"})

    @property
    def status(self) -> str:
        return self.state().get("status", "pending")

    def set_state(self, status: str, **info: Any) -> dict:
        """Merge `info` into state.json with a timestamp; None values remove a key."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        state = self.state()
        state.update(info)
        state = {k: v for k, v in state.items() if v is not None}
        state["status"] = status
        state["updated_at"] = now_iso()
        state.setdefault("created_at", state["updated_at"])
        if status == "running":
            state.setdefault("started_at", state["updated_at"])
        if status in ("done", "failed"):
            state["finished_at"] = state["updated_at"]
        atomic_write_json(self.state_path, state)
        return state

    def log_rows(self) -> list[dict]:
        if not self.log_path.is_file():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]


def store_root_of(run_dir: Path) -> Path:
    """The `_runs` folder a run folder lives in (following a grid's link to it)."""
    return Path(run_dir).resolve().parent

