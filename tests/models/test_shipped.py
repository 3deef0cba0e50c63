"""The weights the project ships: made by its own recipes, used only where they match."""
import json
import shutil

import pytest

from factories import ROOT
from models.shipped import ShippedWeightsError, find_shipped, provenances, verify

WEIGHTS = ROOT / "models" / "weights"


def test_shipped_feature_net_is_the_current_recipe():
    """A recipe change gives a new identity and leaves the shipped weights unused."""
    from models.evaluation_nets import FEATURE_RECIPE, _cache_path

    record = provenances()["featurenet"]
    assert record["identity"] == _cache_path("featurenet", FEATURE_RECIPE).stem, (
        f"regenerate with `{record['regenerate']}`")
    assert record["recipe"] == FEATURE_RECIPE
    assert find_shipped(record["identity"]) == WEIGHTS / "featurenet"


def test_a_changed_file_is_refused(tmp_path):
    copy = tmp_path / "featurenet"
    shutil.copytree(WEIGHTS / "featurenet", copy)
    verify(copy)
    with open(copy / "featurenet.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(ShippedWeightsError, match="sha256"):
        verify(copy)


def test_shipped_weights_can_be_turned_off(monkeypatch):
    identity = provenances()["featurenet"]["identity"]
    monkeypatch.setenv("SDFT_SHIPPED_WEIGHTS", "0")
    assert find_shipped(identity) is None
# ---------------------------------------------------------------- the demo's source model
SOURCE = "fmnist16-source"


def demo_pretrain():
    from runs.config import load_grid
    from runs.grid import expand

    (pretrain,) = expand(load_grid(ROOT / "grids" / "demo.yaml"), ROOT / "grids").by_stage("pretrain")
    return pretrain.spec


def test_shipped_source_is_the_current_demo_pretraining():
    """A recipe change (a new default, a new recipe version) changes the run id and leaves
    the shipped weights unused until they are made again with the command they record."""
    record = provenances()[SOURCE]
    spec = demo_pretrain()
    assert record["identity"] == spec.run_id, (
        f"models/weights/{SOURCE} was made by run {record['identity']}, the demo now pretrains "
        f"{spec.run_id}: regenerate with `{record['regenerate']}`")
    # the recorded spec, read by today's schema (settings added since, outside the run id,
    # take their defaults), is the demo's pretraining
    assert type(spec).model_validate(record["spec"]) == spec
    assert find_shipped(spec.run_id) == WEIGHTS / SOURCE


def test_pretraining_adopts_the_shipped_weights(tmp_path):
    from factories import run_module, write_spec

    spec = json.loads(demo_pretrain().model_dump_json())
    run_dir = write_spec(tmp_path / "_runs" / "source", spec)
    run_module("jobs.train", str(run_dir), check=True, timeout=300)
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "done" and state["weights"].startswith("shipped")
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        assert (run_dir / "model" / name).read_bytes() == (WEIGHTS / SOURCE / name).read_bytes()


def test_every_rank_of_a_pretraining_ends_at_the_shipped_weights(tmp_path):
    """Rank 1 of two finds the weights too and ends, writing nothing (rank 0 copies them).
    Before, it went on into training and waited in the rendezvous for a rank 0 that had
    ended: a Slurm job of two tasks hung until its time limit."""
    import socket
    import subprocess

    from factories import run_module, write_spec

    run_dir = write_spec(tmp_path / "_runs" / "source", json.loads(demo_pretrain().model_dump_json()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    try:
        proc = run_module("jobs.train", str(run_dir), env=env, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("rank 1 waited for a training that rank 0 never starts") from None
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (run_dir / "model").exists() and not (run_dir / "state.json").exists()
