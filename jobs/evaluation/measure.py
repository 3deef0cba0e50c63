"""Metric rows of one evaluation product, and the calibration rows: functions of images and
of typed inputs (the reference sets and classes, the feature extractors, the settings),
built once per actor (jobs/evaluation/instruments.py); nothing here knows the actor or Ray.

Unconditional samples: FID/KID against the target set and (built-in pair, or a folder
target with a `reference`) the full target domain; the share of samples classified into the
classes the target set lacks; a paired distance to the source model's sample from the same
noise; intra-cluster LPIPS (diversity). Translations: PSNR/SSIM and a paired distance to
the source image, FID/KID against the target domain, and how often the source image's class
survives, per class and for the missing classes.
LPIPS uses a trunk converted offline (VGG unless `evaluation.lpips_net` says alex); its
row names the trunk and says when small inputs were resized to 64 px.
Precision, recall, density and coverage (k = 3) against each reference set, and recall and
coverage of the held-out images of the missing classes.
Classes: the `builtin` classifier on the built-in pair; on folder data with a labels CSV,
networks cross-fitted over the labelled reference (extractor `labelled`,
models/evaluation_nets.py). Its confusion is measured on held-out real images it never trained
on (the calibration images: the odd positions of the held-out domain, the floor's reference
half) and reported as calibration rows (weighting `classifier-calibration`: per-class recall,
tpr and fpr of "called missing"); every missing-class share gets a corrected share beside it
(models/class_share.py; docs/evaluation-classes.md). The source model's evaluation also
calibrates on held-out labelled images in the source's style, where there are any (weighting
`classifier-calibration-source`): the source model's samples and the real source images are
corrected with those rates, being in that style.

Calibration (the source model's evaluation, once per target): the same measurements of
real image sets against the full domain, at the sample counts of the model rows (FID's bias
depends on n): target-train images, real source images (the style gap), and one half of
the held-out domain against the other half (the noise floor).

With `evaluation.splits`, every product and the calibration are measured per split: against
the split's half of the held-out domain, with the split's translation inputs
(jobs/evaluation/splits.py); rows against a reference both splits share say so in their note.

Intervals (`ci_low`, `ci_high`, 95 %): bootstrap over this product's images for means and
FID/KID, Wilson for counts (with `k` of `n`); the note states the resamples. Per-item values
(per-image PSNR/SSIM/LPIPS, per-sample class predictions, features) come back with the rows;
the worker saves them beside the metrics (items/<product>.npz) for paired differences
between models.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NamedTuple

import numpy as np
import torch

from report.metrics import metric as registered
from report.results import CLASSIFIER_CALIBRATION
from runs.spec import EvalSettings, EvalSpec
from jobs.evaluation import splits
from jobs.evaluation.instruments import (Classes, Extractors, HeldOutCalls, ReferenceSet, References,
                                         floor_positions, folder_labels_of, reference_subset, stack,
                                         unseen_sources)
from models import metrics
from models.class_share import CALLS_PREFIX, corrected_interval, describe, style_of
from models.data import open_dataset
from models.feature_intervals import N_RESAMPLES_FEATURE, fid_interval, kid_interval
from models.features import cached_features
from models.intervals import N_RESAMPLES, Interval, mean_interval, wilson
from models.manifold import K_NEAREST, manifolds
from models.sampling import CLIP_TOLERANCE

# Intra-cluster LPIPS (Ojha et al. 2021): DIVERSITY_CENTRES target-training images are the
# cluster centres (their 10-shot setting; jobs/evaluation/instruments.py), the first
# DIVERSITY_SAMPLES samples are clustered, at most DIVERSITY_PAIRS pairs per cluster. VGG at
# 64 px costs ~28 ms an image on one busy core here, and the metric embeds each clustered
# sample about twice: ~11 s per product at these caps (all 500 demo samples: ~28 s).
DIVERSITY_SAMPLES = 200
DIVERSITY_PAIRS = 100
CALIBRATION_SETS = ("target-train", "source", "held-out-half")
# the reference of the classifier's confusion rows, by the calibration images' style
CALIBRATION_REFERENCE = {"target": "full-domain", "source": "source-domain"}


@dataclass(frozen=True)
class Pairs:
    """The images each generated image is compared with, image i with image i."""
    images: torch.Tensor                # uint8
    reference: str                      # "source" (translation inputs) or "source-model" (its samples)


@dataclass(frozen=True)
class Settings:
    """How one product is measured and what names its rows."""
    evaluation: EvalSettings
    task: str
    seed: int                           # of the sampling noise: seeds the bootstraps and KID subsets
    columns: Mapping[str, object]       # shared by every row (jobs.evaluation.plan.identity)
    clipped: tuple[float, int] | None = None   # the sampler's clipped share and its n
    split: str | None = None            # the product's split: which translation inputs it had


@dataclass(frozen=True)
class Measured:
    rows: list[dict]
    items: dict[str, np.ndarray]        # per-item values (items/<product>.npz)
    hits: int                           # feature sets that came from the cache ...
    lookups: int                        # ... of those looked up

    @property
    def counts(self) -> dict[str, int]:
        return {"hits": self.hits, "lookups": self.lookups}


def _boot_note(resamples: int, what: str = "images") -> str:
    return f"95% CI: bootstrap over {what}, {resamples} resamples"


def save_items(path: str | Path, items: dict[str, np.ndarray]) -> None:
    """Per-item values of one product (or calibration set), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **items)
    os.replace(tmp, path)


