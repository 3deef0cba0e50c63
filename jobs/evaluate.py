"""The evaluate stage: one model's samples, translations and metrics, on Ray.

    python -m jobs.evaluate RUN_DIR          # RUN_DIR/spec.json is an EvalSpec

The stage in its parts (jobs/evaluation/), down the path of the data:
  plan.py      what to make and measure: models, products, batches, the typed jobs (pure)
  sample.py    one batch from one model (DDIM / ancestral; SDEdit, EGSDE)
  worker.py    the Ray actor: loads models and inputs once, samples, measures
  measure.py   metric rows of images against typed references (no actor, no Ray)
  manifest.py  products/manifest.json: what each product is, for every later reader
  driver.py    Ray set-up, the actor pool, saving products, writing the metrics
This module is the command line and what Slurm calls (`slurm_run`, harness/slurm_job.py).
"""
from __future__ import annotations

import argparse
import sys

from runs.errors import exit_on_user_error
from runs.runtime import reexec_with_job_environment
from jobs.evaluation.driver import run, slurm_run

__all__ = ["main", "run", "slurm_run"]


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        reexec_with_job_environment(["-m", "jobs.evaluate", *sys.argv[1:]])
    parser = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="evaluation run folder holding spec.json")
    args = parser.parse_args(argv)
    from models.data import DatasetError

    with exit_on_user_error(DatasetError, FileNotFoundError):
        run(args.run_dir)


if __name__ == "__main__":
    main()
