"""Seeds derived from names and numbers, so that randomness depends on what it is for
(a run's step, a sample's index) and never on the order in which things happen."""
from __future__ import annotations

import hashlib


def derived_seed(*parts) -> int:
    """A 63-bit seed from (seed, step, rank, ...): independent streams, stable across runs."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
