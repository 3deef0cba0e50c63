"""The results store on disk: run folders, their spec and state, written atomically.

Layout (docs/architecture.md, "Runs: identity and storage"):
    <root>/_runs/<run_id>/            the work, shared by every grid that has this run
        spec.json  state.json  train.jsonl  checkpoints/  model/  samples/  metrics.parquet
    <root>/<grid>/runs/<run_id> -> ../../_runs/<run_id>
A run folder is found by its id, so two grids with the same run share one training.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from runs.errors import UserError, one_line

# lost: the job died without a word of its own (a signal, a node gone): resumed by the next
# submission; failed: its own error (or out of memory): only with --retry-failed;
# cancelled: never ran because a run it needs did not finish, or, with
# cancelled_by=USER_CANCEL, stopped by `sdft cancel`: only with --retry-cancelled.
STATUSES = ("pending", "submitted", "running", "done", "failed", "lost", "cancelled")
USER_CANCEL = "user"
RUNS_DIR = "_runs"
SUBMIT_LOCK = ".submit.lock"
CHECKPOINT_PREFIX = "step"        # checkpoints/step00000500: a finished checkpoint


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class CorruptFile(UserError):
    """A results file that cannot be read (a disk that filled up, a hand edit): names it."""


class RunState(BaseModel):
    """The keys of state.json that are read back, with the types their writers give them
    (a hand edit or another version may not): the local job's process (runs/processes.py),
    the Slurm job, the progress, the resubmit count, the log files, an aggregate's products.
    Other keys (timestamps, error, weights) pass through as written."""
    model_config = ConfigDict(extra="allow", strict=True)

    executor: Literal["local", "slurm"] | None = None
    job_id: str | None = None
    host: str | None = None
    pid: int | None = None
    pid_start: int | None = None
    step: int | None = None
    steps: int | None = None
    resubmits: int | None = None
    cancelled_by: str | None = None
    logs: list[str] | None = None
    products: list[str] | None = None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename: readers see the old file or the new one.
    The folder is synced too, so that after a crash the rename itself is not lost."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:          # some file systems do not open folders: the rename stands anyway
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptFile(f"{path}: not valid JSON ({err}); move it away and resubmit to run this "
                          "run again (its checkpoints are kept)") from None


@contextmanager
def file_lock(path: Path, wait_s: float, busy: Callable[[str], str],
              unlocked_warning: str | None = None, poll_s: float = 0.5):
    """An exclusive flock on `path`, waited for up to `wait_s` seconds; then UserError(busy(
    holder)), `holder` being what the holder wrote in it ("pid 12 on node3, since ...").
    flock: released by the kernel when the holder dies, however it dies. Where the file
    system has no locks (ENOLCK: NFS mounted without them), it goes on without one, saying
    `unlocked_warning` if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    raise UserError(busy(handle.read().strip() or "its holder unknown")) from None
                time.sleep(poll_s)
            except OSError as err:
                if unlocked_warning:
                    print(f"warning: {path}: no lock ({err.strerror}); {unlocked_warning}", file=sys.stderr)
                locked = False
                break
        if locked:
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {now_iso()}\n")
            handle.flush()
        try:
            yield
        finally:
            if locked:
                handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)


