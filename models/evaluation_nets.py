"""Training the harness's own evaluation networks, cached on disk by what they are trained on.

- `feature_net()`: the `builtin` feature extractor and class/domain classifier, trained on
  the built-in pair's source split, grey and painted (all classes), once per machine.
- `domain_classifier(source, target, schedule)`: EGSDE's time-conditioned domain classifier,
  trained on noisy source and noisy target images of a run's data, noised as the guided
  model's schedule noises them.
- `labelled_classifiers(source, target, labels)`: for folder data with a labels CSV,
  `folds` FeatureNets cross-fitted over the labelled reference (the target's style, every
  class): network k trains on the labelled source images and the reference images outside
  fold k, so each reference image has a network that never saw it
  (docs/evaluation-classes.md). The target-train images are left out: the calibration rows
  score them. A source-vs-target domain head as the builtin one has. Its rows name the
  extractor `labelled`.
A lock makes concurrent jobs wait for the first one to train instead of training twice.

    python -m models.evaluation_nets            # train (or find) the builtin feature network
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch.nn import functional as F

from models.classifiers import DomainClassifier, FeatureNet
from models.data import open_dataset, to_model_range
from models.data.builtin import builtin_split, cache_dir, grey_to_rgb, source_indices
from models.data.painted import paint
from models.schedule import NoiseSchedule
from models.shipped import find_shipped, write_provenance
from safetensors.torch import load_file, save_file

FEATURE_RECIPE = {"version": 1, "pair_seed": 0, "per_domain": 30_000, "epochs": 3, "batch": 128,
                  "lr": 3e-3, "style_seed": 12_345}
SHIPPED_FILE = "featurenet.safetensors"
DOMAIN_RECIPE = {"version": 1, "steps": 600, "batch": 64, "lr": 2e-3}
# steps: `epochs` passes over the labelled images read, within [min_steps, max_steps]
# folds: two networks keep the evaluation's start-up cost at twice one network's (the suite
# trains them in several tests); each still sees half of every class in the target's style
LABELLED_RECIPE = {"version": 2, "folds": 2, "epochs": 10, "min_steps": 100, "max_steps": 2000, "batch": 64, "lr": 3e-3,
                   "max_source": 5000}


def _cache_path(kind: str, key: Mapping[str, Any]) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "classifiers" / f"{kind}-{digest}.pt"


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _cached(path: Path, build: Callable[[], torch.nn.Module], model: torch.nn.Module) -> torch.nn.Module:
    with _locked(path):
        if not path.is_file():
            trained = build()
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(trained.state_dict(), tmp)
            os.replace(tmp, path)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------- builtin feature network
def feature_net_images() -> np.ndarray:
    """The Fashion-MNIST training images (indices) the builtin network trained on, each grey
    and painted: the first `per_domain` of its pair's source split (_train_feature_net)."""
    return source_indices(FEATURE_RECIPE["pair_seed"])[:FEATURE_RECIPE["per_domain"]]


