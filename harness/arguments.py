"""The command-line parser every harness command uses: bad arguments are one line and exit
code 2, as bad grid files are, and path arguments are checked before anything opens them."""
from __future__ import annotations

import argparse
import sys

from runs.errors import EXIT_USAGE
from runs.paths import check_path


class OneLineParser(argparse.ArgumentParser):
    """argparse without the usage block on an error (`--help` still shows it)."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def path_arg(value: str) -> str:
    """`type=` of a file or folder argument."""
    try:
        return check_path(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{err} ({value[:60]!r}{'...' if len(value) > 60 else ''})") from None
