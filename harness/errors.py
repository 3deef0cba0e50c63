"""User-facing errors: one line, exit code 2, nothing written."""
from __future__ import annotations

import sys
from contextlib import contextmanager

EXIT_USAGE = 2


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
