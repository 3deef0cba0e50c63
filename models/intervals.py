"""95 % intervals that cover what varies: the evaluation images, and the seeds when there
are several (docs/evaluation.md, "Intervals").

A statistic is a function of an index array into the evaluation items (sample i of the
fixed noise, translation i of the fixed source images), so the same resampled indices can
be fed to two models: that is the paired bootstrap, for differences between models
evaluated on the same noise and the same inputs. With several seeds the resampling is
two-level: draw seeds with replacement, then images within each drawn seed. Over several
training runs (a table cell) it is hierarchical: draw runs, then seeds and images
(`runs_bootstrap`).

Evaluation seeds that share their items' units (every seed translates the same source
images; `units` names the input of each item) are crossed with them, not nested: a
replicate draws the seeds with replacement and ONE set of inputs, which every drawn seed
uses (the pigeonhole bootstrap of a crossed design, Owen 2007). Drawing the inputs anew in
each seed would count the same 27 inputs of 2 seeds as 54 independent ones, an interval
too narrow by up to sqrt(seeds). `Layout.distinct` is the number of distinct units: the n
that tables show.

Over training runs, `seed_level_difference` is the coarser check: a t-interval over the
per-run values, which sees only the spread between training runs (docs/intervals.md).

Why not `scipy.stats.bootstrap`: it has no two-level (cluster) resampling, and its
statistic sees copies of data arrays, not indices that several arrays (features, labels,
per-image scores) can share. Counts k/n get scipy's Wilson score interval.

Seeded and deterministic: the same call gives the same interval.
numpy/scipy only; no torch here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

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


@dataclass(frozen=True)
class Layout:
    """The item indices of each group (evaluation seed), and whether the groups are crossed
    with the items' units: then members[g][j] is unit j's item in every group g."""
    members: list
    crossed: bool = False

    @property
    def distinct(self) -> int:
        """The number of distinct units: one group's items when crossed, else all items."""
        return len(self.members[0]) if self.crossed else sum(len(m) for m in self.members)

    def unit_ids(self, n_items: int) -> np.ndarray:
        """A label per item that is equal exactly for items of one unit (their position in
        the crossed order; each item its own otherwise)."""
        ids = np.arange(n_items)
        if self.crossed:
            for m in self.members:
                ids[m] = np.arange(len(m))
        return ids


def distinct_units(n_items: int, groups=None, units=None, counted: Sequence[np.ndarray] = ()) -> int:
    """How many distinct units the items hold (`Layout.distinct`), counting only items that
    are True in one of the `counted` masks (a share's denominators in several runs on the
    same items) when there are any."""
    ids = layout(n_items, groups, units).unit_ids(n_items)
    if len(counted):
        ids = ids[np.logical_or.reduce([np.asarray(m, dtype=bool) for m in counted])]
    return int(len(np.unique(ids)))


def layout(n_items: int, groups=None, units=None) -> Layout:
    """The items by group; crossed when `units` (one label per item: the input it was made
    from) gives every group the same units, each once. Other units are an error: a unit
    missing from one seed leaves no crossed design to resample."""
    members = _groups(n_items, groups)
    if units is None:
        return Layout(members)
    units = np.asarray(units)
    if units.shape != (n_items,):
        raise ValueError(f"units: expected one label per item ({n_items}), got shape {units.shape}")
    keys = [units[m] for m in members]
    first = np.sort(keys[0])
    if len(np.unique(first)) != len(first) or any(not np.array_equal(np.sort(k), first) for k in keys):
        raise ValueError("units: every group must hold the same units, each once")
    if len(members) == 1:
        return Layout(members)
    return Layout([m[np.argsort(k, kind="stable")] for m, k in zip(members, keys)], crossed=True)


def resample_indices(rng: np.random.Generator, members: list[np.ndarray] | Layout) -> list[np.ndarray]:
    """One bootstrap replicate: with one group, its items with replacement; with several,
    groups with replacement, then each drawn group's items with replacement; crossed
    groups all take one draw of the units."""
    crossed = isinstance(members, Layout) and members.crossed
    members = members.members if isinstance(members, Layout) else members
    if len(members) == 1:
        only = members[0]
        return [only[rng.integers(0, len(only), len(only))]]
    drawn = rng.integers(0, len(members), len(members))
    if crossed:
        units = rng.integers(0, len(members[0]), len(members[0]))
        return [members[g][units] for g in drawn]
    return [members[g][rng.integers(0, len(members[g]), len(members[g]))] for g in drawn]


