"""The command line over a grid file: overrides (`finetune.lr=3e-4 'seeds=[0,1]'`), --print,
`sdft schema`, and submitting a part of a grid (--only, --runs)."""
import json
import re

import pytest
import yaml

from factories import SMOKE_GRID, run_module
from runs.config import load_grid
from runs.errors import UserError
from runs.grid import expand
from runs.params import PARAMS
from runs.store import Store
from harness.subset import select


# ---------------------------------------------------------------- overrides
def test_overrides_set_values_lists_nested_keys_and_missing_sections():
    grid = load_grid(SMOKE_GRID, ["finetune.lr=3e-4", "seeds=[0, 1]", "datasets.0.source.pretrain.steps=7",
                                  "selection.equal_budget=true", "finetune.lambda_aux={same_as: lambda_distill}",
                                  "finetune.lambda_distill=[0.5, 2]"])
    assert grid.finetune.lr == 3e-4 and grid.seeds == [0, 1]
    assert grid.datasets[0].source.pretrain.steps == 7 and grid.selection.equal_budget is True
    assert grid.finetune.lambda_distill == [0.5, 2.0] and grid.finetune.lambda_aux.same_as == "lambda_distill"
    plain = load_grid(SMOKE_GRID)
    assert plain.finetune.lr == 1e-3 and plain.seeds == [0]         # the file itself is as it was
    assert load_grid(SMOKE_GRID, ["seeds=[0]"]).canonical_json() == plain.canonical_json()


BAD_OVERRIDES = [
    ("finetune.lr=-1", "finetune.lr: Input should be greater than 0 (got -1) (from the override 'finetune.lr=-1')"),
    ("seeds=[0, -1]", "seeds[1]: Input should be greater than or equal to 0"),
    ("finetune.learning_rate=1", "finetune.learning_rate: unknown key (from the override"),
    ("methods=[dreambooth]", "methods[0]"),
    ("finetune.steps=true", "finetune.steps: expected a number, got true"),
    ("finetune", "override 'finetune': expected dotted.key=value"),
    ("=3", "expected dotted.key=value"),
    ("datasets.3.name=x", "override 'datasets.3.name=x': datasets is a list of 1; expected an index 0..0"),
    ("name.x=1", "override 'name.x=1': name is str 'smoke', not a mapping"),
    ("seeds=[0", "override 'seeds=[0': the value is not valid YAML"),
]


