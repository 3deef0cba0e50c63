"""work/<job>.rows.json: one measured product's (or the calibration's) metric rows and
feature-cache counts, written when its actor finishes it, with the commit that measured it.
A requeued or restarted evaluation measures only the jobs without a record of its own commit
(one of another, a fix between the kill and the rerun, is measured again, so no row is
stamped with a commit that did not measure it); the records go once metrics.parquet holds
their rows, so an evaluation run again after that measures afresh."""
from __future__ import annotations

import json
from pathlib import Path

from runs.store import atomic_write_bytes


def _plain(value):
    """numpy scalars and arrays as Python values (JSON keeps NaN and infinities)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"a metric row holds {type(value).__name__}, which JSON cannot keep")


def write_record(path: str | Path, rows: list[dict], counts: dict[str, int], commit: str | None) -> None:
    """commit: of the code that measured the rows (report.results.git_sha)."""
    record = {"git_sha": commit, "rows": rows, "counts": counts}
    atomic_write_bytes(Path(path), json.dumps(record, default=_plain).encode())


def read_record(path: str | Path) -> dict | None:
    """{"git_sha", "rows", "counts"}; None where there is no record or it cannot be read
    (a record is written whole or not at all, so that means none)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def measured(path: str | Path, commit: str | None) -> bool:
    """Whether the job has a record of this commit."""
    record = read_record(path)
    return record is not None and record.get("git_sha") == commit
