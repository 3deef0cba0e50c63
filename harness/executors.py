"""Where jobs run: a real Slurm cluster through submitit, or this machine, one job at a time.

Both take one stage's runs at a time; the orchestrator (harness.submit) decides what is
submitted and what each stage waits for. Nothing here imports torch.
Slurm is polled with squeue and sacct, not submitit's watcher: the runs' job ids outlive
the process that submitted them (state.json), and the watcher's states come from sacct
alone, while squeue asks slurmctld what is still queued or running.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from harness import warm
from runs.cluster import ClusterConfig
from runs.errors import UserError, one_line, stop_signal
from runs.grid import STAGE_JOBS, PlannedRun
from runs.methods import unit_name
from runs.runtime import JOB_ENV, job_environment
from runs.processes import process_identity, process_running, stop_processes
from runs.store import USER_CANCEL, RunFolder, now_iso

JOB_MODULES = STAGE_JOBS


class Executor(Protocol):
    name: str

    def submit(self, stage: str, runs: list[PlannedRun], folders: dict[str, RunFolder],
               after: list[str]) -> dict[str, str]:
        """Start (or queue) the runs; return run id -> job id. `after`: job ids to wait for."""


def slurm_available(timeout: float = 10.0) -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=timeout).returncode == 0
    except (subprocess.TimeoutExpired, OSError):
        return False


# ---------------------------------------------------------------- local
class Progress:
    """One overall line per local job: which job, how many are left, and an ETA from the
    mean time of the jobs of the same stage done so far (of any stage, before the first).
    Not tqdm or rich: their ETA is one mean over all items, while a pretraining, a fine-tune
    and an aggregate differ a hundredfold; and a plain line per job reads the same in a log
    file, where a redrawn bar leaves carriage returns (training's own bar is tqdm)."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream = total, stream
        self.done: list[tuple[str, float]] = []

    def eta_s(self, remaining_stages: list[str]) -> float | None:
        if not self.done:
            return None
        overall = sum(d for _, d in self.done) / len(self.done)
        by_stage: dict[str, list[float]] = {}
        for stage, duration in self.done:
            by_stage.setdefault(stage, []).append(duration)
        return sum(sum(by_stage[s]) / len(by_stage[s]) if s in by_stage else overall
                   for s in remaining_stages)

    def starting(self, run: PlannedRun, remaining_stages: list[str]) -> None:
        eta = self.eta_s(remaining_stages)
        # the grid's units whose run it is: 'sdft/sdft-noaux' for a named variant's
        what = "" if run.method in (None, run.stage) else ", ".join(
            dict.fromkeys(unit_name(run.method, run.weighting, variant) for variant in run.variants))
        print(f"[{len(self.done) + 1}/{self.total}] {run.stage} {what} {run.run_id}: "
              f"{len(remaining_stages) - 1} left after it, ETA "
              f"{'unknown' if eta is None else f'{eta / 60:.1f} min'}", file=self.stream, flush=True)

    def finished(self, stage: str, seconds: float) -> None:
        self.done.append((stage, seconds))


def oom_kills() -> int | None:
    """How many processes the OOM killer has ended in this process's memory cgroup (v2
    memory.events, v1 memory.oom_control), or None where neither can be read. Jobs share
    the cgroup of the process that starts them."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    places = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            places.append(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.events")
        elif "memory" in controllers.split(","):
            places.append(Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.oom_control")
    # inside a container the paths above may not be mounted; its own root is then the cgroup
    places += [Path("/sys/fs/cgroup/memory.events"), Path("/sys/fs/cgroup/memory/memory.oom_control")]
    for place in places:
        try:
            for line in place.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def local_outcome(module: str, returncode: int, oom_before: int | None, oom_after: int | None) -> tuple[str, str]:
    """(status, error) of a job that ended without finishing its run and without recording
    its own error. A signal is no fault of the run: 'lost', resumed by the next submission,
    unless it was the OOM killer's SIGKILL (seen as a new kill in the cgroup's count), which
    is the run's own failure: it would run out of memory again."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if -returncode == signal.SIGKILL and None not in (oom_before, oom_after) and oom_after > oom_before:
            return "failed", f"out of memory: the OOM killer ended {module} (SIGKILL)"
        return "lost", f"{module} was killed by {name} (resumed by the next submission)"
    return "failed", f"{module} exited with code {returncode}"


def cancelled_by_user(folder: RunFolder) -> bool:
    state = folder.state()
    return state.get("status") == "cancelled" and state.get("cancelled_by") == USER_CANCEL


