"""The paper's path end to end at toy size: a guided-diffusion checkpoint with learned
variance (6 output channels) is converted, fine-tuned with SDFT by the training job, and
sampled from its raw weights with both samplers, as the evaluate job's workers do."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from factories import run_module, write_spec
from runs.store import RunFolder
from models.networks import ModelFolderError, as_eps_model, load_unet, read_diffusion_info, schedule_of, split_output
from models.schedule import NoiseSchedule
from test_adm import convert, reference

# ffhq_p2's options (learn_sigma, resblock_updown, scale-shift norm, head width fixed) at 16 px
TINY_ADM = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                attention_resolutions="8", num_head_channels=16, learn_sigma=True,
                resblock_updown=True, use_scale_shift_norm=True)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(guided-diffusion's randomised network, its converted folder, a folder of 16 px images)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("adm")
    ref = reference(TINY_ADM, seed=3)
    torch.save(ref.state_dict(), root / "adm.pt")
    assert convert(root / "adm.pt", root / "source-model", TINY_ADM) == 0
    images = root / "target"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images / f"{i:02d}.png")
    return ref, root / "source-model", images


def test_loader_splitter_and_sidecar_agree_on_the_eps_channels(converted, tmp_path):
    """diffusion.json's eps and variance channels are the ones split_output takes from the
    converted network, and the ones guided-diffusion's own network puts there."""
    ref, folder, _ = converted
    info = read_diffusion_info(folder)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 16, 16, generator=g), torch.tensor([10, 900])
    with torch.no_grad():
        want = ref(x, t)
        eps, var = split_output(as_eps_model(load_unet(folder))(x, t), 3)
    (e0, e1), (v0, v1) = info["eps_channels"], info["variance"]["channels"]
    assert want[:, e0:e1].abs().max() > 0.1 and want[:, v0:v1].abs().max() > 0.1
    assert torch.allclose(eps, want[:, e0:e1], atol=1e-5)
    assert torch.allclose(var, want[:, v0:v1], atol=1e-5)
    # a sidecar that says otherwise is refused before anything trains on it
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "diffusion.json").write_text(json.dumps({**info, "eps_channels": [3, 6]}))
    with pytest.raises(ModelFolderError, match="eps_channels"):
        load_unet(bad)
    from harness.inputs import model_resolution      # the check at submit: one line, exit 2

    assert model_resolution(folder) == 16
    with pytest.raises(ValueError, match=r"diffusion.json: eps_channels \[3, 6\]"):
        model_resolution(bad)
    # a schedule the losses and samplers do not implement: cosine over 4,000 steps
    longer = {**info, "schedule": {**NoiseSchedule(kind="cosine").info(), "num_train_timesteps": 4000}}
    (bad / "diffusion.json").write_text(json.dumps(longer))
    with pytest.raises(ModelFolderError, match="over 1000 steps only"):
        load_unet(bad)
    with pytest.raises(ValueError, match=r"diffusion.json: schedule .*4000"):
        model_resolution(bad)