def _evaluate(statistic: Statistic, parts: list[np.ndarray], per_group: bool) -> float:
    if per_group:     # e.g. FID: one value per seed, then their mean
        return float(np.mean([statistic(p) for p in parts]))
    return float(statistic(np.concatenate(parts)))


def bootstrap_replicates(statistic: Statistic, n_items: int, groups=None, *, per_group: bool = False,
                         n_resamples: int = N_RESAMPLES, seed: int = 0, units=None) -> tuple[float, np.ndarray]:
    """(the statistic on all items, its values on `n_resamples` bootstrap replicates).

    statistic(indices) -> float, indices an int array into the items (with repeats).
    groups: one label per item (the seed it was made with); several labels give the
    two-level bootstrap. per_group: the statistic is computed per group and averaged
    (the table's "mean over seeds"); otherwise on the pooled indices. units: one label per
    item, the input it shares with the other seeds' items (`layout`): drawn once for all.
    """
    if n_items < 1:
        raise ValueError("bootstrap needs at least one item")
    members = layout(n_items, groups, units)
    rng = np.random.default_rng(seed)
    value = _evaluate(statistic, members.members, per_group)
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
              n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL, units=None,
              centred: bool = False) -> Interval:
    """Bootstrap interval of any statistic of the evaluation items: percentile, or
    `centered_interval` for statistics that repeated rows bias (FID, KID)."""
    value, reps = bootstrap_replicates(statistic, n_items, groups, per_group=per_group,
                                       n_resamples=n_resamples, seed=seed, units=units)
    return (centered_interval if centred else percentile_interval)(value, reps, n_resamples, level)


def mean_interval(values, groups=None, **kwargs) -> Interval:
    """The mean of per-item values (PSNR, SSIM, LPIPS of each image) with its interval."""
    values = np.asarray(values, dtype=np.float64)
    return bootstrap(lambda idx: values[idx].mean(), len(values), groups, **kwargs)


def paired_difference(statistic_a: Statistic, statistic_b: Statistic, n_items: int, groups=None,
                      **kwargs) -> Interval:
    """statistic_a - statistic_b for two models measured on the same items (same noise,
    same source images): each replicate feeds the same resampled indices to both. For FID
    pass centred=True: repeated rows raise each model's FID by its own amount (it grows with
    the spread of its features), which a difference does not cancel."""
    return bootstrap(lambda idx: statistic_a(idx) - statistic_b(idx), n_items, groups, **kwargs)


# ---------------------------------------------------------------- several runs
@dataclass(frozen=True)
class Run:
    """One training run's statistic of indices into its evaluation items, the evaluation
    seed of each item (None: one seed) and the input it shares with the other seeds' items
    (None: nothing shared; `layout`)."""
    statistic: Statistic
    n_items: int
    groups: Sequence | np.ndarray | None = None
    units: Sequence | np.ndarray | None = None


def same_items(runs: Sequence[Run]) -> bool:
    first = runs[0]
    labels = lambda r: np.zeros(r.n_items) if r.groups is None else np.asarray(r.groups)  # noqa: E731
    inputs = lambda r: None if r.units is None else np.asarray(r.units)  # noqa: E731
    same_units = lambda r: (r.units is None) == (first.units is None) and (  # noqa: E731
        r.units is None or np.array_equal(inputs(r), inputs(first)))
    return all(r.n_items == first.n_items and np.array_equal(labels(r), labels(first)) and same_units(r)
               for r in runs)


