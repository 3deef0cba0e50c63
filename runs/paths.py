"""What makes a path usable before any file is touched: a stat() of an empty path, a NUL or a
name longer than the file system takes would fail later with a traceback, or (empty) mean
the working folder. Linux's limits, in bytes."""
from __future__ import annotations

import os

NAME_MAX, PATH_MAX = 255, 4096


def check_path(value: str) -> str:
    """`value` unchanged, or ValueError saying what is wrong with it."""
    encoded = os.fsencode(value)
    if not encoded.strip():
        raise ValueError("an empty path")
    if b"\0" in encoded:
        raise ValueError("a path cannot hold a NUL character")
    if len(encoded) >= PATH_MAX:
        raise ValueError(f"a path of {len(encoded)} bytes; the limit is {PATH_MAX - 1}")
    longest = max(encoded.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        raise ValueError(f"a file or folder name of {len(longest)} bytes; the limit is {NAME_MAX}")
    return value