def test_converted_model_finetunes_with_sdft_and_samples_from_its_raw_weights(converted, tmp_path):
    """bf16, as the paper's runs use half precision (fp16 needs a GPU); about 12 s here."""
    from safetensors.torch import load_file

    from runs.spec import EvalSpec
    from jobs.evaluation.plan import Batch, Product, resolve_models
    from jobs.evaluation.worker import EvalWorker
    from models.data import to_uint8
    from models.sampling import ancestral_sample, ddim_sample, indexed_generators, indexed_noise

    _, source, images = converted
    store = tmp_path / "_runs"
    data = {"kind": "folder", "path": str(images), "resolution": 16}
    run_dir = write_spec(store / "ft", {
        "stage": "finetune", "method": "sdft", "init": str(source), "data": data, "flip": True,
        "distill": {"lambda_distill": 1.0, "lambda_aux": 1.0}, "dropout": 0.1, "steps": 3, "batch_size": 4,
        "lr": 1e-3, "precision": "bf16", "log_every": 1, "checkpoint_every": 3})
    run_module("jobs.train", str(run_dir), check=True)
    folder = RunFolder(run_dir)
    assert folder.status == "done"
    rows = [r for r in folder.log_rows() if "loss" in r]
    assert len(rows) == 3 and all(r["loss_vb"] > 0 for r in rows)
    # the student starts with the teacher's weights; its dropout (0.1) sets them apart from step 1
    assert all(r["loss_distill"] > 0 and r["loss_aux"] > 0 for r in rows)

    # both folders are 6-channel models that still say what their channels are
    raw_dir = run_dir / "model-raw"
    for model_dir in (folder.model_dir, raw_dir):
        assert read_diffusion_info(model_dir) == read_diffusion_info(source)
        assert load_unet(model_dir).config.out_channels == 6
    start = load_file(source / "diffusion_pytorch_model.safetensors")
    ema = load_file(folder.model_dir / "diffusion_pytorch_model.safetensors")
    raw = load_file(raw_dir / "diffusion_pytorch_model.safetensors")
    moved = lambda w: max(float((w[k] - start[k]).abs().max()) for k in start)  # noqa: E731
    # EMA 0.9999 without warm-up has hardly left the start after 3 steps; the raw weights have
    assert moved(raw) > 100 * moved(ema) > 0
    # bf16 training: the raw weights are the fp32 master weights, not the bf16 working copy
    tag = (run_dir / "checkpoints" / "latest").read_text().strip()
    module = torch.load(run_dir / "checkpoints" / tag / "mp_rank_00_model_states.pt", weights_only=True)["module"]
    assert all(module[k].dtype == torch.bfloat16 for k in raw)
    assert all(torch.equal(raw[k].to(torch.bfloat16), module[k]) for k in raw)
    assert any(not torch.equal(raw[k].to(torch.bfloat16).float(), raw[k]) for k in raw)

    # the evaluate job's workers: the raw weights by default, both samplers
    for sampler, respacing in (("ancestral", "ddim5"), ("ddim", None)):
        spec = EvalSpec.model_validate({
            "stage": "evaluate", "role": "finetuned", "model": "run:ft", "source_data": data, "target_data": data,
            "settings": {"num_samples": 2, "batch_size": 2, "ddim_steps": 5, "tasks": ["unconditional"],
                         "extractors": ["inception"], "sampler": sampler, "respacing": respacing}})
        assert spec.settings.weights == "raw"
        eval_dir = store / f"eval-{sampler}"
        eval_dir.mkdir()
        [(step, path)], _ = resolve_models(spec, eval_dir)
        assert (step, path) == (3, raw_dir)
        worker = EvalWorker(spec.model_dump_json(), str(eval_dir), threads=1)
        got = np.load(worker.sample(Batch(Product("unconditional", None, step, str(path)), 0, 2)))
        noise = indexed_noise(0, "unconditional", range(2), (3, 16, 16))
        expected = {}
        for name, model_dir in (("raw", raw_dir), ("ema", folder.model_dir)):
            eps = as_eps_model(load_unet(model_dir).eval())
            sampled = (ancestral_sample(eps, noise, respacing=respacing,
                                        generator=indexed_generators(0, "ancestral", range(2)))
                       if sampler == "ancestral" else ddim_sample(eps, noise, num_steps=5))
            expected[name] = to_uint8(sampled.images).numpy()
        assert np.array_equal(got, expected["raw"])
        assert not np.array_equal(got, expected["ema"])          # the check can tell them apart


def test_a_cosine_checkpoint_trains_and_samples_on_its_own_schedule(converted, tmp_path):
    """improved-diffusion's cosine betas, named by the converted folder's diffusion.json: the
    folder passes the submit check, the training job trains on that schedule and its model
    folders keep naming it, and the evaluate job's workers sample on it."""
    from harness.inputs import model_resolution
    from runs.spec import EvalSpec
    from jobs.evaluation.plan import Batch, Product, resolve_models
    from jobs.evaluation.worker import EvalWorker
    from models.data import to_uint8
    from models.sampling import ddim_sample, indexed_noise

    ref, _, images = converted
    torch.save(ref.state_dict(), tmp_path / "adm.pt")
    source = tmp_path / "cosine-model"
    assert convert(tmp_path / "adm.pt", source, {**TINY_ADM, "noise_schedule": "cosine"}) == 0
    cosine = NoiseSchedule(kind="cosine")
    assert model_resolution(source) == 16 and schedule_of(load_unet(source)) == cosine

    store = tmp_path / "_runs"
    data = {"kind": "folder", "path": str(images), "resolution": 16}
    run_dir = write_spec(store / "ft", {
        "stage": "finetune", "method": "naive", "init": str(source), "data": data, "steps": 2,
        "batch_size": 4, "lr": 1e-3, "log_every": 1, "checkpoint_every": 2})
    run_module("jobs.train", str(run_dir), check=True)
    folder = RunFolder(run_dir)
    [logged] = [r for r in folder.log_rows() if r.get("event") == "schedule"]
    assert {k: logged[k] for k in cosine.info()} == cosine.info()
    for model_dir in (folder.model_dir, run_dir / "model-raw"):
        assert schedule_of(load_unet(model_dir)) == cosine

    spec = EvalSpec.model_validate({
        "stage": "evaluate", "role": "finetuned", "model": "run:ft", "source_data": data, "target_data": data,
        "settings": {"num_samples": 2, "batch_size": 2, "ddim_steps": 5, "tasks": ["unconditional"],
                     "extractors": ["inception"]}})
    eval_dir = store / "eval"
    eval_dir.mkdir()
    [(step, path)], _ = resolve_models(spec, eval_dir)
    worker = EvalWorker(spec.model_dump_json(), str(eval_dir), threads=1)
    got = np.load(worker.sample(Batch(Product("unconditional", None, step, str(path)), 0, 2)))
    noise = indexed_noise(0, "unconditional", range(2), (3, 16, 16))
    eps = as_eps_model(load_unet(path).eval())
    on = {kind: to_uint8(ddim_sample(eps, noise, num_steps=5, schedule=NoiseSchedule(kind=kind)).images).numpy()
          for kind in ("cosine", "linear")}
    assert np.array_equal(got, on["cosine"])
    assert not np.array_equal(got, on["linear"])            # the check can tell them apart
