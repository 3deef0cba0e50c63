"""The grid's `cluster:` block: Slurm resources, defaults for every stage and a block of
overrides per stage, and the sbatch options passed through. Everything here reaches an
`#SBATCH` line, so names are Slurm's characters only and no value may hold a newline."""
from __future__ import annotations

import math
import re
from typing import Any

from pydantic import create_model, field_validator

from runs.numbers import Real, Whole
from runs.strict import AtField, Strict

# Characters Slurm's own names use; anything else (a newline above all: submitit writes each
# setting as one `#SBATCH` line, so a newline would start a shell command) is refused.
SLURM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
# sbatch long options (submitit spelling) that `additional` may set. Left out on purpose:
# what the harness sets itself (output, error, job name, array, dependency, time, nodes,
# tasks, cpus, memory, partition, account, qos) and what runs or moves things outside the
# job (wrap, chdir, export, burst buffers, container), and signal, which submitit needs for
# requeueing (USR2).
SBATCH_OPTIONS = frozenset("""
    acctg_freq begin cluster_constraint clusters comment constraint contiguous core_spec
    cores_per_socket cpu_freq cpus_per_gpu deadline delay_boot distribution exclude exclusive
    extra gpu_bind gpu_freq gpus gpus_per_socket gpus_per_task gres gres_flags hint
    kill_on_invalid_dep licenses mail_type mail_user mcs_label mem_bind mem_per_cpu mem_per_gpu
    mincpus network nice no_kill no_requeue nodelist ntasks_per_core ntasks_per_gpu
    ntasks_per_socket oversubscribe power prefer priority profile requeue reservation
    sockets_per_node spread_job switches thread_spec threads_per_core time_min tmp
    use_min_nodes wckey
""".split())


def _slurm_names(value: str | None, several: bool) -> str | None:
    if value is None:
        return None
    names = value.split(",") if several else [value]
    if not all(SLURM_NAME.fullmatch(n) for n in names):
        kind = "comma-separated Slurm names" if several else "a Slurm name"
        raise ValueError(f"expected {kind} (letters, digits, '_', '.', '-'), got {value!r}")
    return value


# The resources a stage's jobs may set apart from the cluster's defaults (benchopt's
# per-solver Slurm parameters): the types, declared once for both.
RESOURCES = {
    "partition": str | None,              # several, comma-separated, as sbatch takes them
    "nodes": Whole(gt=0, le=1024),        # > 1: training spans nodes (torch.distributed from
                                          # Slurm's variables), evaluation's Ray spans them
    "gpus_per_node": Whole(ge=0, le=64),
    "tasks_per_node": Whole(gt=0, le=1024),
    "cpus_per_task": Whole(gt=0, le=1024),
    "mem_gb": Real(gt=0, le=65536),
    "timeout_min": Whole(gt=1, le=366 * 24 * 60),
}
# which block of `cluster:` each stage's jobs take their overrides from
STAGE_RESOURCES = {"pretrain": "train", "finetune": "train", "evaluate": "evaluate", "aggregate": "aggregate"}


class _StageChecks(Strict):
    _partition = field_validator("partition", check_fields=False)(
        lambda cls, v: _slurm_names(v, several=True))


# One stage's overrides: a field left out keeps the cluster's default.
StageResources = create_model("StageResources", __base__=_StageChecks,
                              **{name: (kind | None, None) for name, kind in RESOURCES.items()})


class ClusterConfig(Strict):
    """Slurm resources: defaults for every stage, and `train`, `evaluate`, `aggregate` blocks
    that override them for that stage's jobs (evaluation can ask for GPUs of its own, the
    aggregate needs none: it gets no GPU and one node and task unless its block says so).
    `additional` passes other sbatch options (SBATCH_OPTIONS) through."""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: RESOURCES["nodes"] = 1
    gpus_per_node: RESOURCES["gpus_per_node"] = 0
    tasks_per_node: RESOURCES["tasks_per_node"] = 1
    cpus_per_task: RESOURCES["cpus_per_task"] = 2
    mem_gb: RESOURCES["mem_gb"] = 8
    timeout_min: RESOURCES["timeout_min"] = 240
    array_parallelism: Whole(gt=0, le=100_000) = 64
    max_num_timeout: Whole(ge=1, le=1000) = 10
    additional: dict[str, Any] = {}
    train: StageResources = StageResources()
    evaluate: StageResources = StageResources()
    aggregate: StageResources = StageResources()

    _partition = field_validator("partition")(lambda cls, v: _slurm_names(v, several=True))
    _single = field_validator("account", "qos")(lambda cls, v: _slurm_names(v, several=False))

    @field_validator("aggregate")
    @classmethod
    def _aggregate_on_one_node(cls, value):
        if value.nodes not in (None, 1):
            raise AtField(("nodes",), "the aggregate runs on one node (tables and plots)")
        return value

    def resources(self, stage: str) -> dict[str, Any]:
        """The resources of one stage's jobs: the defaults, then its block's overrides."""
        block = STAGE_RESOURCES[stage]
        out = {name: getattr(self, name) for name in RESOURCES}
        if block == "aggregate":          # tables and plots: no GPU, one task on one node
            out.update(nodes=1, gpus_per_node=0, tasks_per_node=1)
        out.update({k: v for k, v in getattr(self, block).model_dump().items() if v is not None})
        return out

    @field_validator("additional")
    @classmethod
    def _sbatch_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, option in value.items():
            if key.replace("-", "_") not in SBATCH_OPTIONS:
                raise AtField((key,), "not an sbatch option that may be passed through (the allowed ones "
                                      "are SBATCH_OPTIONS in runs/cluster.py)")
            if option is False:
                raise AtField((key,), "false: leave the option out instead")
            if isinstance(option, str):
                if CONTROL_CHARACTERS.search(option) or len(option) > 1000:
                    raise AtField((key,), f"expected one line of text without control characters, got {option!r}")
            elif isinstance(option, float):
                if not math.isfinite(option):
                    raise AtField((key,), f"expected a finite number, got {option!r}")
            elif not isinstance(option, int):       # True (a flag) and whole numbers pass
                raise AtField((key,), f"expected text, a number or true, got {option!r}")
        return value
