"""LoRA adapters (runs/adapters.py, models/adapters.py): what trains, what is saved, and
that the merged UNet an evaluation loads computes what the adapted one did."""
from __future__ import annotations

import json

import pytest
import torch

from factories import finetune_spec, images, run_module, tiny_unet, write_spec
from runs.adapters import DEFAULT_TARGETS
from runs.store import RunFolder


def lora_unet(rank: int = 4, alpha: float = 8.0, targets: str = DEFAULT_TARGETS):
    """The tiny UNet with LoRA, its B matrices moved off zero (as training would), so that the
    adapter changes the output."""
    from models.adapters import add_lora

    model = add_lora(tiny_unet(), rank, alpha, targets)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model.eval()


def test_only_the_adapter_trains_and_its_size_is_the_closed_form():
    """Linear (in -> out): r (in + out); Conv2d k x k: A is r x in x k x k, B is out x r (1 x 1)."""
    from models.adapters import parameter_counts

    rank = 4
    plain = tiny_unet()
    names = DEFAULT_TARGETS.split(",")
    expected = 0
    for name, module in plain.named_modules():
        if not any(name == n or name.endswith("." + n) for n in names):
            continue
        if isinstance(module, torch.nn.Linear):
            expected += rank * (module.in_features + module.out_features)
        else:
            kh, kw = module.kernel_size
            expected += rank * module.in_channels * kh * kw + module.out_channels * rank
    model = lora_unet(rank=rank)
    counts = parameter_counts(model)
    assert counts["trainable"] == expected > 0
    assert counts["total"] == sum(p.numel() for p in plain.parameters()) + expected
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)


def test_the_merged_unet_computes_what_the_adapted_one_does(tmp_path):
    """save_unet writes the merged plain UNet (what evaluation loads) and the adapter beside it."""
    from diffusers import UNet2DModel

    from models.networks import load_unet, save_unet

    model = lora_unet()
    x, t = images(4), torch.tensor([0, 10, 500, 999])
    with torch.no_grad():
        adapted = model(x, t).sample
        base = tiny_unet()(x, t).sample
    save_unet(model, tmp_path / "model")
    loaded = load_unet(tmp_path / "model").eval()
    assert type(loaded) is UNet2DModel
    with torch.no_grad():
        out = loaded(x, t).sample
    torch.testing.assert_close(out, adapted, atol=2e-5, rtol=1e-4)
    assert (adapted - base).abs().max() > 1e-3          # the adapter did change the output
    assert json.loads((tmp_path / "model" / "adapter" / "adapter_config.json").read_text())["r"] == 4
    assert (tmp_path / "model" / "adapter" / "adapter_model.safetensors").is_file()


def test_l2sp_with_an_adapter_pulls_the_merged_weights():
    """The penalty of a LoRA student is sum (theta_merged - theta_src)^2 over every weight."""
    from runs.methods.l2sp import l2sp_loss
    from models.adapters import merged

    model, source = lora_unet(), tiny_unet()
    loss = l2sp_loss(lambda_l2sp=1.0)
    loss.prepare(model, source)
    plain = dict(merged(model).named_parameters())
    want = sum((plain[n] - p).double().square().sum() for n, p in source.named_parameters())
    assert float(loss.penalty().detach()) == pytest.approx(float(want.detach()), rel=1e-4)


def test_a_target_that_names_no_module_is_refused():
    """jobs.train turns peft's ValueError into a one-line UserError naming adapter.targets."""
    from models.adapters import add_lora

    with pytest.raises(ValueError, match="no_such_layer"):
        add_lora(tiny_unet(), 2, 2.0, "no_such_layer")


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_a_lora_run_trains_the_adapter_only_and_saves_a_plain_unet(tiny_source, zero_stage):
    """Through the training job (DeepSpeed on the CPU): the parameter count and step time
    are logged, the checkpoint holds the adapter, the model folders are plain UNets."""
    from safetensors.torch import load_file

    spec = finetune_spec("sdft", steps=4, log_every=2, checkpoint_every=4, zero_stage=zero_stage,
                         adapter={"kind": "lora", "rank": 2})
    run_dir = write_spec(tiny_source.parent / f"lora-z{zero_stage}", spec)
    run_module("jobs.train", str(run_dir), check=True)
    folder = RunFolder(run_dir)
    assert folder.status == "done"
    rows = folder.log_rows()
    counts = next(r for r in rows if r.get("event") == "parameters")
    assert 0 < counts["trainable_parameters"] < counts["total_parameters"] / 5
    assert all(r["step_s"] > 0 for r in rows if "loss" in r and r["step"] > 2)
    tag = (folder.checkpoints / "latest").read_text().strip()
    from jobs.checkpoints import load_weights_only     # the harness's own allow-listed loader
    module = load_weights_only(folder.checkpoints / tag / "mp_rank_00_model_states.pt")["module"]
    assert any("lora_B" in k for k in module)
    source = load_file(tiny_source / "model" / "diffusion_pytorch_model.safetensors")
    for weights in ("model", "model-raw"):
        saved = load_file(run_dir / weights / "diffusion_pytorch_model.safetensors")
        assert saved.keys() == source.keys()
        assert (run_dir / weights / "adapter" / "adapter_model.safetensors").is_file()
    raw = load_file(run_dir / "model-raw" / "diffusion_pytorch_model.safetensors")
    # frozen layers keep the source's weights; the adapted ones moved
    assert torch.equal(raw["conv_in.weight"], source["conv_in.weight"])
    assert not torch.equal(raw["mid_block.attentions.0.to_q.weight"], source["mid_block.attentions.0.to_q.weight"])
