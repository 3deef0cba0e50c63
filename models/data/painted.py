"""The target domain's style: Fashion-MNIST items painted in oil on a dark canvas.

Deterministic given a seed: coloured pigment, a blurred and posterised brush (flat paint
patches), a dark mottled canvas with a fine weave, a vignette and a warm varnish.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

PIGMENTS = np.array([  # RGB in [0, 1]
    (0.80, 0.33, 0.16),  # burnt sienna
    (0.18, 0.30, 0.65),  # ultramarine
    (0.20, 0.50, 0.35),  # viridian
    (0.70, 0.15, 0.22),  # alizarin crimson
    (0.85, 0.65, 0.20),  # yellow ochre
    (0.45, 0.30, 0.55),  # violet
    (0.90, 0.85, 0.75),  # lead white
    (0.30, 0.45, 0.55),  # prussian grey-blue
], dtype=np.float32)
GROUNDS = np.array([
    (0.22, 0.16, 0.10),  # raw umber
    (0.18, 0.20, 0.14),  # dark olive
    (0.30, 0.22, 0.15),  # warm brown
    (0.12, 0.11, 0.12),  # near black
], dtype=np.float32)
VARNISH = np.array([1.03, 1.0, 0.88], dtype=np.float32)


def _brush(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft strokes and how much paint covers each pixel."""
    soft = gaussian_filter(gray, sigma=(0, 0.7, 0.7))
    flat = np.round(soft * 4) / 4                     # posterised: visible flat patches
    coverage = np.clip(0.6 * flat + 0.4 * soft, 0, 1) ** 0.8
    return soft, flat, coverage


def _canvas(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    ground = GROUNDS[rng.integers(0, len(GROUNDS), n)] + rng.normal(0, 0.03, (n, 3)).astype(np.float32)
    mottling = zoom(rng.normal(0, 1, (n, 4, 4)).astype(np.float32), (1, h / 4, w / 4), order=1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    weave = 0.025 * np.sin(np.pi * xx) * np.sin(np.pi * yy)
    return ground[:, None, None, :] * (1 + 0.25 * mottling[..., None]) + weave[None, ..., None]


def _vignette(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    radius = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2))
    return np.clip(1.15 - 0.45 * radius, 0.5, 1.1)[None, ..., None]


def paint(gray_u8: np.ndarray, seed: int) -> np.ndarray:
    """(N, H, W) uint8 grey -> (N, H, W, 3) uint8 painted, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    n, h, w = gray_u8.shape
    soft, flat, coverage = _brush(gray_u8.astype(np.float32) / 255.0)
    pigment = PIGMENTS[rng.integers(0, len(PIGMENTS), n)] + rng.normal(0, 0.05, (n, 3)).astype(np.float32)
    paint_layer = pigment[:, None, None, :] * (0.45 + 0.55 * soft)[..., None] + 0.15 * flat[..., None] ** 3
    vignette = _vignette(h, w)
    canvas = _canvas(rng, n, h, w) * vignette
    alpha = coverage[..., None]
    image = canvas * (1 - alpha) + np.clip(paint_layer, 0, 1) * alpha * (0.85 + 0.15 * vignette)
    image = image * VARNISH + rng.normal(0, 0.015, image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
