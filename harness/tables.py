"""python -m harness.tables results/<grid> [--format latex|markdown|csv] [--out DIR] [--select-by CRITERION]

The paper's tables of one or more results folders, printed (and written with --out). Where
the rows carry a validation split, each method's candidate is selected on it by CRITERION
(`[task[@t0]:]metric[/reference]`; default `fid`: unconditional FID against the full domain)
and reported on the test split. The tables themselves are harness.report's; this only reads
the arguments.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from harness.errors import UserError, exit_on_user_error, quiet_broken_pipe
    from harness.report.results import load_results
    from harness.report.selection import Criterion
    from harness.report.tables import paper_tables, write_tables

    parser = argparse.ArgumentParser(prog="python -m harness.tables", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results/<grid> folders (or metrics files)")
    parser.add_argument("--format", choices=("latex", "markdown", "csv"), default="markdown")
    parser.add_argument("--out", default=None, help="also write each table to this folder")
    parser.add_argument("--select-by", default="fid", metavar="CRITERION",
                        help="what selects each method's candidate on the validation split: "
                             "[task[@t0]:]metric[/reference], e.g. fid (the default), kid/target, sdedit@0.5:psnr")
    args = parser.parse_args(argv)
    with quiet_broken_pipe(), exit_on_user_error(FileNotFoundError):
        try:
            criterion = Criterion.parse(args.select_by)
        except ValueError as err:
            raise UserError(f"--select-by: {err}") from None
        tables = paper_tables(load_results(args.results), criterion)
        if not tables:
            raise UserError(f"{' '.join(args.results)}: no evaluated runs to tabulate")
        for table in tables:
            print(table.render(args.format), end="\n\n")
        if args.out:
            write_tables(tables, Path(args.out), formats=(args.format,))


if __name__ == "__main__":
    main()
    sys.exit(0)
