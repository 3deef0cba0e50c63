"""What could run code: the settings written into the sbatch script, and torch.load."""
import ast
from pathlib import Path

import pytest

from factories import ROOT, run_module, smoke_grid, write_grid
from runs.cluster import ClusterConfig
from runs.config import load_grid
from runs.errors import UserError


def grid_with_cluster(tmp_path, cluster: dict) -> Path:
    return write_grid(tmp_path, smoke_grid(cluster=cluster))


# ---------------------------------------------------------------- the sbatch script
def test_a_partition_with_a_newline_is_refused_in_one_line(tmp_path):
    path = grid_with_cluster(tmp_path, {"partition": "gpu\ntouch pwned #"})
    proc = run_module("harness.submit", str(path), "--results", str(tmp_path / "results"), "--dry-run")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {path}: cluster.partition: expected comma-separated Slurm names")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("cluster,field", [
    ({"partition": "gpu,"}, "cluster.partition"),
    ({"partition": "-p gpu"}, "cluster.partition"),
    ({"account": "lab\tx"}, "cluster.account"),
    ({"qos": "high\x00"}, "cluster.qos"),
    ({"additional": {"chdir": "/"}}, "cluster.additional.chdir"),
    ({"additional": {"signal": "KILL@1"}}, "cluster.additional.signal"),   # submitit requeues on USR2
    ({"additional": {"constraint": "a100\rb"}}, "cluster.additional.constraint"),
    ({"additional": {"exclusive": False}}, "cluster.additional.exclusive"),
    ({"additional": {"gres": ["gpu:1"]}}, "cluster.additional.gres"),
    ({"additional": {"nice": float("inf")}}, "cluster.additional.nice"),
])
def test_cluster_settings_that_reach_the_script_are_checked(tmp_path, cluster, field):
    with pytest.raises(UserError) as err:
        load_grid(grid_with_cluster(tmp_path, cluster))
    assert f": {field}: " in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_allowed_settings_each_make_one_quoted_sbatch_line(monkeypatch):
    """Shell characters are fine in a value: submitit quotes it, and without a newline it
    stays inside its own `#SBATCH` line."""
    import submitit
    from submitit.slurm.slurm import SlurmExecutor as SubmititSlurm

    from harness.executors import SlurmExecutor

    monkeypatch.setattr(SubmititSlurm, "affinity", classmethod(lambda cls: 1))   # no srun here
    cluster = ClusterConfig(partition="gpu,long", account="lab-1", qos="normal",
                            additional={"comment": "a; touch pwned $(id) `id` 'x'", "exclusive": True,
                                        "mail-type": "END", "nice": 10})
    executor = submitit.AutoExecutor(folder="/tmp/unused/%j", cluster="slurm")
    executor.update_parameters(**SlurmExecutor(cluster, Path("/tmp/unused"), "g").parameters("finetune", ["7"]))
    script = executor._executor._make_submission_file_text("python -m jobs.train", "uid")
    header = script.split("# setup")[0].splitlines()[1:]
    assert all(line.startswith("#SBATCH --") or line in ("", "# Parameters") for line in header), header
    assert "#SBATCH --comment='a; touch pwned $(id) `id` '\"'\"'x'\"'\"''" in header
    assert {"#SBATCH --partition=gpu,long", "#SBATCH --account=lab-1", "#SBATCH --qos=normal",
            "#SBATCH --exclusive", "#SBATCH --mail-type=END", "#SBATCH --nice=10"} <= set(header)


# ---------------------------------------------------------------- torch.load
def unsafe_torch_loads(source: str) -> list[int]:
    """Lines of torch.load calls that do not pass weights_only=True (a pickle may run code)."""
    tree = ast.parse(source)
    names = {"torch.load"} | {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                              and node.module == "torch" for a in node.names if a.name == "load"}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in names:
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in node.keywords)
            if not safe:
                lines.append(node.lineno)
    return lines


def test_the_check_finds_unsafe_loads():
    assert unsafe_torch_loads("import torch\ntorch.load(p)\ntorch.load(p, weights_only=False)\n") == [2, 3]
    assert unsafe_torch_loads("from torch import load as l\nl(p, map_location='cpu')\n") == [2]
    assert unsafe_torch_loads("import torch\ntorch.load(p, weights_only=True)\nnp.load(p)\n") == []


def test_every_torch_load_passes_weights_only_true():
    skip = {".venv", ".git", "results", "build", ".cache", "node_modules"}
    files = [p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)]
    assert len(files) > 40
    unsafe = [f"{p.relative_to(ROOT)}:{line}" for p in files for line in unsafe_torch_loads(p.read_text())]
    assert unsafe == []
