"""A method kept outside the package: this module is one (docs/methods.md's example).

Named in $SDFT_METHODS (with this folder on PYTHONPATH), it is registered beside the
package's methods in every process that reads the registry: the submission, the jobs and
the aggregate. The tests check that a grid takes it, sweeps its setting, leaves the other
methods' run ids alone, trains and evaluates it, and shows it in the tables.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from factories import ROOT, from_a_model_folder, in_fresh_process, run_module, smoke_grid, write_grid
from runs.methods import Method
from runs.numbers import Whole
from runs.params import Param

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------
# The method: naive fine-tuning that trains on the low-noise timesteps t < max_t only.

class LowNoiseLoss:
    def __init__(self, *, max_t: int, schedule=None):
        from models.loss import DiffusionLoss

        self.base, self.max_t = DiffusionLoss(schedule), max_t

    def __call__(self, student, images, teacher=None, generator=None):
        import torch

        t = torch.randint(0, self.max_t, (images.shape[0],), generator=generator, device=images.device)
        noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        return self.base.terms(student, images, t, noise)


METHOD = Method(
    name="lownoise", loss=LowNoiseLoss,
    params=(Param("max_t", Whole(gt=0, le=1000), "whole number", 1000, "max t", "method"),))


# ----------------------------------------------------------------------------
# The tests.

def plugin_env() -> dict[str, str]:
    return {"SDFT_METHODS": Path(__file__).stem,
            "PYTHONPATH": f"{HERE}:{HERE.parent}:{ROOT}"}


def test_a_grid_takes_a_method_from_outside_the_package(tmp_path):
    """Its setting is an axis, its runs carry its own block, and naive keeps its run id."""
    grid = write_grid(tmp_path, smoke_grid(methods=["naive", "lownoise"], finetune__max_t=[100, 500]))
    code = f"""
        import json
        from runs.config import load_grid
        from runs.grid import expand
        from runs.methods import METHODS
        plan = expand(load_grid({str(grid)!r}))
        runs = plan.by_stage("finetune")
        print(json.dumps({{"names": list(METHODS), "naive": [r.run_id for r in runs if r.method == "naive"],
                          "blocks": [r.spec.model_dump(mode="json").get("lownoise") for r in runs
                                     if r.method == "lownoise"]}}))
    """
    found = json.loads(in_fresh_process(code, env=plugin_env()))
    assert found["names"][-1] == "lownoise" and {"scratch", "naive", "sdft"} < set(found["names"])
    assert found["blocks"] == [{"max_t": 100}, {"max_t": 500}]
    # the grid without the plugin: naive's run is the very same run
    base = write_grid(tmp_path, smoke_grid(methods=["naive"]), "base.yaml")
    naive_alone = in_fresh_process(f"""
        from runs.config import load_grid
        from runs.grid import expand
        print(expand(load_grid({str(base)!r})).by_stage("finetune")[0].run_id)
    """)
    assert found["naive"] == [naive_alone]


def test_an_unknown_method_is_one_line_naming_the_field(tmp_path):
    proc = run_module("harness.submit", str(write_grid(tmp_path, smoke_grid(methods=["lownoise"]))),
                      "--dry-run", "--results", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "methods[0]" in proc.stderr and "'lownoise'" in proc.stderr


@pytest.mark.slow
def test_a_method_from_outside_runs_through_a_grid_into_the_tables(tmp_path, ray_env):
    """Fine-tune with the plugin, evaluate, aggregate: the tables show it with its setting.
    64 s measured on the 2-core machine while other jobs ran, with a pretraining; now four
    jobs: 3 fine-tuning steps from a saved tiny source model, two evaluations of 8 samples on
    a shared Ray, the aggregate."""
    small_eval = {"num_samples": 8, "batch_size": 8, "tasks": ["unconditional"], "ddim_steps": 4,
                  "kid_subset_size": 8, "kid_subsets": 2, "max_reference": 64}
    grid = write_grid(tmp_path, smoke_grid(name="plugin", methods=["lownoise"], finetune__steps=3,
                                           finetune__max_t=200, evaluation=small_eval,
                                           **from_a_model_folder(tmp_path)))
    results = tmp_path / "results"
    proc = run_module("harness.submit", str(grid), "--results", str(results), "--executor", "local",
                      env={**ray_env, **plugin_env()})
    assert proc.returncode == 0, proc.stderr[-3000:]
    import pandas as pd

    metrics = pd.read_parquet(results / "plugin" / "metrics.parquet")
    ours = metrics[metrics["method"] == "lownoise"]
    assert len(ours) and set(ours["p_max_t"]) == {200}
    # each row carries its model's training cost: 3 steps of 16 images at the declared cost 1,
    # and the seconds the training job measured
    assert set(ours["compute_kimg"]) == {3 * 16 / 1000} and (ours["train_s"] > 0).all()
    tables = run_module("harness.tables", str(results / "plugin"), env=plugin_env())
    assert tables.returncode == 0 and "lownoise" in tables.stdout and "compute (naive kimg)" in tables.stdout
    assert "lownoise" in (results / "plugin" / "report.md").read_text()
    status = run_module("harness.status", str(results / "plugin"), env=plugin_env())
    assert "lownoise" in status.stdout
