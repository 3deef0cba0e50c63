"""A reference to another run of the same results store, written "run:<id>" in a run spec.

Specs keep the reference as that string (spec.json and therefore run ids are unchanged);
code that needs the run parses it here and nowhere else: `RunRef.parse(text)` gives the
reference or None (a model folder path, say), `str(ref)` gives the text back, and
`ref.resolve(store_root)` the run's folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runs.store import RunFolder

PREFIX = "run:"


@dataclass(frozen=True)
class RunRef:
    run_id: str

    def __post_init__(self):
        # a run id names one folder of the store: nothing that could step out of it
        if not self.run_id or self.run_id in (".", "..") or any(c in self.run_id for c in "/\\"):
            raise ValueError(f"{PREFIX}{self.run_id!r} does not name a run (expected {PREFIX}<run id>)")

    @classmethod
    def parse(cls, text: str | None) -> RunRef | None:
        """The reference `text` holds, or None when it is no run reference (a folder path);
        ValueError for "run:" with no valid id after it."""
        if text is None or not str(text).startswith(PREFIX):
            return None
        return cls(str(text)[len(PREFIX):])

    def __str__(self) -> str:
        return f"{PREFIX}{self.run_id}"

    def resolve(self, store_root: str | Path) -> RunFolder:
        """The run's folder in the store whose run folders live in `store_root`."""
        return RunFolder(Path(store_root) / self.run_id)
