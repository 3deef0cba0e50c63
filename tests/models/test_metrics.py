"""Metrics against closed forms; the [-1, 1] vs [0, 1] bug of the official notebook cannot return."""
import math

import numpy as np
import pytest
import torch

from models import metrics


def gaussian(rng, mean, cov, n=20_000):
    return rng.multivariate_normal(mean, cov, size=n)


def test_fid_matches_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = np.zeros(4), np.array([1.0, -0.5, 0.0, 2.0])
    c1 = np.diag([1.0, 2.0, 0.5, 1.0])
    c2 = np.diag([2.0, 1.0, 0.5, 3.0])
    # ||mu1 - mu2||^2 + tr(c1 + c2 - 2 (c1 c2)^1/2), diagonal covariances
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(np.diag(c1) + np.diag(c2) - 2 * np.sqrt(np.diag(c1) * np.diag(c2)))
    got = metrics.fid(gaussian(rng, mu1, c1), gaussian(rng, mu2, c2))
    assert got == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("n_a, n_b, dim", [(300, 500, 64), (40, 60, 256)])    # full rank; rank-deficient
def test_frechet_distance_is_clean_fids(n_a, n_b, dim):
    from cleanfid.fid import frechet_distance

    rng = np.random.default_rng(dim)
    a = np.maximum(rng.normal(size=(n_a, dim)), 0)            # ReLU features, as extractors give
    b = np.maximum(rng.normal(0.1, 1.2, size=(n_b, dim)), 0)
    stats = [a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)]
    assert metrics.frechet_distance(*stats) == pytest.approx(frechet_distance(*stats), rel=1e-6)


def test_kid_is_zero_for_a_set_against_itself_and_grows_with_a_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2000, 16))
    same, size = metrics.kid(a, a.copy(), subset_size=500, subsets=20)
    small, _ = metrics.kid(a, a + 0.2, subset_size=500, subsets=20)
    large, _ = metrics.kid(a, a + 0.6, subset_size=500, subsets=20)
    assert size == 500
    assert abs(same) < 0.1 * small        # unbiased: around zero, up to subset noise
    assert small < large


def test_kid_subsets_are_seeded():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(800, 8)), rng.normal(0.1, 1, size=(800, 8))
    assert metrics.kid(a, b, 200, 10, seed=3) == metrics.kid(a, b, 200, 10, seed=3)
    assert metrics.kid(a, b, 200, 10, seed=3) != metrics.kid(a, b, 200, 10, seed=4)


def test_psnr_matches_ten_log_ten_of_one_over_mse():
    x = torch.full((2, 3, 16, 16), 0.5, dtype=torch.float64)
    y = x + 0.1                                    # MSE = 0.01 on [0, 1]
    assert metrics.psnr(x, y, value_range=(0, 1)) == pytest.approx([10 * math.log10(1 / 0.01)] * 2)


def test_an_image_in_minus_one_one_is_measured_as_its_zero_one_version():
    g = torch.Generator().manual_seed(0)
    a01 = torch.rand(3, 3, 16, 16, generator=g, dtype=torch.float64)
    b01 = (a01 + 0.05 * torch.randn(a01.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    a, b = a01 * 2 - 1, b01 * 2 - 1
    assert metrics.psnr(a, b, (-1, 1)) == pytest.approx(metrics.psnr(a01, b01, (0, 1)), rel=1e-9)
    assert metrics.ssim(a, b, (-1, 1)) == pytest.approx(metrics.ssim(a01, b01, (0, 1)), rel=1e-9)
    a255, b255 = (a01 * 255).round(), (b01 * 255).round()
    assert metrics.psnr(a255, b255, (0, 255)) == pytest.approx(
        metrics.psnr(a255 / 255, b255 / 255, (0, 1)), rel=1e-9)
    # the notebook's bug: [-1, 1] data measured as if it were [0, 1] gives other numbers
    assert metrics.psnr(a, b, (0, 1)) != pytest.approx(metrics.psnr(a01, b01, (0, 1)), rel=1e-3)


def test_ssim_of_identical_images_is_one():
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    assert metrics.ssim(x, x, (0, 1)) == pytest.approx([1.0, 1.0])


@pytest.fixture
def two_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_psnr_and_ssim_on_threads_give_each_pair_its_own_value_in_order(two_torch_threads):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    g = torch.Generator().manual_seed(1)
    a = torch.rand(7, 3, 16, 16, generator=g, dtype=torch.float64)
    b = (a + torch.linspace(0.01, 0.3, 7, dtype=torch.float64).view(7, 1, 1, 1)
         * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)     # a noise level per pair
    x, y = a.permute(0, 2, 3, 1).numpy(), b.permute(0, 2, 3, 1).numpy()
    assert metrics.psnr(a, b, (0, 1)) == pytest.approx(
        [peak_signal_noise_ratio(p, q, data_range=1.0) for p, q in zip(x, y)], rel=1e-12)
    assert metrics.ssim(a, b, (0, 1)) == pytest.approx(
        [structural_similarity(p, q, channel_axis=-1, data_range=1.0, win_size=7) for p, q in zip(x, y)], rel=1e-12)


def test_pairs_are_measured_two_at_a_time_on_two_threads(two_torch_threads):
    import threading

    both_running = threading.Barrier(2, timeout=10)      # broken unless two pairs run at once

    def measure(p, q):
        both_running.wait()
        return float(p + q)

    assert list(metrics.each_pair(measure, np.arange(4.0), np.ones(4))) == [1.0, 2.0, 3.0, 4.0]
