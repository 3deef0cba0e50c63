"""`adapter: lora` in a grid and a run spec (runs/adapters.py): an axis like any setting,
in the run id only when on, refused where there is no source to adapt."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from factories import finetune_spec, pretrain_spec, smoke_grid, write_grid
from runs.config import load_grid
from runs.errors import UserError
from runs.grid import expand
from runs.params import columns
from runs.spec import RunSpec


def finetunes(tmp_path, **changes):
    return expand(load_grid(write_grid(tmp_path, smoke_grid(**changes)))).by_stage("finetune")


def test_the_adapter_is_an_axis_and_in_the_run_id_only_when_on(tmp_path):
    plain = finetunes(tmp_path, methods=["scratch", "naive"])
    swept = finetunes(tmp_path, methods=["scratch", "naive"], finetune__adapter=["none", "lora"],
                      finetune__lora_rank=4)
    by_method = {m: [r for r in swept if r.method == m] for m in ("scratch", "naive")}
    # scratch has no source to adapt: one run, as without the axis
    assert [r.run_id for r in by_method["scratch"]] == [r.run_id for r in plain if r.method == "scratch"]
    full, lora = by_method["naive"]
    assert full.run_id == next(r.run_id for r in plain if r.method == "naive") and full.spec.adapter is None
    assert lora.spec.adapter.model_dump() == {"kind": "lora", "rank": 4, "alpha": 8.0,
                                              "targets": "to_q,to_k,to_v,to_out.0,conv1,conv2"}
    spec = lora.spec.model_dump(mode="json")
    assert columns(spec)["p_adapter"] == "lora" and columns(spec)["p_lora_rank"] == 4
    assert "p_adapter" not in columns(full.spec.model_dump(mode="json"))


def test_an_adapter_needs_a_source_model():
    with pytest.raises(ValidationError, match="adapter"):
        RunSpec.model_validate(pretrain_spec(adapter={"kind": "lora"}))
    with pytest.raises(ValidationError, match="an adapter needs a source model"):
        RunSpec.model_validate(finetune_spec("scratch", adapter={"kind": "lora"}))


@pytest.mark.parametrize("targets", ["", "to_q,,conv1", "to_q;rm -rf", "to_q,to_q"])
def test_bad_targets_are_one_line_naming_the_field(tmp_path, targets):
    with pytest.raises(UserError, match=r"finetune\.lora_targets") as err:
        load_grid(write_grid(tmp_path, smoke_grid(finetune__adapter="lora", finetune__lora_targets=targets)))
    assert "\n" not in str(err.value)