def run_job(module: str, folder: RunFolder, env: dict, echo: bool = False) -> int:
    """`python -m module RUN_DIR` to its end, its stdout and stderr appended to the run's
    job.log (a header line per attempt), and with `echo` shown on this terminal as well.
    The job's pid is recorded before it starts its work, so that `sdft cancel` can stop it.
    On Linux it is forked from a process that has imported torch once (harness/warm.py);
    with `echo`, and elsewhere, it is a fresh interpreter."""
    log = folder.job_log_path
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"==== {now_iso()} {module} {folder.path} on {socket.gethostname()}\n".encode())
        out.flush()
        if warm.available(module) and not echo:
            process = warm.start(module, folder, env)
            try:
                process.join()
                return process.exitcode
            except BaseException as err:
                stopped_with_submission(folder, [process.pid], err)
                raise
        with subprocess.Popen([sys.executable, "-m", module, str(folder.path)], env=env,
                              stdout=subprocess.PIPE if echo else out, stderr=subprocess.STDOUT) as proc:
            folder.set_state("submitted", executor="local", job_id=None, **process_identity(proc.pid),
                             error=None, logs=[str(log)])
            try:
                while echo and (chunk := os.read(proc.stdout.fileno(), 1 << 16)):
                    out.write(chunk)
                    out.flush()
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()
                return proc.wait()
            except BaseException as err:
                stopped_with_submission(folder, [proc.pid], err)
                raise


def stopped_with_submission(folder: RunFolder, pids: list[int], err: BaseException) -> None:
    """A job does not outlive the process that runs it (Ctrl-C, SIGTERM, SIGHUP: runs.errors.
    exit_on_stop): it is stopped, and recorded lost, so that the next submission resumes it
    from its last checkpoint."""
    stop_processes(pids)
    if folder.status in ("submitted", "running"):
        why = stop_signal(err)
        folder.set_state("lost", error=f"stopped with its submission ({why.name if why else one_line(err)}); "
                                       "resumed by the next submission")


class LocalExecutor:
    """Runs each job to the end before returning, as a process of its own (a crash stays
    contained), its output in the run folder's job.log. A run whose job fails or dies is
    recorded so (local_outcome); the orchestrator skips its dependants. A run cancelled by the
    user (`sdft cancel`, also while this submission runs) is left as it is."""

    name = "local"

    def __init__(self, threads: int | None = None, planned: list[PlannedRun] = ()):
        self.threads = threads or int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
        self.remaining = [r.stage for r in planned]
        self.progress = Progress(len(planned))

    def submit(self, stage, runs, folders, after):
        job_ids = {}
        env = job_environment(threads=self.threads)
        for run in runs:
            if stage in self.remaining:
                self.progress.starting(run, self.remaining)
                self.remaining.remove(stage)
            started = time.monotonic()
            folder = folders[run.run_id]
            if cancelled_by_user(folder):
                job_ids[run.run_id] = "local-cancelled"
                continue
            oom_before = oom_kills()
            returncode = run_job(JOB_MODULES[stage], folder, env)
            if returncode != 0 and folder.status not in ("failed", "cancelled"):   # not recorded by the job itself
                status, error = local_outcome(JOB_MODULES[stage], returncode, oom_before, oom_kills())
                folder.set_state(status, error=error)
            if returncode != 0:
                print(f"  {run.run_id}: {folder.status}; its output: {folder.job_log_path}", file=self.progress.stream)
            job_ids[run.run_id] = f"local-{returncode}"
            self.progress.finished(stage, time.monotonic() - started)
        return job_ids


# ---------------------------------------------------------------- slurm
class SlurmExecutor:
    """One sbatch per stage: a job array over the stage's runs, `afterok` on what it needs,
    `--kill-on-invalid-dep=yes` so that children of a failed job are cancelled, not left
    pending (not every cluster sets kill_invalid_depend)."""

    name = "slurm"

    def __init__(self, cluster: ClusterConfig, log_dir: Path, grid_name: str):
        self.cluster = cluster
        self.log_dir = Path(log_dir)
        self.grid_name = grid_name

    def parameters(self, stage: str, after: list[str]) -> dict:
        c = self.cluster
        r = c.resources(stage)             # the defaults and the stage's overrides (ClusterConfig)
        params = dict(
            name=f"{self.grid_name}-{stage}", timeout_min=r["timeout_min"], nodes=r["nodes"],
            tasks_per_node=r["tasks_per_node"], cpus_per_task=r["cpus_per_task"],
            mem_gb=r["mem_gb"], slurm_array_parallelism=c.array_parallelism,
            slurm_setup=[f"export {k}='{v}'" for k, v in JOB_ENV.items()]
            + ["export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}"],
            slurm_additional_parameters={"kill_on_invalid_dep": "yes", **c.additional},
        )
        if r["gpus_per_node"]:
            params["gpus_per_node"] = r["gpus_per_node"]
        if r["partition"]:
            params["slurm_partition"] = r["partition"]
        for key in ("account", "qos"):
            if getattr(c, key):
                params[f"slurm_{key}"] = getattr(c, key)
        if after:
            params["slurm_dependency"] = "afterok:" + ":".join(sorted(set(after)))
        return params

    def submit(self, stage, runs, folders, after):
        import submitit

        from harness.slurm_job import ModuleJob

        executor = submitit.AutoExecutor(folder=self.log_dir / "%j", cluster="slurm",
                                         slurm_max_num_timeout=self.cluster.max_num_timeout)
        executor.update_parameters(**self.parameters(stage, after))
        jobs = executor.map_array(ModuleJob(JOB_MODULES[stage]), [str(folders[r.run_id].path) for r in runs])
        job_ids = {}
        for run, job in zip(runs, jobs):
            folders[run.run_id].set_state("submitted", executor=self.name, job_id=job.job_id, error=None,
                                          pid=None, pid_start=None, host=None, logs=[str(job.paths.stdout), str(job.paths.stderr)])
            job_ids[run.run_id] = job.job_id
        # `sdft cancel` of a run while its sbatch ran found no job to stop: its state says
        # cancelled (set_state keeps a cancel), its job is queued all the same
        cancel_jobs([job_ids[r.run_id] for r in runs if cancelled_by_user(folders[r.run_id])])
        return job_ids


