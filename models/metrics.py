"""Metrics with the libraries made for them: clean-fid (FID, KID), scikit-image (PSNR,
SSIM), lpips (LPIPS, only with its real AlexNet trunk on disk).

Every image metric states the range its input is in; pixels are measured as RGB in [0, 1]
(the official notebook fed [-1, 1] into code that expects [0, 1]).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"   # torchvision's file name for the AlexNet weights


# ---------------------------------------------------------------- realism
def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    from cleanfid.fid import frechet_distance

    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    sigma_a, sigma_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    return float(frechet_distance(mu_a, sigma_a, mu_b, sigma_b))


def kid(features_a: np.ndarray, features_b: np.ndarray, subset_size: int = 1000, subsets: int = 100,
        seed: int = 0) -> tuple[float, int]:
    """(KID, the subset size used): clean-fid's unbiased MMD^2 (cubic kernel) on seeded subsets."""
    from cleanfid.fid import kernel_distance

    size = min(subset_size, len(features_a), len(features_b))
    state = np.random.get_state()      # clean-fid draws subsets from the global generator
    np.random.seed(seed)
    try:
        value = kernel_distance(features_a, features_b, num_subsets=subsets, max_subset_size=size)
    finally:
        np.random.set_state(state)
    return float(value), size


# ---------------------------------------------------------------- faithfulness
def to_unit_hwc(images: torch.Tensor | np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """(N, 3, H, W) in `value_range` -> (N, H, W, 3) float64 in [0, 1]."""
    x = torch.as_tensor(images).double()
    lo, hi = value_range
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    return x.permute(0, 2, 3, 1).numpy()


def psnr(reference, test, value_range=(-1.0, 1.0)) -> np.ndarray:
    from skimage.metrics import peak_signal_noise_ratio

    a, b = to_unit_hwc(reference, value_range), to_unit_hwc(test, value_range)
    return np.array([peak_signal_noise_ratio(x, y, data_range=1.0) for x, y in zip(a, b)])


def ssim(reference, test, value_range=(-1.0, 1.0)) -> np.ndarray:
    from skimage.metrics import structural_similarity

    a, b = to_unit_hwc(reference, value_range), to_unit_hwc(test, value_range)
    win = min(7, a.shape[1] - (1 - a.shape[1] % 2))
    return np.array([structural_similarity(x, y, channel_axis=-1, data_range=1.0, win_size=win)
                     for x, y in zip(a, b)])


def alexnet_weights(configured: str | None = None) -> Path | None:
    """The AlexNet trunk LPIPS needs, if it is on disk: the configured file or TORCH_HOME's."""
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    for candidate in (configured, torch_home / "hub" / "checkpoints" / ALEXNET_FILE):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


class Lpips:
    """LPIPS (AlexNet, v0.1) from the lpips package; its trunk loaded from a file, never
    downloaded. Build it only where `alexnet_weights()` found the file."""

    def __init__(self, trunk_file: str | Path):
        import lpips

        self.model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)  # linear layers: the package's
        state = torch.load(trunk_file, map_location="cpu", weights_only=True)
        for name, param in self.model.net.named_parameters():
            _, index, kind = name.split(".")          # slice2.3.weight -> features.3.weight
            param.data.copy_(state[f"features.{index}.{kind}"])
        self.model.eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, reference, test, value_range=(-1.0, 1.0), batch_size: int = 100) -> np.ndarray:
        lo, hi = value_range
        to_pm1 = lambda x: torch.as_tensor(x).float().sub(lo).div(hi - lo).mul(2).sub(1)  # noqa: E731
        out = [self.model(to_pm1(reference[i:i + batch_size]), to_pm1(test[i:i + batch_size])).flatten()
               for i in range(0, len(reference), batch_size)]
        return torch.cat(out).numpy()


def feature_distance(features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
    """Cosine distance between paired feature vectors: the named substitute for LPIPS where
    its weights are missing (reported as `feature_dist_<extractor>`, never as `lpips`)."""
    a = features_a / np.linalg.norm(features_a, axis=1, keepdims=True).clip(1e-12)
    b = features_b / np.linalg.norm(features_b, axis=1, keepdims=True).clip(1e-12)
    return 1.0 - (a * b).sum(1)
