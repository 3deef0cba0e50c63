"""Where the evaluation's networks run, and how many images go through them at once.

On a GPU the evaluate stage samples and extracts features there, in chunks sized to the
card's free memory: one probe call on a single image measures what an image costs (the
peak allocation above what was held before), and a chunk takes at most `HEADROOM` of the
free memory at that rate. On a CPU nothing changes: the planned batch is one chunk.
Chunks change no image: the noise of image i depends on i alone (models.sampling).
"""
from __future__ import annotations

from typing import Callable

import torch

# share of the free memory a chunk may take (the allocator's fragmentation, other tensors)
HEADROOM = 0.7


def eval_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fitting_batch(wanted: int, bytes_per_image: float, free_bytes: float, headroom: float = HEADROOM) -> int:
    """The largest chunk up to `wanted` whose images fit in `headroom` of the free memory; at least 1."""
    if bytes_per_image <= 0:
        return wanted
    return max(1, min(wanted, int(headroom * free_bytes // bytes_per_image)))


def bytes_per_image(call: Callable[[torch.Tensor], object], one: torch.Tensor, device: torch.device) -> int:
    """Peak CUDA memory that a call on the single-image batch `one` allocates on `device`
    beyond what was held."""
    torch.cuda.synchronize(device)
    held = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        call(one)
    torch.cuda.synchronize(device)
    return max(1, torch.cuda.max_memory_allocated(device) - held)


def chunk_size(call: Callable[[torch.Tensor], object], one: torch.Tensor, wanted: int,
               device: torch.device | None = None) -> int:
    """How many images go through `call` at once on `device` (one's own by default): `wanted`
    on a CPU; on a GPU what fits in its free memory at the probed cost per image."""
    device = torch.device(device) if device is not None else one.device
    if device.type != "cuda":
        return wanted
    cost = bytes_per_image(call, one, device)
    free, _ = torch.cuda.mem_get_info(device)
    return fitting_batch(wanted, cost, free)


def chunks(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) in consecutive pieces of at most `size`."""
    return [(i, min(i + size, stop)) for i in range(start, stop, max(1, size))]
