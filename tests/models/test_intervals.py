"""Bootstrap and Wilson intervals, checked by simulation: 95 % intervals must cover a known
truth about 95 % of the time (between 90 % and 99 % over 200 seeded draws)."""
import numpy as np
import pytest

from models import intervals

DRAWS = 200


def coverage(hits: list[bool]) -> float:
    return float(np.mean(hits))


def test_mean_interval_covers_the_mean_of_a_skewed_distribution():
    hits = []
    for draw in range(DRAWS):
        x = np.random.default_rng(draw).exponential(1.0, size=80)     # true mean 1
        ci = intervals.mean_interval(x, seed=draw)
        hits.append(ci.low <= 1.0 <= ci.high)
    assert 0.90 <= coverage(hits) <= 0.99


def test_paired_difference_covers_the_true_shift_and_is_narrower_than_unpaired():
    hits, paired_width, unpaired_width = [], [], []
    for draw in range(DRAWS):
        rng = np.random.default_rng(10_000 + draw)
        a = rng.normal(size=60)                               # model A's score per item
        b = a + 0.3 + rng.normal(0, 0.5, size=60)             # model B on the same items: +0.3
        ci = intervals.paired_difference(lambda i: b[i].mean(), lambda i: a[i].mean(), 60, seed=draw)
        hits.append(ci.low <= 0.3 <= ci.high)
        paired_width.append(ci.high - ci.low)
        if draw < 20:     # the same difference with independent resampling of each model
            ia, ib = intervals.mean_interval(a, seed=draw), intervals.mean_interval(b, seed=draw + 1)
            unpaired_width.append(np.hypot(ia.high - ia.low, ib.high - ib.low))
    assert 0.90 <= coverage(hits) <= 0.99
    # pairing removes the shared per-item variation (sd 1), leaving the difference's (sd 0.5)
    assert np.mean(paired_width[:20]) < 0.6 * np.mean(unpaired_width)


def test_wilson_covers_the_true_proportion():
    hits = []
    for draw in range(DRAWS):
        k = np.random.default_rng(20_000 + draw).binomial(60, 0.2)
        ci = intervals.wilson(k, 60)
        assert ci.value == k / 60
        hits.append(ci.low <= 0.2 <= ci.high)
    assert 0.90 <= coverage(hits) <= 0.99


def test_wilson_matches_its_closed_form_and_stays_inside_zero_one():
    k, n, z = 3, 40, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    ci = intervals.wilson(k, n)
    assert (ci.low, ci.high) == pytest.approx((centre - half, centre + half), rel=1e-9)
    zero, full = intervals.wilson(0, 10), intervals.wilson(10, 10)
    assert zero.low == 0 and zero.high > 0 and full.high == pytest.approx(1) and full.low < 1
    assert np.isnan(intervals.wilson(0, 0).value)
    with pytest.raises(ValueError, match="need 0 <= k <= n"):
        intervals.wilson(5, 4)


def test_two_level_bootstrap_covers_the_mean_over_seeds():
    """Eight seeds with a per-seed offset (sd 0.5) and per-image noise (sd 1). With only
    three seeds the same simulation covers 85 %: a few seeds cannot show their spread."""
    seeds, per_seed, hits = 8, 40, []
    groups = np.repeat(np.arange(seeds), per_seed)
    for draw in range(DRAWS):
        rng = np.random.default_rng(30_000 + draw)
        x = (rng.normal(0, 0.5, size=(seeds, 1)) + rng.normal(size=(seeds, per_seed))).ravel()
        ci = intervals.mean_interval(x, groups, seed=draw, n_resamples=300)
        hits.append(ci.low <= 0.0 <= ci.high)
    assert 0.90 <= coverage(hits) <= 0.99


def test_two_level_is_wider_than_images_only_when_seeds_differ():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(5), 50)
    x = np.repeat(rng.normal(0, 1.0, size=5), 50) + rng.normal(0, 0.2, size=250)
    two_level = intervals.mean_interval(x, groups)
    images_only = intervals.mean_interval(x)
    assert two_level.high - two_level.low > 3 * (images_only.high - images_only.low)


def test_per_group_statistics_are_averaged_over_seeds():
    x = np.array([0.0, 0.0, 0.0, 1.0])         # seed a: three zeros, seed b: one 1
    groups = np.array(["a", "a", "a", "b"])
    pooled = intervals.bootstrap(lambda i: x[i].mean(), 4, groups, n_resamples=10)
    per_seed = intervals.bootstrap(lambda i: x[i].mean(), 4, groups, per_group=True, n_resamples=10)
    assert pooled.value == 0.25 and per_seed.value == 0.5


def _runs(ys, groups=None):
    return [intervals.Run(lambda i, y=y: y[i].mean(), len(y), groups) for y in ys]


