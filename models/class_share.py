"""The missing-class share corrected for the classifier's measured errors (adjusted
classify-and-count, Forman 2008; docs/evaluation-classes.md).

A classifier that calls a truly missing-class image missing with rate tpr and a truly
present-class image missing with rate fpr turns a true share p into an expected observed
share q = tpr p + fpr (1 - p). A classifier errs differently in each style, so both rates
are measured on held-out real images in the style of the images scored (the calibration
images, which the classifier never trained on: the target's for a fine-tuned model's
samples, the source's for the source model's; `style_of`), and the observed share of an
image set in that style estimates

    p = (q - fpr) / (tpr - fpr),  clipped to [0, 1].

Where the classifier does not separate the two (tpr <= fpr) nothing can be said: the value
is NaN and its interval [0, 1].

The interval resamples the scored images and the calibration images in the same
bootstrap replicate (`CorrectedShare` draws the calibration images from a generator seeded
by the replicate's indices, so two models fed the same indices, as in a paired
difference, share the calibration draw as well: the same images where both are corrected in
one style; where each in its own, the same positions of two calibration sets whose truths
agree, as on the built-in pair, whose two sets are the same garments). numpy only.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from models.intervals import LEVEL, N_RESAMPLES, Interval, bootstrap_replicates, percentile_interval


@dataclass(frozen=True)
class Calibration:
    """The classifier's calls on the calibration images: per image, whether its true class is
    a missing one, whether it was called a missing one, and whether the confidence filter
    kept it (rates count kept images only, as the shares do)."""
    truly_missing: np.ndarray
    called_missing: np.ndarray
    kept: np.ndarray

    def __post_init__(self):
        for name in ("truly_missing", "called_missing", "kept"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=bool))
        if not (self.truly_missing.shape == self.called_missing.shape == self.kept.shape):
            raise ValueError("calibration: one truth, one call and one kept flag per image")

    @classmethod
    def of_calls(cls, labels, predicted, confidence, missing, threshold: float) -> "Calibration":
        """From the classifier's calls on the calibration images: true and predicted class,
        and confidence, kept at `threshold` (evaluation.confidence)."""
        return cls(np.isin(labels, missing), np.isin(predicted, missing), np.asarray(confidence) >= threshold)

    def counts(self, idx: np.ndarray | None = None) -> tuple[int, int, int, int]:
        """(called missing among truly missing, truly missing, called missing among truly
        present, truly present), kept images only."""
        truth, called, kept = self.truly_missing, self.called_missing, self.kept
        if idx is not None:
            truth, called, kept = truth[idx], called[idx], kept[idx]
        return (int((called & truth & kept).sum()), int((truth & kept).sum()),
                int((called & ~truth & kept).sum()), int((~truth & kept).sum()))

    def rates(self, idx: np.ndarray | None = None) -> tuple[float, float]:
        """(tpr, fpr); NaN where a group has no kept image."""
        hit, missing, false, present = self.counts(idx)
        return (hit / missing if missing else math.nan, false / present if present else math.nan)

    def resample(self, rng: np.random.Generator) -> np.ndarray:
        """Indices of one bootstrap draw, stratified by the truth (the missing-class images
        among themselves, the others among themselves), so that neither rate loses its images."""
        parts = [np.flatnonzero(self.truly_missing), np.flatnonzero(~self.truly_missing)]
        return np.concatenate([p[rng.integers(0, len(p), len(p))] for p in parts if len(p)])


# the keys of each style's calls in an evaluation's items/references.npz (`<prefix>_labels`,
# `_predicted`, `_confidence`)
CALLS_PREFIX = {"target": "calibration", "source": "source_calibration"}


def style_of(method: str | None) -> str:
    """Whose style a model's samples are in, so which calibration corrects their share: the
    source model's ("source", the rows' method) draws the source's, every other model the
    target's."""
    return "source" if method == "source" else "target"


def adjusted_share(q: float, tpr: float, fpr: float) -> float:
    """(q - fpr) / (tpr - fpr) clipped to [0, 1]; NaN where tpr <= fpr (or any input is NaN)."""
    if not (np.isfinite(q) and np.isfinite(tpr) and np.isfinite(fpr)) or tpr - fpr <= 0:
        return math.nan
    return float(min(1.0, max(0.0, (q - fpr) / (tpr - fpr))))


def _as_is(idx: np.ndarray) -> bool:
    """The items as they are (one contiguous ascending run), not a bootstrap draw."""
    return len(idx) > 0 and bool(np.all(np.diff(idx) == 1))


class CorrectedShare:
    """statistic(indices into the scored images) -> the corrected share (models.intervals'
    statistic protocol). `hits`: called missing and kept; `kept`: kept by the confidence
    filter. On the items as they are, the calibration as it is; on a bootstrap draw, a
    stratified draw of the calibration images seeded by the indices and `seed`."""

    def __init__(self, hits: np.ndarray, kept: np.ndarray, calibration: Calibration, seed: int = 0):
        self.hits, self.kept = np.asarray(hits, dtype=bool), np.asarray(kept, dtype=bool)
        self.calibration, self.seed = calibration, seed

    def calibration_draw(self, idx: np.ndarray) -> np.ndarray | None:
        if _as_is(idx):
            return None
        digest = hashlib.blake2b(np.ascontiguousarray(idx, dtype=np.int64).tobytes(), digest_size=8).digest()
        return self.calibration.resample(np.random.default_rng([int.from_bytes(digest, "little"), self.seed]))

    def __call__(self, idx: np.ndarray) -> float:
        kept = self.kept[idx].sum()
        q = self.hits[idx].sum() / kept if kept else math.nan
        return adjusted_share(q, *self.calibration.rates(self.calibration_draw(idx)))


def corrected_interval(hits: np.ndarray, kept: np.ndarray, calibration: Calibration, *,
                       n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """The corrected share of one image set with its percentile interval over the scored
    and the calibration images. Where the share is undefined (tpr <= fpr) or more replicates
    than the interval's tail are, the interval is [0, 1]: the data say nothing more."""
    value, reps = bootstrap_replicates(CorrectedShare(hits, kept, calibration, seed), len(hits),
                                       n_resamples=n_resamples, seed=seed)
    undefined = ~np.isfinite(reps)
    if not np.isfinite(value) or undefined.mean() > (1 - level) / 2:
        return Interval(value, 0.0, 1.0, n_resamples)
    return percentile_interval(value, reps[~undefined], n_resamples, level)


def describe(calibration: Calibration, style: str = "target") -> str:
    """The rates behind a correction, for a row's note: `style`, whose style the calibration
    images are in (named where it is the source's; the target's is the calibration's default)."""
    hit, missing, false, present = calibration.counts()
    tpr, fpr = calibration.rates()
    return (f"adjusted classify-and-count: (q - fpr) / (tpr - fpr) clipped to [0, 1], tpr {hit}/{missing}"
            f" = {tpr:.3f}, fpr {false}/{present} = {fpr:.3f} on {missing + present} held-out real images"
            + (" in the source's style" if style == "source" else ""))
