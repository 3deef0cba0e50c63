"""Paired differences against naive from the per-item files, evaluation seed lists, and the
calibration rows' order on the built-in pair."""
import json

import numpy as np
import pandas as pd
import pytest

from harness.results import tidy
from runs.spec import EvalSpec
from runs.store import RunFolder
from report.differences import difference_table
from report.tables import prepare
from jobs.evaluation.manifest import ProductEntry, write_manifest
from jobs.paired import differences, final_items

TARGET = {"kind": "builtin-target", "resolution": 16, "size": 200}
SOURCE = {"kind": "builtin-source", "resolution": 16}


def _spec(role, seeds):
    return EvalSpec(stage="evaluate", role=role, model="run:x", source_data=SOURCE, target_data=TARGET,
                    settings={"seed": seeds, "tasks": ["sdedit"]}).model_dump(mode="json")


def _store(tmp_path, seeds, shift):
    """Three evaluations (source, naive, sdft) of the same 60 translations per evaluation
    seed (every seed translates the same 60 source images): per-image PSNR shared by all
    models and seeds (the inputs' difficulty, widely spread) plus the model's own shift and a
    little noise of its own."""
    rng = np.random.default_rng(0)
    inputs = rng.normal(20, 5, 60)
    difficulty = {s: inputs for s in seeds}
    store, rows = tmp_path / "_runs", []
    for eid, method, offset in (("esource", "source", -1.0), ("enaive", "naive", 0.0), ("esdft", "sdft", shift)):
        folder = store / eid
        (folder / "items").mkdir(parents=True)
        (folder / "spec.json").write_text(json.dumps(_spec("source" if method == "source" else "finetuned", seeds)))
        entries = []
        for s in seeds:
            tag = f"_e{s}" if len(seeds) > 1 else ""
            psnr = difficulty[s] + offset + rng.normal(0, 0.1, 60)
            for step, values in ((100, psnr), (50, psnr - 100)):          # and an earlier checkpoint
                key = f"sdedit_t0.5{tag}_s{step}"
                np.savez(folder / "items" / f"{key}.npz", psnr=values)
                entries.append(ProductEntry(f"sdedit_t0.5{tag}", "sdedit", 0.5, step, s, f"{key}.npy", f"{key}.npz"))
            rows.append(dict(eval_id=eid, method=method, weighting="sdft" if method == "sdft" else None,
                             seed=0, eval_seed=s, ckpt_step=100, task="sdedit", t0=0.5, reference="source",
                             subset="all", metric="psnr", value=float(psnr.mean()), dataset="d", target="t",
                             extractor=None))
        write_manifest(RunFolder(folder), entries)
    np.savez(store / "esource" / "items" / "references.npz", missing=np.array([5]))
    return store, prepare(tidy(rows))


@pytest.mark.parametrize("seeds", [0, [0, 1]], ids=["one-seed", "two-seeds"])
def test_paired_differences_see_a_shift_that_unpaired_spreads_would_hide(tmp_path, seeds):
    store, df = _store(tmp_path, seeds if isinstance(seeds, list) else [seeds], shift=0.5)
    diffs = differences(df, store)
    sdft = diffs[(diffs.model == "sdft/sdft") & (diffs.metric == "psnr")].iloc[0]
    # the shift is 0.5 and each model's own noise 0.1: the paired interval is narrow around it,
    # although the images' PSNR spreads by 5 (an unpaired interval would span about +-2)
    assert sdft.ci_low < 0.5 < sdft.ci_high and sdft.ci_high - sdft.ci_low < 0.2
    assert sdft.value == pytest.approx(0.5, abs=0.05)
    assert sdft.n == 60          # distinct source images: both seeds translate the same 60
    source = diffs[(diffs.model == "source") & (diffs.metric == "psnr")].iloc[0]
    assert source.ci_high < -0.8
    table = difference_table(diffs)
    markdown = table.render("markdown")
    assert "Paired differences against naive" in markdown
    assert f"**{sdft.value:.3f} [{sdft.ci_low:.3f}, {sdft.ci_high:.3f}]**" in markdown   # excludes 0: bold



