"""The grid file's base model, and a validator's error about a field below the model it
checks (runs/config.py, runs/cluster.py)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors and a validated setting never changes."""
    model_config = ConfigDict(extra="forbid", frozen=True)


class AtField(ValueError):
    """A validator's error about a field below the model it checks: `loc` is appended to
    the model's own location in the one-line message."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc, self.message = loc, message
