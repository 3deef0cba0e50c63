"""`sdft`, the one console script: its declaration, its help, and that a subcommand is the
module it forwards to. Run as `python -m harness.cli`, which is what the script calls
(the installed `sdft` exists only after `pip install -e .`)."""
import importlib
import tomllib

import pytest

from factories import ROOT, SMOKE_GRID, run_module
from harness.cli import COMMANDS

SUBCOMMANDS = ["submit", "status", "cancel", "run", "logs", "schema", "tables", "convert", "bench"]


def test_the_console_script_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"sdft": "harness.cli:main"}
    module, function = project["scripts"]["sdft"].split(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_help_lists_the_subcommands():
    proc = run_module("harness.cli", "--help", check=True)
    listed = [line.split()[0] for line in proc.stdout.split("commands:\n", 1)[1].splitlines() if line.startswith("  ")]
    assert listed == SUBCOMMANDS
    assert list(COMMANDS) == SUBCOMMANDS


@pytest.mark.parametrize("name", [n for n in SUBCOMMANDS if COMMANDS[n][0]])
def test_each_subcommand_names_a_module_with_main(name):
    module = importlib.import_module(COMMANDS[name][0])
    assert callable(module.main)


def test_submit_dry_run_is_python_m_harness_submit(tmp_path):
    args = [str(SMOKE_GRID), "--dry-run", "--results", str(tmp_path / "results")]
    via_sdft = run_module("harness.cli", "submit", *args)
    direct = run_module("harness.submit", *args)
    assert via_sdft.returncode == direct.returncode == 0, via_sdft.stderr
    assert via_sdft.stdout == direct.stdout and via_sdft.stderr == direct.stderr
    assert '"grid": "smoke"' in via_sdft.stdout.splitlines()[-1]


def test_a_subcommands_bad_input_keeps_its_exit_code(tmp_path):
    proc = run_module("harness.cli", "status", str(tmp_path / "nothing"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'nothing'}: not a grid results folder (no runs/)"]


@pytest.mark.parametrize("argv,expected", [
    (["frob", "grid.yaml"], "unknown command 'frob'"),
    ([], "no command given"),
    (["--frob"], "unrecognized arguments: --frob"),
])
def test_a_bad_subcommand_is_one_line_and_exit_2(argv, expected):
    proc = run_module("harness.cli", *argv)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: sdft: ") and expected in lines[0], lines


def test_bench_forwards_to_run_all():
    proc = run_module("harness.cli", "bench", "--help", check=True)
    assert proc.stdout.startswith("usage: sdft bench") and "--only" in proc.stdout


LONG_NAME = "z" * 300


@pytest.mark.parametrize("argv,expected", [
    # an unknown option, or the missing positional argument argparse names first
    *[([name, "--frob"], f"error: python -m harness.{name}: ") for name in SUBCOMMANDS if name not in ("bench", "convert")],
    (["convert", "frob"], "argument KIND: invalid choice: 'frob'"),
    (["bench", "--frob"], "error: sdft bench: unrecognized arguments: --frob"),
    (["bench", "--only", "adm,frob"], "error: sdft bench: --only: no benchmark 'frob'"),
    (["status", ""], "argument grid_dir: an empty path"),
    (["cancel", f"results/{LONG_NAME}"], "argument grid: a file or folder name of 300 bytes; the limit is 255"),
    (["tables", f"results/{LONG_NAME}"], "argument results: a file or folder name of 300 bytes"),
    (["convert", "adm", "model.pt", f"out/{LONG_NAME}"], "argument out_dir: a file or folder name of 300 bytes"),
    (["submit", str(SMOKE_GRID), "--results", "/".join(["d" * 99] * 42)], "argument --results: a path of 4199 bytes"),
])
def test_every_subcommands_bad_argument_is_one_line_and_exit_2(argv, expected):
    """Not argparse's usage block, and no traceback from stat() on a path no file system takes."""
    proc = run_module("harness.cli", *argv)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
