"""sdft: one console script for the harness's commands, as dora and benchopt have one.

    sdft submit GRID.yaml [...]       python -m harness.submit GRID.yaml [...]
    sdft status results/GRID          python -m harness.status results/GRID
    sdft cancel results/GRID [...]    python -m harness.cancel results/GRID [...]
    sdft run RUN_ID                   python -m harness.run RUN_ID
    sdft logs RUN_ID [-f]             python -m harness.logs RUN_ID [-f]
    sdft schema                       python -m harness.schema
    sdft tables results/GRID [...]    python -m harness.tables results/GRID [...]
    sdft convert adm CKPT OUT [...]   python -m harness.convert adm CKPT OUT [...]
    sdft bench [--only ...]           python bench/run_all.py [--only ...]

A subcommand only forwards the rest of the command line to its module's main(argv), so
`sdft X ...` and `python -m harness.X ...` are one program and stay so; each module still
runs on its own. Nothing here imports torch: `sdft --help` answers at once.
"""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

from harness.arguments import OneLineParser
from runs.errors import UserError, exit_on_user_error

# subcommand -> (module whose main(argv) it runs, one line for --help); the modules are
# imported only when their command runs
COMMANDS = {
    "submit": ("harness.submit", "expand a grid file and submit what is not done or running"),
    "status": ("harness.status", "state, step, job and last error of each run of a grid"),
    "cancel": ("harness.cancel", "cancel a grid's jobs (or --runs ID ...); resubmits leave them"),
    "run": ("harness.run", "run one run of a submitted grid here, in the foreground"),
    "logs": ("harness.logs", "print a run's job output (-f: follow it)"),
    "schema": ("harness.schema", "every field of a grid file, with its type and default"),
    "tables": ("harness.tables", "the paper's tables from results folders (markdown, LaTeX, CSV)"),
    "convert": ("harness.convert", "convert a checkpoint (ADM) into a model folder"),
    "bench": (None, "run the benchmarks in bench/ (bench/run_all.py) and print their figures"),
}
BENCH = Path(__file__).resolve().parents[1] / "bench" / "run_all.py"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    listing = "\n".join(f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items())
    parser = OneLineParser(prog="sdft", usage="sdft [-h] COMMAND [ARGS ...]", description=__doc__.splitlines()[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=f"commands:\n{listing}\n\n`sdft COMMAND --help` shows a command's options.")
    parser.add_argument("command", metavar="COMMAND", nargs="?", help=", ".join(COMMANDS))
    # everything after the command, options included, goes to the command untouched
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("no command given (`sdft --help` lists them)")
    if args.command not in COMMANDS:
        parser.error(f"unknown command {args.command!r} (one of {', '.join(COMMANDS)})")
    return args


def run_bench(argv: list[str]) -> int:
    """bench/ is a folder of scripts beside the packages, not a package: it exists in a
    source checkout (an editable install), which is where benchmarks are run."""
    if not BENCH.is_file():
        raise UserError(f"{BENCH}: not found; `sdft bench` runs from a source checkout (pip install -e .)")
    return subprocess.call([sys.executable, str(BENCH), *argv])


def main(argv: list[str] | None = None) -> None:
    with exit_on_user_error():
        args = parse_args(sys.argv[1:] if argv is None else argv)
    module, _ = COMMANDS[args.command]
    if module is None:
        with exit_on_user_error():
            raise SystemExit(run_bench(args.args))
    importlib.import_module(module).main(args.args)


if __name__ == "__main__":
    main()
