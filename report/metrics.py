"""The metrics the evaluation measures, declared once: name, label, which way is better, tasks.

The tables print a metric by its label and bold its best value, selection (report.selection)
picks the candidate with the best criterion, the grid's `selection.criterion` is checked against
the tasks a metric is measured on, and the evaluation (jobs/evaluation/measure.py) writes only
metrics declared here. All of them read this registry; none keeps its own list. An unknown
name is an error (`UnknownMetric`, naming the known ones), never a silent default.

Tasks are the model tasks a metric is measured on (runs.spec.Task). The class instrument's
own rates (`class_recall`, `missing_tpr`, `missing_fpr`) belong to no task: only its
calibration rows carry them, so no criterion can name them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from runs.spec import Task

TASKS: tuple[str, ...] = get_args(Task)
TRANSLATION = ("sdedit", "egsde")


class UnknownMetric(ValueError):
    """A metric name that is not in the registry."""


@dataclass(frozen=True)
class Metric:
    name: str                   # the `metric` column of the tidy results
    label: str                  # as the tables print it
    higher_is_better: bool
    tasks: tuple[str, ...]      # the model tasks it is measured on (empty: calibration rows only)


METRICS: dict[str, Metric] = {m.name: m for m in (
    # realism against a reference set, per extractor (KID is stored x1e3)
    Metric("fid", "FID", False, TASKS),
    Metric("kid", "KID×1e3", False, TASKS),
    # k-NN balls of real and generated features (models/manifold.py)
    Metric("precision", "precision", True, TASKS),
    Metric("recall", "recall", True, TASKS),
    Metric("density", "density", True, TASKS),
    Metric("coverage", "coverage", True, TASKS),
    # the paired distance: to the source image (translation) or the source model's sample
    # from the same noise (unconditional); lower is closer to what the source gives
    Metric("lpips", "LPIPS", False, TASKS),
    # LPIPS's substitutes in tables made when LPIPS could not be measured
    Metric("feature_dist_builtin", "FeatDist†", False, TASKS),
    Metric("feature_dist_inception", "FeatDist†", False, TASKS),
    # faithfulness of a translation to its source image
    Metric("psnr", "PSNR", True, TRANSLATION),
    Metric("ssim", "SSIM", True, TRANSLATION),
    # diversity (Ojha et al. 2021)
    Metric("intra_cluster_lpips", "intra-LPIPS", True, ("unconditional",)),
    # the classes the target set lacks: a higher share is less forgotten (docs/evaluation-classes.md)
    Metric("missing_class_share", "missing-class share", True, ("unconditional",)),
    Metric("missing_class_share_corrected", "missing-class share, corrected", True, ("unconditional",)),
    Metric("class_preservation", "class kept", True, TRANSLATION),
    # the class instrument's confusion on held-out real images
    Metric("class_recall", "recall", True, ()),
    Metric("missing_tpr", "tpr (missing called missing)", True, ()),
    Metric("missing_fpr", "fpr (present called missing)", False, ()),
    # samples whose last-step x0 the sampler had to clip: a diagnostic, fewer is better
    Metric("clipped_share", "clipped share", False, TASKS),
)}


def metric(name: str) -> Metric:
    """The registered metric `name`; UnknownMetric naming the known ones otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise UnknownMetric(f"unknown metric {name!r} (known: {', '.join(METRICS)})") from None


def label(name: str) -> str:
    return metric(name).label


def higher_is_better(name: str) -> bool:
    return metric(name).higher_is_better


def directions(names) -> str:
    """'Lower is better for FID/LPIPS, higher for PSNR/SSIM.': of the metrics named, in their order."""
    found = [metric(n) for n in dict.fromkeys(names)]
    lower = "/".join(dict.fromkeys(m.label for m in found if not m.higher_is_better))
    higher = "/".join(dict.fromkeys(m.label for m in found if m.higher_is_better))
    if lower and higher:
        return f"Lower is better for {lower}, higher for {higher}."
    return f"{'Lower' if lower else 'Higher'} is better for {lower or higher}." if lower or higher else ""
