"""What a product is measured against, built once per evaluation actor
(jobs/evaluation/worker.py) and used by jobs/evaluation/measure.py: the reference image sets
(with a split, its half of the held-out domain), the held-out positions of the noise floor
and of the class instrument's calibration, the class instrument itself (the `builtin`
classifier on the built-in pair; networks cross-fitted over a folder's labelled reference)
with its calls on the calibration images, and the feature extractors."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch

from runs.spec import EvalSpec
from jobs.evaluation import splits
from models.class_share import Calibration
from models.data import open_dataset

# the diversity metric's cluster centres: 10 target-training images (Ojha et al. 2021's
# 10-shot setting; jobs/evaluation/measure.py `diversity`; diversity_centres)
DIVERSITY_CENTRES = 10


@dataclass(frozen=True)
class Classes:
    """A classifier over the data's classes and what the metrics need from the labels."""
    extractor: str                      # the row's extractor: "builtin" or "labelled"
    names: dict[int, str]
    missing: list[int]
    probabilities: Callable[[torch.Tensor], np.ndarray]    # uint8 images -> (N, classes)
    ids: np.ndarray                     # class id of each probability column
    source_labels: np.ndarray | None    # of the translation inputs (-1: unlabelled)
    reference_labels: np.ndarray | None  # of the full domain
    # several cross-fitted networks: held_out(images, network of each image) and the network
    # that never trained on each full-domain image (listing order); `probabilities` scores
    # image i of a set by network i mod the networks' count
    held_out: Callable[[torch.Tensor, np.ndarray], np.ndarray] | None = None
    folds: np.ndarray | None = None
    description: str = ""               # what it trained on, for the calibration rows' note

    def predict(self, images_u8: torch.Tensor, networks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(class id, confidence) per image; networks: which cross-fitted network scores each."""
        if networks is not None and self.held_out is not None:
            probs = self.held_out(images_u8, networks)
        else:
            probs = self.probabilities(images_u8)
        return self.ids[probs.argmax(1)], probs.max(1)

    def networks(self, positions: np.ndarray) -> np.ndarray | None:
        """The network that never trained on each full-domain image (None: one network, that
        trained on none of them)."""
        return None if self.folds is None else self.folds[np.asarray(positions)]


@dataclass(frozen=True)
class HeldOutCalls:
    """The classifier's calls on calibration images (held-out real images of one style that
    it never trained on): their labels, predicted class and confidence."""
    labels: np.ndarray
    predicted: np.ndarray
    sure: np.ndarray
    positions: np.ndarray | None = None  # which images of their set
    style: str = "target"               # whose style the images are in: "target" or "source"
    described: str = "the odd positions of the held-out domain"   # which images, for the rows' note

    def calibration(self, missing, confidence: float) -> Calibration:
        return Calibration.of_calls(self.labels, self.predicted, self.sure, missing, confidence)


class Extractors:
    """Feature extractors by name (models.features.EXTRACTORS), each built when first asked
    for, once per actor."""

    def __init__(self):
        self._built: dict[str, object] = {}

    def __getitem__(self, name: str):
        if name not in self._built:
            from models.features import EXTRACTORS
            self._built[name] = EXTRACTORS[name]()
        return self._built[name]


class ReferenceSet(NamedTuple):
    images: torch.Tensor                # uint8
    labels: np.ndarray | None           # None where unknown


@dataclass(frozen=True)
class References:
    """What every product is measured against: the reference sets ("target" and, for the
    built-in pair or a folder target with a `reference`, "full-domain"), the classes, and
    the diversity metric's cluster centres (diversity_centres)."""
    sets: dict[str, ReferenceSet]
    classes: Classes | None
    centres: torch.Tensor
    calls: HeldOutCalls | None = None   # the classifier's calls on the calibration images
    # ... and on held-out labelled images in the source's style (the source model's evaluation
    # only, where there are such images): its samples, and the real source images, are
    # corrected with the classifier's errors in their own style
    source_calls: HeldOutCalls | None = None
    centres_phrase: str = "the first"   # how the centres were chosen, for the rows' note

    def calls_for(self, style: str) -> HeldOutCalls | None:
        """The calls whose error rates correct a share of images in `style`: the source
        style's where measured, else the target style's."""
        return self.source_calls if style == "source" and self.source_calls is not None else self.calls

    @property
    def missing(self) -> list[int]:
        return self.classes.missing if self.classes is not None else []


