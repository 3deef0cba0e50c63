"""User-facing errors: one line, exit code 2, nothing written."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 128 + 13      # what a shell reports for a program stopped by SIGPIPE


class UserError(Exception):
    """Bad input from the user (a grid file, a path, a setting). Printed as one line, exit 2."""


@contextmanager
def exit_on_user_error(*extra: type[BaseException]):
    """Turn UserError (and the given exception types) into a one-line message and exit code 2."""
    try:
        yield
    except (UserError, *extra) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


@contextmanager
def quiet_broken_pipe():
    """`python -m harness.tables ... | head`: a reader that stops early is no error worth a
    traceback. Python's own recipe (docs, "Note on SIGPIPE")."""
    try:
        yield
        sys.stdout.flush()              # a broken pipe often shows only here
    except BrokenPipeError:
        # Python flushes stdout once more at exit and would complain again: send that to devnull
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(EXIT_BROKEN_PIPE) from None
