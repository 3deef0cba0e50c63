"""FID and KID with bootstrap intervals over the evaluation images.

The value is clean-fid's FID / KID (`models.metrics.fid` / `.kid`; FID taken through the
factored reference below, equal to `metrics.fid` to about 1e-9 relative, tested).
Each bootstrap replicate is the same number on resampled sample rows, but computed in a
form that is equal and much cheaper than calling clean-fid again:
- clean-fid's `frechet_distance` takes a 2048 x 2048 `sqrtm`: about 15 s on one core, per
  replicate. Here the reference's covariance is factored once (Sigma_r = L L^T), so that
  tr sqrt(Sigma Sigma_r) is the sum of the square roots of the eigenvalues of a symmetric
  matrix of size min(rank, distinct resampled rows).
- clean-fid's `kernel_distance` recomputes three 1000 x 1000 x d kernels per subset. Here
  the kernels are computed once, and a replicate only counts how often each sample lands
  in each subset. The subsets are drawn exactly as clean-fid draws them (same seed, same
  calls), so a replicate equals `metrics.kid(samples[indices], reference, ..., seed)`.
  KID's random subsets are thus held fixed across replicates (common random numbers): the
  interval covers the choice of evaluation images, not the subset draw.
The reference set is fixed (every model is measured against the same one); only the
samples are resampled. Tests check each replicate against clean-fid itself.

Bootstrapping repeats rows, which raises FID and KID (fewer distinct images): replicates sit
above the value by about the estimator's own small-sample bias, and the plain percentile
interval does not even hold the value (measured: 0 of 100 simulated draws). So these
intervals are `centered_interval`s: the replicates' percentile interval shifted down by
their mean bias; they cover the expected FID at this number of images (tested).
numpy/scipy only at import time.
"""
from __future__ import annotations

import hashlib

import numpy as np

from models.intervals import Interval, bootstrap_replicates, centered_interval

N_RESAMPLES_FEATURE = 200     # replicates of FID / KID: each costs an eigen-decomposition or kernel pass


# ---------------------------------------------------------------- FID
_FACTORS: dict[tuple, tuple[np.ndarray, float, np.ndarray]] = {}
KEPT_FACTORS = 4      # an evaluation's reference sets (full domain, target, held-out, ...), at most
                      # 32 MB each at Inception's 2048 dimensions


