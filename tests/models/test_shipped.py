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