@pytest.mark.parametrize("override,expected", BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_a_bad_override_is_one_line_naming_the_field(override, expected):
    with pytest.raises(UserError) as err:
        load_grid(SMOKE_GRID, [override])
    assert "\n" not in str(err.value) and expected in str(err.value), str(err.value)


def test_a_bad_override_on_the_command_line_exits_2_and_writes_nothing(tmp_path):
    results = tmp_path / "results"
    proc = run_module("harness.cli", "submit", str(SMOKE_GRID), "finetune.lr=-1", "--results", str(results),
                      "--executor", "local")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and proc.stdout == "" and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {SMOKE_GRID}: finetune.lr: ") and "finetune.lr=-1" in lines[0]
    assert not results.exists()


def test_print_shows_the_resolved_grid_which_loads_back_as_the_same(tmp_path):
    proc = run_module("harness.submit", str(SMOKE_GRID), "finetune.lr=3e-4", "seeds=[0,1]",
                      "per_method.naive.lr=1e-4", "--print", check=True)
    assert proc.stdout.startswith(f"# {SMOKE_GRID} with the command-line overrides: finetune.lr=3e-4 seeds=[0,1]")
    shown = yaml.safe_load(proc.stdout)
    assert shown["finetune"]["lr"] == 3e-4 and shown["seeds"] == [0, 1]
    assert shown["evaluation"]["sampler"] == "ddim"              # a default the file leaves out, filled in
    assert shown["per_method"] == {"naive": {"lr": 1e-4}}          # only what the method overrides
    printed = tmp_path / "printed.yaml"
    printed.write_text(proc.stdout)
    expected = load_grid(SMOKE_GRID, ["finetune.lr=3e-4", "seeds=[0,1]", "per_method.naive.lr=1e-4"])
    assert load_grid(printed).canonical_json() == expected.canonical_json()


def test_the_grid_record_keeps_the_resolved_grid(tmp_path, monkeypatch):
    """A submission with overrides records the grid they made (grid.yaml loads as it, grid.json
    is its canonical form); no job runs here (the executor is a stand-in)."""
    import harness.submit as submit_module

    class Nothing:
        name = "none"

        def submit(self, stage, runs, folders, after):
            return {}

    monkeypatch.setattr(submit_module, "make_executor", lambda *args: Nothing())
    results = tmp_path / "results"
    submit_module.submit(SMOKE_GRID, results=results, overrides=["finetune.lr=3e-4", "seeds=[0,1]"])
    expected = load_grid(SMOKE_GRID, ["finetune.lr=3e-4", "seeds=[0,1]"])
    record = results / "smoke"
    assert json.loads((record / "grid.json").read_text()) == json.loads(expected.canonical_json())
    assert load_grid(record / "grid.yaml").canonical_json() == expected.canonical_json()
    assert "with the command-line overrides: finetune.lr=3e-4 seeds=[0,1]" in (record / "grid.yaml").read_text()
    assert len(Store(results).grid_runs("smoke")) == len(expand(expected, SMOKE_GRID.parent).runs)


# ---------------------------------------------------------------- sdft schema
def _as_written(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text                 # a word (`fp32`)


def test_schema_lists_every_setting_from_the_models():
    from runs.grid_reference import flat_rows

    rows = {row.field: row for row in flat_rows()}
    for p in PARAMS:
        for place in ("finetune", "per_method.<key>"):       # a mapping written in two places, listed under both
            row = rows[f"{place}.{p.name}"]
            shown = None if row.default == "unset" else _as_written(row.default.strip("`"))
            assert shown == p.default, p.name
            assert ("a list of them is an axis" in row.type) == p.axis, p.name
    assert rows["name"].default == rows["datasets"].default == rows["methods"].default == "required"
    assert (rows["cluster.timeout_min"].type, rows["cluster.timeout_min"].default) == ("whole number, > 1, ≤ 527040", "`240`")
    assert rows["cluster.evaluate.timeout_min"].default == "unset"
    assert (rows["datasets[].source[kind=builtin].resolution"].type,
            rows["datasets[].source[kind=builtin].resolution"].default) == ("one of `16`, `32`", "`32`")
    assert "held-out full target domain" in rows["datasets[].targets[][kind=folder].reference"].notes
    proc = run_module("harness.cli", "schema", "--format", "markdown", check=True)
    assert proc.stdout.startswith("| field") and "| `finetune.lr` " in proc.stdout
    assert "| `cluster.timeout_min` " in proc.stdout and "none in the official code" in proc.stdout
    plain = run_module("harness.cli", "schema", check=True).stdout
    assert "finetune.grad_clip" in plain and "`" not in plain


# ---------------------------------------------------------------- a part of the grid
@pytest.fixture(scope="module")
def smoke_plan():
    return expand(load_grid(SMOKE_GRID), base_dir=SMOKE_GRID.parent)


def test_only_selects_runs_with_what_they_need(smoke_plan):
    part = select(smoke_plan, ["method=sdft,stage=finetune"])
    assert [(r.stage, r.method) for r in part.runs] == [("pretrain", "pretrain"), ("finetune", "sdft")]
    evaluations = select(smoke_plan, ["method=sdft", "method=naive", "stage=evaluate"])
    assert sorted((r.stage, r.method) for r in evaluations.runs) == [
        ("evaluate", "naive"), ("evaluate", "sdft"), ("evaluate", "source"),
        ("finetune", "naive"), ("finetune", "sdft"), ("pretrain", "pretrain")]
    assert [r.method for r in select(smoke_plan, ["lambda_distill=1.0,stage=finetune"]).runs] == ["pretrain", "sdft"]
    assert select(smoke_plan) is smoke_plan


def test_runs_takes_a_prefix_of_an_id(smoke_plan):
    finetune = next(r for r in smoke_plan.runs if r.method == "naive" and r.stage == "finetune")
    assert {r.run_id for r in select(smoke_plan, run_ids=[finetune.run_id[:6]]).runs} == {
        finetune.run_id, *finetune.depends_on}


@pytest.mark.parametrize("only,runs,expected", [
    (["metod=sdft"], [], "--only metod=...: unknown key (one of stage, method,"),
    (["method=dreambooth"], [], "--only method=dreambooth: no run of grid smoke matches"),
    (["method"], [], "--only method: expected key=value"),
    (["method=["], [], "--only method=[: no run of grid smoke matches"),      # not YAML: was a traceback
    ([], ["zz"], "--runs zz: not a run of grid smoke"),
])
def test_a_bad_selection_is_one_line(smoke_plan, only, runs, expected):
    with pytest.raises(UserError, match="^" + re.escape(expected)):
        select(smoke_plan, only, runs)


def test_a_filtered_dry_run_counts_the_part_and_keeps_overrides_apart(tmp_path, smoke_plan):
    """An override after --runs is still an override (it has an `=`; run ids do not)."""
    proc = run_module("harness.cli", "submit", str(SMOKE_GRID), "--only", "method=naive,stage=finetune",
                      "--dry-run", "--results", str(tmp_path / "r"), "--runs", "finetune.lr=3e-4", check=True)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["runs"] == 2 and summary["grid_runs"] == 9
    naive = [r.run_id for r in select(expand(load_grid(SMOKE_GRID, ["finetune.lr=3e-4"])),
                                      ["method=naive,stage=finetune"]).runs if r.method == "naive"]
    before = [r.run_id for r in smoke_plan.runs if r.method == "naive" and r.stage == "finetune"]
    assert naive[0] in proc.stdout and before[0] not in proc.stdout
