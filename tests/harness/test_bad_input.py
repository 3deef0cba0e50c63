"""Bad input gets one line naming the field or file, exit code 2, and nothing under the
results folder is created or changed (issue 14).

Each grid in tests/data/bad-grids/ says in its `# expect:` comments what the message must
name, and in `# why:` what went wrong before. The table runs in-process through
harness.submit.submit (the plain submit, not a dry run: the folder scans happen only
there); a few cases also run as `python -m harness.submit` for the exit-code path.
"""
import json

import pytest

from factories import ROOT, SMOKE_GRID, run_module
from runs.errors import UserError
from runs.store import Store
from harness.submit import submit

BAD_GRIDS = ROOT / "tests" / "data" / "bad-grids"
CASES = sorted(BAD_GRIDS.glob("*.yaml"))
END_TO_END = ["partition-newline", "same-as-not-sweepable", "model-weights-truncated", "named-readme"]


def expected(grid) -> list[str]:
    return [line.removeprefix("# expect:").strip() for line in grid.read_text().splitlines()
            if line.startswith("# expect:")]


def snapshot(root) -> dict:
    """Every path under the results root with its content and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def results(tmp_path):
    """A results root as the repository ships it: a README and an earlier grid's run."""
    root = tmp_path / "results"
    (root / "_runs" / "abc123").mkdir(parents=True)
    (root / "_runs" / "abc123" / "state.json").write_text(json.dumps({"status": "done"}))
    (root / "README.md").write_text("Output root of sdft-bench.\n")
    return root


@pytest.fixture
def nothing_submitted(monkeypatch):
    """A grid that slips through fails the test at once instead of training."""
    def refuse(*args, **kwargs):
        raise AssertionError("the grid was accepted and would have been written")
    monkeypatch.setattr(Store, "write_grid", refuse)


def test_every_bad_grid_says_what_it_expects():
    assert len(CASES) >= 30
    for grid in CASES:
        assert expected(grid), f"{grid.name}: no '# expect:' comment"


@pytest.mark.parametrize("grid", CASES, ids=[p.stem for p in CASES])
def test_bad_grid_is_one_line_and_writes_nothing(grid, results, nothing_submitted):
    before = snapshot(results)
    with pytest.raises(UserError) as err:
        submit(grid, results=results, executor="local")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{grid}: "), message
    for part in expected(grid):
        assert part in message, message
    assert snapshot(results) == before


@pytest.mark.parametrize("name", END_TO_END)
def test_cli_exits_2_with_one_line(name, results):
    grid = BAD_GRIDS / f"{name}.yaml"
    before = snapshot(results)
    proc = run_module("harness.submit", str(grid), "--results", str(results), "--executor", "local",
                      timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(part in lines[0] for part in expected(grid)), lines[0]
    assert proc.stdout == "" and snapshot(results) == before


# ---------------------------------------------------------------- what a grid file cannot say
def test_a_binary_grid_file(tmp_path, results, nothing_submitted):
    grid = tmp_path / "grid.yaml"
    grid.write_bytes(bytes(range(256)) * 4)
    proc = run_module("harness.submit", str(grid), "--results", str(results), "--dry-run")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"{grid}: not a text file" in proc.stderr
    grid.write_bytes(b"name: a\x00\x01\n")                    # valid UTF-8, but no YAML text
    with pytest.raises(UserError, match=r"grid\.yaml: not a text file"):
        submit(grid, results=results, dry_run=True)


def test_a_grid_path_that_is_a_folder(tmp_path, results):
    proc = run_module("harness.submit", str(tmp_path), "--results", str(results), "--dry-run")
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {tmp_path}: a folder, not a grid file"


def test_results_that_is_a_file(tmp_path):
    results = tmp_path / "results.txt"
    results.write_text("not a folder")
    grid = SMOKE_GRID
    proc = run_module("harness.submit", str(grid), "--results", str(results), "--dry-run")
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {results}: --results: not a folder"
    assert results.read_text() == "not a folder"


def test_a_grid_name_taken_by_a_folder_that_is_not_a_grid(tmp_path, results, nothing_submitted):
    (results / "smoke").mkdir()
    (results / "smoke" / "notes.txt").write_text("mine")
    grid = SMOKE_GRID
    before = snapshot(results)
    with pytest.raises(UserError, match=r"smoke\.yaml: name: .*smoke is a folder that is not a grid's"):
        submit(grid, results=results, dry_run=True)
    assert snapshot(results) == before


def test_folder_problems_are_warnings_in_a_dry_run(tmp_path, results):
    """A dry run shows the plan even where the data is not on this machine or is broken."""
    text = SMOKE_GRID.read_text().replace(
        "pretrain: {steps: 30, network: tiny, batch_size: 16, lr: 1.0e-3, checkpoint_every: 30}",
        f"model: {BAD_GRIDS / 'folders' / 'model-truncated'}").replace("[scratch, naive, sdft]", "[naive, sdft]")
    grid = tmp_path / "grid.yaml"
    grid.write_text(text)
    before = snapshot(results)
    proc = run_module("harness.submit", str(grid), "--results", str(results), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("warning: ") and "datasets[0].source.model" in proc.stderr
    assert "truncated" in proc.stderr and proc.stderr.count("\n") == 1
    assert json.loads(proc.stdout.strip().splitlines()[-1])["submitted"] == 0
    assert snapshot(results) == before


def test_fp16_training_on_a_machine_without_a_gpu(tmp_path, results, nothing_submitted, monkeypatch):
    """The training job refuses fp16 on CPU; a local submission refuses it before any run
    (its pretraining included) has started."""
    import harness.submit

    monkeypatch.setattr(harness.submit, "GPU_DEVICE_NODES", (str(tmp_path / "no-such-device"),))
    before = snapshot(results)
    with pytest.raises(UserError, match="finetune precision fp16 needs a GPU and this machine has none"):
        submit(SMOKE_GRID, results=results, executor="local", overrides=["finetune.precision=fp16"])
    # the submission lock's empty file is all it leaves (the refusal needs triage, under the lock)
    after = snapshot(results)
    assert after.pop("_runs/.submit.lock")[1] == b""
    assert {k: v for k, v in after.items() if k != "_runs"} == {k: v for k, v in before.items() if k != "_runs"}
    submit(SMOKE_GRID, results=results, executor="local", overrides=["finetune.precision=fp16"], dry_run=True)
