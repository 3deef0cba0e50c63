"""95 % intervals that cover what varies: the evaluation images, and the seeds when there
are several (docs/evaluation.md, "Intervals").

A statistic is a function of an index array into the evaluation items (sample i of the
fixed noise, translation i of the fixed source images), so the same resampled indices can
be fed to two models: that is the paired bootstrap, for differences between models
evaluated on the same noise and the same inputs. With several seeds the resampling is
two-level: draw seeds with replacement, then images within each drawn seed. Over several
training runs (a table cell) it is hierarchical: draw runs, then seeds and images
(`runs_bootstrap`).

Why not `scipy.stats.bootstrap`: it has no two-level (cluster) resampling, and its
statistic sees copies of data arrays, not indices that several arrays (features, labels,
per-image scores) can share. Counts k/n get scipy's Wilson score interval.

Seeded and deterministic: the same call gives the same interval.
numpy/scipy only; no torch here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

N_RESAMPLES = 1000    # bootstrap resamples of cheap statistics (means, shares, P/R/D/C)
LEVEL = 0.95

Statistic = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class Interval:
    value: float            # the statistic on the evaluation items as they are
    low: float
    high: float
    resamples: int | None   # None for closed forms (Wilson)

    def row(self) -> dict:
        """The tidy table's columns: value, ci_low, ci_high."""
        return {"value": float(self.value), "ci_low": float(self.low), "ci_high": float(self.high)}


# ---------------------------------------------------------------- resampling
def _groups(n_items: int, groups: Sequence | np.ndarray | None) -> list[np.ndarray]:
    """Item indices per group (seed), in order of first appearance; one group if None."""
    if groups is None:
        return [np.arange(n_items)]
    groups = np.asarray(groups)
    if groups.shape != (n_items,):
        raise ValueError(f"groups: expected one label per item ({n_items}), got shape {groups.shape}")
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first)
    return [np.flatnonzero(inverse == g) for g in order]


def resample_indices(rng: np.random.Generator, members: list[np.ndarray]) -> list[np.ndarray]:
    """One bootstrap replicate: with one group, its items with replacement; with several,
    groups with replacement, then each drawn group's items with replacement."""
    if len(members) == 1:
        only = members[0]
        return [only[rng.integers(0, len(only), len(only))]]
    drawn = rng.integers(0, len(members), len(members))
    return [members[g][rng.integers(0, len(members[g]), len(members[g]))] for g in drawn]


def _evaluate(statistic: Statistic, parts: list[np.ndarray], per_group: bool) -> float:
    if per_group:     # e.g. FID: one value per seed, then their mean
        return float(np.mean([statistic(p) for p in parts]))
    return float(statistic(np.concatenate(parts)))


def bootstrap_replicates(statistic: Statistic, n_items: int, groups=None, *, per_group: bool = False,
                         n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, np.ndarray]:
    """(the statistic on all items, its values on `n_resamples` bootstrap replicates).

    statistic(indices) -> float, indices an int array into the items (with repeats).
    groups: one label per item (the seed it was made with); several labels give the
    two-level bootstrap. per_group: the statistic is computed per group and averaged
    (the table's "mean over seeds"); otherwise on the pooled indices.
    """
    if n_items < 1:
        raise ValueError("bootstrap needs at least one item")
    members = _groups(n_items, groups)
    rng = np.random.default_rng(seed)
    value = _evaluate(statistic, members, per_group)
    reps = np.array([_evaluate(statistic, resample_indices(rng, members), per_group)
                     for _ in range(n_resamples)])
    return value, reps


def percentile_interval(value: float, replicates: np.ndarray, resamples: int | None = None,
                        level: float = LEVEL) -> Interval:
    tail = (1 - level) / 2
    finite = replicates[np.isfinite(replicates)]
    if len(finite) == 0:
        return Interval(value, math.nan, math.nan, resamples)
    low, high = np.quantile(finite, [tail, 1 - tail])
    return Interval(value, float(low), float(high), resamples if resamples is not None else len(replicates))


def centered_interval(value: float, replicates: np.ndarray, resamples: int | None = None,
                      level: float = LEVEL) -> Interval:
    """The percentile interval shifted by the replicates' bias (their mean minus the value).

    For statistics that repeated rows bias (FID, KID: a replicate has about 63 % distinct
    images, so its FID sits above the value by about the estimator's own small-sample bias,
    and the plain percentile interval misses even the value). It covers the expected value
    at this number of images (FID's at this n; KID's, which is unbiased, the population's),
    keeping the replicates' skew (a longer upper tail for FID). Reflecting about the value
    (the "basic" bootstrap) covered as well in simulation but turns that tail downward."""
    finite = replicates[np.isfinite(replicates)]
    if len(finite) == 0:
        return Interval(value, math.nan, math.nan, resamples)
    tail = (1 - level) / 2
    low, high = np.quantile(finite - finite.mean(), [tail, 1 - tail])
    return Interval(value, float(value + low), float(value + high),
                    resamples if resamples is not None else len(replicates))


