"""Resources per stage (ClusterConfig: defaults, then `train`, `evaluate`, `aggregate`
blocks), read off the sbatch script submitit would write for each stage's job array:
no Slurm is needed to see what each job asks for."""
from pathlib import Path

import pytest

from runs.cluster import ClusterConfig
from runs.config import GridConfig
from harness.executors import SlurmExecutor
from factories import smoke_grid

CLUSTER = {"partition": "cpu", "gpus_per_node": 4, "tasks_per_node": 4, "cpus_per_task": 8, "mem_gb": 64,
           "timeout_min": 600, "nodes": 2,
           "evaluate": {"nodes": 1, "gpus_per_node": 1, "tasks_per_node": 1, "partition": "gpu-short",
                        "timeout_min": 120},
           "aggregate": {"mem_gb": 16, "timeout_min": 30}}


def sbatch_header(cluster: ClusterConfig, stage: str, monkeypatch) -> set[str]:
    import submitit
    from submitit.slurm.slurm import SlurmExecutor as SubmititSlurm

    monkeypatch.setattr(SubmititSlurm, "affinity", classmethod(lambda cls: 1))   # no srun here
    executor = submitit.AutoExecutor(folder="/tmp/unused/%j", cluster="slurm")
    executor.update_parameters(**SlurmExecutor(cluster, Path("/tmp/unused"), "g").parameters(stage, []))
    script = executor._executor._make_submission_file_text("python -m jobs.x", "uid")
    return {line for line in script.split("# setup")[0].splitlines() if line.startswith("#SBATCH")}


def test_each_stage_asks_for_its_own_resources(monkeypatch):
    cluster = GridConfig.model_validate(smoke_grid(cluster=CLUSTER)).cluster
    train = sbatch_header(cluster, "finetune", monkeypatch)
    assert {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
            "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64GB", "#SBATCH --time=600",
            "#SBATCH --partition=cpu"} <= train
    named = lambda header: {line for line in header if not line.startswith("#SBATCH --job-name")}  # noqa: E731
    assert named(sbatch_header(cluster, "pretrain", monkeypatch)) == named(train)
    evaluate = sbatch_header(cluster, "evaluate", monkeypatch)
    assert {"#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=1",
            "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64GB", "#SBATCH --time=120",
            "#SBATCH --partition=gpu-short"} <= evaluate
    aggregate = sbatch_header(cluster, "aggregate", monkeypatch)
    assert {"#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --mem=16GB",
            "#SBATCH --time=30", "#SBATCH --partition=cpu"} <= aggregate
    assert not any(line.startswith("#SBATCH --gpus") for line in aggregate)


def test_without_stage_blocks_the_jobs_ask_for_what_they_did_before():
    cluster = ClusterConfig(gpus_per_node=2, tasks_per_node=2)
    executor = SlurmExecutor(cluster, Path("/tmp/unused"), "g")
    finetune, evaluate, aggregate = (executor.parameters(s, []) for s in ("finetune", "evaluate", "aggregate"))
    assert (finetune["nodes"], finetune["tasks_per_node"], finetune["gpus_per_node"]) == (1, 2, 2)
    assert (evaluate["nodes"], evaluate["tasks_per_node"], evaluate["gpus_per_node"]) == (1, 2, 2)
    assert (aggregate["nodes"], aggregate["tasks_per_node"], "gpus_per_node" in aggregate) == (1, 1, False)
    assert finetune["timeout_min"] == evaluate["timeout_min"] == aggregate["timeout_min"] == 240


@pytest.mark.parametrize("block, field, message", [
    ({"aggregate": {"nodes": 2}}, "cluster.aggregate.nodes", "one node"),
    ({"train": {"gpus": 1}}, "cluster.train.gpus", "unknown key"),
    ({"evaluate": {"partition": "a b"}}, "cluster.evaluate.partition", "Slurm names"),
    ({"train": {"timeout_min": 1}}, "cluster.train.timeout_min", "greater than 1"),
])
def test_a_bad_stage_block_names_its_field(tmp_path, block, field, message):
    from factories import write_grid
    from runs.config import load_grid
    from runs.errors import UserError

    with pytest.raises(UserError) as err:
        load_grid(write_grid(tmp_path, smoke_grid(cluster=block)))
    assert f": {field}: " in str(err.value) and message in str(err.value), str(err.value)
