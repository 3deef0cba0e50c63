"""DeepSpeed's CPU communication op, built once per virtualenv by `make setup`.

On CPU, DeepSpeed compiles its shared-memory allreduce op (deepspeed_shm_comm) with g++ the
first time a process initialises its communication: 46 s on the 2-core machine, minutes on
a busy one. Torch caches the build under ~/.cache/torch_extensions, in one folder per op
keyed by the include paths, so two checkouts or virtualenvs rebuild it in turn, and a test
suite on a clean machine pays it inside a test. Built into the virtualenv (as the LPIPS
trunks are, harness/lpips_setup.py), it is paid once, at set-up, and every job of that
virtualenv loads it. Where set-up did not build it, DeepSpeed's own cache is used as before.

    python -m jobs.deepspeed_ops        # what `make setup` runs; quick once built
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

EXTENSIONS_DIR = Path(sys.prefix) / "share" / "sdft-bench" / "torch_extensions"


def use_built_ops() -> None:
    """Jobs load the op from the virtualenv when set-up built it there; a TORCH_EXTENSIONS_DIR
    of the user's own is kept."""
    if EXTENSIONS_DIR.is_dir():
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(EXTENSIONS_DIR))


def build() -> str:
    """Builds (or finds built) the op of this machine's accelerator; on a GPU there is none."""
    EXTENSIONS_DIR.mkdir(parents=True, exist_ok=True)
    os.environ["TORCH_EXTENSIONS_DIR"] = str(EXTENSIONS_DIR)
    start = time.monotonic()
    from deepspeed.comm.torch import build_shm_op

    op = build_shm_op()
    took = f"({time.monotonic() - start:.1f} s)"
    return f"DeepSpeed's CPU op in {EXTENSIONS_DIR} {took}" if op is not None else \
        f"no DeepSpeed op to build for this accelerator {took}"


if __name__ == "__main__":
    print(build())
