"""python -m harness.logs RUN_ID [-f]: a job's output, wherever its executor put it.

A local job's stdout and stderr are in its run folder's job.log; a Slurm job's are the
.out and .err files submitit writes under results/<grid>/slurm/, whose paths the
submission records in the run's state.json. -f keeps printing what is added, as
`tail -f` does, until the run is no longer queued or running.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.arguments import OneLineParser, path_arg
from runs.errors import UserError, exit_on_user_error, quiet_broken_pipe
from runs.store import RunFolder, Store
from harness.subset import find_run_id


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m harness.logs", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run id (or a prefix of one)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    parser.add_argument("--results", default="results", type=path_arg, help="results root (default: results)")
    return parser.parse_args(argv)


def find_run(store: Store, given: str) -> RunFolder:
    """A run of the store by its id or a prefix of it."""
    root = store.runs_root
    ids = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    return store.run(find_run_id(given, ids, str(root)))


class JobWatch:
    """Whether the run's job still runs: its state, and where that still says queued or
    running, its process or (asked every `squeue_s` seconds) squeue. A job killed without a
    word (SIGKILL, a lost node, scancel) leaves its state saying running for good."""

    def __init__(self, folder: RunFolder, squeue_s: float = 15.0):
        self.folder, self.squeue_s = folder, squeue_s
        self.asked_at, self.live = -float("inf"), None

    def gone_silently(self, state: dict) -> bool:
        from harness.executors import job_alive, live_slurm_jobs

        if state.get("executor", "slurm") == "slurm" and state.get("job_id"):
            if time.monotonic() - self.asked_at >= self.squeue_s:
                self.asked_at, self.live = time.monotonic(), live_slurm_jobs([state["job_id"]])
        return not job_alive(state, self.live)

    def ended(self) -> str | None:
        """None while the job runs; else why following stops."""
        state = self.folder.state()
        if state.get("status", "pending") not in ("submitted", "running"):
            return "ended"
        return "gone" if self.gone_silently(state) else None


def show(folder: RunFolder, follow: bool = False, poll_s: float = 0.5, out=sys.stdout) -> None:
    logs = folder.job_logs()
    if not any(p.is_file() for p in logs) and not follow:
        raise UserError(f"{folder.run_id}: no log yet (state {folder.status}; expected {logs[0]})")
    offsets = {p: 0 for p in logs}
    current: Path | None = None
    watch = JobWatch(folder)
    while True:
        ended = "ended" if not follow else watch.ended()        # before the last read
        for path in logs:
            try:
                with open(path, "rb") as f:
                    f.seek(offsets[path])
                    chunk = f.read()
            except FileNotFoundError:
                continue
            if not chunk:
                continue
            if len(logs) > 1 and path != current:      # as tail names the file it switches to
                out.write(f"==> {path} <==\n")
                current = path
            out.write(chunk.decode("utf-8", errors="replace"))
            out.flush()
            offsets[path] += len(chunk)
        if ended == "gone":
            print(f"{folder.run_id}: its job is gone without recording how it ended (`sdft status` "
                  "shows it as lost; the next submission resumes it)", file=sys.stderr)
        if ended:
            return
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with quiet_broken_pipe(), exit_on_user_error():
        try:
            show(find_run(Store(args.results), args.run), follow=args.follow)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