def lock_held(path: Path) -> bool:
    """Whether some process holds `file_lock(path)` now (by any open file, this process's
    own included). Creates nothing: a dry run asks too."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:          # no locks on this file system: nobody can hold one
        return False
    finally:
        os.close(fd)         # closing the file releases a lock just taken
    return False


class RunFolder:
    """One run's folder. Cheap to construct; touches the disk only when asked."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    spec_path = property(lambda self: self.path / "spec.json")
    state_path = property(lambda self: self.path / "state.json")
    log_path = property(lambda self: self.path / "train.jsonl")
    job_log_path = property(lambda self: self.path / "job.log")    # a local job's stdout and stderr
    checkpoints = property(lambda self: self.path / "checkpoints")
    model_dir = property(lambda self: self.path / "model")
    samples_dir = property(lambda self: self.path / "samples")
    metrics_path = property(lambda self: self.path / "metrics.parquet")
    # an evaluation's forgetting-curve rows (evaluation.curve_steps), kept out of its metrics
    curve_path = property(lambda self: self.path / "curve.parquet")
    # an evaluation's products listed (jobs/evaluation/manifest.py)
    manifest_path = property(lambda self: self.path / "products" / "manifest.json")

    @staticmethod
    def checkpoint_tag(step: int) -> str:
        """A finished checkpoint's folder in checkpoints/ (jobs/checkpoints.py writes them)."""
        return f"{CHECKPOINT_PREFIX}{step:08d}"

    def checkpoint_tags(self) -> list[str]:
        """The finished checkpoints' tags, oldest first (zero-padded steps sort by name)."""
        return sorted(p.name for p in self.checkpoints.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir())

    def resumes_from(self) -> int:
        """The step a training job of this run would start from: its newest checkpoint's."""
        tags = self.checkpoint_tags()
        return int(tags[-1].removeprefix(CHECKPOINT_PREFIX)) if tags else 0

    def snapshot_dir(self, step: int) -> Path:
        """The EMA kept at an earlier step (RunSpec.snapshot_steps)."""
        return self.path / f"model-step{step:08d}"

    def read_spec(self) -> dict:
        spec = read_json(self.spec_path)
        if spec is None:
            raise FileNotFoundError(f"{self.spec_path}: no spec.json in run folder")
        return spec

    def write_spec(self, spec: dict) -> None:
        atomic_write_json(self.spec_path, spec)

    def _stored_state(self) -> dict:
        """state.json's object as written; CorruptFile when it is not JSON or not an object."""
        state = read_json(self.state_path, {"status": "pending"})
        if not isinstance(state, dict):
            raise CorruptFile(f"{self.state_path}: expected a JSON object, got {type(state).__name__}; "
                              "move it away and resubmit to run this run again")
        return state

    def state(self) -> dict:
        """state.json; CorruptFile (a UserError naming it) when it cannot be read, or when a
        field read back has the wrong type (RunState)."""
        state = self._stored_state()
        if state.get("status", "pending") not in STATUSES:
            raise CorruptFile(f"{self.state_path}: status: expected one of {', '.join(STATUSES)}, got "
                              f"{state['status']!r}; move it away and resubmit to run this run again")
        try:
            RunState.model_validate(state)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise CorruptFile(f"{self.state_path}: {field}: {first['msg'].lower()}, got {first['input']!r}; "
                              "move it away and resubmit to run this run again") from None
        return state

    @property
    def status(self) -> str:
        return self.state().get("status", "pending")

    # Held on this machine by whoever starts the run's job, from before it reads the run's
    # state until that state records the job: `sdft run` for the job's life, a submission
    # until it ends. So two of them cannot both find the run not running and both start it.
    job_lock_path = property(lambda self: self.path / ".job.lock")

    def job_lock(self):
        """The run's job lock, or UserError if another process holds it."""
        return file_lock(self.job_lock_path, 0.0, lambda holder: (
            f"{self.run_id}: being started or run on this machine by another process ({holder}); "
            "`sdft status` shows it"))

    def job_lock_held(self) -> bool:
        return lock_held(self.job_lock_path)

    def set_state(self, status: str, **info: Any) -> dict:
        """Merge `info` into state.json with a timestamp; None values remove a key."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        try:
            # a job recording its progress replaces a file nobody can read, and keeps the
            # fields of one it can (a wrong-typed one is still named by state())
            state = self._stored_state()
        except CorruptFile:
            state = {}
        if status in ("submitted", "running") and state.get("status") == "cancelled" \
                and state.get("cancelled_by") == USER_CANCEL:
            status = "cancelled"    # a job stopping (Slurm gives it KillWait seconds) does not undo a cancel
        state.update(info)
        state = {k: v for k, v in state.items() if v is not None}
        state["status"] = status
        state["updated_at"] = now_iso()
        state.setdefault("created_at", state["updated_at"])
        if status == "running":
            state.setdefault("started_at", state["updated_at"])
        if status in ("done", "failed", "lost", "cancelled"):
            state["finished_at"] = state["updated_at"]
        atomic_write_json(self.state_path, state)
        return state

    @contextmanager
    def recording_failure(self, record: bool = True):
        """An exception inside is written to state.json (failed, its one-line message) and
        re-raised. A signal (SystemExit, KeyboardInterrupt) is not a failure: the run stays
        'running', shows as lost, and is resumed by the next submission or requeue."""
        try:
            yield
        except Exception as err:
            if record:
                self.set_state("failed", error=one_line(err))
            raise

    def missing_products(self, stage: str, snapshot_steps=()) -> list[str]:
        """What a finished training or evaluation run must have left, as far as it is missing
        (names only: cheap enough to ask of every run at every submission)."""
        if stage in ("pretrain", "finetune"):
            wanted = [self.model_dir / "config.json", self.model_dir / "diffusion_pytorch_model.safetensors"]
            wanted += [self.snapshot_dir(s) / "config.json" for s in snapshot_steps]
        elif stage == "evaluate":
            # without the manifest (made before it existed) the products cannot be read back
            wanted = [self.metrics_path, self.manifest_path]
        else:
            return []
        return [str(p.relative_to(self.path)) for p in wanted if not p.is_file()]

    def job_logs(self) -> list[Path]:
        """Where the job's output went: the files its state names (a Slurm job's submitit
        .out and .err), else the local job.log."""
        try:
            named = [Path(p) for p in self.state().get("logs", [])]
        except CorruptFile:
            named = []
        return named or [self.job_log_path]

    def log_rows(self) -> list[dict]:
        """train.jsonl's rows. A last line cut off (the job killed mid-write, a full disk) is
        left out: the resume rewrites the log without it. One cut off elsewhere is named."""
        if not self.log_path.is_file():
            return []
        lines = [line for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
                 if line.strip()]
        rows = []
        for number, line in enumerate(lines, start=1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                if number == len(lines):
                    break
                raise CorruptFile(f"{self.log_path}: line {number} is not valid JSON ({err}); move the "
                                  "file away to train on without it (the checkpoints are kept)") from None
        return rows


def store_root_of(run_dir: Path) -> Path:
    """The `_runs` folder a run folder lives in (following a grid's link to it)."""
    return Path(run_dir).resolve().parent



class Store:
    """A results root: the shared run folders and one folder per grid."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def runs_root(self) -> Path:
        return self.root / RUNS_DIR

    def run(self, run_id: str) -> RunFolder:
        return RunFolder(self.runs_root / run_id)

    def grid_dir(self, name: str) -> Path:
        return self.root / name

    def grid_run_ids(self, name: str) -> set[str]:
        """The runs a stored grid has, its aggregate aside (that one changes with every run added)."""
        ids = set()
        for folder in self.grid_runs(name):
            try:
                stage = folder.read_spec().get("stage")
            except (FileNotFoundError, CorruptFile):     # a link to a run folder that is gone
                continue
            if stage != "aggregate":
                ids.add(folder.run_id)
        return ids

    def keep_grid_runs(self, name: str, run_ids: set[str]) -> None:
        """Unlink the grid's runs that are not in `run_ids` (the run folders stay)."""
        for folder in self.grid_runs(name):
            if folder.run_id not in run_ids and folder.path.is_symlink():
                folder.path.unlink()

    def submission_lock(self, wait_s: float = 30.0):
        """One submission at a time per results root. Two at once (two terminals, a script
        that submits grids sharing a source model) would both find a run not yet submitted
        and both start it, two jobs writing one run folder. A Slurm submission holds it for
        the seconds its sbatch calls take; a local one for as long as its jobs run."""
        path = self.runs_root / SUBMIT_LOCK
        return file_lock(path, wait_s, lambda holder: (
            f"{path}: another submission to this results root is running ({holder}); "
            "submit again when it has ended"), unlocked_warning=(
            "two submissions to this results root at once would both start the runs they share"))

    def write_grid(self, name: str, source_text: str, canonical: str) -> Path:
        folder = self.grid_dir(name)
        atomic_write_bytes(folder / "grid.json", (canonical.strip() + "\n").encode())
        atomic_write_bytes(folder / "grid.yaml", source_text.encode())
        return folder

    def add_run(self, grid: str, run_id: str, spec: dict) -> RunFolder:
        """Create the run folder (spec.json only if new: a finished run is never rewritten)
        and link it into the grid's runs/."""
        folder = self.run(run_id)
        if not folder.spec_path.is_file():
            folder.write_spec(spec)
        link = self.grid_dir(grid) / "runs" / run_id
        if not link.is_symlink() and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path("..") / ".." / RUNS_DIR / run_id, target_is_directory=True)
        return folder

    def missing_grid_products(self, grid: str, recorded=()) -> list[str]:
        """The aggregate's products (report, tidy table, and the tables it recorded writing):
        they belong to the grid's folder, not to the aggregate's run folder."""
        folder = self.grid_dir(grid)
        wanted = dict.fromkeys(["report.md", "metrics.parquet", *recorded])
        return [name for name in wanted if not (folder / name).is_file()]

    def grid_runs(self, grid: str) -> list[RunFolder]:
        runs = self.grid_dir(grid) / "runs"
        # links and folders: a stray file (a desktop's .DS_Store) is no run
        return [RunFolder(p) for p in sorted(runs.iterdir()) if p.is_symlink() or p.is_dir()] if runs.is_dir() else []
