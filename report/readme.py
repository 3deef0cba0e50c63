"""Tables in the project's Markdown files, made from committed files, never typed by hand.

A block such as

    <!-- tables: results/demo/metrics.csv.gz table3 attributes -->
    ...
    <!-- end tables -->

holds the named tables of `harness.tables`, rendered as Markdown from that tidy table and,
when they are there, the files beside it: cells.csv.gz (intervals over several runs),
differences.csv.gz (the paired differences' rows, tables `differences`,
`differences_seeds` (their seed-level intervals), `differences_by_seed` (per training seed),
the same with `_vs_<baseline>` added for each further baseline (selection.baselines), and
each named variant's `ablation_<name>` and `ablation_<name>_seeds`) and
forgetting_curve.csv.gz (the forgetting curve's points, table `forgetting_curve`). A block
whose file is bench/gpu_all.sh's figures (`.jsonl`) holds each named setting's GPU figures
with their goals (report/speed.py). The path is relative to the Markdown file's folder. A block

    <!-- schema: grid -->
    ...
    <!-- end schema -->

holds the grid file's reference, made from its pydantic schema (runs.grid_reference).
`python -m harness.tables --readme` rewrites every block of README.md and docs/*.md (or of
the files it is given); tests/harness/test_readme_tables.py fails when a block of any of them
differs from what its source gives.
"""
from __future__ import annotations

import re
from pathlib import Path

from runs.errors import UserError

BLOCK = re.compile(r"(?P<open><!-- tables: (?P<source>\S+) (?P<names>[^>]*?) -->\n)(?P<body>.*?)"
                   r"(?P<close><!-- end tables -->)", re.S)
SCHEMA_BLOCK = re.compile(r"(?P<open><!-- schema: grid -->\n)(?P<body>.*?)(?P<close><!-- end schema -->)", re.S)
ROOT = Path(__file__).resolve().parents[1]


# a result as the tables print it below 10: three decimals (report/table.py Table.cell)
QUOTED = re.compile(r"(?<![\d.])\d+\.\d{3}(?!\d)")
FENCE = re.compile(r"```.*?```", re.S)


def unquoted_results(text: str, heading: str | None = None) -> list[str]:
    """The results the prose of `text` quotes (numbers with three decimals, outside its
    generated blocks and code) that none of its generated blocks holds: each should be
    copied from a table, never typed. With `heading`, only its section: from the line that
    starts with it to the next heading of the same level."""
    if heading is not None:
        level = heading.split(" ", 1)[0] + " "
        start = text.index("\n" + heading) + 1
        end = text.find("\n" + level, start + len(heading))
        text = text[start:] if end < 0 else text[start:end]
    tables = {m.group() for block in BLOCK.finditer(text) for m in QUOTED.finditer(block.group())}
    prose = FENCE.sub("", BLOCK.sub("", text))
    return [m.group() for m in QUOTED.finditer(prose) if m.group() not in tables]


def documents(root: Path = ROOT) -> list[Path]:
    """The project's Markdown files that may hold generated blocks: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def has_blocks(text: str) -> bool:
    return bool(BLOCK.search(text) or SCHEMA_BLOCK.search(text))


def render_block(source: Path, names: list[str]) -> str:
    """The named tables of `source` (a tidy table), as Markdown, one after the other."""
    from report.curve import curve_table, load_points
    from report.results import companion, load_cells, load_differences, load_results
    from report.differences import difference_tables
    from report.tables import paper_tables

    if not source.is_file():
        raise UserError(f"{source}: no such tidy table (named by a tables block)")
    if source.suffix == ".jsonl":
        from report.speed import speed_table

        return "".join(speed_table(source, name) + "\n\n" for name in names)
    tables = {table.name: table for table in paper_tables(load_results(source), load_cells(source))}
    if companion(source, "differences") and any(n.startswith(("differences", "ablation_")) for n in names):
        tables.update({t.name: t for t in difference_tables(load_differences(source))})
    points = load_points(source)
    if points is not None and "forgetting_curve" in names:
        table = curve_table(points)
        tables.update({table.name: table} if table is not None else {})
    unknown = [name for name in names if name not in tables]
    if unknown:
        raise UserError(f"{source}: no table {unknown[0]!r} (it gives {', '.join(tables) or 'none'})")
    return "".join(tables[name].render("markdown") + "\n\n" for name in names)


def regenerate(text: str, root: Path) -> str:
    """`text` with every block rendered again: tables from their tidy tables, the grid's
    reference from its schema."""
    def render(match: re.Match) -> str:
        body = render_block(root / match["source"], match["names"].split())
        return match["open"] + body + match["close"]

    def schema(match: re.Match) -> str:
        from runs.grid_reference import render as grid_reference

        return match["open"] + "\n" + grid_reference() + "\n" + match["close"]

    return SCHEMA_BLOCK.sub(schema, BLOCK.sub(render, text))


def update(path: Path) -> bool:
    """Rewrite the blocks of a Markdown file in place; True when anything changed."""
    from runs.store import atomic_write_bytes

    path = Path(path)
    text = path.read_text()
    if not has_blocks(text):
        raise UserError(f"{path}: no '<!-- tables: FILE NAME... -->' block to fill")
    new = regenerate(text, path.parent)
    if new != text:
        atomic_write_bytes(path, new.encode())
    return new != text