def test_each_difference_is_shown_beside_its_models_training_cost(tmp_path):
    store, df = _store(tmp_path, [0], shift=0.5)
    cost = {"naive": (64.0, 100.0), "sdft": (122.6, 228.0)}        # (naive kimg, seconds)
    df["compute_kimg"] = [cost.get(m, (np.nan, np.nan))[0] for m in df["method"]]
    df["train_s"] = [cost.get(m, (np.nan, np.nan))[1] for m in df["method"]]
    diffs = differences(df, store)
    sdft = diffs[(diffs.model == "sdft/sdft") & (diffs.metric == "psnr")].iloc[0]
    assert (sdft.compute_kimg, sdft.train_s) == (122.6, 228.0)
    assert sdft.train_ratio == pytest.approx(2.28)
    assert np.isnan(diffs[diffs.model == "source"]["train_ratio"]).all()     # the source model did not train
    table = difference_table(diffs)
    assert table.means.loc["sdft/sdft", ("training cost", "train_ratio")] == pytest.approx(2.28)
    assert table.best(("training cost", "train_ratio")) == set()            # a cost, never bold
    markdown = table.render("markdown")
    assert "× baseline's train s" in markdown and "2.280" in markdown and "**2.280" not in markdown
    assert "over the baseline's (naive)" in markdown
    # without cost in the rows the table is as before
    plain = difference_table(differences(df.drop(columns=["compute_kimg", "train_s"]), store))
    assert "training cost" not in {c[0] for c in plain.means.columns}

def test_each_baseline_gets_tables_of_its_own_and_swapping_the_pair_mirrors_the_difference(tmp_path):
    """selection.baselines [naive, sdft/sdft], as the aggregate writes them: the rows against
    sdft are the rows against naive seen from the other side (the same resampled items)."""
    from report.differences import difference_tables

    store, df = _store(tmp_path, [0, 1], shift=0.5)
    both = differences(df, store, ("naive", "sdft/sdft"))
    by = {b: both[both.baseline == b].reset_index(drop=True) for b in ("naive", "sdft/sdft")}
    # one call for both baselines gives each the rows of a call for it alone
    pd.testing.assert_frame_equal(by["sdft/sdft"], differences(df, store, ("sdft/sdft",)))
    psnr = {b: d[d.metric == "psnr"].set_index("model") for b, d in by.items()}
    sdft, naive = psnr["naive"].loc["sdft/sdft"], psnr["sdft/sdft"].loc["naive"]
    assert naive.value == pytest.approx(-sdft.value, abs=1e-9)
    assert (naive.ci_low, naive.ci_high) == pytest.approx((-sdft.ci_high, -sdft.ci_low), abs=1e-9)
    # PSNR is a mean: the source against sdft is the source against naive less sdft's lead
    assert psnr["sdft/sdft"].loc["source"].value == pytest.approx(psnr["naive"].loc["source"].value - sdft.value)
    tables = {t.name: t for t in difference_tables(pd.concat(by.values(), ignore_index=True))}
    assert {"differences", "differences_vs_sdft_sdft"} <= set(tables)
    assert list(tables["differences"].means.index) == ["source", "sdft/sdft"]
    assert list(tables["differences_vs_sdft_sdft"].means.index) == ["source", "naive"]
    assert "against sdft/sdft" in tables["differences_vs_sdft_sdft"].render("markdown")
    # rows written before the column existed are naive's, and make the same table
    old = difference_tables(by["naive"].drop(columns=["baseline"]))
    assert [t.name for t in old] == [t for t in tables if "_vs_" not in t]
    assert old[0].means.equals(tables["differences"].means)


def test_final_items_take_the_last_checkpoint_of_each_seed(tmp_path):
    store, _ = _store(tmp_path, [3, 4], shift=0.0)
    found = final_items(store / "enaive").products
    assert set(found) == {("sdedit", 0.5)}
    assert {s: p.name for s, p in found[("sdedit", 0.5)].items()} == {
        3: "sdedit_t0.5_e3_s100.npz", 4: "sdedit_t0.5_e4_s100.npz"}


def test_an_evaluation_seed_list_makes_one_product_per_seed():
    from jobs.evaluation.plan import Product, plan_products

    spec = EvalSpec.model_validate(_spec("source", [7, 9]))
    products = plan_products(spec, [(100, "m")])
    assert [(p.key, p.seed(spec)) for p in products] == [("sdedit_t0.5_e7_s100", 7), ("sdedit_t0.5_e9_s100", 9)]
    one = EvalSpec.model_validate(_spec("source", 7))
    assert [(p.key, p.seed(one)) for p in plan_products(one, [(100, "m")])] == [("sdedit_t0.5_s100", 7)]
    assert Product("unconditional", None, None, "m").key == "unconditional"


@pytest.mark.slow
def test_calibration_orders_floor_target_train_and_style_gap_on_the_builtin_pair(tmp_path):
    """Slow: trains the builtin feature network on the test run's cold cache (minutes); the
    calibration itself takes seconds. At most 300 images per set, builtin extractor."""
    from jobs.evaluation.plan import calibration_jobs
    from jobs.evaluation.worker import EvalWorker

    spec = EvalSpec(stage="evaluate", role="source", model="run:x", source_data=SOURCE,
                    target_data={**TARGET, "size": 500},
                    settings={"num_translations": 300, "tasks": ["sdedit"], "max_reference": 300,
                              "kid_subset_size": 300, "kid_subsets": 20})
    worker = EvalWorker(spec.model_dump_json(), str(tmp_path), threads=1)
    (job,) = calibration_jobs(spec, tmp_path)
    rows, _ = worker.measure(job)
    df = pd.DataFrame(rows)
    fid = df[(df.metric == "fid")].set_index("weighting")
    assert set(fid.n) == {300} and (fid.stage == "calibration").all() and (fid.task == "translation").all()
    assert fid.value["held-out-half"] < fid.value["target-train"] < fid.value["source"]
    # the floor's interval lies below the target set's, which lies below the style gap's
    assert fid.ci_high["held-out-half"] < fid.ci_low["target-train"]
    assert fid.ci_high["target-train"] < fid.ci_low["source"]
    assert (tmp_path / "items" / "calibration_held-out-half_translation.npz").is_file()


def test_each_evaluation_seed_pairs_with_the_source_models_sample_of_that_seed(tmp_path):
    from jobs.evaluation.plan import Product, source_samples_path

    spec = EvalSpec.model_validate({**_spec("finetuned", [1, 10]), "source_samples": "run:src"})
    products = tmp_path / "_runs" / "src" / "products"
    products.mkdir(parents=True)
    entries = []
    for seed in (1, 10):
        np.save(products / f"unconditional_e{seed}_s600.npy", np.zeros(1))
        entries.append(ProductEntry(f"unconditional_e{seed}", "unconditional", None, 600, seed,
                                    f"unconditional_e{seed}_s600.npy", f"unconditional_e{seed}_s600.npz"))
    write_manifest(RunFolder(products.parent), entries)
    found = {seed: source_samples_path(spec, tmp_path / "_runs" / "me", Product("unconditional", None, 5, "m", seed))
             for seed in (1, 10)}
    assert {s: p.rsplit("/", 1)[1] for s, p in found.items()} == {1: "unconditional_e1_s600.npy",
                                                                  10: "unconditional_e10_s600.npy"}


def test_the_fid_difference_interval_covers_the_expected_difference_though_spreads_differ():
    """Repeated rows raise each model's FID by its own amount (more for the more spread-out
    features), so the paired replicates of a difference sit off its value; the interval is
    centred as a single FID's is. Before, on 64-d features it missed the expected difference
    in 98 of 100 draws, lying wholly above the value. Truth: the mean over 300 fresh draws."""
    from jobs.paired import model_difference
    from models.feature_intervals import FrechetReplicates

    d, n = 64, 200
    reference = np.random.default_rng(0).normal(size=(400, d))

    def two_models(rng):        # the same noise through two models, the second less spread
        a = rng.normal(0.3, 1.2, size=(n, d))
        return FrechetReplicates(a, reference), FrechetReplicates(0.8 * a + 0.02, reference)

    every = np.arange(n)
    truth_rng = np.random.default_rng(1)
    truth = np.mean([a(every) - b(every) for a, b in (two_models(truth_rng) for _ in range(300))])
    hits = []
    for draw in range(60):
        a, b = two_models(np.random.default_rng(100 + draw))
        ci = model_difference([{"fid": (a, 100)}], [{"fid": (b, 100)}], np.zeros(n, dtype=int), seed=draw)["fid"]
        assert ci.low <= ci.value <= ci.high
        hits.append(ci.low <= truth <= ci.high)
    assert np.mean(hits) >= 0.85
