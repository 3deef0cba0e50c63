"""Table cells over several runs (jobs/cells.py), end to end on per-item files made here:
three naive runs that differ, with one or two evaluation seeds each; the cells table, the
tables that read it, and the tables CLI on a grid folder."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy import linalg

from report.results import CELLS_FILE, tidy, write_parquet
from report.differences import seed_difference_table
from report.tables import paper_tables, prepare
from runs.spec import EvalSpec
from runs.store import RunFolder
from jobs.cells import cells
from jobs.evaluation.manifest import ProductEntry, write_manifest

TARGET = {"kind": "builtin-target", "resolution": 16, "size": 200}
SOURCE = {"kind": "builtin-source", "resolution": 16}
KID_SUBSET, KID_SUBSETS, CONFIDENCE = 40, 5, 0.3
N = 80


def frechet(a, b):
    """FID from its definition (scipy's sqrtm), independent of the code under test."""
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(sa @ sb).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * root))


def kid(samples, reference, seed):
    """clean-fid's kernel_distance as it draws under np.random.seed(seed), x1e3."""
    rng, d = np.random.RandomState(seed), samples.shape[1]
    m = min(len(samples), len(reference), KID_SUBSET)
    t = 0.0
    for _ in range(KID_SUBSETS):
        x = reference[rng.choice(len(reference), m, replace=False)]
        y = samples[rng.choice(len(samples), m, replace=False)]
        a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - ((x @ y.T / d + 1) ** 3).sum() * 2 / m
    return 1e3 * t / KID_SUBSETS / m


def _spec(role, seeds):
    return EvalSpec(stage="evaluate", role=role, model="run:x", source_data=SOURCE, target_data=TARGET,
                    settings={"seed": seeds, "tasks": ["unconditional", "sdedit"], "kid_subset_size": KID_SUBSET,
                              "kid_subsets": KID_SUBSETS, "confidence": CONFIDENCE}).model_dump(mode="json")


def _store(tmp_path, seeds):
    """The source model (one run) and three naive runs (training seeds 0, 1, 2) whose
    features, PSNR and predictions shift with the run; items shared by all runs (the same
    noise and inputs) carry a common per-item part."""
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(300, 4))
    shared = {s: (rng.normal(size=(N, 4)), rng.normal(20, 2, N), rng.integers(0, 10, N)) for s in seeds}
    store, rows = tmp_path / "_runs", []
    runs = [("esource", "source", None, 0.0)] + [(f"enaive{r}", "naive", r, 1.0 + r) for r in range(3)]
    for eid, method, train_seed, shift in runs:
        folder = store / eid
        (folder / "items").mkdir(parents=True)
        (folder / "spec.json").write_text(json.dumps(_spec("source" if method == "source" else "finetuned",
                                                           seeds if len(seeds) > 1 else seeds[0])))
        step = None if method == "source" else 100
        entries = []

        def product(task, t0, eval_seed, ckpt_step, items):
            """One items file and its manifest entry, as the evaluate stage lists it."""
            name = f"{task}{f'_t{t0:g}' if t0 is not None else ''}_e{eval_seed}"
            file = f"{name}_s{ckpt_step}" if ckpt_step else name
            np.savez(folder / "items" / f"{file}.npz", **items)
            entries.append(ProductEntry(name, task, t0, ckpt_step, eval_seed, f"{file}.npy", f"{file}.npz"))

        base = dict(eval_id=eid, method=method, weighting=None, seed=train_seed, ckpt_step=step, dataset="d",
                    target="t", n=N)
        for s in seeds:
            features, difficulty, labels = shared[s]
            features = (features + 0.4 * shift + rng.normal(0, 0.3, (N, 4))).astype(np.float32)
            predicted = np.where(rng.random(N) < 0.1 * shift, 5, labels)
            confidence = rng.random(N).astype(np.float32)
            psnr = difficulty + shift + rng.normal(0, 0.5, N)
            product("unconditional", None, s, step, dict(features_builtin=features, predicted=predicted,
                                                         confidence=confidence))
            product("sdedit", 0.5, s, step, dict(psnr=psnr, predicted=predicted, confidence=confidence,
                                                 labels=labels))
            kept = confidence >= CONFIDENCE
            uncond = {**base, "eval_seed": s, "task": "unconditional", "t0": None, "extractor": "builtin",
                      "reference": "full-domain", "subset": "all"}
            rows += [{**uncond, "metric": "fid", "value": frechet(features, reference), "ci_low": 0, "ci_high": 1},
                     {**uncond, "metric": "kid", "value": kid(features, reference, s)},
                     {**uncond, "metric": "missing_class_share", "reference": "classifier",
                      "subset": "missing-classes", "value": (np.isin(predicted, [5]) & kept).sum() / kept.sum(),
                      "k": int((np.isin(predicted, [5]) & kept).sum()), "n": int(kept.sum())}]
            sdedit = {**base, "eval_seed": s, "task": "sdedit", "t0": 0.5, "reference": "source", "subset": "all"}
            rows.append({**sdedit, "metric": "psnr", "value": psnr.mean(), "ci_low": psnr.mean() - 0.4,
                         "ci_high": psnr.mean() + 0.4})
            if step:      # an earlier checkpoint of the same run: its own items, its own cell
                early = psnr - 3 + rng.normal(0, 0.5, N)
                product("sdedit", 0.5, s, 50, dict(psnr=early))
                rows.append({**sdedit, "ckpt_step": 50, "metric": "psnr", "value": early.mean()})
            lacking = labels == 5
            for subset, mask in (("missing-classes", lacking), ("present-classes", ~lacking)):
                hits = ((predicted == labels) & mask & kept).sum()
                rows.append({**sdedit, "metric": "class_preservation", "extractor": "builtin", "subset": subset,
                             "value": hits / (mask & kept).sum(), "k": int(hits), "n": int((mask & kept).sum())})
        write_manifest(RunFolder(folder), entries)
    np.savez(store / "esource" / "items" / "references.npz", **{"features_builtin_full-domain": reference},
             missing=np.array([5]))
    return store, tidy(rows)


