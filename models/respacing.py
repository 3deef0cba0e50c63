"""guided-diffusion's respacing strings: which of the T training timesteps a sampler visits.

    "ddimN"     the DDIM paper's fixed stride: range(0, T, s) for the stride s that gives
                exactly N steps ("ddim40" -> 0, 25, ..., 975);
    "a,b,..."   T split into equal sections, the i-th visited at a_i evenly spaced points
                ("250" -> 250 steps over all of T; "50,50" -> 50 in each half).

Plain Python (no torch), so a settings check can use it without loading the science.
"""
from __future__ import annotations

import re

NUM_TIMESTEPS = 1000    # the schedule's T (models/schedule.py)
GRAMMAR = re.compile(r"ddim[1-9][0-9]*|[1-9][0-9]*(,[1-9][0-9]*)*")


def check_syntax(respacing: str) -> str:
    if not GRAMMAR.fullmatch(respacing):
        raise ValueError(f"respacing {respacing!r} is not 'ddimN' or comma-separated step counts "
                         f"(guided-diffusion's grammar, e.g. 'ddim40', '250', '50,50')")
    return respacing


def ddim_counts(num_timesteps: int = NUM_TIMESTEPS) -> list[int]:
    """The step counts N that "ddimN" can give, ascending: those of some stride 1..T-1."""
    return sorted({len(range(0, num_timesteps, stride)) for stride in range(1, num_timesteps)})


def respaced_timesteps(respacing: str, num_timesteps: int = NUM_TIMESTEPS) -> list[int]:
    """The kept timesteps, ascending, as guided-diffusion's `space_timesteps` keeps them."""
    check_syntax(respacing)
    if respacing.startswith("ddim"):
        count = int(respacing[4:])
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == count:
                return list(range(0, num_timesteps, stride))
        # guided-diffusion's loop never tries stride T, so "ddim1" is refused there too
        counts = ddim_counts(num_timesteps)
        below = [c for c in counts if c < count][-1:]
        above = [c for c in counts if c > count][:1]
        raise ValueError(f"no integer stride gives exactly {count} of {num_timesteps} DDIM steps "
                         f"(the nearest counts that do: {', '.join(map(str, below + above))})")
    counts = [int(c) for c in respacing.split(",")]
    size, extra = divmod(num_timesteps, len(counts))
    kept, start = [], 0
    for i, count in enumerate(counts):
        section = size + (1 if i < extra else 0)
        if section < count:
            raise ValueError(f"respacing {respacing!r}: a section of {section} steps cannot "
                             f"hold {count}")
        stride = (section - 1) / (count - 1) if count > 1 else 1
        # accumulated and rounded as guided-diffusion does, so float ties fall the same way
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += section
    return sorted(set(kept))
