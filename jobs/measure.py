"""Metric rows of one evaluation product (runs inside an evaluation actor).

Unconditional samples: FID/KID against the target set and (built-in pair) the full target
domain; the share of samples classified into the classes the target set lacks; a paired
distance to the source model's sample from the same noise. Translations: PSNR/SSIM and a
paired distance to the source image, FID/KID against the target domain, and how often
the source image's class survives, per class and for the missing classes.
LPIPS uses a trunk converted offline (VGG unless `evaluation.lpips_net` says alex); its
row names the trunk and says when small inputs were resized to 64 px.
Precision, recall, density and coverage (k = 3) against each reference set, and recall and
coverage of the held-out images of the missing classes (built-in pair).

Intervals (`ci_low`, `ci_high`, 95 %): bootstrap over this product's images for means and
FID/KID, Wilson for counts (with `k` of `n`); the note states the resamples.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from harness import params
from models import metrics
from models.data import open_dataset
from models.feature_intervals import N_RESAMPLES_FEATURE, fid_interval, kid_interval
from models.features import cached_features
from models.intervals import N_RESAMPLES, Interval, mean_interval, wilson
from models.manifold import K_NEAREST, manifolds

LOWER_IS_BETTER = {"fid", "kid", "lpips", "feature_dist_builtin", "feature_dist_inception"}


def _identity(worker, job: dict) -> dict:
    train_spec, product = job["train_spec"], job["product"]
    model = worker.spec.model
    return {
        "run_id": model[4:] if model.startswith("run:") else model,
        "method": train_spec.get("method") or "source",
        "weighting": (train_spec.get("distill") or {}).get("weighting"),
        "seed": train_spec.get("seed"),
        "ckpt_step": product["ckpt_step"],
        "task": product["task"],
        "t0": product["t0"],
        **params.columns(train_spec),
    }


def _references(worker) -> dict[str, tuple[torch.Tensor, np.ndarray | None]]:
    """Reference image sets and their labels (None where unknown): the target set and, for
    the built-in pair, the full domain."""
    s = worker.spec.settings
    target = worker.spec.target_data.model_dump()
    refs = {"target": open_dataset(target)}
    if target["kind"] == "builtin-target":
        refs["full-domain"] = open_dataset(target, split="heldout")
    out = {}
    for name, ds in refs.items():
        n = min(len(ds), s.max_reference)
        labels = None if ds.labels is None else np.asarray(ds.labels[:n])
        out[name] = (torch.stack([ds[i] for i in range(n)]), labels)
    return out


def _boot_note(resamples: int, what: str = "images") -> str:
    return f"95% CI: bootstrap over {what}, {resamples} resamples"


def measure_product(worker, job: dict) -> tuple[list[dict], dict[str, int]]:
    """Rows, and how many feature sets were looked up and how many came from the cache."""
    s = worker.spec.settings
    base = _identity(worker, job)
    rows: list[dict] = []
    hits = lookups = 0

    def add(metric, value, reference, subset="all", n=None, extractor=None, note=None, k=None):
        """value: a number, or an Interval (fills ci_low and ci_high)."""
        numbers = value.row() if isinstance(value, Interval) else {"value": float(value)}
        rows.append({**base, "metric": metric, **numbers, "reference": reference, "subset": subset,
                     "k": k, "n": n, "extractor": extractor, "note": note})

    def add_count(metric, k, n, reference, subset, note=None):
        wilson_note = "95% CI: Wilson" + (f"; {note}" if note else "")
        add(metric, wilson(int(k), int(n)), reference, subset=subset, n=int(n), k=int(k),
            extractor="builtin", note=wilson_note)

    images = torch.from_numpy(np.load(job["path"]))
    task = base["task"]
    if job.get("clipped") is not None:
        share, n = job["clipped"]
        add("clipped_share", share, "sampler", n=n,
            note=f"last-step x0 outside [-1, 1] (clip_denoised={s.clip_denoised}, sampler={s.sampler})")
    builtin_pair = worker.spec.target_data.kind == "builtin-target"

    # realism: FID / KID, precision / recall / density / coverage per extractor and reference set
    features: dict[str, np.ndarray] = {}
    missing = list(worker.spec.target_data.missing_classes) if builtin_pair else []
    for name in s.extractors:
        features[name], hit = worker.features(job["path"], name)
        hits, lookups = hits + hit, lookups + 1
        for ref_name, (ref_images, ref_labels) in _references(worker).items():
            ref_features, hit = cached_features(worker.extractor(name), ref_images)
            hits, lookups = hits + hit, lookups + 1
            fid_note = _boot_note(N_RESAMPLES_FEATURE) + ", centred"
            add("fid", fid_interval(features[name], ref_features, seed=s.seed), ref_name, n=len(images),
                extractor=name, note=fid_note)
            kid, size = kid_interval(features[name], ref_features, s.kid_subset_size, s.kid_subsets, s.seed)
            add("kid", Interval(kid.value * 1e3, kid.low * 1e3, kid.high * 1e3, kid.resamples), ref_name,
                n=len(images), extractor=name,
                note=f"x1e3; {s.kid_subsets} seeded subsets of {size} (seed {s.seed}); {fid_note}")
            # equal set sizes, as both papers measure: the first len(images) reference images
            m = min(len(images), len(ref_features))
            if m <= K_NEAREST:        # too few images for k-NN balls
                continue
            found = manifolds(ref_features[:m], features[name], k=K_NEAREST)
            prdc_note = (f"k={K_NEAREST}; {len(images)} samples vs {m} reference images; "
                         + _boot_note(N_RESAMPLES, "samples (P, D) or reference images (R, C)"))
            for metric, interval in found.intervals(seed=s.seed).items():
                add(metric, interval, ref_name, n=len(images), extractor=name, note=prdc_note)
            lacking = np.isin(ref_labels[:m], missing) if ref_labels is not None else np.zeros(m, bool)
            if ref_name == "full-domain" and lacking.any():
                for metric, interval in found.intervals(subset=lacking, seed=s.seed).items():
                    add(metric, interval, ref_name, subset="missing-classes", n=int(lacking.sum()),
                        extractor=name, note=prdc_note + "; n: reference images of the missing classes")

    # the paired comparison: the source image (translation) or the source model's sample
    if task == "unconditional":
        paired = (torch.from_numpy(np.load(job["source_samples"])) if job.get("source_samples") else None)
        paired_ref = "source-model"
    else:
        sources = worker.sources()
        paired = torch.stack([sources[i] for i in range(len(images))])
        paired_ref = "source"
    if paired is not None:
        paired = paired[:len(images)]
        lpips = metrics.lpips_for(s.lpips_net)
        add("lpips", mean_interval(lpips(paired, images, value_range=(0, 255)), seed=s.seed), paired_ref,
            n=len(images), extractor=lpips.extractor,
            note="; ".join(filter(None, [lpips.note(images.shape), _boot_note(N_RESAMPLES)])))
        if task != "unconditional":
            for metric, measure in (("psnr", metrics.psnr), ("ssim", metrics.ssim)):
                add(metric, mean_interval(measure(paired, images, value_range=(0, 255)), seed=s.seed),
                    paired_ref, n=len(images), note=_boot_note(N_RESAMPLES))

    # classes (built-in pair): what the target set lacks, and what translation keeps
    if builtin_pair:
        from models.data.fashion_mnist import FMNIST_CLASSES
        probs = worker.classify(job["path"])
        confident = probs.max(1) >= s.confidence
        predicted = probs.argmax(1)
        note = f"classifier confidence >= {s.confidence:g}" if s.confidence > 0 else None
        if task == "unconditional":
            add_count("missing_class_share", np.isin(predicted[confident], missing).sum(), confident.sum(),
                      "classifier", "missing-classes", note)
        else:
            labels = np.asarray(worker.sources().labels[:len(images)])
            kept = (predicted == labels) & confident
            subsets = {"all": np.ones_like(labels, bool), "missing-classes": np.isin(labels, missing),
                       "present-classes": ~np.isin(labels, missing)}
            subsets.update({f"class:{FMNIST_CLASSES[c]}": labels == c for c in range(10)})
            for name, mask in subsets.items():
                denominator = (mask & confident).sum()
                if denominator:
                    add_count("class_preservation", kept[mask].sum(), denominator, "source", name, note)
    return rows, {"hits": hits, "lookups": lookups}
