"""Precision, recall, density and coverage of samples against real images, in feature space.

- Precision / recall (Kynkaanniemi et al. 2019): each set's manifold is the union of balls
  around its points, each ball reaching the point's k-th nearest neighbour in its own set
  (k = 3). Precision: the share of samples inside the real manifold; recall: the share of
  real images inside the sample manifold.
- Density / coverage (Naeem et al. 2020): density counts how many real balls hold each
  sample (divided by k, averaged); coverage is the share of real images whose ball holds at
  least one sample. Both are robust to outlying samples, which recall is not.

Recall and coverage are shares of real images, so they can be restricted to a subset of
them (the held-out images of the classes the target set lacks): "was this part of the
domain reproduced?" The balls are always those of the full sets; only the average is
restricted. Per-item indicators are kept, so each number can get a bootstrap interval
(samples for precision and density, real images for recall and coverage, the manifolds held
fixed).

Balls are closed (distance <= radius), as in the original precision/recall code; the prdc
package uses < , which differs only on exact ties. numpy only; distances in chunks, so
10k x 10k sets need no 800 MB matrix.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.intervals import Interval, mean_interval

K_NEAREST = 3
CHUNK = 2048        # rows of a distance block


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances, (len(a), len(b)), through the Gram matrix (BLAS) in float64."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def kth_neighbour_radii(features: np.ndarray, k: int = K_NEAREST) -> np.ndarray:
    """Distance from each point to its k-th nearest other point of the same set."""
    if len(features) <= k:
        raise ValueError(f"k-NN radii need more than k={k} points, got {len(features)}")
    radii = np.empty(len(features))
    for start in range(0, len(features), CHUNK):
        block = _distances(features[start:start + CHUNK], features)
        block[np.arange(len(block)), np.arange(start, start + len(block))] = 0.0    # itself, exactly
        radii[start:start + CHUNK] = np.partition(block, k, axis=1)[:, k]         # index 0 is itself
    return radii


@dataclass(frozen=True)
class Manifolds:
    """Per-item results; the four metrics are their means."""
    in_real: np.ndarray         # (samples,) bool: the sample lies in some real ball   -> precision
    real_balls: np.ndarray      # (samples,) real balls holding the sample / k         -> density
    in_fake: np.ndarray         # (real,) bool: the real image lies in some sample ball -> recall
    covered: np.ndarray         # (real,) bool: the real image's own ball holds a sample -> coverage

    def metrics(self, subset: np.ndarray | None = None) -> dict[str, float]:
        """precision, recall, density, coverage; with a mask or index array over the real
        images, only recall and coverage restricted to them."""
        if subset is not None:
            return {"recall": float(self.in_fake[subset].mean()), "coverage": float(self.covered[subset].mean())}
        return {"precision": float(self.in_real.mean()), "recall": float(self.in_fake.mean()),
                "density": float(self.real_balls.mean()), "coverage": float(self.covered.mean())}

    def intervals(self, subset: np.ndarray | None = None, seed: int = 0) -> dict[str, Interval]:
        """`metrics` with bootstrap intervals over the items each one averages (samples for
        precision and density, real images for recall and coverage; manifolds held fixed)."""
        real = np.arange(len(self.in_fake)) if subset is None else np.arange(len(self.in_fake))[subset]
        out = {"recall": mean_interval(self.in_fake[real], seed=seed),
               "coverage": mean_interval(self.covered[real], seed=seed)}
        if subset is None:
            out = {"precision": mean_interval(self.in_real, seed=seed), **out,
                   "density": mean_interval(self.real_balls, seed=seed)}
        return out


def manifolds(real: np.ndarray, fake: np.ndarray, k: int = K_NEAREST) -> Manifolds:
    """Compare sample features `fake` (N, D) with real features `real` (M, D)."""
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features: expected (N, D) and (M, D) arrays, got {real.shape} and {fake.shape}")
    r_real, r_fake = kth_neighbour_radii(real, k), kth_neighbour_radii(fake, k)
    balls = np.zeros(len(fake))
    in_fake = np.zeros(len(real), bool)
    nearest = np.full(len(real), np.inf)
    for start in range(0, len(fake), CHUNK):
        d = _distances(real, fake[start:start + CHUNK])               # (real, chunk)
        balls[start:start + CHUNK] = (d <= r_real[:, None]).sum(0)
        in_fake |= (d <= r_fake[None, start:start + CHUNK]).any(1)
        nearest = np.minimum(nearest, d.min(1))
    return Manifolds(in_real=balls > 0, real_balls=balls / k, in_fake=in_fake, covered=nearest <= r_real)