@pytest.mark.parametrize("seeds", [[3], [3, 4]], ids=["one-seed", "two-seeds"])
def test_cells_of_several_runs_get_a_hierarchical_interval_the_tables_show(tmp_path, seeds):
    store, df = _store(tmp_path, seeds)
    every = cells(prepare(df), store)
    # the source model is one run: a cell only over two evaluation seeds
    assert set(every[every.model == "source"].rows) == ({2} if len(seeds) == 2 else set())
    early = every[every.model == "naive @50"].iloc[0]
    assert early.metric == "psnr" and early.members == "enaive0@50,enaive1@50,enaive2@50"
    assert early.ci_high < every[(every.model == "naive") & (every.metric == "psnr")].ci_low.iloc[0]
    found = every[every.model == "naive"].set_index("metric")
    assert set(found.index) == {"fid", "kid", "psnr", "missing_class_share", "class_preservation"}
    assert (found["runs"] == 3).all() and (found["rows"] == 3 * len(seeds)).all()
    assert found.loc["psnr", "resamples"] == 1000 and found.loc["fid", "resamples"] == 200
    # n: distinct items; the seeds translate the same N inputs, but have their own noise
    assert found.loc["psnr", "n"] == N and found.loc["fid", "n"] == N * len(seeds)
    naive = df[(df.method == "naive") & (df.ckpt_step == 100)]
    for metric in ("fid", "kid", "psnr", "missing_class_share"):
        cell, rows = found.loc[metric], naive[naive.metric == metric]
        assert cell.value == pytest.approx(rows.value.mean())
        assert cell.ci_low < cell.value < cell.ci_high, metric
    # the runs differ (PSNR shifts by 1 per run): wider than any run's own interval (+-0.4)
    assert found.loc["psnr", "ci_high"] - found.loc["psnr", "ci_low"] > 1.0
    fid = found.loc["fid"]
    assert fid.ci_high - fid.ci_low > 2 * (naive[naive.metric == "fid"].value.std() / np.sqrt(3))

    tables = {t.name: t for t in paper_tables(df, every)}
    t1, t3 = tables["table1_t0.5"], tables["table3"]
    assert t1.lows.loc["naive", ("sdedit", "psnr")] == found.loc["psnr", "ci_low"]
    assert t3.highs.loc["naive", ("unconditional", "fid")] == found.loc["fid", "ci_high"]
    if len(seeds) == 1:      # one row: its own interval
        assert t3.highs.loc["source", ("unconditional", "fid")] == 1
    markdown = t3.render("markdown")
    assert "hierarchical bootstrap" in markdown and "200 resamples, centred" in markdown
    assert "lowest to the highest" not in markdown
    # without the cells table: the span of the rows' intervals, and the note says so
    spans = {t.name: t for t in paper_tables(df)}["table1_t0.5"]
    assert spans.lows.loc["naive", ("sdedit", "psnr")] == naive[naive.metric == "psnr"].ci_low.min()
    assert "lowest to the highest" in spans.render("markdown")


def test_a_cell_whose_items_disagree_with_its_rows_is_left_out_and_spans(tmp_path):
    store, df = _store(tmp_path, [3])
    df.loc[(df.eval_id == "enaive1") & (df.metric == "psnr"), "value"] += 0.5     # not what the items give
    found = cells(prepare(df), store)
    assert "psnr" not in set(found.metric) and "fid" in set(found.metric)
    table = {t.name: t for t in paper_tables(df, found)}["table1_t0.5"]
    assert "(PSNR): the mean of their values and the span" in table.render("markdown")


