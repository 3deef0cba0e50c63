"""Tables in a Markdown file made from a committed tidy table, never typed by hand.

A block such as

    <!-- tables: docs/results/demo/metrics.csv.gz table3 attributes -->
    ...
    <!-- end tables -->

holds the named tables of `harness.tables`, rendered as Markdown from that tidy table and,
when they are there, the files beside it: cells.csv.gz (intervals over several runs) and
differences.csv.gz (the paired differences' rows, tables `differences` and
`differences_seeds`, their seed-level intervals). The path is relative
to the Markdown file's folder. `python -m harness.tables --readme
README.md` rewrites every block; tests/harness/test_readme_tables.py fails when a block of
the README differs from what its table gives.
"""
from __future__ import annotations

import re
from pathlib import Path

from harness.errors import UserError

BLOCK = re.compile(r"(?P<open><!-- tables: (?P<source>\S+) (?P<names>[^>]*?) -->\n)(?P<body>.*?)"
                   r"(?P<close><!-- end tables -->)", re.S)


def render_block(source: Path, names: list[str]) -> str:
    """The named tables of `source` (a tidy table), as Markdown, one after the other."""
    from harness.report.publish import PUBLISHED_CELLS, PUBLISHED_DIFFERENCES
    from harness.report.results import load_results, read_metrics
    from harness.report.tables import difference_table, paper_tables, seed_difference_table

    if not source.is_file():
        raise UserError(f"{source}: no such tidy table (named by a README tables block)")
    cells = source.with_name(PUBLISHED_CELLS)
    tables = {table.name: table for table in paper_tables(
        load_results(source), read_metrics(cells) if cells.is_file() else None)}
    diffs = source.with_name(PUBLISHED_DIFFERENCES)
    if diffs.is_file() and {"differences", "differences_seeds"} & set(names):
        rows = read_metrics(diffs)
        tables.update({t.name: t for t in (difference_table(rows), seed_difference_table(rows)) if t is not None})
    unknown = [name for name in names if name not in tables]
    if unknown:
        raise UserError(f"{source}: no table {unknown[0]!r} (it gives {', '.join(tables) or 'none'})")
    return "".join(tables[name].render("markdown") + "\n\n" for name in names)


def regenerate(text: str, root: Path) -> str:
    """`text` with every tables block rendered again from its tidy table."""
    def render(match: re.Match) -> str:
        body = render_block(root / match["source"], match["names"].split())
        return match["open"] + body + match["close"]

    return BLOCK.sub(render, text)


def update(path: Path) -> bool:
    """Rewrite the blocks of a Markdown file in place; True when anything changed."""
    from harness.store import atomic_write_bytes

    path = Path(path)
    text = path.read_text()
    if not BLOCK.search(text):
        raise UserError(f"{path}: no '<!-- tables: FILE NAME... -->' block to fill")
    new = regenerate(text, path.parent)
    if new != text:
        atomic_write_bytes(path, new.encode())
    return new != text