def folder_labels_of(spec: EvalSpec):
    """FolderLabels of a folder target with labels, else None."""
    target = spec.target_data.model_dump()
    if target["kind"] != "folder" or not target.get("labels"):
        return None
    from models.data.labels import folder_labels
    return folder_labels(target["labels"], target["path"], target["reference"], spec.source_data.path)


def classes_of(spec: EvalSpec, extractors: Extractors, sources: Callable[[], object]) -> Classes | None:
    """sources() opens the translation inputs (their labels, on the built-in pair)."""
    if spec.target_data.kind == "builtin-target":
        from models.data.fashion_mnist import FMNIST_CLASSES
        builtin = extractors["builtin"]
        heldout = open_dataset(spec.target_data.model_dump(), split="heldout")
        from models.evaluation_nets import FEATURE_RECIPE
        return Classes("builtin", dict(enumerate(FMNIST_CLASSES)), list(spec.target_data.missing_classes),
                       builtin.classify, np.arange(10), np.asarray(sources().labels),
                       np.asarray(heldout.labels),
                       description=f"the builtin feature network, trained on {FEATURE_RECIPE['per_domain']} "
                       "source-split images, grey and painted, of every class; never on target-train or "
                       "held-out images")
    labels = folder_labels_of(spec)
    if labels is None:
        return None
    from models.data import to_model_range
    from models.evaluation_nets import LABELLED_RECIPE, labelled_classifiers, reference_folds

    nets = labelled_classifiers(spec.source_data.model_dump(), spec.target_data.model_dump(), labels)
    folds = reference_folds(len(labels.reference), len(nets))

    @torch.no_grad()
    def held_out(images_u8, networks, batch_size=500):
        out = np.zeros((len(images_u8), len(labels.classes)), dtype=np.float64)
        for k, net in enumerate(nets):
            rows = np.flatnonzero(np.asarray(networks) == k)
            for i in range(0, len(rows), batch_size):
                chosen = torch.from_numpy(rows[i:i + batch_size])
                out[rows[i:i + batch_size]] = net(to_model_range(images_u8[chosen]))[0].softmax(1).numpy()
        return out

    sizes = np.bincount(folds, minlength=len(nets))
    source = int((labels.source >= 0).sum())
    description = (f"{len(nets)} networks cross-fitted over the {len(folds)} labelled reference images "
                   f"(network k trained on the {len(folds)} - {'/'.join(map(str, sizes))} reference images "
                   f"outside fold k and on {min(source, LABELLED_RECIPE['max_source'])} labelled source images, "
                   "none on the target-train images); a reference image is scored by the network that "
                   "never saw it, image i of any other set by network i mod "
                   f"{len(nets)}")
    return Classes("labelled", {c: str(c) for c in labels.classes}, labels.missing,
                   lambda images: held_out(images, np.arange(len(images)) % len(nets)),
                   np.array(labels.classes), labels.source, labels.reference, held_out, folds, description)


def references_of(spec: EvalSpec, classes: Classes | None, split: str | None = None) -> References:
    """The reference image sets and their labels (the full domain's from the classes where
    the data has none), and the diversity centres. With a split, the full domain is that
    split's half (splits.reference_half); the target set is the same for both."""
    s = spec.settings
    target = spec.target_data.model_dump()
    refs = {"target": open_dataset(target)}
    if target["kind"] == "builtin-target" or target.get("reference"):
        refs["full-domain"] = open_dataset(target, split="heldout")
    sets = {}
    for name, ds in refs.items():
        pool = splits.reference_half(len(ds), split) if name == "full-domain" else np.arange(len(ds))
        chosen = pool[reference_subset(len(pool), s.max_reference)]
        labels = ds.labels
        if labels is None and classes is not None and name == "full-domain":
            labels = classes.reference_labels
        sets[name] = ReferenceSet(stack(ds, chosen), None if labels is None else np.asarray(labels)[chosen])
    centre_positions, centres_phrase = diversity_centres(target["kind"], len(refs["target"]))
    centres = stack(refs["target"], centre_positions)
    calls = None
    if classes is not None and "full-domain" in refs:
        heldout = refs["full-domain"]
        positions = calibration_positions(len(heldout), s.max_reference, split)
        labels = heldout.labels if heldout.labels is not None else classes.reference_labels
        if labels is not None:
            predicted, sure = classes.predict(stack(heldout, positions), classes.networks(positions))
            calls = HeldOutCalls(np.asarray(labels)[positions], predicted, sure, positions)
    source_calls = source_style_calls(spec, classes, split) if spec.role == "source" and calls is not None else None
    return References(sets, classes, centres, calls, source_calls, centres_phrase)