# ---------------------------------------------------------------- rows
class Rows:
    """Collects one product's rows; `base` holds the columns they share."""

    def __init__(self, base: dict):
        self.base, self.rows = base, []

    def add(self, metric, value, reference, subset="all", n=None, extractor=None, note=None, k=None):
        """value: a number, or an Interval (fills ci_low and ci_high). The metric must be in
        the registry (report.metrics), which gives the tables their label and direction."""
        registered(metric)
        numbers = value.row() if isinstance(value, Interval) else {"value": float(value)}
        shared = splits.note(reference, self.base.get("split"))
        if shared:
            note = "; ".join(filter(None, [note, shared]))
        self.rows.append({**self.base, "metric": metric, **numbers, "reference": reference, "subset": subset,
                          "k": k, "n": n, "extractor": extractor, "note": note})

    def count(self, metric, k, n, reference, subset, extractor, note=None):
        wilson_note = "95% CI: Wilson" + (f"; {note}" if note else "")
        self.add(metric, wilson(int(k), int(n)), reference, subset=subset, n=int(n), k=int(k),
                 extractor=extractor, note=wilson_note)


def realism(out: Rows, extractors: Extractors, settings: EvalSettings, images: torch.Tensor,
            references: Mapping[str, ReferenceSet], seed: int, items: dict, counter: list[int],
            missing: list[int], note: str | None = None) -> None:
    """FID / KID and precision / recall / density / coverage of `images` against each
    reference set, per extractor; features go into `items`."""
    s = settings
    extra = f"; {note}" if note else ""
    for name in s.extractors:
        features, hit = cached_features(extractors[name], images)
        counter[0] += hit
        counter[1] += 1
        items[f"features_{name}"] = features.astype(np.float32)
        for ref_name, (ref_images, ref_labels) in references.items():
            ref_features, hit = cached_features(extractors[name], ref_images)
            counter[0] += hit
            counter[1] += 1
            fid_note = _boot_note(N_RESAMPLES_FEATURE) + ", centred"
            out.add("fid", fid_interval(features, ref_features, seed=seed), ref_name, n=len(images),
                    extractor=name, note=fid_note + extra)
            kid, size = kid_interval(features, ref_features, s.kid_subset_size, s.kid_subsets, seed)
            out.add("kid", Interval(kid.value * 1e3, kid.low * 1e3, kid.high * 1e3, kid.resamples), ref_name,
                    n=len(images), extractor=name,
                    note=f"x1e3; {s.kid_subsets} seeded subsets of {size} (seed {seed}); {fid_note}{extra}")
            # equal set sizes, as both papers measure: len(images) reference images, a seeded
            # choice that is the same for every model (a folder's sorted listing may group classes)
            m = min(len(images), len(ref_features))
            if m <= K_NEAREST:        # too few images for k-NN balls
                continue
            pick = reference_subset(len(ref_features), m)
            found = manifolds(ref_features[pick], features, k=K_NEAREST)
            prdc_note = (f"k={K_NEAREST}; {len(images)} samples vs {m} reference images (seeded choice); "
                         + _boot_note(N_RESAMPLES, "samples (P, D) or reference images (R, C)") + extra)
            for metric, interval in found.intervals(seed=seed).items():
                out.add(metric, interval, ref_name, n=len(images), extractor=name, note=prdc_note)
            lacking = np.isin(ref_labels[pick], missing) if ref_labels is not None else np.zeros(m, bool)
            if ref_name == "full-domain" and lacking.any():
                for metric, interval in found.intervals(subset=lacking, seed=seed).items():
                    out.add(metric, interval, ref_name, subset="missing-classes", n=int(lacking.sum()),
                            extractor=name, note=prdc_note + "; n: reference images of the missing classes")


