"""A table of means with 95 % intervals, as markdown, LaTeX or CSV: the form of every table
the report writes (report/tables.py the paper's, report/differences.py the paired
differences', report/curve.py the training curve's). Each cell: mean [low, high], shares
also as k/n; the best model of a column bold (or, for differences, every cell whose
interval excludes 0); calibration rows and training costs never bold."""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from report import metrics

if TYPE_CHECKING:
    import pandas as pd

# the training cost of each row's model (runs.compute; jobs/train.py measures the seconds):
# shown beside the metrics of every model table, never ranked
COST_COLUMNS = {"compute_kimg": "compute (naive kimg)", "train_s": "train s"}
COST_GROUP = "training cost"
# a paired difference's cost beside its model's: its training seconds over the baseline's
RATIO_COLUMN = {"train_ratio": "× baseline's train s"}


def short(value) -> str:
    """1e-05 rather than 1.0000000000000001e-05: numbers as a table shows them."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _count(k) -> str:
    """A count k of k/n: whole, or with one decimal where it is a share of n distinct items
    averaged over runs (jobs/cells.py)."""
    return str(int(round(k))) if abs(k - round(k)) < 0.05 else f"{k:.1f}"


@dataclass
class Table:
    name: str
    title: str
    means: "pd.DataFrame"                 # rows: model labels; columns: (group, metric)
    lows: "pd.DataFrame"                  # the interval of each cell (NaN: none)
    highs: "pd.DataFrame"
    counts: "pd.DataFrame"                # rows (runs) behind each cell
    notes: list[str] = field(default_factory=list)
    ks: "pd.DataFrame | None" = None      # k and n of shares k/n (NaN elsewhere): summed over rows,
    #                                      or the cells table's n distinct items and k of them
    ns: "pd.DataFrame | None" = None
    calibration: tuple = ()               # row labels of the real-data rows: never bold
    bold_nonzero: bool = False            # bold where the interval excludes 0 (differences)
    bold_rows: tuple | None = None        # these rows bold instead of the best (the selected ones)

    def cell(self, row, column, bold: bool, fmt: str) -> str:
        mean = self.means.loc[row, column]
        if is_missing(mean):
            return "–"
        low, high = self.lows.loc[row, column], self.highs.loc[row, column]
        scale = max([abs(mean)] + [abs(v) for v in (low, high) if not is_missing(v)])
        digits = 3 if scale < 10 else 1
        text = f"{mean:.{digits}f}"
        if not is_missing(low) and not is_missing(high):
            text += f" [{low:.{digits}f}, {high:.{digits}f}]"
        if self.ks is not None and not is_missing(self.ks.loc[row, column]):
            text += f" ({_count(self.ks.loc[row, column])}/{int(self.ns.loc[row, column])})"
        if bold:
            text = r"\textbf{" + text + "}" if fmt == "latex" else f"**{text}**"
        return text

    def best(self, column) -> set:
        if column[0] == COST_GROUP:
            return set()
        if self.bold_rows is not None:
            return set(self.bold_rows) & set(self.means[column].dropna().index)
        if self.bold_nonzero:
            low, high = self.lows[column], self.highs[column]
            return set(self.means.index[(low > 0) | (high < 0)])
        values = self.means[column].drop(list(self.calibration), errors="ignore").dropna()
        if len(values) < 2:
            return set()
        metric = column[-1]
        best = values.max() if metrics.higher_is_better(metric) else values.min()
        return set(values.index[values == best])

    def formatted(self, fmt: str) -> "pd.DataFrame":
        import pandas as pd

        out = pd.DataFrame(index=self.means.index, columns=self.means.columns, dtype=object)
        for column in self.means.columns:
            best = self.best(column)
            for row in self.means.index:
                out.loc[row, column] = self.cell(row, column, row in best, fmt)
        out.columns = pd.MultiIndex.from_tuples(
            [tuple(c[:-1]) + (COST_COLUMNS.get(c[-1]) or RATIO_COLUMN.get(c[-1]) or metrics.label(c[-1]),)
             for c in out.columns])
        return out

    def render(self, fmt: str) -> str:
        from tabulate import tabulate

        if fmt == "csv":
            parts = []
            for frame, suffix in ((self.means, ""), (self.lows, " ci_low"), (self.highs, " ci_high")):
                flat = frame.copy()
                flat.columns = [" ".join(map(str, c)) + suffix for c in flat.columns]
                parts.append(flat)
            return parts[0].join(parts[1:]).rename_axis("model").to_csv()
        table = self.formatted(fmt).rename_axis("model")     # whatever the rows were pivoted on
        if fmt == "latex":
            body = table.to_latex(escape=False, multicolumn=True, multicolumn_format="c",
                                  caption=self.title, label=f"tab:{self.name}")
            notes = "".join(f"% {n}\n" for n in self.notes)
            return notes + _latex_symbols(body)
        headers = ["model"] + [" ".join(str(p) for p in c if p) for c in table.columns]
        text = f"**{self.title}**\n\n" + tabulate(table.reset_index().values.tolist(), headers=headers,
                                                  tablefmt="github")
        return text + "".join(f"\n\n{n}" for n in self.notes)


LATEX_SYMBOLS = {"±": r"$\pm$", "×": r"$\times$", "†": r"$^\dagger$",
                 "_": r"\_"}


def _greek(match: re.Match) -> str:
    """A Greek letter as a math symbol ("GREEK SMALL LETTER ALPHA" -> $\\alpha$): pdflatex
    has none of them set up as text, so one in a label (LoRA α) stopped the document."""
    name = unicodedata.name(match.group(), "").split()
    if name[:1] != ["GREEK"] or len(name) != 4 or name[2] != "LETTER":
        return match.group()
    letter = {"lamda": "lambda"}.get(name[3].lower(), name[3].lower())     # Unicode's spelling
    return f"$\\{letter.capitalize() if name[1] == 'CAPITAL' else letter}$"


def _latex_symbols(text: str) -> str:
    """Symbols in the cells and labels as LaTeX writes them (commands are left alone)."""
    out = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("\\") or "\\label" in line:
            out.append(line)
            continue
        for symbol, latex in LATEX_SYMBOLS.items():
            line = line.replace(symbol, latex)
        out.append(re.sub("[\u0370-\u03ff]", _greek, line))
    return "".join(out)


def write_tables(tables: list[Table], out_dir: Path, formats=("markdown", "latex", "csv")) -> list[Path]:
    """Each table as NAME.md, NAME.tex and NAME.csv in `out_dir`, each written whole or not at all."""
    from runs.store import atomic_write_bytes

    suffix = {"markdown": "md", "latex": "tex", "csv": "csv"}
    written = []
    for table in tables:
        for fmt in formats:
            path = Path(out_dir) / f"{table.name}.{suffix[fmt]}"
            atomic_write_bytes(path, table.render(fmt).encode())
            written.append(path)
    return written
