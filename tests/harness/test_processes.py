"""A recorded local job is running only if its process is there, not a zombie, and the one
that was recorded (runs/processes.py): what submit, status, run and cancel ask."""
import os
import socket
import subprocess
import sys
import time

from runs.processes import pid_running, process_identity, process_running, start_ticks


def test_this_process_as_recorded_is_running():
    assert process_running(process_identity(os.getpid()))
    assert process_running({"host": socket.gethostname(), "pid": os.getpid()})    # recorded before start times


def test_a_reused_pid_is_not_the_recorded_process():
    """Another program under the recorded pid (pid reuse, a reboot): not the job, and not
    something `sdft cancel` may kill."""
    recorded = process_identity(os.getpid())
    assert not process_running({**recorded, "pid_start": start_ticks(os.getpid()) + 1})


def test_a_zombie_is_not_running():
    """A job killed with its parent stays a zombie until reaped; kill -0 still answers for it."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while time.time() < deadline and pid_running(child.pid):
        time.sleep(0.05)
    os.kill(child.pid, 0)                        # not reaped: the pid is still there...
    assert not pid_running(child.pid)            # ...but the process is not
    assert not process_running({"host": socket.gethostname(), "pid": child.pid})
    child.wait()


def test_another_host_or_no_pid_is_not_running_here():
    assert not process_running({**process_identity(os.getpid()), "host": "elsewhere"})
    assert not process_running({"host": socket.gethostname(), "pid": "x"})
    assert not process_running({"host": socket.gethostname()})
