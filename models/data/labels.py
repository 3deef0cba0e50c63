"""Class labels of image folders: a CSV `file,label`, so that folder datasets get the class
metrics the built-in pair has (missing-class share, class preservation, the missing-class
recall and coverage).

`file` is an image path relative to the CSV's own folder (or absolute); `label` a whole
number >= 0. Every target and reference image needs a label; source images may lack one
(they then only go unused by the classifier the harness trains on the labelled ones).
The missing classes are the reference's classes that the target set lacks. A file that
breaks a rule is a LabelsError naming the CSV, the line and what is wrong:
a missing column, an unknown file, a label that is not a whole number, a class with no
reference images.
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.data.base import DatasetError

UNLABELLED = -1


class LabelsError(DatasetError):
    """A labels file that cannot be used."""


@dataclass(frozen=True)
class FolderLabels:
    """Labels per image, in each folder's listing order (models.data.folder.list_images)."""
    target: np.ndarray
    reference: np.ndarray
    source: np.ndarray            # UNLABELLED where the CSV has no row for the image
    digest: str                   # of the CSV's bytes: a classifier's cache key

    @property
    def classes(self) -> list[int]:
        return sorted(set(self.reference.tolist()))

    @property
    def missing(self) -> list[int]:
        """Classes of the full domain (reference) that the target set lacks."""
        return sorted(set(self.reference.tolist()) - set(self.target.tolist()))


def read_rows(path: Path) -> list[tuple[int, Path, int]]:
    """(line, resolved image path, label) for each data row of the CSV."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LabelsError(f"{path}: no such labels file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise LabelsError(f"{path}: cannot read the labels file ({err})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    for column in ("file", "label"):
        if column not in header:
            raise LabelsError(f"{path}: line 1: no `{column}` column (the header must name file,label; "
                              f"got {','.join(header) or 'nothing'})")
    reader.fieldnames = header
    rows, seen = [], {}
    for line, row in enumerate(reader, start=2):
        name, value = (row.get("file") or "").strip(), (row.get("label") or "").strip()
        if not name:
            raise LabelsError(f"{path}: line {line}: empty file name")
        try:
            label = int(value)
        except ValueError:
            raise LabelsError(f"{path}: line {line}: label {value!r} is not a whole number") from None
        if label < 0:
            raise LabelsError(f"{path}: line {line}: label {label} is negative (labels are 0, 1, 2, ...)")
        file = Path(name).expanduser()
        file = (file if file.is_absolute() else path.parent / file).resolve()
        if file in seen:
            raise LabelsError(f"{path}: line {line}: {name} is labelled twice (first on line {seen[file]})")
        seen[file] = line
        rows.append((line, file, label))
    if not rows:
        raise LabelsError(f"{path}: no labelled images")
    return rows


def folder_labels(path: str | Path, target: str | Path, reference: str | Path,
                  source: str | Path) -> FolderLabels:
    """Check the CSV against the three folders' images and give each image its label."""
    from models.data.folder import list_images

    path = Path(path)
    rows = read_rows(path)
    folders = {"target": target, "reference": reference, "source": source}
    files = {k: [f.resolve() for f in list_images(v)] for k, v in folders.items()}
    known = {f for listing in files.values() for f in listing}
    labels = {}
    for line, file, label in rows:
        if file not in known:
            raise LabelsError(f"{path}: line {line}: {file}: not an image of the target, reference or "
                              f"source folder")
        labels[file] = label
    for kind in ("target", "reference"):
        for file in files[kind]:
            if file not in labels:
                raise LabelsError(f"{path}: no label for {file} (every {kind} image needs one)")
    out = {k: np.array([labels.get(f, UNLABELLED) for f in listing], dtype=np.int64) for k, listing in files.items()}
    in_reference = set(out["reference"].tolist())
    for kind in ("target", "source"):
        for c in sorted(set(out[kind].tolist()) - in_reference - {UNLABELLED}):
            raise LabelsError(f"{path}: class {c} has no reference images (it appears among the {kind} "
                              f"images; the reference is the full domain and holds every class)")
    return FolderLabels(out["target"], out["reference"], out["source"],
                        hashlib.sha1(path.read_bytes()).hexdigest()[:16])
