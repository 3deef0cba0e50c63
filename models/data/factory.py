"""From a data spec (a plain mapping, as in runs.spec) to a dataset."""
from __future__ import annotations

from typing import Any, Mapping

from models.data.base import DatasetError, ImageSet
from models.data.builtin import builtin_split
from models.data.folder import ImageFolderSet


def open_dataset(spec: Mapping[str, Any], split: str | None = None) -> ImageSet:
    """`split` picks from the built-in pair: a target spec can also give its 'heldout' domain
    (for a folder target, its `reference` folder)."""
    kind = spec["kind"]
    if kind == "builtin-source":
        return builtin_split(split or "source", spec.get("resolution", 32), spec.get("seed", 0))
    if kind == "builtin-target":
        return builtin_split(split or "target", spec.get("resolution", 32), spec.get("seed", 0),
                             spec.get("size", 500), tuple(spec.get("missing_classes", (5, 8, 9))))
    if kind == "folder":
        if split == "heldout" and spec.get("reference"):       # the held-out full target domain
            return ImageFolderSet(spec["reference"], spec["resolution"])
        if split not in (None, "target", "source"):
            raise DatasetError(f"{spec['path']}: a folder dataset has no {split!r} split"
                               + (" (name a `reference` folder)" if split == "heldout" else ""))
        return ImageFolderSet(spec["path"], spec["resolution"])
    raise DatasetError(f"unknown dataset kind {kind!r}")