def cancel_jobs(job_ids: list[str]) -> None:
    """scancel the jobs: UserError where scancel cannot run (the runs' states are already
    recorded as cancelled: the message names the jobs to cancel by hand), a warning where it
    answers with an error (a job that has ended already)."""
    if not job_ids:
        return
    try:
        proc = subprocess.run(["scancel", *sorted(set(job_ids))], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"scancel did not run ({err}); the runs are recorded as cancelled: "
                        f"cancel Slurm jobs {' '.join(job_ids)} by hand") from None
    if proc.returncode != 0:
        print(f"warning: scancel: {' '.join(proc.stderr.split())}", file=sys.stderr)


def array_master(job_id: str) -> str:
    """'12_3' -> '12': a dependency on an array task's array."""
    return job_id.split("_")[0]


def live_slurm_jobs(job_ids: list[str]) -> set[str] | None:
    """The ids among `job_ids` that Slurm still has queued or running; None if unknown."""
    if not job_ids:
        return set()
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(sorted(set(job_ids)))],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    return set(out.stdout.split()) & set(job_ids)


def elsewhere(state: dict) -> str | None:
    """The other machine a local job runs on (`sdft run` on a node, the results on a shared
    file system), or None: its process cannot be checked from here."""
    host = state.get("host")
    return host if state.get("executor") == "local" and host not in (None, socket.gethostname()) else None


def job_alive(state: dict, live: set[str] | None) -> bool:
    """Whether a run recorded as queued or running still has its job: a local run's process,
    or a Slurm run's job among `live` (live_slurm_jobs's answer). What cannot be asked counts
    as alive: squeue that did not answer (None), a local job on another machine. Taking a
    run's job for gone would let the run start a second time beside it."""
    if state.get("status") not in ("submitted", "running"):
        return False
    if state.get("executor", "slurm") == "local":
        return elsewhere(state) is not None or process_running(state)
    job = state.get("job_id")
    return bool(job) and (live is None or job in live)


def slurm_outcomes(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Job id -> (Slurm state, exit code) from sacct, for jobs that have ended; {} if sacct
    does not answer. The last line of a job is its last attempt (requeues come first)."""
    if not job_ids:
        return {}
    try:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State,ExitCode", "-j",
                              ",".join(sorted(set(job_ids)))], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = {}
    for line in out.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[0] in job_ids:
            found[parts[0]] = (parts[1].split()[0] if parts[1] else "", parts[2])
    return found


def slurm_outcome(job_id: str, slurm_state: str | None, exit_code: str | None) -> tuple[str, str]:
    """(status, error) of a run whose Slurm job ended without recording how. Out of memory
    is the run's own failure (it would run out again); so is a plain non-zero exit. A
    cancelled, preempted, timed-out job or a lost node is not: 'lost', resumed next time."""
    if slurm_state == "OUT_OF_MEMORY":
        return "failed", f"out of memory (Slurm job {job_id}: OUT_OF_MEMORY)"
    code, _, sig = (exit_code or "").partition(":")
    if slurm_state == "FAILED" and code not in ("", "0") and sig in ("", "0"):
        return "failed", f"Slurm job {job_id} exited with code {code} (see its log in results/<grid>/slurm/)"
    said = slurm_state or "unknown to sacct"
    return "lost", f"Slurm job {job_id} ended {said} (resumed by the next submission)"


def gone_outcome(state: dict, outcomes: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """(status, error) of a run recorded as queued or running whose job is gone."""
    job = state.get("job_id")
    if state.get("executor", "slurm") == "slurm" and job:
        return slurm_outcome(job, *outcomes.get(job, (None, None)))
    return "lost", f"its process ({state.get('host', '?')}, pid {state.get('pid', '?')}) is gone " \
                   "(resumed by the next submission)"


def wait_for_slurm(job_ids: list[str], poll_s: float = 2.0, progress: bool = True) -> None:
    """Block until none of the jobs is queued or running."""
    from tqdm.auto import tqdm

    remaining = set(job_ids)
    with tqdm(total=len(remaining), desc="slurm jobs", disable=not progress) as bar:
        while remaining:
            live = live_slurm_jobs(list(remaining))
            if live is not None:
                bar.update(len(remaining - live))
                remaining = live
            if remaining:
                time.sleep(poll_s)