def diversity(out: Rows, settings: EvalSettings, centres: torch.Tensor, images_u8: torch.Tensor, seed: int,
              note: str | None = None, phrase: str = "the first") -> None:
    """Intra-cluster LPIPS of the first DIVERSITY_SAMPLES images around the `centres`
    (DIVERSITY_CENTRES target-training images, chosen as `phrase` says:
    instruments.diversity_centres), with an interval over clusters."""
    from models.diversity import intra_cluster_lpips

    clustered = images_u8[:DIVERSITY_SAMPLES]
    lpips = metrics.lpips_for(settings.lpips_net)
    found = intra_cluster_lpips(lpips, clustered, centres, value_range=(0, 255), max_pairs=DIVERSITY_PAIRS,
                                seed=seed)
    value = (mean_interval(found.cluster_means, seed=seed) if found.cluster_means
             else Interval(math.nan, math.nan, math.nan, None))
    out.add("intra_cluster_lpips", value, "target", n=len(clustered), extractor=lpips.extractor,
            note="; ".join(filter(None, [
                found.note(lpips.extractor), f"the first {len(clustered)} images around {phrase} "
                f"{len(centres)} target images", lpips.note(images_u8.shape),
                _boot_note(N_RESAMPLES, "clusters"), note])))


def class_share(out: Rows, classes: Classes, images: torch.Tensor, confidence: float, items: dict,
                note: str | None = None, calls: HeldOutCalls | None = None, seed: int = 0,
                networks: np.ndarray | None = None, labels: np.ndarray | None = None, style: str = "target") -> None:
    """The share of images classified into the missing classes (k of the kept n) and, with the
    classifier's calls on calibration images (References.calls_for(style)), the corrected
    share beside it (its interval over these images and the calibration images). networks:
    which cross-fitted network scores each image (real held-out images); labels: the images'
    true classes, when known, for the note; style: the images' style, for the note where the
    calls are in another."""
    predicted, sure = classes.predict(images, networks)
    items.update(predicted=predicted, confidence=sure.astype(np.float32))
    kept = sure >= confidence
    hits = np.isin(predicted, classes.missing) & kept
    kept_note = _kept_note(confidence, kept)
    out.count("missing_class_share", hits.sum(), kept.sum(), "classifier", "missing-classes", classes.extractor,
              "; ".join(filter(None, [kept_note, note])))
    if calls is None:
        return
    calibration = calls.calibration(classes.missing, confidence)
    stand_in = (f"no held-out labelled images in the {style}'s style: the {calls.style}'s rates stand in"
                if calls.style != style else None)
    truth = None
    if labels is not None and (np.asarray(labels) >= 0).all():
        lacking = np.isin(labels, classes.missing)
        truth = f"the labels say {int(lacking.sum())}/{len(lacking)} = {lacking.mean():.3f}"
    out.add("missing_class_share_corrected", corrected_interval(hits, kept, calibration, seed=seed), "classifier",
            "missing-classes", n=int(kept.sum()), extractor=classes.extractor,
            note="; ".join(filter(None, [describe(calibration, calls.style), _boot_note(N_RESAMPLES, "images and calibration "
                                         "images (stratified by truth), one draw of both"), stand_in, kept_note, truth, note])))


