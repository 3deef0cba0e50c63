"""python -m harness.tables results/<grid> [--format latex|markdown|csv] [--out DIR]

The paper's tables of one or more results folders, printed (and written with --out). The
tables themselves are harness.report's; this only reads the arguments.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from harness.errors import UserError, exit_on_user_error, quiet_broken_pipe
    from harness.report.results import load_cells, load_results
    from harness.report.tables import paper_tables, write_tables

    parser = argparse.ArgumentParser(prog="python -m harness.tables", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results/<grid> folders (or metrics files)")
    parser.add_argument("--format", choices=("latex", "markdown", "csv"), default="markdown")
    parser.add_argument("--out", default=None, help="also write each table to this folder")
    args = parser.parse_args(argv)
    with quiet_broken_pipe(), exit_on_user_error(FileNotFoundError):
        tables = paper_tables(load_results(args.results), load_cells(args.results))
        if not tables:
            raise UserError(f"{' '.join(args.results)}: no evaluated runs to tabulate")
        for table in tables:
            print(table.render(args.format), end="\n\n")
        if args.out:
            write_tables(tables, Path(args.out), formats=(args.format,))


if __name__ == "__main__":
    main()
    sys.exit(0)
