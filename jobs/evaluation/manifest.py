"""What an evaluation made, listed in products/manifest.json, so that no reader parses a
file name: one entry per product (task, t0, checkpoint step, evaluation seed, split) with its
files. The evaluate stage writes it (atomically) once the products are saved; the paired
differences, the aggregate's image grids and a fine-tuned model's evaluation (the source
model's samples) read it.

An evaluation folder without one was made before manifests existed: reading it is a
UserError naming the folder, and the store counts the manifest among an evaluation's
products, so the next submission evaluates such a run again.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from runs.errors import UserError
from runs.store import CorruptFile, RunFolder, atomic_write_json, read_json

VERSION = 1


@dataclass(frozen=True)
class ProductEntry:
    name: str                 # task, t0 and seed, without the checkpoint step: "sdedit_t0.5"
    task: str
    t0: float | None
    ckpt_step: int | None     # None: a model folder, not a run's checkpoint
    eval_seed: int            # the seed of the sampling noise, as the metric rows' eval_seed
    file: str                 # the images (uint8 N x 3 x H x W), in products/
    items: str                # the per-item values written when measuring, in items/
    split: str | None = None  # "validation" or "test" (evaluation.splits); None: no split, as in older manifests


def write_manifest(run: RunFolder, entries: list[ProductEntry]) -> Path:
    # without splits, entries are written as before the split existed
    products = [{k: v for k, v in asdict(e).items() if k != "split" or v is not None} for e in entries]
    atomic_write_json(run.manifest_path, {"version": VERSION, "products": products})
    return run.manifest_path


def read_manifest(run: RunFolder) -> list[ProductEntry]:
    found = read_json(run.manifest_path)
    if found is None:
        raise UserError(f"{run.path}: no {run.manifest_path.relative_to(run.path)} (evaluated before "
                        "evaluations listed their products); submit the grid again to evaluate it anew")
    try:
        return [ProductEntry(**entry) for entry in found["products"]]
    except (KeyError, TypeError) as err:
        raise CorruptFile(f"{run.manifest_path}: not a manifest of products ({err}); move the evaluation "
                          "folder away and submit again") from None


def final(entries: list[ProductEntry]) -> dict[str, ProductEntry]:
    """name -> the entry of the latest checkpoint (the largest step; a folder's only one)."""
    out: dict[str, ProductEntry] = {}
    for entry in entries:
        kept = out.get(entry.name)
        if kept is None or _step(entry) > _step(kept):
            out[entry.name] = entry
    return out


def _step(entry: ProductEntry) -> int:
    return -1 if entry.ckpt_step is None else entry.ckpt_step