def classifier_calibration(out: Rows, classes: Classes, calls: HeldOutCalls, confidence: float,
                           note: str) -> None:
    """The classifier's confusion on calibration images: recall per class and overall, tpr
    (called missing | truly missing) and fpr (called missing | truly present), as counts. The
    row's reference names the images: the held-out target domain, or held-out source images."""
    reference = CALIBRATION_REFERENCE[calls.style]
    kept = calls.sure >= confidence
    right = (calls.predicted == calls.labels) & kept
    extra = "; ".join(filter(None, [note, _kept_note(confidence, kept)]))
    for c, name in classes.names.items():
        mask = (calls.labels == c) & kept
        if mask.any():
            out.count("class_recall", right[mask].sum(), mask.sum(), reference, f"class:{name}",
                      classes.extractor, extra)
    out.count("class_recall", right.sum(), kept.sum(), reference, "all", classes.extractor, extra)
    hit, missing, false, present = calls.calibration(classes.missing, confidence).counts()
    if missing:
        out.count("missing_tpr", hit, missing, reference, "missing-classes", classes.extractor,
                  "called missing | truly missing; " + extra)
    if present:
        out.count("missing_fpr", false, present, reference, "present-classes", classes.extractor,
                  "called missing | truly present; " + extra)


def _kept_note(confidence: float, kept: np.ndarray) -> str | None:
    if confidence <= 0:
        return None
    return f"classifier confidence >= {confidence:g}: kept {int(kept.sum())} of {len(kept)}"


# ---------------------------------------------------------------- a model's product
def measure(images: torch.Tensor, pairs: Pairs | None, references: References, extractors: Extractors,
            settings: Settings) -> Measured:
    """The rows of one product (uint8 images), its per-item values, and how many feature sets
    were looked up and how many came from the cache. pairs: the source images (translations)
    or the source model's samples from the same noise (None: no paired distance)."""
    s, task, seed = settings.evaluation, settings.task, settings.seed
    out = Rows(dict(settings.columns))
    counter, items = [0, 0], {}
    if settings.clipped is not None:
        share, n = settings.clipped
        out.add("clipped_share", share, "sampler", n=n,
                note=f"last-step x0 outside [-1, 1] by more than {CLIP_TOLERANCE:g} (clip_denoised={s.clip_denoised}, sampler={s.sampler})")
    classes = references.classes
    realism(out, extractors, s, images, references.sets, seed, items, counter, references.missing)
    if task == "unconditional":
        diversity(out, s, references.centres, images, seed, phrase=references.centres_phrase)

    # the paired comparison: the source image (translation) or the source model's sample
    if pairs is not None:
        paired = pairs.images[:len(images)]
        lpips = metrics.lpips_for(s.lpips_net)
        items["lpips"] = lpips(paired, images, value_range=(0, 255))
        out.add("lpips", mean_interval(items["lpips"], seed=seed), pairs.reference, n=len(images),
                extractor=lpips.extractor,
                note="; ".join(filter(None, [lpips.note(images.shape), _boot_note(N_RESAMPLES)])))
        if task != "unconditional":
            for metric, value in (("psnr", metrics.psnr), ("ssim", metrics.ssim)):
                items[metric] = value(paired, images, value_range=(0, 255))
                out.add(metric, mean_interval(items[metric], seed=seed), pairs.reference, n=len(images),
                        note=_boot_note(N_RESAMPLES))

    # classes: what the target set lacks, and what translation keeps
    if classes is not None:
        if task == "unconditional":
            style = style_of(settings.columns.get("method"))
            class_share(out, classes, images, s.confidence, items, calls=references.calls_for(style), seed=seed,
                        style=style)
        else:
            predicted, sure = classes.predict(images)
            inputs = splits.inputs(settings.split, s.num_translations, len(classes.source_labels))[:len(images)]
            labels = classes.source_labels[inputs]
            kept_conf = sure >= s.confidence
            items.update(predicted=predicted, confidence=sure.astype(np.float32), labels=labels)
            kept = (predicted == labels) & kept_conf
            labelled = labels >= 0
            subsets = {"all": labelled, "missing-classes": np.isin(labels, classes.missing),
                       "present-classes": labelled & ~np.isin(labels, classes.missing)}
            subsets.update({f"class:{name}": labels == c for c, name in classes.names.items()})
            for name, mask in subsets.items():
                denominator = (mask & kept_conf).sum()
                if denominator:
                    out.count("class_preservation", kept[mask].sum(), denominator, "source", name,
                              classes.extractor, _kept_note(s.confidence, kept_conf[mask]))
    return Measured(out.rows, items, counter[0], counter[1])


