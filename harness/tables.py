"""python -m harness.tables results/<grid> [--format latex|markdown|csv] [--out DIR] [--select-by CRITERION]

The paper's tables of one or more results folders, printed (and written with --out), then the
aggregate's paired differences and each named variant's ablation tables where it made them. Where
the rows carry a validation split, each method's candidate is selected on it by CRITERION
(`[task[@t0]:]metric[/reference]`; default `fid`: unconditional FID against the full domain)
and reported on the test split. The tables themselves are report's; this only reads
the arguments.
  --publish DIR       copy a grid's report, tables, images and tidy table (metrics.csv.gz)
                      into DIR, replacing it; DIR must be new, empty or an earlier publish
                      (how docs/results/ is made)
  --readme [FILE.md ...]  fill the generated blocks (`<!-- tables: ... -->` from their tidy
                      tables, `<!-- schema: grid -->` from the grid's schema) of these files;
                      without files, of README.md and docs/*.md
"""
from __future__ import annotations

import sys
from pathlib import Path

from harness.arguments import OneLineParser, path_arg


def main(argv: list[str] | None = None) -> None:
    from runs.errors import UserError, exit_on_user_error, quiet_broken_pipe
    from report.curve import curve_table, load_points
    from report.results import load_cells, load_differences, load_results
    from report.selection import Criterion
    from report.differences import difference_tables
    from report.table import write_tables
    from report.tables import paper_tables

    parser = OneLineParser(prog="python -m harness.tables", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", type=path_arg, help="results/<grid> folders, published docs/results/<grid> folders, "
                                                                          "or metrics files")
    parser.add_argument("--format", choices=("latex", "markdown", "csv"), default="markdown")
    parser.add_argument("--out", default=None, type=path_arg, help="also write each table to this folder")
    parser.add_argument("--publish", metavar="DIR", type=path_arg, help="copy one grid's report and tidy table into DIR, which it replaces "
                                                                          "(new, empty, or an earlier publish)")
    parser.add_argument("--readme", metavar="FILE", nargs="*", type=path_arg,
                        help="fill the generated blocks of these Markdown files (none given: "
                             "README.md and docs/*.md)")
    parser.add_argument("--select-by", default="fid", metavar="CRITERION",
                        help="what selects each method's candidate on the validation split: "
                             "[task[@t0]:]metric[/reference], e.g. fid (the default), kid/target, sdedit@0.5:psnr")
    args = parser.parse_args(argv)
    if not args.results and args.readme is None:
        parser.error("give results folders, or --readme FILE")
    with quiet_broken_pipe(), exit_on_user_error(FileNotFoundError):
        if args.publish:
            from report.publish import publish

            if len(args.results) != 1:
                raise UserError("--publish: give exactly one results/<grid> folder")
            print(f"published {args.results[0]} -> {publish(Path(args.results[0]), Path(args.publish))}")
        if args.readme is not None:
            from report.readme import documents, has_blocks, update

            files = [Path(f) for f in args.readme] or [p for p in documents() if has_blocks(p.read_text())]
            for path in files:
                changed = update(path)
                print(f"{path}: {'tables rewritten' if changed else 'tables already up to date'}")
        if not args.results or args.publish:
            return
        try:
            criterion = Criterion.parse(args.select_by)
        except ValueError as err:
            raise UserError(f"--select-by: {err}") from None
        tables = paper_tables(load_results(args.results), load_cells(args.results), criterion=criterion)
        tables += [t for t in (curve_table(load_points(p)) for p in args.results) if t is not None]
        # the aggregate's paired differences and ablations (each says what selected its candidates)
        diffs = load_differences(args.results)
        tables += difference_tables(diffs)
        if not tables:
            raise UserError(f"{' '.join(args.results)}: no evaluated runs to tabulate")
        for table in tables:
            print(table.render(args.format), end="\n\n")
        if args.out:
            write_tables(tables, Path(args.out), formats=(args.format,))


if __name__ == "__main__":
    main()
    sys.exit(0)
