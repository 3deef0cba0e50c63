"""Local jobs forked from a warm process instead of started as fresh interpreters.

A tiny job's own work takes about a second here; starting `python -m jobs.train` takes five
more, nearly all of it importing torch and diffusers (which brings transformers, peft and
torch._dynamo). So the local executor asks multiprocessing's forkserver, started once per
submission with the jobs' environment (runs/runtime.py: glibc reads it at process start),
to import them once (PRELOAD); each job is a fork of that process which runs its module as
`python -m` would. A fork is a process of its own: a crash, a kill or the OOM killer ends
the job alone, and its pid is the job's, recorded by the job before it starts (`sdft cancel`
stops it by that pid). Linux only; elsewhere executors.run_job starts a plain subprocess.
Nothing here imports torch: the forkserver does, in its own process.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import sys
from multiprocessing import forkserver

from runs.processes import process_identity
from runs.store import RunFolder

# what every torch job imports first, and most of its start-up (measured: 4.7 of 5.4 s)
PRELOAD = ["torch", "diffusers.models.unets.unet_2d"]
# the jobs that import them; the aggregate (pandas, no torch) starts faster on its own
WARM_MODULES = ("jobs.train", "jobs.evaluate")


def available(module: str) -> bool:
    return sys.platform.startswith("linux") and module in WARM_MODULES


def start(module: str, folder: RunFolder, env: dict[str, str]) -> multiprocessing.process.BaseProcess:
    """The job `python -m module RUN_DIR`, forked from the warm process (started on first
    use, in `env`); its output appended to the run's job.log, its pid recorded in the run's
    state before it starts. Join it for its exit code (negative: the signal that ended it)."""
    log = str(folder.job_log_path)
    return fork(module, [str(folder.path)], env, stdout=log, stderr=log, record_in=str(folder.path))


def fork(module: str, args: list[str], env: dict[str, str], stdout: str, stderr: str,
         record_in: str | None = None) -> multiprocessing.process.BaseProcess:
    """`python -m module ARGS` in `env`, forked from the warm process (started on first use,
    in `env`); its stdout and stderr appended to those files (the same file for both: in the
    order written); with `record_in`, its pid recorded in that run folder's state first.
    Join it for its exit code (negative: the signal that ended it)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    _ensure_running(env)
    process = context.Process(target=_run, args=(module, list(args), env, stdout, stderr, record_in),
                              name=f"{module} {' '.join(args)}")
    process.start()
    return process


def _ensure_running(env: dict[str, str]) -> None:
    """Start the forkserver in the jobs' environment (it inherits this process's), once."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        forkserver.ensure_running()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _run(module: str, args: list[str], env: dict[str, str], stdout: str, stderr: str,
         record_in: str | None) -> None:
    """In the fork: the job's environment, output and pid, then its module as __main__."""
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, stdout), (2, stderr)):
        out = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(out, fd)
        os.close(out)
    if record_in is not None:
        RunFolder(record_in).set_state("submitted", executor="local", job_id=None, **process_identity(os.getpid()),
                                       error=None, logs=[stdout])
    if env.get("OMP_NUM_THREADS", "").isdigit():
        import torch        # preloaded: its thread pool follows this job's setting, not the server's

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    sys.argv = ["-m", *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        # what an interpreter's exit runs (tensorboard's writers, logging's flush); a fork
        # ends in os._exit, which does not
        atexit._run_exitfuncs()