def runs_replicates(runs: Sequence[Run], *, n_resamples: int = N_RESAMPLES,
                    seed: int = 0) -> tuple[float, np.ndarray]:
    """(the mean over runs of each run's statistic, averaged over its evaluation seeds; its
    values on `n_resamples` hierarchical bootstrap replicates).

    A replicate draws the runs with replacement, then the evaluation seeds with replacement
    and the images within each drawn seed, or one set of inputs for all drawn seeds when the
    runs' `units` cross them (`resample_indices`). Runs evaluated on the same
    items (same noise, same source images: same seeds and counts) share one draw of seeds
    and images per replicate: the items are crossed with the runs, so drawing them anew for
    each run would average their shared variation away (an interval too narrow by up to
    sqrt(runs)). Runs on different items draw their own (nested)."""
    if not runs:
        raise ValueError("runs_replicates needs at least one run")
    members = [layout(r.n_items, r.groups, r.units) for r in runs]
    shared = same_items(runs)
    rng = np.random.default_rng(seed)
    value = float(np.mean([_evaluate(r.statistic, m.members, True) for r, m in zip(runs, members)]))
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


# ---------------------------------------------------------------- training runs only
@dataclass(frozen=True)
class SeedLevel:
    """A difference's interval from the training runs' own values alone, and its name."""
    interval: Interval
    method: str
    runs: int         # the model's runs (the baseline's in `method`)


def seed_level_difference(model: Mapping, baseline: Mapping, *, level: float = LEVEL) -> SeedLevel | None:
    """mean(model) - mean(baseline) with a t-interval over training runs; `model` and
    `baseline` map each run's training seed (None: a model nobody trained, the source) to
    its value on all the evaluation items.

    - both with the same >= 2 seeds: the t-interval of the per-seed differences (paired by
      training seed; valid whether or not a seed shares anything between the methods);
    - both with >= 2 runs on other seeds: Welch's t-interval;
    - one side a single untrained model (seed None): the t-interval of the other side's
      runs minus it (nothing varies on its side);
    - otherwise (a single trained run: its run-to-run spread is unknown): None.
    The items are held fixed: this interval sees the spread between training runs only."""
    from scipy import stats

    a, b = dict(model), dict(baseline)
    if len(a) >= 2 and set(a) == set(b):
        seeds = sorted(a, key=str)
        d = np.array([a[s] - b[s] for s in seeds], dtype=np.float64)
        found, value = stats.ttest_1samp(d, 0.0), float(d.mean())
        method = f"t-interval over {len(d)} per-seed differences (paired by training seed)"
    elif len(a) >= 2 and len(b) >= 2:
        x, y = np.array(list(a.values()), float), np.array(list(b.values()), float)
        found, value = stats.ttest_ind(x, y, equal_var=False), float(x.mean() - y.mean())
        method = f"Welch t-interval over {len(x)} and {len(y)} training runs"
    elif (len(a) >= 2 and len(b) == 1 and next(iter(b)) is None) or (
            len(b) >= 2 and len(a) == 1 and next(iter(a)) is None):
        fixed, runs, sign = (next(iter(b.values())), a, 1.0) if len(a) >= 2 else (next(iter(a.values())), b, -1.0)
        d = sign * (np.array(list(runs.values()), float) - fixed)
        found, value = stats.ttest_1samp(d, 0.0), float(d.mean())
        method = f"t-interval over {len(d)} training runs against an untrained model"
    else:
        return None
    ci = found.confidence_interval(confidence_level=level)
    if not (math.isfinite(ci.low) and math.isfinite(ci.high)):      # runs that agree exactly: no spread seen
        return None
    return SeedLevel(Interval(value, float(ci.low), float(ci.high), None), method, max(len(a), len(b)))


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


def wilson_share(share: float, n: int, level: float = LEVEL) -> Interval:
    """The Wilson score interval of a share measured on n distinct items, for a share that
    is a mean over runs and seeds (so `share * n` need not be a whole count): the closed
    form, equal to `wilson(k, n)` when share = k / n."""
    from scipy.stats import norm

    if n == 0 or not math.isfinite(share):
        return Interval(math.nan, math.nan, math.nan, None)
    z = float(norm.ppf(1 - (1 - level) / 2))
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(max(share * (1 - share), 0.0) / n + z * z / (4 * n * n))
    return Interval(share, max(0.0, centre - half), min(1.0, centre + half), None)
