"""Small networks the harness trains itself on the run's data (models/evaluation_nets.py trains them).

- FeatureNet: a CNN with a class head and a domain head (grey source vs painted target):
  the `builtin` feature extractor for FID/KID and the classifier behind missing-class
  recovery and class preservation. Without the domain head its features ignore style
  and FID would be blind to it.
- DomainClassifier: time-conditioned source-vs-target classifier on noisy images; its
  feature map is EGSDE's realism energy.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

FEATURE_RESOLUTION = 32


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class FeatureNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16, feature_dim: int = 128):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            _block(3, w), _block(w, 2 * w), nn.MaxPool2d(2),
            _block(2 * w, 4 * w), nn.MaxPool2d(2),
            _block(4 * w, feature_dim), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.class_head = nn.Sequential(nn.Dropout(0.2), nn.Linear(feature_dim, num_classes))
        self.domain_head = nn.Linear(feature_dim, 2)

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] at any size -> the network's 32 px input."""
        if images.shape[-1] != FEATURE_RESOLUTION:
            images = F.interpolate(images, size=(FEATURE_RESOLUTION, FEATURE_RESOLUTION), mode="bilinear",
                                   align_corners=False, antialias=images.shape[-1] > FEATURE_RESOLUTION)
        return images

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(images))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(images)
        return self.class_head(f), self.domain_head(f)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class _TimeBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm = nn.GroupNorm(8, c_out)
        self.time = nn.Linear(t_dim, c_out)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        return F.silu(self.norm(self.conv(x) + self.time(t_emb)[:, :, None, None]))


class DomainClassifier(nn.Module):
    """p(domain | x_t, t); `features` is the last feature map, as EGSDE uses it."""

    def __init__(self, width: int = 32, t_dim: int = 64):
        super().__init__()
        self.t_dim = t_dim
        self.t_mlp = nn.Sequential(nn.Linear(t_dim, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.blocks = nn.ModuleList([_TimeBlock(3, width, t_dim), _TimeBlock(width, 2 * width, t_dim),
                                     _TimeBlock(2 * width, 2 * width, t_dim)])
        self.head = nn.Linear(2 * width, 2)

    def features(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.t_mlp(timestep_embedding(t, self.t_dim))
        for i, block in enumerate(self.blocks):
            x = block(x, emb)
            if i < len(self.blocks) - 1:
                x = F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x, t).mean(dim=(2, 3)))