def _train_feature_net(recipe: dict) -> FeatureNet:
    source = builtin_split("source", 32, recipe["pair_seed"])
    n = recipe["per_domain"]
    grey = source.images[:n].permute(0, 2, 3, 1).numpy()[..., 0]
    images = np.concatenate([grey_to_rgb(grey), paint(grey, recipe["style_seed"])])
    classes = torch.from_numpy(np.concatenate([source.labels[:n], source.labels[:n]]))
    domains = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)

    torch.manual_seed(0)
    net = FeatureNet()
    steps = recipe["epochs"] * (len(pixels) // recipe["batch"])
    opt = torch.optim.AdamW(net.parameters(), lr=recipe["lr"], weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=steps, pct_start=0.15)
    generator = torch.Generator().manual_seed(0)
    net.train()
    start = time.time()
    for epoch in range(recipe["epochs"]):
        order = torch.randperm(len(pixels), generator=generator)
        for i in range(len(pixels) // recipe["batch"]):
            idx = order[i * recipe["batch"]:(i + 1) * recipe["batch"]]
            x = to_model_range(pixels[idx])
            if torch.rand((), generator=generator) < 0.5:
                x = x.flip(3)
            class_logits, domain_logits = net(x)
            loss = (F.cross_entropy(class_logits, classes[idx], label_smoothing=0.05)
                    + 0.5 * F.cross_entropy(domain_logits, domains[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print(f"[feature net] epoch {epoch + 1}/{recipe['epochs']} loss {loss.item():.3f} "
              f"({time.time() - start:.0f} s)", flush=True)
    return net


def feature_net() -> FeatureNet:
    """The builtin feature network: the shipped weights of this recipe where they exist,
    else trained on first use and then read from the cache."""
    path = _cache_path("featurenet", FEATURE_RECIPE)
    shipped = find_shipped(path.stem)
    if shipped is not None:
        net = FeatureNet()
        net.load_state_dict(load_file(shipped / SHIPPED_FILE))
        return net.eval().requires_grad_(False)
    return _cached(path, lambda: _train_feature_net(FEATURE_RECIPE), FeatureNet())


def ship_feature_net(out_dir: Path) -> Path:
    """Write the cached feature network as a shipped folder with its provenance."""
    path = _cache_path("featurenet", FEATURE_RECIPE)
    net = feature_net()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out_dir / SHIPPED_FILE)
    write_provenance(out_dir, path.stem, recipe=FEATURE_RECIPE,
                     regenerate="SDFT_SHIPPED_WEIGHTS=0 python -m models.evaluation_nets --ship " + str(out_dir))
    return out_dir


# ---------------------------------------------------------------- EGSDE domain classifier
def _train_domain_classifier(source: Mapping, target: Mapping, recipe: dict,
                             schedule: NoiseSchedule) -> DomainClassifier:
    source_set, target_set = open_dataset(source), open_dataset(target)
    torch.manual_seed(0)
    net = DomainClassifier()
    opt = torch.optim.AdamW(net.parameters(), lr=recipe["lr"])
    generator = torch.Generator().manual_seed(0)
    half = recipe["batch"] // 2
    for _ in range(recipe["steps"]):
        s_idx = torch.randint(len(source_set), (half,), generator=generator).tolist()
        t_idx = torch.randint(len(target_set), (half,), generator=generator).tolist()
        x0 = to_model_range(torch.stack([source_set[i] for i in s_idx] + [target_set[i] for i in t_idx]))
        labels = torch.cat([torch.zeros(half, dtype=torch.long), torch.ones(half, dtype=torch.long)])
        t = torch.randint(0, schedule.num_timesteps, (len(x0),), generator=generator)
        x_t = schedule.add_noise(x0, torch.randn(x0.shape, generator=generator), t)
        loss = F.cross_entropy(net(x_t, t), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net


def _data_key(data: Mapping, fields=None) -> dict:
    """A data spec (its `fields`, or all) as a cache key: a folder is named by its path and
    told apart from its own earlier contents by its listing (models/data/folder.py
    listing_digest), so that images replaced under the same path train the network again."""
    key = {k: data[k] for k in (fields or data) if k in data}
    if data.get("kind") == "folder":
        from models.data.folder import listing_digest
        key["listing"] = [listing_digest(data[k]) for k in ("path", "reference") if data.get(k)]
    return key


def domain_classifier(source: Mapping, target: Mapping, schedule: NoiseSchedule | None = None) -> DomainClassifier:
    """EGSDE's classifier for the noisy images of the guided model's `schedule` (None: linear)."""
    schedule = schedule or NoiseSchedule()
    key = {"recipe": DOMAIN_RECIPE, "source": _data_key(source), "target": _data_key(target)}
    if schedule != NoiseSchedule():      # the linear schedule's networks keep their cache key
        key["schedule"] = schedule.info()
    return _cached(_cache_path("domain", key),
                   lambda: _train_domain_classifier(source, target, DOMAIN_RECIPE, schedule), DomainClassifier())


# ---------------------------------------------------------------- folder data with labels
def reference_folds(n: int, folds: int) -> np.ndarray:
    """The fold of each reference image (listing order): a seeded, balanced assignment that
    is unrelated to the listing's order (a folder's sorted listing may group the classes,
    and the calibration rows split the reference by parity)."""
    return np.random.default_rng(0).permutation(n) % folds


def _read32(ds, indices) -> torch.Tensor:
    """Images of a dataset at the FeatureNet's 32 px input, read once."""
    return torch.cat([FeatureNet.prepare(to_model_range(torch.stack([ds[int(i)] for i in indices[k:k + 256]])))
                      for k in range(0, len(indices), 256)])


def _train_labelled(source_x, source_y, style_x, style_y, num_classes: int, recipe: dict) -> FeatureNet:
    """Half of each batch from the labelled source images, half from the target-style images
    (drawn with replacement); class and domain losses."""
    torch.manual_seed(0)
    net = FeatureNet(num_classes=num_classes)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe["lr"], weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    half = recipe["batch"] // 2
    seen = len(style_x) + (len(source_x) if source_x is not None else 0)
    steps = min(max(-(-recipe["epochs"] * seen // recipe["batch"]), recipe["min_steps"]), recipe["max_steps"])
    net.train()
    for _ in range(steps):
        t = torch.randint(len(style_x), (half,), generator=generator)
        x, classes, domains = [style_x[t]], [style_y[t]], [torch.ones(half, dtype=torch.long)]
        if source_x is not None:
            s_ = torch.randint(len(source_x), (half,), generator=generator)
            x.append(source_x[s_])
            classes.append(source_y[s_])
            domains.append(torch.zeros(half, dtype=torch.long))
        x = torch.cat(x)
        if torch.rand((), generator=generator) < 0.5:
            x = x.flip(3)
        class_logits, domain_logits = net(x)
        loss = F.cross_entropy(class_logits, torch.cat(classes), label_smoothing=0.05)
        if source_x is not None:
            loss = loss + 0.5 * F.cross_entropy(domain_logits, torch.cat(domains))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net


class _Folds(torch.nn.Module):
    """The fold networks of one recipe, saved and loaded as one state dict."""

    def __init__(self, folds: int, num_classes: int):
        super().__init__()
        self.nets = torch.nn.ModuleList([FeatureNet(num_classes=num_classes) for _ in range(folds)])


def labelled_source_choice(source_labels: np.ndarray, max_source: int) -> np.ndarray:
    """The labelled source images the fold networks train on: all of them, or a sorted seeded
    choice of `max_source`. The others are held out (jobs/evaluation/instruments.py calibrates
    the classifier in the source's style on them)."""
    labelled = np.flatnonzero(np.asarray(source_labels) >= 0)
    if len(labelled) <= max_source:
        return labelled
    return np.sort(np.random.default_rng(0).choice(labelled, max_source, replace=False))


def _train_folds(source: Mapping, target: Mapping, labels, recipe: dict) -> _Folds:
    """The images are read once, at the network's 32 px input (at most `max_source` source
    images, a seeded choice), so a step costs no disk reads."""
    source_set, reference_set = open_dataset(source), open_dataset(target, split="heldout")
    position = {c: i for i, c in enumerate(labels.classes)}
    source_idx = labelled_source_choice(labels.source, recipe["max_source"])
    source_x = _read32(source_set, source_idx) if len(source_idx) else None
    source_y = torch.tensor([position[int(labels.source[i])] for i in source_idx])
    reference_x = _read32(reference_set, np.arange(len(reference_set)))
    reference_y = torch.tensor([position[int(c)] for c in labels.reference])
    fold = reference_folds(len(reference_set), recipe["folds"])
    out = _Folds(recipe["folds"], len(position))
    for k in range(recipe["folds"]):
        outside = torch.from_numpy(np.flatnonzero(fold != k))
        out.nets[k] = _train_labelled(source_x, source_y, reference_x[outside], reference_y[outside],
                                      len(position), recipe)
    return out


def labelled_classifiers(source: Mapping, target: Mapping, labels) -> list[FeatureNet]:
    """The fold networks of a folder pair with labels (models.data.labels.FolderLabels):
    network k never trained on the reference images of fold k
    (`reference_folds(len(labels.reference), len(networks))`). Cached by the recipe, the data
    (a folder's path and listing) and the labels file's content. Class outputs are in the
    order of `labels.classes`."""
    key = {"recipe": LABELLED_RECIPE, "source": _data_key(source), "labels": labels.digest,
           "target": _data_key(target, ("kind", "path", "reference", "resolution"))}
    folds = _cached(_cache_path("labelled", key), lambda: _train_folds(source, target, labels, LABELLED_RECIPE),
                    _Folds(LABELLED_RECIPE["folds"], len(labels.classes)))
    return list(folds.nets)


if __name__ == "__main__":
    import sys

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    start = time.time()
    if sys.argv[1:2] == ["--ship"]:
        print(f"shipped: {ship_feature_net(Path(sys.argv[2]))}")
    else:
        feature_net()
        print(f"feature net ready in {time.time() - start:.0f} s: {_cache_path('featurenet', FEATURE_RECIPE)}")
