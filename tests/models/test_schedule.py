"""The noise schedules (models/schedule.py): guided-diffusion's linear and cosine betas, the
diffusion.json object each is named by, the same betas in diffusers' terms, and the
method losses built for a network of either schedule."""
import math

import pytest
import torch
from diffusers import DDPMScheduler

from guided_reference import gd
from runs.methods import get
from models.schedule import NoiseSchedule

LINEAR, COSINE = NoiseSchedule(), NoiseSchedule(kind="cosine")


@pytest.mark.parametrize("schedule", [LINEAR, COSINE], ids=["linear", "cosine"])
def test_betas_are_guided_diffusions(schedule):
    reference = torch.from_numpy(gd.get_named_beta_schedule(schedule.kind, 1000))
    torch.testing.assert_close(schedule.betas, reference, rtol=1e-12, atol=0)


def test_cosine_alpha_bar_is_the_squared_cosine_until_the_cap():
    """abar_t = f((t + 1) / T) / f(0), f(u) = cos((u + s) / (1 + s) * pi / 2)^2 (Nichol &
    Dhariwal 2021, eq. 17), wherever beta stays below its 0.999 cap (all but the last steps)."""
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2      # noqa: E731
    t = torch.arange(0, 990)
    expected = torch.tensor([f((i + 1) / 1000) / f(0) for i in t.tolist()], dtype=torch.float64)
    torch.testing.assert_close(COSINE.alphas_cumprod[t], expected, rtol=1e-9, atol=1e-15)
    assert float(COSINE.betas.max()) == 0.999 and float(LINEAR.betas.max()) == pytest.approx(0.02)
    # at mid-chain the cosine schedule keeps far more signal than the linear one
    assert float(COSINE.snr(torch.tensor([500]))) > 10 * float(LINEAR.snr(torch.tensor([500])))


@pytest.mark.parametrize("schedule", [LINEAR, COSINE], ids=["linear", "cosine"])
def test_a_schedule_is_read_back_from_its_diffusion_json_object_and_diffusers_has_its_betas(schedule):
    assert NoiseSchedule.from_info(schedule.info()) == schedule
    ours = DDPMScheduler(**schedule.diffusers_config()).alphas_cumprod.double()
    torch.testing.assert_close(ours, schedule.alphas_cumprod, rtol=1e-4, atol=1e-6)   # diffusers' are float32
    assert NoiseSchedule.from_info(None) == LINEAR          # a folder without diffusion.json


@pytest.mark.parametrize("schedule,field", [
    ({"beta_schedule": "cosine", "num_train_timesteps": 4000, "s": 0.008, "max_beta": 0.999}, "4000"),
    ({"beta_schedule": "sqrt", "num_train_timesteps": 1000}, "sqrt"),
    ({"beta_schedule": "cosine", "num_train_timesteps": 1000, "s": 0.01, "max_beta": 0.999}, "0.01"),
    ({"beta_schedule": "linear", "num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.03}, "0.03"),
    ({"beta_schedule": "linear", "num_train_timesteps": 1000}, "beta_start"),
    ("cosine", "JSON object"),
])
def test_a_schedule_the_harness_does_not_implement_is_refused_by_name(schedule, field):
    with pytest.raises(ValueError, match=field):
        NoiseSchedule.from_info(schedule)


def test_sdft_weighs_by_the_snr_of_the_networks_schedule():
    """The same settings, built for a cosine network, weight each t by the cosine SNR."""
    settings = dict(weighting="sdft", lambda_distill=1.0, lambda_aux=1.0)
    t = torch.tensor([100, 500, 900])
    for schedule in (LINEAR, COSINE):
        loss = get("sdft").build_loss(schedule, **settings)
        snr = schedule.snr(t)
        torch.testing.assert_close(loss.weight(t, 3.0), (1 + snr) ** -3.0)
        assert loss.schedule == schedule and loss.base.schedule == schedule
    assert get("sdft").build_loss(**settings).schedule == LINEAR


@pytest.mark.parametrize("method", ["naive", "scratch", "l2sp", "ewc", "pairwise", "replay", "sdft"])
def test_every_methods_loss_noises_with_the_schedule_it_is_given(method):
    loss = get(method).build_loss(COSINE)
    base = getattr(loss, "base", loss)
    assert base.schedule == COSINE