def diversity_centres(kind: str, total: int) -> tuple[np.ndarray, str]:
    """Which target-training images are the diversity metric's cluster centres, and how they
    were chosen: on a folder a seeded choice (its listing is sorted by path, so a folder of
    class subfolders would give its first class only); the built-in target set is itself a
    seeded draw in random order, so its first ones."""
    if kind == "folder":
        return reference_subset(total, DIVERSITY_CENTRES), "a seeded choice of"
    return np.arange(min(DIVERSITY_CENTRES, total)), "the first"


def source_style_calls(spec: EvalSpec, classes: Classes, split: str | None = None) -> HeldOutCalls | None:
    """The classifier's calls on labelled source-style images it never trained on, chosen as
    the target style's calibration images are (calibration_positions): on the built-in pair
    the grey test images, so the same garments as the painted calibration images; on a
    folder pair the labelled source images outside the fold networks' seeded choice (None
    where they all trained on them: then the target style's rates stand in)."""
    source = spec.source_data.model_dump()
    if classes.extractor == "builtin" and source["kind"] == "builtin-source":
        images = open_dataset(source, split="source_test")
        pool, labels = np.arange(len(images)), np.asarray(images.labels)
        which = "the grey test images at the painted calibration images' positions: the same garments"
    elif (pool := unseen_sources(spec, classes)) is not None:
        # a labelled folder pair (the builtin case is the branch above): the translation
        # inputs are the source folder, so their labels are its labels
        labels, images = np.asarray(classes.source_labels), open_dataset(source)
        which = f"odd positions of the {len(pool)} labelled source images outside the networks' training choice"
    else:
        return None
    if not len(pool):
        return None
    positions = pool[calibration_positions(len(pool), spec.settings.max_reference, split)]
    # image i of a set the folds never saw is scored by network i mod their count (Classes)
    predicted, sure = classes.predict(stack(images, positions))
    return HeldOutCalls(labels[positions], predicted, sure, positions, "source", which)


def unseen_sources(spec: EvalSpec, classes: Classes | None) -> np.ndarray | None:
    """The source set's images (positions) the classifier never trained on: on the built-in
    pair those outside the builtin network's training images (feature_net_images); on a
    folder pair with labels the labelled ones outside the fold networks' choice
    (labelled_source_choice), whose odd positions (as the held-out domain's: floor_positions)
    calibrate the classifier in the source's style. None elsewhere."""
    if classes is None:
        return None
    if classes.extractor == "builtin" and spec.source_data.kind == "builtin-source":
        from models.data.builtin import source_indices
        from models.evaluation_nets import feature_net_images
        return np.flatnonzero(~np.isin(source_indices(spec.source_data.seed), feature_net_images()))
    if classes.extractor == "labelled" and spec.source_data.kind == "folder":
        from models.evaluation_nets import LABELLED_RECIPE, labelled_source_choice
        labels = np.asarray(classes.source_labels)
        return np.setdiff1d(np.flatnonzero(labels >= 0), labelled_source_choice(labels, LABELLED_RECIPE["max_source"]))
    return None


def floor_positions(total: int, max_reference: int, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The held-out domain (with a split, the split's half) split by parity: the noise floor's
    images come from the even positions, its reference from the odd ones (at most
    max_reference, a seeded choice)."""
    pool = splits.reference_half(total, split)
    even, odd = pool[0::2], pool[1::2]
    return even, odd[reference_subset(len(odd), max_reference)]


def calibration_positions(total: int, max_reference: int, split: str | None = None) -> np.ndarray:
    """The classifier's calibration images: the floor's reference half (the odd positions),
    so that the floor's own images (even) check the correction on images it did not use."""
    return floor_positions(total, max_reference, split)[1]


def reference_subset(total: int, size: int) -> np.ndarray:
    """All indices when size >= total, else a sorted seeded choice of `size` (seed 0: the
    same images for every model and every evaluation seed)."""
    if size >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(0).choice(total, size, replace=False))


def stack(ds, indices) -> torch.Tensor:
    return torch.stack([ds[i] for i in indices])
