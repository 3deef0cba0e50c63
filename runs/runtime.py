"""The environment every job process starts with (torch-free: the launchers set it).

On CPU, glibc returns large freed blocks to the OS and maps them again on the next
allocation, so every training step page-faults through its activation buffers. Keeping
them in the heap made an SDFT step 1.5x faster here (bench/train_step.py;
docs/benchmarks.md, "CPU performance notes"). These variables are read by glibc at process
start: they must be in the environment before Python starts, which is why launchers, not
the job itself, set them.
"""
from __future__ import annotations

import os
import sys

JOB_ENV = {
    "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=2147483647:glibc.malloc.trim_threshold=4294967296",
}


def job_environment(base: dict | None = None, threads: int | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) plus JOB_ENV and the thread count."""
    env = dict(os.environ if base is None else base)
    for key, value in JOB_ENV.items():
        env.setdefault(key, value)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def reexec_with_job_environment(argv: list[str]) -> None:
    """Restart this Python process with JOB_ENV if it was started without it (Linux only)."""
    if sys.platform.startswith("linux") and any(k not in os.environ for k in JOB_ENV):
        os.execve(sys.executable, [sys.executable, *argv], job_environment())