# ---------------------------------------------------------------- calibration
class RealSet(NamedTuple):
    images: torch.Tensor                # uint8
    labels: np.ndarray | None
    references: dict                    # name -> ReferenceSet to measure them against
    note: str
    networks: np.ndarray | None = None  # held-out images: the cross-fitted network that never saw each


def calibration_sets(spec: EvalSpec, references: References, n: int, split: str | None = None
                     ) -> dict[str, RealSet]:
    """name -> n real images, their labels, the reference sets to measure them against, a
    note (and for held-out images, the classifier's network for each). The held-out domain
    is split by parity (floor_positions)."""
    s = spec.settings
    target_spec = spec.target_data.model_dump()
    heldout = open_dataset(target_spec, split="heldout")
    full = {"full-domain": references.sets["full-domain"]}
    classes = references.classes
    labels_of = lambda ds, idx, fallback=None: (  # noqa: E731
        np.asarray(ds.labels)[idx] if ds.labels is not None else (None if fallback is None else fallback[idx]))
    target = open_dataset(target_spec)
    source_spec = spec.source_data.model_dump()
    source = open_dataset(source_spec)            # the source model's training images
    even, odd = floor_positions(len(heldout), s.max_reference, split)
    ref_labels = classes.reference_labels if classes is not None else None
    halves = {"full-domain": ReferenceSet(stack(heldout, odd), labels_of(heldout, odd, ref_labels))}
    source_positions, source_phrase = real_source_positions(spec, classes, len(source), n, split)
    sets = {}
    for name, ds, indices, refs, fallback in (
            # a seeded choice of n, not the first n: a folder's sorted listing groups its classes
            ("target-train", target, reference_subset(len(target), n), full, None),
            ("source", source, source_positions, full,
             classes.source_labels if classes is not None and source_spec["kind"] == "folder" else None),
            ("held-out-half", heldout, even[reference_subset(len(even), n)], halves, ref_labels)):
        note = f"real {name} images vs the held-out domain"
        if name == "held-out-half":
            note = (f"real held-out images (even positions) vs the other half ({len(odd)} odd-position "
                    f"images): the noise floor")
        elif name == "source":
            note = "real source images vs the held-out target domain: the style gap" + source_phrase
        if len(indices) < n:
            note += f"; only {len(indices)} images (not {n}): FID is biased upward at smaller n"
        networks = classes.networks(indices) if classes is not None and name == "held-out-half" else None
        sets[name] = RealSet(stack(ds, indices), labels_of(ds, indices, fallback), refs, note, networks)
    return sets


def real_source_positions(spec: EvalSpec, classes: Classes | None, total: int, n: int, split: str | None = None
                          ) -> tuple[np.ndarray, str]:
    """The real source rows' images (a seeded choice of n) and what the note adds. The source
    model's evaluation takes them from the source images the classifier never trained on
    (instruments.unseen_sources; on a folder pair the even positions of those, since the odd
    ones calibrate it in the source's style), so that the rows check the corrected share on
    images no part of the instrument saw; where fewer than n are left, from the whole source
    set, and the note says so."""
    unseen = unseen_sources(spec, classes) if spec.role == "source" else None
    if unseen is None:
        return reference_subset(total, n), ""
    if spec.source_data.kind == "folder":
        unseen = unseen[floor_positions(len(unseen), spec.settings.max_reference, split)[0]]
        chosen = "labelled source images the class networks never trained on, none of the source-style calibration images"
    else:
        chosen = "source images the builtin network never trained on"
    if len(unseen) >= n:
        return unseen[reference_subset(len(unseen), n)], f"; {chosen}"
    return reference_subset(total, n), (f"; only {len(unseen)} source images left that the classifier never "
                                        f"trained on (not {n}): these include images it trained on")


