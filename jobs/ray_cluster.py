"""Ray on the tasks of a Slurm job: one Ray node per task.

Task 0 starts the head and runs the driver (the evaluation); the other tasks start workers
that join it and leave when the driver is done. Ray 2.60 wants token authentication: the
head's task writes a fresh token next to the address (mode 600, in the run folder, which
every node sees) and every node reads it from there (RAY_AUTH_TOKEN_PATH).
Only the processes started here are stopped (their process groups), never Ray by name.
Ray's sockets live under its temp dir, which follows $TMPDIR: a cluster's per-job TMPDIR
can push them past the 107 bytes a Unix socket path may have, so a long one is replaced
by a short one (short_temp_env).
Not `ray symmetric-run`: it must be each task's command, while submitit runs each task as
its pickled call (requeue on preemption included); the per-task start here is the same.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def reachable_ip() -> str:
    """This node's address as the other nodes reach it: its host name's, unless that is a
    loopback one (Debian maps the host name to 127.0.1.1), then the address of the interface
    that leads out, as Ray finds it."""
    host = socket.gethostbyname(socket.gethostname())
    if not host.startswith("127."):
        return host
    from ray.util import get_node_ip_address

    return get_node_ip_address()


def _start(args: list[str], env: dict, log_path: Path) -> subprocess.Popen:
    # Ray 2.60 drains a `ray start --block` node on SIGTERM for up to 30 s (for Serve's
    # replicas); ours are stopped once the evaluation is done, so each job waited out
    # _stop's 20 s per node. A value of the user's own is kept.
    env = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", **env}
    log = open(log_path, "ab")
    return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the `ray start --block` group (it stops its node), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_for(path: Path, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: not there after {timeout:.0f} s")
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"ray start exited with code {proc.returncode}")
        time.sleep(0.2)


# Ray appends ~60 bytes (ray/session_<date>_<pid>/sockets/plasma_store) to its temp dir
LONGEST_TEMP_DIR = 40


def short_temp_env(environ=None) -> dict[str, str]:
    """{"RAY_TMPDIR": a short folder} when Ray's temp dir would be too long for its sockets
    ($RAY_TMPDIR, else $TMPDIR on Linux); {} when it is short enough."""
    environ = os.environ if environ is None else environ
    base = environ.get("RAY_TMPDIR") or environ.get("TMPDIR") or "/tmp"
    if len(base) <= LONGEST_TEMP_DIR:
        return {}
    return {"RAY_TMPDIR": f"/tmp/ray-{os.getuid()}"}


def auth_env(token: Path) -> dict[str, str]:
    """The variables that make Ray (daemons, drivers) authenticate with the token file."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


def write_token(token: Path) -> None:
    """A fresh token, readable by its owner only (created 600 before anything is written)."""
    token.touch(mode=0o600)
    token.write_text(secrets.token_hex(32))


@contextlib.contextmanager
def slurm_ray_cluster(rank: int, world: int, folder: Path, num_cpus: int, num_gpus: int = 0):
    """On rank 0: yields the head's address once every worker has joined. On other ranks:
    joins, then blocks until rank 0 says it is done, and yields None."""
    folder.mkdir(parents=True, exist_ok=True)
    token, address, done = folder / "token", folder / "address", folder / "done"
    os.environ.update(short_temp_env())           # the driver's too (it connects to the sockets)
    env = {**os.environ, **auth_env(token)}
    env.pop("RAY_AUTH_TOKEN", None)
    resources = ["--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus)]
    if rank == 0:
        for stale in (address, done):
            stale.unlink(missing_ok=True)
        write_token(token)
        # the driver (this process) authenticates too; Ray reads this when it is imported
        # (reachable_ip may be the first to import it)
        os.environ.update(auth_env(token))
        host, port = reachable_ip(), _free_port()
        # the client server's port is fixed (10001) unless given: another Ray head on the
        # node holding it would end this one
        proc = _start(["--head", f"--node-ip-address={host}", f"--port={port}", "--include-dashboard=false",
                       f"--ray-client-server-port={_free_port()}", *resources], env, folder / f"ray-start-{rank}.log")
        try:
            import ray

            deadline = time.monotonic() + 120
            while True:           # the head is up once a client can connect
                try:
                    ray.init(address=f"{host}:{port}", logging_level="ERROR")
                    break
                except Exception:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.5)
            address.write_text(f"{host}:{port}")
            while len([n for n in ray.nodes() if n["Alive"]]) < world:
                if time.monotonic() > deadline + 120:
                    raise TimeoutError(f"only {len(ray.nodes())} of {world} Ray nodes joined")
                time.sleep(0.5)
            ray.shutdown()
            yield f"{host}:{port}"
        finally:
            done.write_text("done")
            _stop(proc)
    else:
        _wait_for(address, 300)
        proc = _start([f"--address={address.read_text().strip()}", *resources], env,
                      folder / f"ray-start-{rank}.log")
        try:
            _wait_for(done, 7 * 24 * 3600, proc)
            yield None
        finally:
            _stop(proc)