def bootstrap(statistic: Statistic, n_items: int, groups=None, *, per_group: bool = False,
              n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """Percentile bootstrap interval of any statistic of the evaluation items."""
    value, reps = bootstrap_replicates(statistic, n_items, groups, per_group=per_group,
                                       n_resamples=n_resamples, seed=seed)
    return percentile_interval(value, reps, n_resamples, level)


def mean_interval(values, groups=None, **kwargs) -> Interval:
    """The mean of per-item values (PSNR, SSIM, LPIPS of each image) with its interval."""
    values = np.asarray(values, dtype=np.float64)
    return bootstrap(lambda idx: values[idx].mean(), len(values), groups, **kwargs)


def paired_difference(statistic_a: Statistic, statistic_b: Statistic, n_items: int, groups=None,
                      **kwargs) -> Interval:
    """statistic_a - statistic_b for two models measured on the same items (same noise,
    same source images): each replicate feeds the same resampled indices to both."""
    return bootstrap(lambda idx: statistic_a(idx) - statistic_b(idx), n_items, groups, **kwargs)


# ---------------------------------------------------------------- several runs
@dataclass(frozen=True)
class Run:
    """One training run's statistic of indices into its evaluation items, and the
    evaluation seed of each item (None: one seed)."""
    statistic: Statistic
    n_items: int
    groups: Sequence | np.ndarray | None = None


def _same_items(runs: Sequence[Run]) -> bool:
    first = runs[0]
    labels = lambda r: np.zeros(r.n_items) if r.groups is None else np.asarray(r.groups)  # noqa: E731
    return all(r.n_items == first.n_items and np.array_equal(labels(r), labels(first)) for r in runs)


def runs_replicates(runs: Sequence[Run], *, n_resamples: int = N_RESAMPLES,
                    seed: int = 0) -> tuple[float, np.ndarray]:
    """(the mean over runs of each run's statistic, averaged over its evaluation seeds; its
    values on `n_resamples` hierarchical bootstrap replicates).

    A replicate draws the runs with replacement, then the evaluation seeds with replacement
    and the images within each drawn seed (`resample_indices`). Runs evaluated on the same
    items (same noise, same source images: same seeds and counts) share one draw of seeds
    and images per replicate: the items are crossed with the runs, so drawing them anew for
    each run would average their shared variation away (an interval too narrow by up to
    sqrt(runs)). Runs on different items draw their own (nested)."""
    if not runs:
        raise ValueError("runs_replicates needs at least one run")
    members = [_groups(r.n_items, r.groups) for r in runs]
    shared = _same_items(runs)
    rng = np.random.default_rng(seed)
    value = float(np.mean([_evaluate(r.statistic, m, True) for r, m in zip(runs, members)]))
    reps = np.empty(n_resamples)
    for b in range(n_resamples):
        chosen = rng.integers(0, len(runs), len(runs)) if len(runs) > 1 else np.zeros(1, dtype=np.int64)
        if shared:       # a run drawn twice gives the same value twice: compute it once
            parts = resample_indices(rng, members[0])
            unique, times = np.unique(chosen, return_counts=True)
            values = [_evaluate(runs[r].statistic, parts, True) for r in unique]
            reps[b] = float(np.dot(times, values) / len(chosen))
        else:            # each drawn run draws its own seeds and images
            reps[b] = float(np.mean([_evaluate(runs[r].statistic, resample_indices(rng, members[r]), True)
                                     for r in chosen]))
    return value, reps


def runs_bootstrap(runs: Sequence[Run], *, centred: bool = False, n_resamples: int = N_RESAMPLES,
                   seed: int = 0, level: float = LEVEL) -> Interval:
    """The hierarchical bootstrap interval of the mean over runs (`runs_replicates`):
    percentile, or `centered_interval` for statistics that repeated rows bias (FID, KID)."""
    value, reps = runs_replicates(runs, n_resamples=n_resamples, seed=seed)
    return (centered_interval if centred else percentile_interval)(value, reps, n_resamples, level)


# ---------------------------------------------------------------- counts
def wilson(k: int, n: int, level: float = LEVEL) -> Interval:
    """k successes out of n with the Wilson score interval (NaN when n = 0)."""
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, None)
    if not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n, got k={k}, n={n}")
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return Interval(k / n, float(ci.low), float(ci.high), None)
