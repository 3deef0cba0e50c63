"""What a person runs: read a grid and its overrides, check the inputs, submit the runs stage by
stage (Slurm through submitit, or this machine), and cancel, follow and tabulate them.

A job is named by its module (`ModuleJob("jobs.train")`, harness/slurm_job.py) and never
imported, so this package imports no torch and the command line answers at once on a login
node. What a run is and where it lives: runs/; the tables: report/ (docs/architecture.md).
"""
