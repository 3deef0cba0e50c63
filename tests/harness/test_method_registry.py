"""The registry of methods (runs/methods/) as the specs and grids see it."""
import json

import pytest
from pydantic import ValidationError

from factories import finetune_spec, smoke_grid, write_grid
from runs.config import load_grid
from runs.grid import expand
from runs.methods import ALL_PARAMS, METHODS
from runs.spec import RunSpec, identity_json

SOURCE = {"kind": "builtin-source", "resolution": 16}


def test_every_method_declares_a_cost_and_settings_of_its_own():
    assert list(METHODS)[:2] == ["scratch", "naive"] and list(METHODS)[-1] == "sdft"
    assert all(m.cost_at() >= 1.0 for m in METHODS.values() if m.starts_from_source)
    owners = {}
    for m in METHODS.values():
        for p in m.params:
            assert owners.setdefault(p.name, m.name) == m.name and ALL_PARAMS[p.name] is p


def test_distill_target_enters_the_id_only_when_not_eps():
    base = RunSpec.model_validate(finetune_spec("sdft"))
    same = RunSpec.model_validate(finetune_spec("sdft", distill={"lambda_distill": 1.0, "lambda_aux": 1.0,
                                                                 "distill_target": "eps"}))
    v = RunSpec.model_validate(finetune_spec("sdft", distill={"lambda_distill": 1.0, "lambda_aux": 1.0,
                                                              "distill_target": "v"}))
    assert same.run_id == base.run_id and "distill_target" not in identity_json(base)
    assert v.run_id != base.run_id and '"distill_target":"v"' in identity_json(v)
    with pytest.raises(ValidationError, match="distill_target"):
        RunSpec.model_validate(finetune_spec("sdft", distill={"distill_target": "score"}))


def test_a_method_block_belongs_to_its_method():
    with pytest.raises(ValidationError, match="l2sp block is required"):
        RunSpec.model_validate(finetune_spec("l2sp"))
    with pytest.raises(ValidationError, match="belongs to another method"):
        RunSpec.model_validate(finetune_spec("naive", l2sp={}))
    assert RunSpec.model_validate(finetune_spec("l2sp", l2sp={})).settings.lambda_l2sp == 0.01
    with pytest.raises(ValidationError, match="source_data is required for ewc"):
        RunSpec.model_validate(finetune_spec("ewc", ewc={}))
    with pytest.raises(ValidationError, match="naive reads no source_data"):
        RunSpec.model_validate(finetune_spec("naive", source_data=SOURCE))


def test_the_grid_sweeps_the_baselines_and_gives_ewc_the_source_data(tmp_path):
    grid = load_grid(write_grid(tmp_path, smoke_grid(methods=["naive", "l2sp", "ewc", "sdft"],
                                                     finetune__lambda_l2sp=[0.1, 1.0])))
    runs = expand(grid, tmp_path).by_stage("finetune")
    by = {m: [r.spec for r in runs if r.method == m] for m in ("naive", "l2sp", "ewc", "sdft")}
    assert sorted(s.l2sp.lambda_l2sp for s in by["l2sp"]) == [0.1, 1.0]
    assert [s.ewc.fisher_batches for s in by["ewc"]] == [50]
    assert by["ewc"][0].source_data.model_dump() == {"kind": "builtin-source", "resolution": 16, "seed": 0}
    assert all(s.source_data is None for m in ("naive", "l2sp", "sdft") for s in by[m])
    assert by["ewc"][0].init == by["naive"][0].init


def test_the_grid_sweeps_pairwise_and_labels_its_runs(tmp_path):
    """pairwise's weights are an axis; its runs carry their own block (empty at the
    defaults), its ids differ, and the status and table labels come from the registry."""
    import pandas as pd

    from runs.methods import run_label
    from runs.params import columns
    from report.tables import METHOD_ORDER, model_labels

    grid = load_grid(write_grid(tmp_path, smoke_grid(methods=["naive", "pairwise", "sdft"],
                                                     finetune__lambda_pair=[1.0, 4.0])))
    runs = [r for r in expand(grid, tmp_path).by_stage("finetune") if r.method == "pairwise"]
    specs = [json.loads(r.spec.model_dump_json()) for r in runs]
    assert sorted(s["pairwise"]["lambda_pair"] for s in specs) == [1.0, 4.0]
    assert len({r.run_id for r in runs}) == 2 and all(r.spec.init for r in runs)
    default = RunSpec.model_validate(finetune_spec("pairwise", pairwise={}))
    assert default.settings.pair_group == 3 and default.settings.lambda_hf_mse == 1.0
    # a setting at its default is not in the id: 4.0 is lambda_pair's
    assert sorted("lambda_pair" in identity_json(r.spec) for r in runs) == [False, True]
    # its loss was revised once: the revision is in its ids, so runs of the older loss are not
    # taken as done; a method never revised has none
    assert json.loads(identity_json(default))["method_revision"] == 1
    assert "method_revision" not in identity_json(RunSpec.model_validate(finetune_spec("naive")))
    assert run_label(specs[0]) == "pairwise"
    assert METHOD_ORDER["replay"] < METHOD_ORDER["pairwise"] < METHOD_ORDER["sdft"]
    rows = pd.DataFrame([{"method": "pairwise", "weighting": None, **columns(s)} for s in specs])
    assert sorted(model_labels(rows)) == ["pairwise λpair=1", "pairwise λpair=4"]
    with pytest.raises(ValidationError, match="pair_group"):
        RunSpec.model_validate(finetune_spec("pairwise", pairwise={"pair_group": 2}))
