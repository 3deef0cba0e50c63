"""Tests against the real local Slurm (slurm/local-slurm.sh start; `make test` starts it).

Without a cluster they skip, unless SDFT_REQUIRE_SLURM=1 (as .ci/run sets): then they fail,
so that the suite cannot pass green without having run them.
"""
import os
import subprocess

import pytest

from harness.executors import slurm_available


@pytest.fixture(scope="session")
def slurm():
    if not slurm_available():
        message = "no Slurm here: run `bash slurm/local-slurm.sh start` (as root)"
        if os.environ.get("SDFT_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return True


def sacct_states(job_id: str) -> list[str]:
    """Every recorded attempt of a job (-D keeps requeued ones): ['REQUEUED', 'COMPLETED'].

    An array task cancelled while pending is recorded under its array ('12_[0-2]')."""
    master = job_id.split("_")[0]
    out = subprocess.run(["sacct", "-n", "-P", "-D", "-X", "-j", master, "-o", "JobID,State"],
                         capture_output=True, text=True).stdout
    records = [line.split("|") for line in out.splitlines() if "|" in line]
    return [state.split()[0] for jid, state in records
            if jid == job_id or (jid.startswith(master + "_[") and jid != job_id)]
