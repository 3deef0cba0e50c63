"""replay (runs/methods/replay.py): its loss against the closed form, the replay set made
once by the source and shared through the store's cache, and a run through the training job."""
import json

import pytest
import torch

from factories import finetune_spec, run_module, tiny_unet, write_spec
from runs.methods import get
from runs.methods.replay import generate_replay, replay_set
from models.schedule import NoiseSchedule


def half(x, t):
    """A network whose eps is half its input: the loss has a closed form."""
    return 0.5 * x


@pytest.mark.parametrize("weighting", ["constant", "diff-tuning"])
def test_the_replay_loss_is_its_closed_form(weighting):
    lam = 0.3
    loss = get("replay").build_loss(lambda_replay=lam, replay_weighting=weighting)
    g = torch.Generator().manual_seed(0)
    x, r = torch.rand(2, 1, 2, 2, generator=g) * 2 - 1, torch.rand(2, 1, 2, 2, generator=g) * 2 - 1
    n, nr = torch.randn(2, 1, 2, 2, generator=g), torch.randn(2, 1, 2, 2, generator=g)
    t, tr = torch.tensor([10, 700]), torch.tensor([300, 999])
    terms = loss.terms(half, x, t, n, r, tr, nr)

    abar = NoiseSchedule().alphas_cumprod

    def l(img, noise, steps):
        a = abar[steps].view(-1, 1, 1, 1).float()
        x_t = a.sqrt() * img + (1 - a).sqrt() * noise
        return (0.5 * x_t - noise).square().flatten(1).mean(1)

    # diff-tuning: retention (the replay) at the clean end, adaptation (the target) at the
    # noisy end, as Diff-Tuning's code draws their t (probability ~ T - t and ~ t + 1)
    xi = torch.ones(2) if weighting == "constant" else 1 - tr.float() / 1000
    psi = torch.ones(2) if weighting == "constant" else t.float() / 1000
    want = psi * l(x, n, t) + lam * xi * l(r, nr, tr)
    torch.testing.assert_close(terms.per_sample, want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(terms.total, want.mean())
    torch.testing.assert_close(terms.diff, l(x, n, t).mean())
    torch.testing.assert_close(terms.extra["replay"], (xi * l(r, nr, tr)).mean())


def test_each_step_draws_its_replay_batch_from_the_set():
    loss = get("replay").build_loss()
    loss.prepare(None, None, replay=torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8))
    x = torch.zeros(4, 3, 16, 16)
    from models.networks import as_eps_model

    model = as_eps_model(tiny_unet())
    with torch.no_grad():
        first = loss(model, x, generator=torch.Generator().manual_seed(1))
        again = loss(model, x, generator=torch.Generator().manual_seed(1))
        other = loss(model, x, generator=torch.Generator().manual_seed(2))
    assert float(first.total) == float(again.total) != float(other.total)
    assert float(first.extra["replay"]) > 0


def test_the_replay_set_is_generated_once_and_shared_by_source_and_settings(tmp_path, monkeypatch):
    from runs.spec import RunSpec
    from jobs.train import LossContext

    spec = RunSpec.model_validate(finetune_spec("replay", replay={}))
    source = tiny_unet(seed=0)
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[1])
        return generate_replay(*args, **kwargs)

    monkeypatch.setattr("runs.methods.replay.generate_replay", counted)
    first = replay_set(source, LossContext(spec, tmp_path / "_runs" / "a", torch.device("cpu")), 3, 2, (3, 16, 16))
    # another run of the same source and settings: the cache, not a second generation
    again = replay_set(source, LossContext(spec, tmp_path / "_runs" / "b", torch.device("cpu")), 3, 2, (3, 16, 16))
    assert calls == [3] and torch.equal(first, again)
    assert first.dtype == torch.uint8 and first.shape == (3, 3, 16, 16)
    assert first.float().std() > 0                     # images, not a constant
    replay_set(source, LossContext(spec, tmp_path / "_runs" / "c", torch.device("cpu")), 4, 2, (3, 16, 16))
    assert calls == [3, 4] and len(list((tmp_path / "_cache" / "replay").iterdir())) == 2
    # a bf16 run's source (loaded in bf16) makes other images: its own set, not the fp32 one
    bf16 = spec.model_copy(update={"precision": "bf16"})
    replay_set(source, LossContext(bf16, tmp_path / "_runs" / "d", torch.device("cpu")), 3, 2, (3, 16, 16))
    assert calls == [3, 4, 3] and len(list((tmp_path / "_cache" / "replay").iterdir())) == 3
    # the first images of a larger set are the same images: the noise is seeded by index
    assert torch.equal(generate_replay(source.eval(), 2, (3, 16, 16), 2, "cpu"), first[:2])


def test_a_replay_run_trains_and_logs_its_term(tiny_source):
    spec = finetune_spec("replay", replay={"replay_images": 6, "replay_ddim_steps": 2,
                                           "replay_weighting": "diff-tuning"}, steps=2, log_every=1)
    run_dir = write_spec(tiny_source.parent / "replay", spec)
    run_module("jobs.train", str(run_dir), check=True)
    rows = [json.loads(line) for line in (run_dir / "train.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss_replay" in r] == [1, 2]
    assert len(list((tiny_source.parent.parent / "_cache" / "replay").iterdir())) == 1
