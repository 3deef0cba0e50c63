"""What Slurm runs: submitit-picklable job callables. No torch at import (the harness
pickles these); the work is imported inside the call, on the node.
"""
from __future__ import annotations

import os

import submitit


def _distributed_env() -> None:
    """One process per Slurm task, with the variables DeepSpeed reads (RANK, MASTER_ADDR...)."""
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("SLURM_CPUS_PER_TASK", "1"))


class TrainJob(submitit.helpers.Checkpointable):
    """Train one run folder. On preemption or time-out (USR2) submitit calls `checkpoint`,
    which (the Checkpointable default) requeues the same call: the new attempt resumes from
    the run's newest checkpoint by itself."""

    def __call__(self, run_dir: str) -> str:
        _distributed_env()
        from jobs.train import run

        return str(run(run_dir))


def job_for(stage: str):
    """The callable Slurm runs for a stage's run folder."""
    jobs = {"pretrain": TrainJob, "finetune": TrainJob}
    if stage not in jobs:
        raise ValueError(f"no job for stage {stage!r}")
    return jobs[stage]()