def test_the_tables_cli_reads_the_cells_beside_a_grid_table(tmp_path, capsys):
    from harness.tables import main

    store, df = _store(tmp_path, [3])
    grid = tmp_path / "demo"
    write_parquet(grid / "metrics.parquet", df)
    write_parquet(grid / CELLS_FILE, cells(prepare(df), store))
    main([str(grid)])
    out = capsys.readouterr().out
    assert "hierarchical bootstrap" in out and "lowest to the highest" not in out
    assert isinstance(pd.read_parquet(grid / CELLS_FILE), pd.DataFrame)


def test_a_share_at_one_in_every_run_keeps_the_wilson_interval_of_its_distinct_inputs(tmp_path):
    """The three runs translate the same inputs: the Wilson floor counts each missing-class
    input once (those any run kept), not once per run."""
    from models.intervals import wilson

    store, df = _store(tmp_path, [3])
    found = cells(prepare(df), store)
    kept = found[(found.model == "naive") & (found.subset == "missing-classes")
                 & (found.metric == "class_preservation")].iloc[0]
    rows = df[(df.method == "naive") & (df.metric == "class_preservation") & (df.subset == "missing-classes")]
    assert kept.value == 1.0                   # every missing-class input kept its class, in every run
    counted = np.zeros(N, dtype=bool)
    for r in range(3):
        with np.load(store / f"enaive{r}" / "items" / "sdedit_t0.5_e3_s100.npz") as f:
            counted |= (f["labels"] == 5) & (f["confidence"] >= CONFIDENCE)
    assert kept.n == counted.sum() < rows.n.sum() and kept.k == pytest.approx(kept.n)
    assert kept.ci_low == pytest.approx(wilson(int(kept.n), int(kept.n)).low) and kept.ci_low < 0.95
    assert kept.ci_low < wilson(int(rows.k.sum()), int(rows.n.sum())).low      # wider than the summed counts
    assert "at least the Wilson interval" in kept.note
    table = {t.name: t for t in paper_tables(df, found)}["attributes"]
    assert f"({int(kept.n)}/{int(kept.n)})" in table.render("markdown")


def test_a_cell_s_fid_and_the_paired_baseline_are_one_definition(tmp_path):
    """Over two evaluation seeds, FID is the mean of the per-seed FIDs (each at one seed's
    n) in the tidy rows, in the cells and in the paired differences; and the source model
    against three naive runs gets the t-interval over those runs."""
    from scipy import stats

    from jobs.paired import differences

    store, df = _store(tmp_path, [3, 4])
    found = cells(prepare(df), store)
    diffs = differences(prepare(df), store)
    cell = found[(found.model == "naive") & (found.metric == "fid")].iloc[0]
    row = diffs[(diffs.model == "source") & (diffs.metric == "fid") & (diffs.group == "unconditional")].iloc[0]
    fid = df[(df.metric == "fid") & (df.extractor == "builtin")]
    naive_runs = fid[fid.method == "naive"].groupby("seed")["value"].mean()     # per run: mean over seeds
    source = fid[fid.method == "source"]["value"].mean()
    assert row.baseline_value == pytest.approx(cell.value, rel=1e-6)
    assert row.baseline_value == pytest.approx(naive_runs.mean(), rel=1e-4)      # scipy's sqrtm, in _store
    assert row.value == pytest.approx(source - naive_runs.mean(), rel=1e-4)
    assert row.n == 2 * N and row.runs == 1
    # seed level: the source model is untrained, naive's 3 runs vary
    ci = stats.ttest_1samp(source - naive_runs.to_numpy(), 0.0).confidence_interval()
    assert (row.seed_ci_low, row.seed_ci_high) == pytest.approx((ci.low, ci.high), rel=1e-4)
    assert "untrained" in row.seed_interval
    # a share's n: the distinct inputs in a denominator of either model's runs, in any seed
    kept = diffs[(diffs.model == "source") & (diffs.metric == "class_preservation")].iloc[0]
    counted = np.zeros(N, dtype=bool)
    for eid, step in [("esource", None)] + [(f"enaive{r}", 100) for r in range(3)]:
        for s in (3, 4):
            with np.load(store / eid / "items" / f"sdedit_t0.5_e{s}{f'_s{step}' if step else ''}.npz") as f:
                counted |= (f["labels"] == 5) & (f["confidence"] >= CONFIDENCE)
    assert kept.n == counted.sum() < N
    table = {t.name: t for t in [seed_difference_table(diffs)]}["differences_seeds"]
    assert table.lows.loc["source", ("unconditional", "fid")] == row.seed_ci_low
    assert "training runs alone" in table.render("markdown")


