"""python -m harness.schema (`sdft schema`): every field of a grid file, with its type,
default and notes, one row per place the file can hold it.

The rows are runs.grid_reference's, which docs/grid.md's reference is made of too, so a
field is described by one piece of code, read from the grid's own pydantic models: the list
cannot drift from what submit accepts. A section that is one of several kinds (a dataset's
source, its targets) names the kind in the path: `datasets[].source[kind=folder].path`.
--format markdown gives the same table for docs.
"""
from __future__ import annotations

import argparse

from harness.arguments import OneLineParser
from runs.errors import exit_on_user_error, quiet_broken_pipe

NOTES_WIDTH = 60          # the plain table wraps the notes, so that a row stays readable


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m harness.schema", description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=("text", "markdown"), default="text")
    return parser.parse_args(argv)


def schema_table(fmt: str = "text") -> str:
    from tabulate import tabulate

    from runs.grid_reference import flat_rows

    rows = [(f"`{r.field}`", r.type, r.default, r.notes) if fmt == "markdown"
            else (r.field, r.type.replace("`", ""), r.default.replace("`", ""), r.notes.replace("`", ""))
            for r in flat_rows()]
    return tabulate(rows, headers=("field", "type", "default", "notes"), disable_numparse=True,
                    tablefmt="github" if fmt == "markdown" else "simple",
                    maxcolwidths=None if fmt == "markdown" else [None, None, None, NOTES_WIDTH])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with quiet_broken_pipe(), exit_on_user_error():
        print(schema_table(args.format))


if __name__ == "__main__":
    main()
