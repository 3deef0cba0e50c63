"""Weights the project ships, made by its own grids, so that a first run needs no CPU-hour.

Each folder under models/weights/ holds model files and a provenance.json that records
the identity that made them (a run id, or a recipe key for the evaluation networks), the
command and grid file that regenerate them, and the sha256 of every file. A folder is used
only where its recorded identity equals the one asked for, and only after its hashes
check out: a recipe change gives a new identity, so stale weights are never picked up.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PROVENANCE = "provenance.json"
DISABLE_ENV = "SDFT_SHIPPED_WEIGHTS"     # "0": always train, even where weights ship


class ShippedWeightsError(RuntimeError):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_enabled() -> bool:
    return os.environ.get(DISABLE_ENV, "1") != "0"


def provenances(root: Path = WEIGHTS_DIR) -> dict[str, dict]:
    """Folder name -> its provenance record, for every shipped folder."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob(f"*/{PROVENANCE}"))}


def find_shipped(identity: str, root: Path = WEIGHTS_DIR) -> Path | None:
    """The verified folder shipped for `identity`, or None (none ships, or they are disabled)."""
    if not shipped_enabled():
        return None
    for name, record in provenances(root).items():
        if record.get("identity") == identity:
            folder = root / name
            verify(folder)
            return folder
    return None


def verify(folder: Path) -> None:
    """Every file the provenance names exists with its recorded sha256."""
    record = json.loads((folder / PROVENANCE).read_text())
    for name, expected in record["sha256"].items():
        path = folder / name
        if not path.is_file():
            raise ShippedWeightsError(f"{path}: shipped file missing")
        if sha256_of(path) != expected:
            raise ShippedWeightsError(f"{path}: sha256 does not match {folder / PROVENANCE}")


def write_provenance(folder: Path, identity: str, **info) -> dict:
    """Record the identity, how to regenerate the files, and their hashes."""
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != PROVENANCE)
    record = {"identity": identity, **info, "sha256": {n: sha256_of(folder / n) for n in files}}
    (folder / PROVENANCE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record
