"""The two evaluation splits (`evaluation.splits: true`): settings are selected on the
`validation` split and reported on the disjoint `test` split (report.selection).

What each split measures, and why they are disjoint:
- sampling noise: the test split draws the streams every evaluation draws ("unconditional",
  "translation", "ancestral"), so its products equal an evaluation without splits; the
  validation split draws its own streams ("<stream>-validation") from the same seed, so the
  rows of both keep that seed as their `eval_seed`;
- translation inputs: a seeded permutation of the source test images, the test split its
  first N, the validation split the next N (N = num_translations); without splits, the test
  split's;
- the held-out reference domain (built-in pair, a folder target's `reference`): two halves
  of a seeded permutation, one per split; the calibration's noise floor compares two halves
  of the split's own half. A reference that is the target set itself is shared: there only
  the noise and the inputs split, and each such row's note says so.

Pure: numpy only.
"""
from __future__ import annotations

import numpy as np

VALIDATION, TEST = "validation", "test"
# the permutation that halves the held-out domain: fixed, so that every model of a grid
# (and every evaluation seed) is measured against the same half
REFERENCE_SPLIT_SEED = 0
# the same for the translation inputs: every model, seed and evaluation translates the same images
INPUT_SEED = 0


def stream(name: str, split: str | None) -> str:
    """The noise stream of a split: the test split (and no split) draws `name` itself."""
    return f"{name}-{VALIDATION}" if split == VALIDATION else name


def inputs(split: str | None, n: int, total: int) -> np.ndarray:
    """The indices of a split's n translation inputs among the `total` source test images:
    the test split's (and no split's) the first n of a seeded permutation, validation's the
    next n. A folder lists its images sorted by path, grouped by class: its first n would
    be a few classes."""
    order = np.random.default_rng(INPUT_SEED).permutation(total)
    return order[n:2 * n] if split == VALIDATION else order[:n]


def reference_half(total: int, split: str | None) -> np.ndarray:
    """Sorted indices of the held-out domain that a split measures against: all of them
    without splits, else one half of a seeded permutation (validation the first half)."""
    if split is None:
        return np.arange(total)
    order = np.random.default_rng(REFERENCE_SPLIT_SEED).permutation(total)
    half = order[:total // 2] if split == VALIDATION else order[total // 2:]
    return np.sort(half)


def items_name(stem: str, split: str | None) -> str:
    """items/<stem>.npz, or items/<stem>_<split>.npz for a split (references, calibration)."""
    return f"{stem}_{split}.npz" if split is not None else f"{stem}.npz"


def note(reference: str, split: str | None, n: int | None = None) -> str | None:
    """What a row's reference is under a split (None without splits or for other references)."""
    if split is None:
        return None
    if reference == "target":
        return (f"{split} split: the target set is the reference of both splits (only the noise and the "
                "inputs differ)")
    if reference == "full-domain":
        return f"{split} split: its half of the held-out domain" + (f" ({n} images)" if n is not None else "")
    return None
