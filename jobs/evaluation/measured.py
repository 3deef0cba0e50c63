"""work/<job>.rows.json: one measured product's (or the calibration's) metric rows and
feature-cache counts, written when its actor finishes it. A requeued or restarted evaluation
measures only the jobs without one; the records go once metrics.parquet holds their rows,
so an evaluation run again after that measures afresh."""
from __future__ import annotations

import json
from pathlib import Path

from runs.store import atomic_write_bytes


def _plain(value):
    """numpy scalars and arrays as Python values (JSON keeps NaN and infinities)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"a metric row holds {type(value).__name__}, which JSON cannot keep")


def write_record(path: str | Path, rows: list[dict], counts: dict[str, int]) -> None:
    atomic_write_bytes(Path(path), json.dumps({"rows": rows, "counts": counts}, default=_plain).encode())


def read_record(path: str | Path) -> tuple[list[dict], dict[str, int]]:
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    return record["rows"], record["counts"]
