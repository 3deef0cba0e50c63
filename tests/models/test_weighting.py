import math

import pytest
import torch

from models.schedule import NoiseSchedule
from models.weighting import WEIGHTINGS, constant, min_snr, sdft


def abar(t: int) -> float:
    prod = 1.0
    for i in range(t + 1):
        prod *= 1.0 - (1e-4 + (0.02 - 1e-4) * i / 999)
    return prod


@pytest.mark.parametrize("t", [0, 10, 250, 500, 999])
def test_schedule_snr_matches_definition(t):
    schedule = NoiseSchedule()
    expected = abar(t) / (1 - abar(t))
    assert float(schedule.snr(torch.tensor([t]))) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("t", [0, 50, 300, 600, 999])
@pytest.mark.parametrize("gamma,k", [(3.0, 1.0), (50.0, 1.0), (1.0, 0.5)])
def test_sdft_weighting_is_k_plus_snr_to_minus_gamma(t, gamma, k):
    snr_value = abar(t) / (1 - abar(t))
    got = float(sdft(torch.tensor([snr_value], dtype=torch.float64), gamma=gamma, k=k))
    assert got == pytest.approx((k + snr_value) ** -gamma, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("t", [0, 100, 400, 700, 999])
def test_min_snr_and_constant(t):
    snr_value = abar(t) / (1 - abar(t))
    snr = torch.tensor([snr_value], dtype=torch.float64)
    assert float(min_snr(snr, min_snr_gamma=5.0)) == pytest.approx(min(snr_value, 5.0) / snr_value)
    assert float(constant(snr)) == 1.0


def test_weightings_emphasise_where_they_should():
    snr = NoiseSchedule().snr(torch.tensor([10, 500, 990]))
    w = sdft(snr, gamma=3.0, k=1.0)
    assert w[0] < w[1] < w[2] <= 1.0          # the noisy end carries the weight
    m = min_snr(snr, min_snr_gamma=5.0)
    assert m[0] < 1.0 and m[2] == pytest.approx(1.0)   # low-noise steps are damped
    assert set(WEIGHTINGS) == {"sdft", "constant", "min-snr"}
    assert math.isfinite(float(sdft(snr, gamma=50.0, k=1.0).sum()))