def test_each_training_seed_gets_its_own_paired_difference(tmp_path):
    """Per training seed: the source model against each naive run alone, on the same items,
    with the pooled rows (and their tables) unchanged; the per-seed table holds a row per seed."""
    from report.differences import difference_table, seed_by_seed_table
    from jobs.paired import differences, final_items, load, model_difference, statistics

    store, df = _store(tmp_path, [3])
    diffs = differences(prepare(df), store)
    pooled = diffs[diffs.training_seed.isna()]
    per_seed = diffs[diffs.training_seed.notna()]
    fid = per_seed[(per_seed.model == "source") & (per_seed.metric == "fid") & (per_seed.group == "unconditional")]
    assert sorted(fid.training_seed) == [0, 1, 2] and (fid.runs == 1).all()
    # seed 2's row: the source against enaive2 alone, as model_difference gives it
    items = {eid: load(final_items(store / eid, None, step).products[("unconditional", None)])
             for eid, step in (("esource", None), ("enaive2", 100))}
    reference = np.load(store / "esource" / "items" / "references.npz")["features_builtin_full-domain"]
    stats = {e: statistics(i, "unconditional", "builtin", reference, [5], CONFIDENCE) for e, i in items.items()}
    want = model_difference([stats["esource"]], [stats["enaive2"]], items["esource"]["groups"])["fid"]
    assert fid[fid.training_seed == 2].value.iloc[0] == pytest.approx(want.value, rel=1e-9)
    assert (fid[fid.training_seed == 2].ci_low.iloc[0], fid[fid.training_seed == 2].ci_high.iloc[0]) == \
        pytest.approx((want.low, want.high), rel=1e-9)
    # the naive runs shift with the seed: the source's lead over naive grows with it
    assert fid.sort_values("training_seed")["value"].is_monotonic_decreasing
    # the pooled table does not see the per-seed rows; the per-seed table shows each seed
    assert difference_table(diffs).means.equals(difference_table(pooled).means)
    table = seed_by_seed_table(diffs)
    assert list(table.means.index) == [f"source, against naive's seed {s}" for s in (0, 1, 2)]
    assert "every training seed" in table.render("markdown")
    assert seed_by_seed_table(pooled) is None


def test_the_source_model_s_share_is_corrected_with_the_source_style_rates(tmp_path):
    """The source model draws the source's style: its corrected share (row, cell, paired
    difference) uses the classifier's error rates on source-style images, every other model
    the target style's; both sets of calls are in the references' items."""
    from jobs.paired import differences
    from models.class_share import adjusted_share

    store, df = _store(tmp_path, [3, 4])
    # target style: tpr 0.5, fpr 0.1; source style: tpr 0.9, fpr 0.02 (100 missing, 400 present)
    calls = {}
    for prefix, (hit, false) in (("calibration", (50, 40)), ("source_calibration", (90, 8))):
        calls[f"{prefix}_labels"] = np.array([5] * 100 + [1] * 400)
        calls[f"{prefix}_predicted"] = np.array([5] * hit + [1] * (100 - hit) + [5] * false + [1] * (400 - false))
        calls[f"{prefix}_confidence"] = np.ones(500)
    rates = {"source": (0.9, 0.02), "naive": (0.5, 0.1)}
    path = store / "esource" / "items" / "references.npz"
    with np.load(path) as f:
        np.savez(path, **dict(f), **calls)
    rows = []
    for row in df[df.metric == "missing_class_share"].to_dict("records"):
        rows.append({**row, "metric": "missing_class_share_corrected", "k": np.nan,
                     "value": adjusted_share(row["value"], *rates[row["method"]])})
    df = tidy(pd.concat([df, pd.DataFrame(rows)], ignore_index=True).to_dict("records"))
    corrected = prepare(df)[lambda d: d.metric == "missing_class_share_corrected"]
    found = cells(prepare(df), store)
    kept = found[found.metric == "missing_class_share_corrected"]
    # a cell is kept only where the items give the rows' value: the source model's too
    assert set(kept.model) == {"source", "naive"}
    value = {m: corrected[corrected.method == m]["value"].mean() for m in ("source", "naive")}
    diff = differences(prepare(df), store)
    row = diff[(diff.model == "source") & (diff.metric == "missing_class_share_corrected")].iloc[0]
    assert row.value == pytest.approx(value["source"] - value["naive"], rel=1e-6)
    # with the target style's rates for both, the difference would be another number
    raw = prepare(df)[lambda d: d.metric == "missing_class_share"]
    same = np.mean([adjusted_share(q, *rates["naive"]) for q in raw[raw.method == "source"]["value"]])
    assert abs(row.value - (same - value["naive"])) > 0.05
