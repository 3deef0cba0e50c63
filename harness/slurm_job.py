"""What a Slurm job runs: a job module named by its name, never imported by the harness.

submitit pickles a `ModuleJob("jobs.train")`; on the node it imports that module and calls
its `slurm_run(run_dir)`, in the job's own process. It is Checkpointable: on preemption or
time-out (USR2) submitit calls `checkpoint`, which requeues the same call, and the job
resumes from the run's newest checkpoint by itself. No torch here (the harness pickles it).
"""
from __future__ import annotations

import importlib

import submitit


class ModuleJob(submitit.helpers.Checkpointable):
    def __init__(self, module: str):
        self.module = module

    def __call__(self, run_dir: str) -> str:
        return str(importlib.import_module(self.module).slurm_run(run_dir))

    def __repr__(self) -> str:
        return f"ModuleJob({self.module!r})"