def reference_factor(reference: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """(mean, trace of the covariance, F with Sigma_r = F F^T) of a reference set's features.
    Kept per process by the features' digest: an evaluation measures many sample sets against
    a few references, and at Inception's 2048 dimensions an eigen-decomposition is seconds.
    A reference of fewer images than dimensions (a few-shot target's) is factored from the
    thin SVD of its centred rows instead: the same non-zero eigenpairs, without the d x d
    eigen-decomposition."""
    r = np.ascontiguousarray(reference, dtype=np.float64)
    key = (r.shape, hashlib.blake2b(r.tobytes(), digest_size=16).hexdigest())
    if key not in _FACTORS:
        n, d = r.shape
        centred = r - r.mean(0)
        if n < d:
            _, s, vt = np.linalg.svd(centred, full_matrices=False)
            lam, vec = s * s / (n - 1), vt.T
        else:
            lam, vec = np.linalg.eigh(centred.T @ centred / (n - 1))
        keep = lam > lam.max() * d * np.finfo(float).eps
        while len(_FACTORS) >= KEPT_FACTORS:
            _FACTORS.pop(next(iter(_FACTORS)))            # the oldest
        _FACTORS[key] = (r.mean(0), float((centred * centred).sum() / (n - 1)), vec[:, keep] * np.sqrt(lam[keep]))
    return _FACTORS[key]


class FrechetReplicates:
    """FID of resampled sample rows against a fixed reference, without `sqrtm`."""

    def __init__(self, samples: np.ndarray, reference: np.ndarray):
        x = np.asarray(samples, dtype=np.float64)
        self.x, self.n = x, len(x)
        self.mu_r, self.trace_r, factor = reference_factor(reference)
        self.y = x @ factor                               # tr sqrt(S Sigma_r) = tr sqrt(factor^T S factor)
        self.sq = (x * x).sum(1)

    def value(self) -> float:
        """The FID of the samples themselves (every row once): clean-fid's FID (tested)."""
        return self(np.arange(self.n))

    def __call__(self, indices: np.ndarray) -> float:
        w = np.bincount(indices, minlength=self.n).astype(np.float64)
        n = w.sum()
        mu = w @ self.x / n
        trace = (w @ self.sq - n * mu @ mu) / (n - 1)
        used = np.flatnonzero(w)
        nu = w[used] @ self.y[used] / n
        z = np.sqrt(w[used])[:, None] * (self.y[used] - nu)
        # the same non-zero eigenvalues, in the smaller of the two spaces
        gram = (z @ z.T) if len(used) < z.shape[1] else (z.T @ z)
        eig = np.linalg.eigvalsh(gram / (n - 1)).clip(min=0)
        diff = mu - self.mu_r
        return float(diff @ diff + trace + self.trace_r - 2 * np.sqrt(eig).sum())


def fid_interval(samples: np.ndarray, reference: np.ndarray, groups=None, *,
                 n_resamples: int = N_RESAMPLES_FEATURE, seed: int = 0) -> Interval:
    """clean-fid's FID of the samples against the reference, with a centred bootstrap
    interval over the sample rows (and over seeds, per_group, when `groups` has several)."""
    replicate = FrechetReplicates(samples, reference)
    _, reps = bootstrap_replicates(replicate, len(samples), groups, per_group=True,
                                   n_resamples=n_resamples, seed=seed)
    if groups is None or len(np.unique(groups)) == 1:
        value = replicate.value()
    else:
        groups = np.asarray(groups)
        value = float(np.mean([FrechetReplicates(samples[groups == g], reference).value()
                               for g in np.unique(groups)]))
    return centered_interval(value, reps, n_resamples)


# ---------------------------------------------------------------- KID
class KernelReplicates:
    """clean-fid's `kernel_distance(samples[indices], reference, subsets, subset_size)` under
    `np.random.seed(seed)`, from kernels computed once."""

    def __init__(self, samples: np.ndarray, reference: np.ndarray, subset_size: int = 1000,
                 subsets: int = 100, seed: int = 0):
        x = np.asarray(samples, dtype=np.float64)
        r = np.asarray(reference, dtype=np.float64)
        d, self.n = x.shape[1], len(x)
        self.m = m = min(len(x), len(r), subset_size)
        kernel = lambda a, b: (a @ b.T / d + 1) ** 3        # noqa: E731  clean-fid's cubic kernel
        self.k_xx = kernel(x, x)
        self.k_xx_diag = np.diag(self.k_xx).copy()
        k_xr = kernel(x, r)
        # clean-fid's draw order: per subset, the reference rows, then the sample rows
        rng = np.random.RandomState(seed)
        self.positions = np.empty((subsets, m), dtype=np.int64)
        self.ref_terms = np.empty(subsets)
        self.cross = np.empty((subsets, self.n))          # per subset: sum of k(x_i, its reference rows)
        for s in range(subsets):
            q = rng.choice(len(r), m, replace=False)
            self.positions[s] = rng.choice(self.n, m, replace=False)
            k_rr = kernel(r[q], r[q])
            self.ref_terms[s] = k_rr.sum() - np.trace(k_rr)
            self.cross[s] = k_xr[:, q].sum(1)

    def __call__(self, indices: np.ndarray) -> float:
        subsets, m = self.positions.shape
        drawn = indices[self.positions]                               # (subsets, m) sample rows
        counts = np.zeros((subsets, self.n))
        np.add.at(counts, (np.repeat(np.arange(subsets), m), drawn.ravel()), 1.0)
        xx = ((counts @ self.k_xx) * counts).sum(1) - counts @ self.k_xx_diag   # off-diagonal pairs
        xr = (counts * self.cross).sum(1)
        t = ((self.ref_terms + xx) / (m - 1) - 2 * xr / m).sum()
        return float(t / subsets / m)


def kid_interval(samples: np.ndarray, reference: np.ndarray, subset_size: int = 1000, subsets: int = 100,
                 seed: int = 0, *, n_resamples: int = N_RESAMPLES_FEATURE) -> tuple[Interval, int]:
    """(clean-fid's KID with a centred bootstrap interval over the sample rows, the subset
    size used). Memory: two float64 kernels, samples^2 and samples x reference."""
    from models import metrics

    value, size = metrics.kid(samples, reference, subset_size, subsets, seed)
    replicate = KernelReplicates(samples, reference, subset_size, subsets, seed)
    _, reps = bootstrap_replicates(replicate, len(samples), n_resamples=n_resamples, seed=seed)
    return centered_interval(value, reps, n_resamples), size