@dataclass(frozen=True)
class Calibrated:
    rows: list[dict]
    files: dict[str, dict[str, np.ndarray]]   # items/<file name> -> per-item values
    hits: int
    lookups: int

    @property
    def counts(self) -> dict[str, int]:
        return {"hits": self.hits, "lookups": self.lookups}


def measure_calibration(sizes: Mapping[str, int], spec: EvalSpec, references: References,
                        extractors: Extractors, split: str | None = None) -> Calibrated:
    """Calibration rows and the reference features and labels the aggregate needs
    (references.npz; with a split references_<split>.npz, and the split's reference and
    rows). sizes: task -> n, the sample count of the model rows the calibration rows stand
    beside ("unconditional": num_samples, "translation": num_translations); the rows carry
    that task."""
    s = spec.settings
    seed = s.seeds[0]
    classes = references.classes
    rows, counter, files = [], [0, 0], {}
    for task, n in sizes.items():
        for name, (images, labels, refs, note, networks) in calibration_sets(spec, references, n, split).items():
            out = Rows({"stage": "calibration", "run_id": None, "method": "calibration", "weighting": name,
                        "seed": None, "eval_seed": seed, "ckpt_step": None, "task": task, "t0": None,
                        **({"split": split} if split is not None else {})})
            items: dict[str, np.ndarray] = {}
            realism(out, extractors, s, images, refs, seed, items, counter, references.missing, note)
            if task == "unconditional":
                diversity(out, s, references.centres, images, seed, note, references.centres_phrase)
            if classes is not None:
                # the real source images are in the source's style, like the source model's samples
                style = "source" if name == "source" else "target"
                class_share(out, classes, images, s.confidence, items, note, references.calls_for(style), seed,
                            networks, labels, style)
                if labels is not None:
                    items["labels"] = labels
            files[splits.items_name(f"calibration_{name}_{task}", split)] = items
            rows += out.rows
    for calls in (references.calls, references.source_calls):
        if calls is None:
            continue
        out = Rows({"stage": "calibration", "run_id": None, "method": "calibration",
                    "weighting": CLASSIFIER_CALIBRATION[calls.style], "seed": None, "eval_seed": seed,
                    "ckpt_step": None, "task": "unconditional", "t0": None,
                    **({"split": split} if split is not None else {})})
        classifier_calibration(out, classes, calls, s.confidence,
                               f"classifier: {classes.description}; calibrated on {len(calls.labels)} "
                               f"held-out real images in the {calls.style}'s style that it never trained on ("
                               + calls.described + (f", {split} half" if split else "") + ")")
        rows += out.rows
    files[splits.items_name("references", split)] = reference_items(spec, references, extractors)
    return Calibrated(rows, files, counter[0], counter[1])


def reference_items(spec: EvalSpec, references: References, extractors: Extractors) -> dict[str, np.ndarray]:
    """Features of each reference set per extractor (float32, from the cache), their labels,
    and the class names and missing classes: what paired differences and the class
    histogram need without opening the data again."""
    items: dict[str, np.ndarray] = {}
    classes = references.classes
    for ref_name, (ref_images, ref_labels) in references.sets.items():
        for name in spec.settings.extractors:
            items[f"features_{name}_{ref_name}"] = cached_features(extractors[name], ref_images)[0].astype(
                np.float32)
        if ref_labels is not None:
            items[f"labels_{ref_name}"] = ref_labels
    if classes is not None:
        target = open_dataset(spec.target_data.model_dump())
        items["labels_target"] = (np.asarray(target.labels) if target.labels is not None
                                  else folder_labels_of(spec).target)
        items["class_ids"] = np.array(sorted(classes.names))
        items["class_names"] = np.array([classes.names[c] for c in sorted(classes.names)])
        items["missing"] = np.array(classes.missing, dtype=np.int64)
    # the corrected shares of paired differences and cells (jobs/paired.py calibration_of)
    for calls in (references.calls, references.source_calls):
        if calls is not None:
            prefix = CALLS_PREFIX[calls.style]
            items.update({f"{prefix}_labels": calls.labels, f"{prefix}_predicted": calls.predicted,
                          f"{prefix}_confidence": calls.sure})
    return items