@pytest.mark.parametrize("n_runs, run_sd", [(3, 0.2), (8, 0.5)], ids=["3-runs", "8-runs-spread"])
def test_runs_bootstrap_covers_the_mean_over_runs_and_shared_images(n_runs, run_sd):
    """Runs share their 60 evaluation items (a per-item effect, sd 1, common to all runs),
    each run has its own offset (sd run_sd) and noise (sd 0.5); the truth is 0. With 3 runs
    whose offsets dominate (sd 0.5) the same simulation covers 86 %: three seeds cannot
    show their spread, as for evaluation seeds above."""
    hits = []
    for draw in range(DRAWS):
        rng = np.random.default_rng(40_000 + draw)
        shared = rng.normal(0, 1, 60)
        ys = [rng.normal(0, run_sd) + shared + rng.normal(0, 0.5, 60) for _ in range(n_runs)]
        ci = intervals.runs_bootstrap(_runs(ys), n_resamples=300, seed=draw)
        hits.append(ci.low <= 0.0 <= ci.high)
    assert 0.90 <= coverage(hits) <= 0.99


def test_runs_bootstrap_is_wider_than_each_run_when_the_runs_differ():
    rng = np.random.default_rng(1)
    ys = [offset + rng.normal(0, 0.5, 80) for offset in (0.0, 1.0, 2.0)]
    cell = intervals.runs_bootstrap(_runs(ys))
    assert cell.value == pytest.approx(np.mean(ys))
    for y in ys:
        own = intervals.mean_interval(y)
        assert cell.high - cell.low > 3 * (own.high - own.low)


def test_copies_of_one_run_keep_its_interval_because_they_share_their_items():
    """Resampling the shared items once per replicate: three identical runs are one run's
    worth of evidence about the items (drawing them per run would shrink it by sqrt(3))."""
    y = np.random.default_rng(2).exponential(1.0, 100)
    one = intervals.mean_interval(y)
    three = intervals.runs_bootstrap(_runs([y, y, y]))
    assert three.value == pytest.approx(one.value)
    assert 0.85 < (three.high - three.low) / (one.high - one.low) < 1.15
    # runs on different items (another count) draw their own: independent evidence, narrower
    other = intervals.runs_bootstrap(_runs([y, y, y[:99]]))
    assert (other.high - other.low) / (one.high - one.low) < 0.75


def test_runs_bootstrap_averages_each_run_over_its_evaluation_seeds():
    groups = np.array([7, 7, 7, 9])
    ys = [np.array([0.0, 0.0, 0.0, 1.0]), np.array([1.0, 1.0, 1.0, 1.0])]
    cell = intervals.runs_bootstrap(_runs(ys, groups), n_resamples=50)
    assert cell.value == pytest.approx((0.5 + 1.0) / 2)     # per seed, then over seeds and runs
    assert cell.resamples == 50 and cell.low <= cell.high
    with pytest.raises(ValueError):
        intervals.runs_bootstrap([])


def test_intervals_are_seeded_and_deterministic():
    x = np.random.default_rng(1).normal(size=50)
    assert intervals.mean_interval(x, seed=3) == intervals.mean_interval(x, seed=3)
    assert intervals.mean_interval(x, seed=3) != intervals.mean_interval(x, seed=4)
    assert intervals.mean_interval(x).resamples == intervals.N_RESAMPLES


def test_one_group_is_the_plain_bootstrap():
    x = np.random.default_rng(2).normal(size=30)
    assert intervals.mean_interval(x, np.zeros(30)) == intervals.mean_interval(x)
    with pytest.raises(ValueError, match="groups"):
        intervals.mean_interval(x, np.zeros(29))


def test_centered_interval_holds_the_value_when_replicates_are_biased():
    rng = np.random.default_rng(3)
    replicates = 5.0 + rng.normal(0.0, 1.0, size=1000)              # biased by +5
    plain = intervals.percentile_interval(0.0, replicates)
    centred = intervals.centered_interval(0.0, replicates)
    assert not plain.low <= 0.0 <= plain.high
    assert centred.low == pytest.approx(-1.96, abs=0.15) and centred.high == pytest.approx(1.96, abs=0.15)
    skewed = intervals.centered_interval(0.0, 5.0 + rng.exponential(1.0, size=1000))
    assert skewed.high > 2 * -skewed.low            # the long upper tail stays upward


