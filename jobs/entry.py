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


class EvaluateJob:
    """Evaluate one model on Ray. One task: Ray starts inside the job on its cores (or joins
    $SDFT_RAY_ADDRESS). Several tasks (nodes): one Ray node per task, the head and the driver
    on the first (jobs/ray_cluster.py). A requeued evaluation skips the batches it has."""

    def __call__(self, run_dir: str) -> str:
        os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("SLURM_CPUS_PER_TASK", "1"))
        from jobs.evaluate import run

        env = submitit.JobEnvironment()
        if env.num_tasks == 1:
            return str(run(run_dir))
        from pathlib import Path

        from jobs.ray_cluster import slurm_ray_cluster

        cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", 1))
        gpus = len([d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d])
        with slurm_ray_cluster(env.global_rank, env.num_tasks, Path(run_dir) / "ray", cpus, gpus) as address:
            if address is None:
                return "ray worker"
            os.environ["SDFT_RAY_ADDRESS"] = address
            return str(run(run_dir))

    def checkpoint(self, run_dir: str):
        return submitit.helpers.DelayedSubmission(self, run_dir)


class AggregateJob:
    def __call__(self, run_dir: str) -> str:
        from jobs.aggregate import run

        return str(run(run_dir))


def job_for(stage: str):
    """The callable Slurm runs for a stage's run folder."""
    jobs = {"pretrain": TrainJob, "finetune": TrainJob, "evaluate": EvaluateJob, "aggregate": AggregateJob}
    if stage not in jobs:
        raise ValueError(f"no job for stage {stage!r}")
    return jobs[stage]()
