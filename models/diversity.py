"""Intra-cluster LPIPS (Ojha et al., CVPR 2021, "Few-shot Image Generation via Cross-domain
Correspondence"): the diversity metric of few-shot adaptation. A model that copies its few
training images scores near 0 however good each sample looks.

Each generated sample joins the cluster of its nearest target-training image by LPIPS; the
metric is the mean over clusters of the mean pairwise LPIPS inside each cluster. Clusters
with fewer than 2 members have no pairs and are skipped. Pairs per cluster are capped (a
seeded choice) so the cost stays bounded; the caller states the cap in the row's note.
Each sample is embedded once (models.metrics.Lpips.embed: LPIPS is a squared distance of
those vectors), for its nearest centre and for its pairs alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch


@dataclass(frozen=True)
class IntraClusterLpips:
    value: float           # mean over clusters of the mean pairwise LPIPS (nan: no cluster of 2)
    clusters: int          # clusters with at least 2 members (the ones averaged)
    pairs: int             # pairs measured in all
    max_pairs: int         # the cap per cluster
    seed: int
    cluster_means: tuple[float, ...] = ()    # per cluster of >= 2, for an interval over clusters

    def note(self, extractor: str) -> str:
        return (f"intra-cluster LPIPS ({extractor}, Ojha et al. 2021): {self.clusters} clusters of >= 2 "
                f"samples, at most {self.max_pairs} pairs per cluster (seeded choice, seed {self.seed}), "
                f"{self.pairs} pairs in all")


def _pairs(n: int, max_pairs: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    total = n * (n - 1) // 2
    if total <= max_pairs:
        return list(combinations(range(n), 2))
    chosen = np.sort(rng.choice(total, size=max_pairs, replace=False))
    # index k of the upper triangle (row-major) -> (i, j), i < j
    starts = np.cumsum([0] + [n - 1 - i for i in range(n - 1)])
    i = np.searchsorted(starts, chosen, side="right") - 1
    j = chosen - starts[i] + i + 1
    return list(zip(i.tolist(), j.tolist()))


def intra_cluster_lpips(lpips, samples, train, value_range=(-1.0, 1.0), max_pairs: int = 100,
                        seed: int = 0, batch_size: int = 50) -> IntraClusterLpips:
    """`lpips` is a models.metrics.Lpips; `samples` and `train` are (N, 3, H, W) in `value_range`.

    Every sample is embedded once; the embeddings are kept in float16 (VGG at 64 px: 1 MB
    a sample) for the pair distances, which are summed in float32."""
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be at least 1, not {max_pairs}")
    samples, train = torch.as_tensor(samples), torch.as_tensor(train)
    centres = torch.cat([lpips.embed(train[i:i + batch_size], value_range) for i in range(0, len(train), batch_size)])
    kept, nearest = [], []
    for i in range(0, len(samples), batch_size):
        embedded = lpips.embed(samples[i:i + batch_size], value_range)
        nearest.append(torch.cdist(embedded, centres).argmin(1).cpu())
        kept.append(embedded.half().cpu())      # off the GPU: 200 samples of VGG at 256 px are 3 GB
    embedded, nearest = torch.cat(kept), torch.cat(nearest).numpy()
    rng = np.random.default_rng(seed)
    means, total = [], 0
    for centre in np.unique(nearest):
        members = np.flatnonzero(nearest == centre)
        if len(members) < 2:
            continue
        pairs = np.array(_pairs(len(members), max_pairs, rng))
        distances = [(embedded[members[a]].float() - embedded[members[b]].float()).square().sum().item()
                     for a, b in pairs]
        means.append(float(np.mean(distances)))
        total += len(pairs)
    value = float(np.mean(means)) if means else math.nan
    return IntraClusterLpips(value, len(means), total, max_pairs, seed, tuple(means))
