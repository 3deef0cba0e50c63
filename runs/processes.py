"""A local job's process as state.json records it, and whether that process still runs.

A pid alone can mislead both ways. A job killed with its parent (kill -9 of a submission's
process group) stays a zombie until something reaps it, and in a container whose init does
not reap, that can be for good: `kill -0` answers for it, and a submission would wait for a
job that is gone. And a pid is reused: after enough processes, or a reboot, the recorded one
may be another program's, which `sdft cancel` would then kill. So the recorded identity is
the pid and the process's start time (/proc/<pid>/stat, clock ticks since boot), and a
process runs only if it is not a zombie and started then. Off Linux, the pid alone."""
from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces and parentheses)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None       # field 22 of proc(5): starttime


def process_identity(pid: int) -> dict:
    """What state.json records of a local job: its host, pid and start time."""
    return {"host": socket.gethostname(), "pid": pid, "pid_start": start_ticks(pid)}


def pid_running(pid: int, started: int | None = None) -> bool:
    """A process with this pid exists, is not a zombie, and (if given) started at `started`."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OverflowError):
        return False
    fields = _stat_fields(pid)
    if fields is None:
        return not Path("/proc/self/stat").exists()      # no procfs: the pid is all there is
    return fields[0] != "Z" and (started is None or int(fields[19]) == started)


def process_running(state: dict) -> bool:
    """Is the process `state` records (process_identity) still running, on this host?"""
    if state.get("host") != socket.gethostname() or not str(state.get("pid", "")).isdigit():
        return False
    return pid_running(int(state["pid"]), state.get("pid_start"))


# a local job's time to end after SIGTERM: a Ray evaluation shuts its Ray down
STOP_GRACE_S = 15.0


def stop_processes(pids: list[int], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, then SIGKILL for what is still there after the grace time (SIGKILL alone
    would leave a Ray evaluation's nodes running)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if pid_running(pid)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
