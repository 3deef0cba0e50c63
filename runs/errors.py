"""User-facing errors (one line, exit code 2, nothing written) and stops (one line, 128 +
the signal)."""
from __future__ import annotations

import os
import re
import signal
import sys
from contextlib import contextmanager

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 128 + 13      # what a shell reports for a program stopped by SIGPIPE


class UserError(Exception):
    """Bad input from the user (a grid file, a path, a setting). Printed as one line, exit 2."""


# terminal colour and cursor codes (Ray colours its task names)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def root_cause(err: BaseException) -> BaseException:
    """The exception that started it: Ray wraps a task's error in RayTaskError, whose text is
    Ray's preamble and the remote traceback; the original is its `cause` (duck-typed here:
    the harness does not import ray)."""
    seen = set()
    while isinstance(getattr(err, "cause", None), BaseException) and id(err) not in seen:
        seen.add(id(err))
        err = err.cause
    return err


def one_line(err: BaseException, limit: int = 2000) -> str:
    """`Type: message` of the root cause, on one line, without terminal codes."""
    err = root_cause(err)
    message = " ".join(_ANSI.sub("", str(err)).split())
    name = type(err).__name__
    return (f"{name}: {message}" if message else name)[:limit]


def clean_text(text: str) -> str:
    """A stored message as one line without terminal codes (states written before one_line)."""
    return " ".join(_ANSI.sub("", text).split())


@contextmanager
def exit_on_user_error(*extra: type[BaseException]):
    """Turn UserError (and the given exception types) into a one-line message and exit code 2."""
    try:
        yield
    except (UserError, *extra) as err:
        cause = root_cause(err)
        message = clean_text(str(cause)) or type(cause).__name__
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


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the process is, as Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_signal(err: BaseException) -> signal.Signals | None:
    """The signal that a stop stands for (Ctrl-C's KeyboardInterrupt: SIGINT), else None."""
    if isinstance(err, Stopped):
        return signal.Signals(err.signum)
    return signal.SIGINT if isinstance(err, KeyboardInterrupt) else None


@contextmanager
def exit_on_stop(what: str, then: str = ""):
    """Ctrl-C, SIGTERM and SIGHUP (a `kill`, a closed terminal) end the process by an
    exception, so that what it started is stopped on the way out (a local job:
    harness/executors.run_job) rather than left running after the process that waits for
    it; then one line and the shell's exit code for the signal (128 + its number), no
    traceback. Python's default for SIGTERM and SIGHUP ends the process at once, orphaning
    its jobs."""
    def stop(signum, frame):
        raise Stopped(signum)

    # one the caller ignores stays ignored: `nohup python -m harness.submit ...` survives a hangup
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)
                if signal.getsignal(sig) is signal.SIG_DFL}
    try:
        yield
    except KeyboardInterrupt as err:
        signum = stop_signal(err)
        print(f"\n{what}: stopped by {signum.name}{f'; {then}' if then else ''}", file=sys.stderr)
        raise SystemExit(128 + signum) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
