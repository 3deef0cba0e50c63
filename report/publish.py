"""A grid's report as committed under docs/results/: the report, tables, images, and the tidy
table as metrics.csv.gz, the cells over several runs as cells.csv.gz, the paired
differences' rows as differences.csv.gz and the forgetting curve's points as
forgetting_curve.csv.gz (text, so a commit shows what changed; the tables of
README.md and docs/*.md are made from them, report/readme.py)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from runs.errors import UserError

from report.results import (METRICS_FILE, PUBLISHED_CELLS, PUBLISHED_CURVE, PUBLISHED_DIFFERENCES,
                            PUBLISHED_METRICS)

PUBLISHED = ("report.md", "tradeoff.png", "forgetting_curve.png", "tables", "images", "grid.yaml")


def check_replaceable(out_dir: Path) -> None:
    """`out_dir` is replaced whole, so it must be new, empty or an earlier publish: a typo
    (`--publish .`, `--publish docs`) must not delete what else a folder holds."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: --publish: a file, not a folder")
    ours = {*PUBLISHED, PUBLISHED_METRICS, PUBLISHED_CELLS, PUBLISHED_DIFFERENCES, PUBLISHED_CURVE}
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in ours) if out_dir.is_dir() else []
    if foreign:
        raise UserError(f"{out_dir}: --publish replaces the whole folder, and it holds what no publish "
                        f"wrote ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); give a new "
                        f"or empty folder")


def published_report(text: str) -> str:
    """report.md as published: it names the folders of the machine that ran the grid, and the
    published copy names its own table and the training logs' place in a results root of
    the default name (the logs themselves are not published)."""
    text = re.sub(r"load_results\('[^']*'\)", "load_results('metrics.csv.gz')", text)
    return re.sub(r"--logdir \S*?([^/\s`]+)/runs`", r"--logdir results/\1/runs`", text)


def publish(grid_dir: Path, out_dir: Path) -> Path:
    """Replace `out_dir` with the published form of `grid_dir` (an aggregated results/<grid>).
    The new folder is complete before the old one goes, so a failure leaves the old one."""
    from report.curve import load_points
    from report.results import CELLS_FILE, DIFFERENCES_FILE, load_results, read_metrics, write_csv

    grid_dir, out_dir = Path(grid_dir), Path(out_dir)
    if not (grid_dir / METRICS_FILE).is_file() or not (grid_dir / "report.md").is_file():
        raise UserError(f"{grid_dir}: not an aggregated grid folder (no metrics.parquet and report.md)")
    check_replaceable(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.publishing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in PUBLISHED:
        source = grid_dir / name
        if source.is_dir():
            shutil.copytree(source, staging / name)
        elif source.is_file():
            shutil.copy2(source, staging / name)
    df = load_results(grid_dir / METRICS_FILE)
    write_csv(staging / PUBLISHED_METRICS, df)
    cells = read_metrics(grid_dir / CELLS_FILE) if (grid_dir / CELLS_FILE).is_file() else None
    if cells is not None and len(cells):        # the intervals of cells over several runs
        write_csv(staging / PUBLISHED_CELLS, cells)
    diffs = read_metrics(grid_dir / DIFFERENCES_FILE) if (grid_dir / DIFFERENCES_FILE).is_file() else None
    if diffs is not None and len(diffs):        # the paired differences' rows
        write_csv(staging / PUBLISHED_DIFFERENCES, diffs)
    points = load_points(grid_dir)
    if points is not None and len(points):
        write_csv(staging / PUBLISHED_CURVE, points)
    (staging / "report.md").write_text(published_report((staging / "report.md").read_text()))
    old = out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir
