"""The evaluate job on Ray: products, metric rows, a killed actor, the feature cache."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from factories import ROOT, eval_spec, run_module, tiny_unet, write_spec
from harness.results import COLUMNS, load_results
from jobs.evaluation.measured import write_record
from report.results import git_sha
from runs.spec import EvalSpec
from runs.store import RunFolder

KEYS = ["stage", "weighting", "eval_seed", "task", "t0", "ckpt_step", "reference", "subset", "metric",
        "extractor"]


@pytest.mark.slow
def test_killed_actor_has_its_batch_retried_and_no_row_is_lost(tiny_source, lpips_weights):
    store = tiny_source.parent
    # slow batches (250 DDIM steps) so that the kill lands while an actor holds one
    run_dir = write_spec(store / "eval-kill", eval_spec(ddim_steps=250, num_samples=48, lpips_net="alex"))
    proc = subprocess.Popen([sys.executable, "-m", "jobs.evaluate", str(run_dir)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    attempts, work = run_dir / "attempts", run_dir / "work"
    deadline, killed = time.time() + 240, None
    while time.time() < deadline and killed is None and proc.poll() is None:
        for marker in sorted(attempts.glob("*.*")) if attempts.is_dir() else []:
            batch, pid = marker.name.rsplit(".", 1)
            if not (work / f"{batch}.npy").exists():          # the actor is holding this batch
                os.kill(int(pid), signal.SIGKILL)
                killed = batch
                break
        time.sleep(0.05)
    assert killed is not None, "no batch was caught in flight"
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]

    summary = json.loads((run_dir / "eval.json").read_text())
    assert summary["retries"] >= 1 and killed in summary["retried_batches"]
    assert len(list(attempts.glob(f"{killed}.*"))) == 2
    rows = pd.read_parquet(run_dir / "metrics.parquet")
    assert not rows.duplicated(KEYS).any()
    realism = ["fid", "kid", "precision", "recall", "density", "coverage"]
    expected = ({(m, ref) for m in realism for ref in ("target", "full-domain")}
                | {("missing_class_share", "classifier"), ("missing_class_share_corrected", "classifier"),
                   ("clipped_share", "sampler"),
                   ("intra_cluster_lpips", "target")})
    model_rows = rows[rows.stage == "evaluate"]
    assert set(zip(model_rows.metric, model_rows.reference)) == expected
    # the source model's evaluation also measures real data: the calibration rows
    real = rows[rows.stage == "calibration"]
    assert set(real.weighting) == {"held-out-half", "target-train", "source", "classifier-calibration",
                                   "classifier-calibration-source"}
    assert set(real[real.metric == "fid"].n) == {48} and set(real.task) == {"unconditional"}
    assert list(rows.columns[:len(COLUMNS)]) == COLUMNS
    assert RunFolder(run_dir).status == "done"


@pytest.fixture(scope="module")
def three_tasks(tiny_source, lpips_weights, ray_env):
    """A finished evaluation of the tiny source with every task (on the shared Ray)."""
    run_dir = write_spec(tiny_source.parent / "eval-a", eval_spec(tasks=["unconditional", "sdedit", "egsde"]))
    run_module("jobs.evaluate", str(run_dir), env=ray_env, check=True)
    return run_dir


@pytest.mark.slow
def test_second_evaluation_hits_the_feature_cache(tiny_source, three_tasks, ray_env):
    """Both evaluations on one shared Ray (conftest.ray_env): the cache is on disk, not in Ray."""
    store, first = tiny_source.parent, three_tasks
    again = store / "eval-b"
    shutil.copytree(first, again, ignore=shutil.ignore_patterns("work", "products", "attempts", "samples",
                                                                 "*.json", "*.parquet"))
    shutil.copy(first / "spec.json", again / "spec.json")
    run_module("jobs.evaluate", str(again), env=ray_env, check=True)
    summary = json.loads((again / "eval.json").read_text())
    assert summary["feature_lookups"] > 0 and summary["feature_cache_hits"] == summary["feature_lookups"]
    a = pd.read_parquet(first / "metrics.parquet").sort_values(KEYS).reset_index(drop=True)
    b = pd.read_parquet(again / "metrics.parquet").sort_values(KEYS).reset_index(drop=True)
    pd.testing.assert_series_equal(a["value"], b["value"])
    # translations come with faithfulness, class preservation and LPIPS (VGG, 16 px inputs resized)
    tasks = set(a[a.stage == "evaluate"].task)
    assert tasks == {"unconditional", "sdedit", "egsde"}
    assert set(a[a.stage == "calibration"].task) == {"unconditional", "translation"}
    lpips = a[a.metric == "lpips"]
    assert set(lpips.task) == {"sdedit", "egsde"} and (lpips.value > 0).all()
    assert (lpips.extractor == "lpips-vgg").all() and lpips.note.str.contains("16x16 to 64x64").all()
    assert {"psnr", "ssim", "class_preservation"} <= set(a.metric)
    assert not a.metric.str.startswith("feature_dist").any()          # no substitute where LPIPS is measured
    # every number has its interval; shares show k of n
    measured = a[a.metric != "clipped_share"]
    assert measured.ci_low.notna().all() and (measured.ci_low <= measured.value + 1e-12).all()
    assert (measured.value <= measured.ci_high + 1e-12).all()
    counts = a[a.metric.isin(["class_preservation", "missing_class_share"])]
    assert (counts.value == counts.k / counts.n).all() and counts.note.str.contains("Wilson").all()
    lacking = a[(a.subset == "missing-classes") & (a.reference == "full-domain")
                & (a.weighting != "classifier-calibration")]        # not the classifier's tpr
    assert set(lacking.metric) == {"recall", "coverage"}
    assert (run_dir_png := first / "samples" / "sdedit_t0.5_s60.png").is_file(), run_dir_png
    loaded = load_results(first / "metrics.parquet")
    assert len(loaded) == len(a)


@pytest.mark.slow
def test_a_requeued_evaluation_measures_only_the_products_it_lacks(tiny_source, three_tasks, ray_env):
    """An evaluation killed while measuring keeps each measured product's rows (its record):
    run again, it measures the others only (and what another commit measured), and leaves no
    record once the metrics hold them."""
    requeued = tiny_source.parent / "eval-requeued"
    shutil.copytree(three_tasks, requeued, ignore=shutil.ignore_patterns("metrics.parquet", "eval.json"))
    first = pd.read_parquet(three_tasks / "metrics.parquet")
    assert not list((three_tasks / "work").glob("*.rows.json"))
    # the egsde product as measured before the kill, one value marked to tell it from a fresh one
    egsde = first[(first.stage == "evaluate") & (first.task == "egsde")].to_dict("records")
    egsde[0]["value"] = 123.0
    key = next(e["file"] for e in json.loads((three_tasks / "products" / "manifest.json").read_text())["products"]
               if e["task"] == "egsde").removesuffix(".npy")
    write_record(requeued / "work" / f"{key}.rows.json", egsde, {"hits": 0, "lookups": 0}, git_sha())
    # the calibration as another commit measured it: measured again, its mark gone
    calibration = first[first.stage == "calibration"].to_dict("records")
    calibration[0]["value"] = 456.0
    (requeued / "work" / "calibration.rows.json").write_text(json.dumps(
        {"git_sha": "0000000", "rows": calibration, "counts": {"hits": 0, "lookups": 0}}))

    run_module("jobs.evaluate", str(requeued), env=ray_env, check=True)
    assert json.loads((requeued / "eval.json").read_text())["measured_before"] == 1
    again = pd.read_parquet(requeued / "metrics.parquet")
    assert (again.value == 123.0).sum() == 1                 # egsde's rows came from its record
    assert (again.value != 456.0).all()
    assert not again.duplicated(KEYS).any() and len(again) == len(first)
    a = first.sort_values(KEYS).reset_index(drop=True)
    b = again.sort_values(KEYS).reset_index(drop=True)
    changed = ~((a.value == b.value) | (a.value.isna() & b.value.isna()))
    assert changed.sum() == 1 and (b.value[changed] == 123.0).all()
    assert not list((requeued / "work").glob("*.rows.json"))


@pytest.mark.slow
def test_inception_features_on_a_few_dozen_images(tiny_source, ray_env):
    """The model rows only (role finetuned, the EMA named): Inception's calibration rows, which
    would triple its work here, are checked on folder data in test_folder_labels.py. On the
    worker's shared Ray (conftest.ray_env)."""
    spec = eval_spec(num_samples=24, batch_size=24, extractors=["inception"], max_reference=24,
                     kid_subset_size=24, weights="ema")
    run_dir = write_spec(tiny_source.parent / "eval-inception", {**spec, "role": "finetuned"})
    run_module("jobs.evaluate", str(run_dir), env=ray_env, check=True)
    rows = pd.read_parquet(run_dir / "metrics.parquet")
    fid = rows[(rows.stage == "evaluate") & (rows.metric == "fid") & (rows.extractor == "inception")]
    # the number itself (a closed form, a known ordering) is checked on Inception features in
    # tests/models/test_features.py; here the job's rows: one per reference set, over the 24
    # samples, each value inside its interval
    assert sorted(fid.reference) == ["full-domain", "target"] and (fid.n == 24).all()
    assert ((fid.ci_low <= fid.value) & (fid.value <= fid.ci_high)).all()
    assert (rows.stage == "evaluate").all()


def test_actors_fit_on_their_nodes(monkeypatch):
    from jobs.evaluation.driver import actor_layout

    node = lambda cpu, gpu=0: {"Alive": True, "Resources": {"CPU": cpu, "GPU": gpu}}  # noqa: E731
    monkeypatch.setenv("SDFT_EVAL_THREADS", "2")
    assert actor_layout([node(2)]) == (1, 2, 0)
    assert actor_layout([node(1), node(1)]) == (2, 1, 0)      # two one-CPU Ray nodes: no 2-CPU actor
    assert actor_layout([node(8), node(8)]) == (8, 2, 0)
    assert actor_layout([node(16, 4), node(16, 4)]) == (8, 4, 1)  # one actor per GPU
    # fewer CPUs than GPUs: an actor needs a CPU, so two of the four GPUs stay idle (before,
    # four one-CPU actors were asked of two CPUs, and the two unplaced ones waited for good)
    assert actor_layout([node(2, 4)]) == (2, 1, 1)


def test_sampler_settings_reach_the_samples_and_the_clipped_share(tmp_path):
    """The worker outside Ray: ancestral and DDIM batches of a 6-channel model, each with
    its last-step x0 excess beside the images, summed into the product's clipped share."""
    import numpy as np
    import torch

    from jobs.evaluation.driver import clipped_share
    from jobs.evaluation.plan import Batch, Product
    from jobs.evaluation.worker import EvalWorker
    from models.data import to_uint8
    from models.networks import as_eps_model, load_unet, save_unet
    from models.sampling import ancestral_sample, ddim_sample, indexed_generators, indexed_noise

    save_unet(tiny_unet(learned_variance=True), tmp_path / "model")
    eps = as_eps_model(load_unet(tmp_path / "model").eval())
    noise = indexed_noise(0, "unconditional", range(3), (3, 16, 16))
    torch.set_num_threads(1)    # the worker's (threads=1): sums in the same order, so equal bits
    expected = {"ancestral": ancestral_sample(eps, noise, respacing="ddim5",
                                              generator=indexed_generators(0, "ancestral", range(3))),
                "ddim": ddim_sample(eps, noise, respacing="ddim4")}
    for sampler, respacing in (("ancestral", "ddim5"), ("ddim", "ddim4")):
        spec = EvalSpec.model_validate({**eval_spec(sampler=sampler, respacing=respacing, ddim_steps=40),
                                        "model": str(tmp_path / "model")})
        run_dir = tmp_path / sampler
        run_dir.mkdir()
        worker = EvalWorker(spec.model_dump_json(), str(run_dir), threads=1)
        product = Product("unconditional", None, None, str(tmp_path / "model"))
        batches = [Batch(product, 0, 3), Batch(product, 3, 5)]
        first = np.load(worker.sample(batches[0]))
        assert np.array_equal(first, to_uint8(expected[sampler].images).numpy())
        assert np.load(worker.sample(batches[1])).shape == (2, 3, 16, 16)
        share, n = clipped_share(RunFolder(run_dir), product, batches)
        assert n == 5 and 0.0 <= share <= 1.0
        excess = np.concatenate([np.load(run_dir / "work" / f"{b.key}.x0.npy") for b in batches])
        assert np.allclose(excess[:3], expected[sampler].x0_excess.numpy(), atol=1e-6)


def test_a_solver_sampler_reaches_the_samples_in_chunks_that_change_no_image(tmp_path, monkeypatch):
    """dpm-solver++ through the worker; a batch split into chunks (as on a GPU whose memory
    holds 2 images) gives the images of one call."""
    import numpy as np

    from jobs.evaluation.plan import Batch, Product
    from jobs.evaluation.worker import EvalWorker
    from models.data import to_uint8
    from models.networks import as_eps_model, load_unet, save_unet
    from models.sampling import indexed_noise
    from models.solvers import solver_sample

    save_unet(tiny_unet(), tmp_path / "model")
    eps = as_eps_model(load_unet(tmp_path / "model").eval())
    expected = solver_sample(eps, indexed_noise(0, "unconditional", range(5), (3, 16, 16)), "dpm-solver++", 6)
    spec = EvalSpec.model_validate({**eval_spec(sampler="dpm-solver++", sampler_steps=6),
                                    "model": str(tmp_path / "model")})
    (tmp_path / "run").mkdir()
    worker = EvalWorker(spec.model_dump_json(), str(tmp_path / "run"), threads=1)
    monkeypatch.setattr(EvalWorker, "chunk", lambda self, path, wanted: 2)
    images = np.load(worker.sample(Batch(Product("unconditional", None, None, str(tmp_path / "model")), 0, 5)))
    assert np.abs(images.astype(int) - to_uint8(expected.images).numpy().astype(int)).max() <= 1


def test_the_worker_samples_in_the_evaluation_precision(tmp_path):
    """precision: bf16 runs the network under autocast: the same samples within bf16 rounding,
    not the float32 ones to the bit."""
    import numpy as np
    import torch

    from jobs.evaluation.plan import Batch, Product
    from jobs.evaluation.worker import EvalWorker
    from models.networks import save_unet

    save_unet(tiny_unet(), tmp_path / "model")
    images = {}
    for precision in ("fp32", "bf16"):
        spec = EvalSpec.model_validate({**eval_spec(ddim_steps=8, precision=precision), "model": str(tmp_path / "model")})
        (tmp_path / precision).mkdir()
        worker = EvalWorker(spec.model_dump_json(), str(tmp_path / precision), threads=1)
        product = Product("unconditional", None, None, str(tmp_path / "model"))
        images[precision] = np.load(worker.sample(Batch(product, 0, 4))).astype(int)
        # the GPU's memory probe runs the eager network as the sampler does, in its precision
        x, t = torch.randn(2, 3, 16, 16), torch.full((2,), 500)
        assert torch.equal(worker._eager[product.model_dir](x, t), worker.model(product.model_dir)(x, t))
    difference = np.abs(images["bf16"] - images["fp32"])
    assert difference.max() > 0 and difference.mean() < 2       # uint8 levels


def test_the_clipped_share_counts_samples_beyond_the_tolerance_only(tmp_path):
    """Overshoots every sane model makes (a few hundredths) are not divergence; colour noise
    (whole units) is. One product in two batches: 2 of 5 samples beyond 0.1."""
    import numpy as np

    from jobs.evaluation.driver import clipped_share
    from jobs.evaluation.plan import Batch, Product
    from models.sampling import CLIP_TOLERANCE

    assert CLIP_TOLERANCE == 0.1
    product = Product("unconditional", None, None, "model")
    batches = [Batch(product, 0, 3), Batch(product, 3, 5)]
    (tmp_path / "work").mkdir()
    np.save(tmp_path / "work" / f"{batches[0].key}.x0.npy", np.array([0.0, 0.04, 1.5], np.float32))
    np.save(tmp_path / "work" / f"{batches[1].key}.x0.npy", np.array([0.1, 0.35], np.float32))
    assert clipped_share(RunFolder(tmp_path), product, batches) == (0.4, 5)
    (tmp_path / "work" / f"{batches[1].key}.x0.npy").unlink()      # sampled before the figure existed
    assert clipped_share(RunFolder(tmp_path), product, batches) is None


def test_evaluation_loads_the_weights_it_names(tmp_path):
    """A fine-tuned run's raw weights (model-raw) by default, its EMA (model) when asked, the
    same for its snapshots; a run trained before raw weights were kept is a one-line error."""
    import pytest

    from runs.errors import UserError
    from jobs.evaluation.plan import resolve_models

    store = tmp_path / "_runs"
    trained = RunFolder(write_spec(store / "ft", {"stage": "finetune", "steps": 30}))
    trained.set_state("done")
    for name in ("model", "model-raw", "model-step00000010", "model-step00000010-raw"):
        (trained.path / name).mkdir()
    (store / "ev").mkdir()

    def models(**settings):
        base = eval_spec(checkpoint_steps=[10])        # a source evaluation's: no weights setting
        spec = EvalSpec.model_validate({**base, "role": "finetuned", "model": "run:ft",
                                        "settings": {**base["settings"], **settings}})
        return [(step, path.name) for step, path in resolve_models(spec, store / "ev")[0]]

    assert models() == [(30, "model-raw"), (10, "model-step00000010-raw")]
    assert models(weights="ema") == [(30, "model"), (10, "model-step00000010")]
    (trained.path / "model-raw").rmdir()
    with pytest.raises(UserError, match="no raw weights.*evaluation.weights: ema"):
        models()


def test_the_reports_input_row_is_the_evaluations_source_test_images(tmp_path):
    """The aggregate's image grids put the translations' inputs on top, as they are (uint8):
    the images the product's first translations were made from."""
    import numpy as np
    import torch

    from jobs.aggregate import SHOWN_PER_ROW, _sources
    from jobs.evaluation.plan import Product
    from models.data import open_dataset

    spec = eval_spec(tasks=["sdedit"])
    shown = _sources(write_spec(tmp_path / "e", spec))
    ds = open_dataset({"kind": "builtin-source", "resolution": 16}, split="source_test")
    translated = Product("sdedit", 0.5, None, "m").inputs(EvalSpec.model_validate(spec), len(ds))[:SHOWN_PER_ROW]
    assert shown.dtype == np.uint8 and shown.shape == (SHOWN_PER_ROW, 3, 16, 16)
    np.testing.assert_array_equal(shown, torch.stack([ds[i] for i in translated]).numpy())


def test_sample_rows_put_the_translations_sources_above_them():
    """The grid's rows: uint8 samples 16 to a row, each translation row under its inputs'."""
    import numpy as np
    import torch

    from jobs.evaluation.driver import sample_rows
    from models.data.base import ArrayImages

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 3, 2, 2), dtype=np.uint8)
    # the driver's sources: a dataset as open_dataset gives it, uint8 CHW
    sources = ArrayImages(rng.integers(0, 256, (30, 2, 2, 3), dtype=np.uint8))
    assert [len(r) for r in sample_rows(images)] == [16, 4]
    rows = sample_rows(images, sources, inputs=list(range(10, 30)))
    assert [len(r) for r in rows] == [16, 16, 4, 4] and all(r.dtype == np.uint8 for r in rows)
    np.testing.assert_array_equal(rows[3], images[16:])
    np.testing.assert_array_equal(rows[2], torch.stack([sources[i] for i in range(26, 30)]).numpy())
    np.testing.assert_array_equal(rows[0], torch.stack([sources[i] for i in range(10, 26)]).numpy())
