"""Metric rows of one evaluation product (runs inside an evaluation actor).

Unconditional samples: FID/KID against the target set and (built-in pair) the full target
domain; the share of samples classified into the classes the target set lacks; a paired
distance to the source model's sample from the same noise. Translations: PSNR/SSIM and a
paired distance to the source image, FID/KID against the target domain, and how often
the source image's class survives, per class and for the missing classes.
LPIPS uses a trunk converted offline (VGG unless `evaluation.lpips_net` says alex); its
row names the trunk and says when small inputs were resized to 64 px.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from models import metrics
from models.data import open_dataset
from models.features import cached_features

LOWER_IS_BETTER = {"fid", "kid", "lpips", "feature_dist_builtin", "feature_dist_inception"}


def _hyper_parameters(train_spec: dict) -> dict:
    out = {f"p_{k}": train_spec[k] for k in ("steps", "lr", "batch_size", "ema_decay", "dropout", "precision")
           if k in train_spec}
    for k, v in (train_spec.get("distill") or {}).items():
        if k != "weighting" and v is not None:
            out[f"p_{k}"] = v
    return out


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
        **_hyper_parameters(train_spec),
    }


def _references(worker) -> dict[str, torch.Tensor]:
    """Reference image sets: the target set and, for the built-in pair, the full domain."""
    s = worker.spec.settings
    target = worker.spec.target_data.model_dump()
    refs = {"target": open_dataset(target)}
    if target["kind"] == "builtin-target":
        refs["full-domain"] = open_dataset(target, split="heldout")
    return {name: torch.stack([ds[i] for i in range(min(len(ds), s.max_reference))])
            for name, ds in refs.items()}


def measure_product(worker, job: dict) -> tuple[list[dict], dict[str, int]]:
    """Rows, and how many feature sets were looked up and how many came from the cache."""
    s = worker.spec.settings
    base = _identity(worker, job)
    rows: list[dict] = []
    hits = lookups = 0

    def add(metric, value, reference, subset="all", n=None, extractor=None, note=None):
        rows.append({**base, "metric": metric, "value": float(value), "reference": reference,
                     "subset": subset, "n": n, "extractor": extractor, "note": note})

    images = torch.from_numpy(np.load(job["path"]))
    task = base["task"]
    if job.get("clipped") is not None:
        share, n = job["clipped"]
        add("clipped_share", share, "sampler", n=n,
            note=f"last-step x0 outside [-1, 1] (clip_denoised={s.clip_denoised}, sampler={s.sampler})")
    builtin_pair = worker.spec.target_data.kind == "builtin-target"

    # realism: FID / KID per extractor and reference set
    features: dict[str, np.ndarray] = {}
    for name in s.extractors:
        features[name], hit = worker.features(job["path"], name)
        hits, lookups = hits + hit, lookups + 1
        for ref_name, ref_images in _references(worker).items():
            ref_features, hit = cached_features(worker.extractor(name), ref_images)
            hits, lookups = hits + hit, lookups + 1
            add("fid", metrics.fid(features[name], ref_features), ref_name, n=len(images), extractor=name)
            value, size = metrics.kid(features[name], ref_features, s.kid_subset_size, s.kid_subsets, s.seed)
            add("kid", value * 1e3, ref_name, n=len(images), extractor=name,
                note=f"x1e3; {s.kid_subsets} seeded subsets of {size} (seed {s.seed})")

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
        add("lpips", lpips(paired, images, value_range=(0, 255)).mean(), paired_ref, n=len(images),
            extractor=lpips.extractor, note=lpips.note(images.shape))
        if task != "unconditional":
            add("psnr", metrics.psnr(paired, images, value_range=(0, 255)).mean(), paired_ref, n=len(images))
            add("ssim", metrics.ssim(paired, images, value_range=(0, 255)).mean(), paired_ref, n=len(images))

    # classes (built-in pair): what the target set lacks, and what translation keeps
    if builtin_pair:
        from models.data.fashion_mnist import FMNIST_CLASSES
        missing = list(worker.spec.target_data.missing_classes)
        probs = worker.classify(job["path"])
        confident = probs.max(1) >= s.confidence
        predicted = probs.argmax(1)
        note = f"classifier confidence >= {s.confidence:g}" if s.confidence > 0 else None
        if task == "unconditional":
            share = np.isin(predicted[confident], missing).mean() if confident.any() else math.nan
            add("missing_class_share", share, "classifier", subset="missing-classes", n=int(confident.sum()),
                extractor="builtin", note=note)
        else:
            labels = np.asarray(worker.sources().labels[:len(images)])
            kept = (predicted == labels) & confident
            subsets = {"all": np.ones_like(labels, bool), "missing-classes": np.isin(labels, missing),
                       "present-classes": ~np.isin(labels, missing)}
            subsets.update({f"class:{FMNIST_CLASSES[c]}": labels == c for c in range(10)})
            for name, mask in subsets.items():
                denominator = (mask & confident).sum()
                if denominator:
                    add("class_preservation", kept[mask].sum() / denominator, "source", subset=name,
                        n=int(denominator), extractor="builtin", note=note)
    return rows, {"hits": hits, "lookups": lookups}
