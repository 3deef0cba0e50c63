"""The weights the project ships: made by its own recipes, used only where they match."""
import json
import shutil

import pytest

from factories import ROOT, run_module, write_spec
from harness.config import load_grid
from harness.grid import expand
from models.shipped import ShippedWeightsError, find_shipped, provenances, verify

SOURCE = "fmnist16-source"


def demo_pretrain():
    plan = expand(load_grid(ROOT / "grids" / "demo.yaml"), ROOT / "grids")
    (pretrain,) = plan.by_stage("pretrain")
    return pretrain.spec


def test_shipped_source_is_the_current_demo_pretraining():
    """A recipe change (a new default, a new recipe version) changes the run id and must
    leave the shipped weights unused: they are re-made with the command they record."""
    record = provenances()[SOURCE]
    spec = demo_pretrain()
    assert record["identity"] == spec.run_id, (
        f"models/weights/{SOURCE} was made by run {record['identity']}, the demo now pretrains "
        f"{spec.run_id}: regenerate with `{record['regenerate']}`")
    assert record["spec"] == json.loads(spec.model_dump_json())
    assert find_shipped(spec.run_id) == ROOT / "models" / "weights" / SOURCE


def test_shipped_feature_net_is_the_current_recipe():
    from jobs.classifier import FEATURE_RECIPE, _cache_path

    assert provenances()["featurenet"]["identity"] == _cache_path("featurenet", FEATURE_RECIPE).stem
    assert provenances()["featurenet"]["recipe"] == FEATURE_RECIPE


def test_a_changed_file_is_refused(tmp_path):
    copy = tmp_path / SOURCE
    shutil.copytree(ROOT / "models" / "weights" / SOURCE, copy)
    verify(copy)
    with open(copy / "diffusion_pytorch_model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(ShippedWeightsError, match="sha256"):
        verify(copy)


def test_pretraining_adopts_the_shipped_weights_unless_told_not_to(tmp_path, monkeypatch):
    spec = json.loads(demo_pretrain().model_dump_json())
    run_dir = write_spec(tmp_path / "_runs" / "source", spec)
    run_module("jobs.train", str(run_dir), check=True, timeout=120)
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "done" and state["weights"].startswith("shipped")
    shipped = ROOT / "models" / "weights" / SOURCE
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        assert (run_dir / "model" / name).read_bytes() == (shipped / name).read_bytes()

    monkeypatch.setenv("SDFT_SHIPPED_WEIGHTS", "0")
    assert find_shipped(demo_pretrain().run_id) is None
