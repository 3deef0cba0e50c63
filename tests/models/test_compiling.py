"""torch.compile (models/compiling.py): on this CPU inductor compiles the tiny UNet, and the
compiled network's outputs and gradients equal eager ones within float32 rounding; the
training job with `compile: true` trains, logs its first (compiling) step apart from the
steady state, and saves a model folder that loads as an eager one does (in-place
compilation keeps the state dict's keys).

The two slow tests compile the same graph (the tiny UNet's forward and backward at batch 16),
in this order and in one file, so one xdist worker runs both: the second finds the first's
kernels in inductor's cache (cold: 67 s and 8 s, instead of 67 s and 80 s)."""
import copy

import pytest
import torch

import factories
from factories import pretrain_spec, run_module, tiny_unet, write_spec
from runs.store import RunFolder
from models.compiling import compile_enabled, compile_in_place


def test_compile_follows_the_setting_or_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert (compile_enabled(None), compile_enabled(True), compile_enabled(False)) == (False, True, False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert compile_enabled(None) is True
    net = torch.nn.Linear(2, 2)
    assert compile_in_place(net, False) is net and net._compiled_call_impl is None


@pytest.mark.slow
def test_a_compiled_run_trains_and_times_its_first_step_apart(tmp_path):
    """67 s on the quiet 2-core machine with a cold cache: inductor compiles the tiny UNet's
    training step (a batch of 16)."""
    from models.networks import load_unet

    run_dir = write_spec(tmp_path / "_runs" / "compiled", pretrain_spec(steps=4, log_every=2, compile=True))
    run_module("jobs.train", str(run_dir), check=True)
    folder = RunFolder(run_dir)
    assert folder.status == "done"
    rows = folder.log_rows()
    first = [r for r in rows if r.get("event") == "first_step"]
    assert len(first) == 1 and first[0]["compile"] is True and first[0]["at_step"] == 1
    steady = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steady] == [2, 4] and all(r["images_per_s"] > 0 for r in steady)
    # compiling took longer than a steady step (16 images at the steady rate)
    assert first[0]["first_step_s"] > 16 / steady[-1]["images_per_s"]
    load_unet(folder.model_dir)


@pytest.mark.slow
def test_compiled_unet_equals_eager_in_outputs_and_gradients():
    """8 s after the test above (its graph, at the training job's batch of 16, is in inductor's
    cache); 80 s alone with a cold cache."""
    eager = tiny_unet(seed=1).train()
    compiled = compile_in_place(copy.deepcopy(eager), True)
    assert compiled.state_dict().keys() == eager.state_dict().keys()     # checkpoints keep their keys
    x, t = factories.noise(16, seed=3), torch.arange(16) * 60
    outputs, grads = [], []
    for net in (eager, compiled):
        out = net(x, t).sample
        out.square().mean().backward()
        outputs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert compiled._compiled_call_impl is not None
    # inductor fuses and reorders float32 sums: rounding-level differences only
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)


def test_group_norm_in_working_precision_keeps_bf16_under_autocast_and_its_values():
    """The option's GroupNorm returns its input's dtype under autocast, with values within bf16
    rounding of the float32 norm; the state dict is untouched. (CUDA autocast would upcast
    group_norm to float32, its fp32 list; CPU autocast does not, so only the values and the
    dtype are checked here.)"""
    from models.layouts import WorkingPrecisionGroupNorm, group_norm_in_working_precision, to_channels_last

    net = tiny_unet(seed=2)
    keys = set(net.state_dict())
    norm = next(m for m in net.modules() if isinstance(m, torch.nn.GroupNorm))
    x = torch.randn(2, norm.num_channels, 8, 8).bfloat16()
    reference = norm(x.float())
    group_norm_in_working_precision(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        working = norm(x)
    assert isinstance(norm, WorkingPrecisionGroupNorm) and set(net.state_dict()) == keys
    assert working.dtype == torch.bfloat16
    torch.testing.assert_close(working.float(), reference, rtol=2e-2, atol=2e-2)
    # channels_last: the same network's outputs, in NHWC
    inputs = factories.noise(2, seed=4), torch.tensor([5, 500])
    eager = tiny_unet(seed=2)(*inputs).sample
    nhwc = to_channels_last(tiny_unet(seed=2))
    out = nhwc(inputs[0].contiguous(memory_format=torch.channels_last), inputs[1]).sample
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-5)