def test_the_statistics_modules_import_no_torch():
    import subprocess
    import sys

    code = ("import sys, models.intervals, models.manifold, models.feature_intervals; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_seeds_that_translate_the_same_inputs_resample_them_once():
    """Two evaluation seeds whose items are the same 60 inputs (here: identical values) are
    one seed's worth of evidence about the inputs: drawing the inputs once for both keeps
    one seed's interval; drawing them in each seed (the nested two-level bootstrap) would
    be about sqrt(2) narrower."""
    y = np.random.default_rng(5).exponential(1.0, 60)
    one = intervals.mean_interval(y)
    x, groups, units = np.concatenate([y, y]), np.repeat([0, 1], 60), np.tile(np.arange(60), 2)
    crossed = intervals.mean_interval(x, groups, units=units)
    nested = intervals.mean_interval(x, groups)
    ratio = lambda ci: (ci.high - ci.low) / (one.high - one.low)  # noqa: E731
    assert crossed.value == pytest.approx(one.value)
    assert 0.9 < ratio(crossed) < 1.1 and ratio(nested) < 0.8
    assert intervals.layout(120, groups, units).distinct == 60 and intervals.layout(120, groups).distinct == 120
    # the inputs may come in another order in each seed: the draw follows the unit, not the position
    shuffled = np.random.default_rng(6).permutation(60)
    again = intervals.mean_interval(np.concatenate([y, y[shuffled]]), groups,
                                    units=np.concatenate([np.arange(60), shuffled]))
    assert 0.9 < ratio(again) < 1.1


def test_runs_and_seeds_that_share_inputs_keep_one_seed_s_interval():
    y = np.random.default_rng(7).normal(size=50)
    one = intervals.mean_interval(y)
    groups, units = np.repeat([3, 4], 50), np.tile(np.arange(50), 2)
    runs = [intervals.Run(lambda i: np.concatenate([y, y])[i].mean(), 100, groups, units) for _ in range(3)]
    cell = intervals.runs_bootstrap(runs)
    assert 0.85 < (cell.high - cell.low) / (one.high - one.low) < 1.15


def test_units_must_be_shared_by_every_seed():
    groups = np.repeat([0, 1], 3)
    with pytest.raises(ValueError, match="same units"):
        intervals.layout(6, groups, [0, 1, 2, 0, 1, 5])
    with pytest.raises(ValueError, match="units"):
        intervals.layout(6, groups, [0, 1, 2])


def test_seed_level_difference_is_the_t_interval_of_the_per_seed_differences():
    t975_2 = 4.302652729911275                       # Student's t, 0.975 quantile, 2 degrees of freedom
    model, baseline = {0: 1.0, 1: 2.0, 2: 4.0}, {0: 0.5, 1: 0.5, 2: 0.5}
    d = np.array([0.5, 1.5, 3.5])
    half = t975_2 * d.std(ddof=1) / np.sqrt(3)
    found = intervals.seed_level_difference(model, baseline)
    assert found.interval.value == pytest.approx(11 / 6)
    assert (found.interval.low, found.interval.high) == pytest.approx((11 / 6 - half, 11 / 6 + half), rel=1e-9)
    assert "3 per-seed differences" in found.method and found.runs == 3
    # against an untrained model (seed None): the same t-interval of the runs minus it
    fixed = intervals.seed_level_difference({None: 0.5}, model)
    assert (fixed.interval.low, fixed.interval.high) == pytest.approx((-11 / 6 - half, -11 / 6 + half), rel=1e-9)
    assert "untrained" in fixed.method


def test_seed_level_difference_on_other_seeds_is_welch_and_one_trained_run_has_none():
    a, b = {0: 1.0, 1: 3.0, 2: 2.0}, {5: 0.0, 6: 0.5}
    va, vb = np.var([1.0, 3.0, 2.0], ddof=1) / 3, np.var([0.0, 0.5], ddof=1) / 2
    dof = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 1)
    from scipy.stats import t

    half = t.ppf(0.975, dof) * np.sqrt(va + vb)
    found = intervals.seed_level_difference(a, b)
    assert (found.interval.low, found.interval.high) == pytest.approx((1.75 - half, 1.75 + half), rel=1e-9)
    assert found.method.startswith("Welch")
    assert intervals.seed_level_difference(a, {5: 0.0}) is None
    assert intervals.seed_level_difference({0: 1.0}, {0: 0.0}) is None


def test_wilson_share_is_wilson_for_whole_counts():
    for k, n in ((0, 27), (12, 27), (27, 27)):
        share, counts = intervals.wilson_share(k / n, n), intervals.wilson(k, n)
        assert (share.low, share.high) == pytest.approx((counts.low, counts.high), abs=1e-12)
    assert intervals.wilson_share(0.5, 27).high - intervals.wilson_share(0.5, 27).low > \
        intervals.wilson(81, 162).high - intervals.wilson(81, 162).low


def test_crossed_bootstrap_covers_the_mean_over_inputs_that_seeds_share():
    """Two seeds translate the same 60 inputs (input effect sd 1, shared; each seed's own
    noise sd 0.5); the truth is 0. Measured: the crossed draw covers 93 %, drawing the
    inputs in each seed on its own (nested) 86 % with intervals about 25 % narrower."""
    groups, units = np.repeat([0, 1], 60), np.tile(np.arange(60), 2)
    hits, crossed_width, nested_width = [], [], []
    for draw in range(DRAWS):
        rng = np.random.default_rng(50_000 + draw)
        inputs = rng.normal(0, 1, 60)
        x = np.concatenate([inputs + rng.normal(0, 0.5, 60), inputs + rng.normal(0, 0.5, 60)])
        ci = intervals.mean_interval(x, groups, units=units, seed=draw, n_resamples=300)
        hits.append(ci.low <= 0.0 <= ci.high)
        crossed_width.append(ci.high - ci.low)
        if draw < 20:
            nested = intervals.mean_interval(x, groups, seed=draw, n_resamples=300)
            nested_width.append(nested.high - nested.low)
    assert 0.90 <= coverage(hits) <= 0.99
    assert np.mean(crossed_width[:20]) > 1.2 * np.mean(nested_width)
