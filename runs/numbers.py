"""Numbers as a grid file gives them: no booleans, finite, whole where they count things,
and below bounds no real experiment comes near.

pydantic's lax mode takes `steps: true` as 1 and `lr: .inf` as a learning rate, and YAML
1.1 reads `1e12` (no dot) as text: each of these would otherwise reach a job unnoticed.
"""
from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from models.respacing import NUM_TIMESTEPS, ddim_counts, respaced_timesteps

MAX_STEPS = 10_000_000          # the paper's longest fine-tune is 80k steps
MAX_BATCH = 65_536
MAX_RESOLUTION = 2_048
MAX_IMAGES = 1_000_000          # samples, translations, reference images
MAX_DDIM_STEPS = NUM_TIMESTEPS  # the schedule has T = 1000 timesteps
MAX_SEED = 2**32 - 1            # numpy's legacy seeding takes at most 32 bits


def no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()} "
                         "(YAML reads true/false/yes/no/on/off as booleans)")
    return value


def _whole(value: Any) -> Any:
    value = no_bool(value)
    if isinstance(value, str):       # YAML 1.1 reads 1e4 (no dot) as text: take the number it spells
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got the text {value!r}") from None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError(f"expected a whole number, got {value!r}")
        return int(value)
    return value


def _real(value: Any) -> Any:
    value = no_bool(value)
    if isinstance(value, str):       # `lr: 2e-5` is text to YAML 1.1: take the number it spells
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"expected a number, got the text {value!r}") from None
    if isinstance(value, float) and not math.isfinite(value):    # before any bound: nan > 0 is False
        raise ValueError(f"expected a finite number, got {value!r}")
    return value


def Whole(**bounds) -> Any:  # noqa: N802 (a type, spelled as one)
    """An int: no bool, and whole-number floats or number text (1e4) read as the int they are."""
    return Annotated[int, BeforeValidator(_whole), Field(**bounds)]


def _ddim_count(value: int) -> int:
    respaced_timesteps(f"ddim{value}")      # refuses a count no stride gives, naming the nearest
    return value


def _ddim_counts_text() -> str:
    counts = ddim_counts()
    run = next(i for i, (a, b) in enumerate(zip(counts, counts[1:])) if b != a + 1)
    return (f"a count guided-diffusion's ddimN can give (a whole stride s, len(range(0, {NUM_TIMESTEPS}, s))): "
            f"{counts[0]} to {counts[run]}, then only {', '.join(map(str, counts[run + 1:run + 8]))}, ...; "
            f"others (1, {counts[run] + 1}) are refused with the nearest two")


# A DDIM step count: guided-diffusion's "ddimN" stride, range(0, T, s), gives only some counts
# (36 and 38 of T = 1000, never 37 or 1); another would fail only in a job. The bounds first,
# so that 0 or 1001 is told its bound
DdimSteps = Annotated[int, BeforeValidator(_whole), Field(gt=0, le=MAX_DDIM_STEPS, description=_ddim_counts_text()),
                      AfterValidator(_ddim_count)]


def Real(**bounds) -> Any:  # noqa: N802
    """A finite float: no bool, no inf or nan."""
    return Annotated[float, BeforeValidator(_real), Field(allow_inf_nan=False, **bounds)]


Seed = Whole(ge=0, le=MAX_SEED)
NoBool = BeforeValidator(no_bool)      # for Literal[0, 1, 2] and the like, where True == 1
