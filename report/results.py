"""The tidy results table: one row per measured number (benchopt style).

Columns: grid, run_id, eval_id, stage, dataset, target, method, weighting, variant, seed, eval_seed,
split, ckpt_step, task, t0, reference, subset, metric, value, ci_low, ci_high, k, n, extractor,
note, compute_kimg, train_s, p_<hyper-parameter>..., git_sha, created_at. ci_low/ci_high: a 95 % interval (bootstrap
or Wilson, the note says which); k: the count behind a share k/n. seed: the training seed;
eval_seed: the seed of the sampling noise. compute_kimg and train_s: the training cost of a fine-tuned
model up to its checkpoint, in naive kimg (runs.compute) and in measured seconds (empty for
the source model, and train_s for runs trained before it was logged). variant: the named variant of the method whose
row it is (`sdft-noaux`, runs.grid; empty for the method itself): the aggregate gives
a run that a variant shares with its method once under each. split: `validation` (rows that settings are
selected on) or `test` (rows that are reported), measured on disjoint evaluation seeds and
inputs (report.selection); empty without evaluation.splits. Calibration rows (real data measured by the same
code) have stage `calibration`, method `calibration` and the kind of real set as weighting
(`target-train`, `source`, `held-out-half`), or `classifier-calibration` for the class
instrument's measured errors (`classifier-calibration-source` for those in the source's style;
docs/evaluation-classes.md).
`load_results` reads a grid folder (or several, or one run's file). Beside a grid's table,
the aggregate writes CELLS_FILE: the intervals of table cells made of several runs (a
hierarchical bootstrap, jobs/cells.py); `load_cells` reads it.
"""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Iterable

from runs.store import CorruptFile, atomic_write_bytes, now_iso

# the weighting of the class instrument's confusion rows, by the style of its calibration
# images (docs/evaluation-classes.md)
CLASSIFIER_CALIBRATION = {"target": "classifier-calibration", "source": "classifier-calibration-source"}

COLUMNS = ["grid", "run_id", "eval_id", "stage", "dataset", "target", "method", "weighting", "variant", "seed",
           "eval_seed", "split", "ckpt_step", "task", "t0", "reference", "subset", "metric", "value", "ci_low", "ci_high", "k", "n",
           "extractor", "note", "compute_kimg", "train_s"]
TAIL = ["git_sha", "created_at"]
METRICS_FILE = "metrics.parquet"          # a grid's tidy table (jobs/aggregate.py), and each evaluation's
CELLS_FILE = "cells.parquet"
DIFFERENCES_FILE = "differences.parquet"   # the paired differences' rows (jobs/paired.py)
POINTS_FILE = "forgetting_curve.parquet"   # the forgetting curve's points (jobs/curve.py)
# the same tables as `tables --publish` writes them (report/publish.py), as text, side by side
PUBLISHED_METRICS = "metrics.csv.gz"
PUBLISHED_CELLS = "cells.csv.gz"
PUBLISHED_DIFFERENCES = "differences.csv.gz"
PUBLISHED_CURVE = "forgetting_curve.csv.gz"
_COMPANIONS = {"cells": (CELLS_FILE, PUBLISHED_CELLS), "differences": (DIFFERENCES_FILE, PUBLISHED_DIFFERENCES),
               "points": (POINTS_FILE, PUBLISHED_CURVE)}


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def tidy(rows: list[dict] | "pd.DataFrame"):  # noqa: F821
    """A DataFrame with the schema's columns in order (p_* between the schema and the tail)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    for column in COLUMNS + TAIL:
        if column not in df:
            df[column] = None
    params = sorted(c for c in df.columns if c.startswith("p_"))
    return df[COLUMNS + params + TAIL]


def write_parquet(path: Path, df) -> None:
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    atomic_write_bytes(Path(path), buffer.getvalue())


def write_metrics(path: Path, rows: list[dict], run_id: str) -> None:
    """A run's metrics.parquet: its rows stamped with the eval id, commit and time (and the
    stage `evaluate`, unless a row names its own, as calibration rows do)."""
    stamp = {"eval_id": run_id, "git_sha": git_sha(), "created_at": now_iso()}
    write_parquet(path, tidy([{**row, **stamp, "stage": row.get("stage") or "evaluate"} for row in rows]))


def write_csv(path: Path, df) -> None:
    """A tidy table as gzipped CSV, byte-for-byte the same for the same rows (no time stamp
    in the gzip header): the form committed under docs/results/."""
    buffer = io.BytesIO()
    df.to_csv(buffer, index=False, compression={"method": "gzip", "mtime": 0})
    atomic_write_bytes(Path(path), buffer.getvalue())


def read_metrics(path: Path):
    """One metrics.parquet (or a published metrics.csv.gz); CorruptFile (a UserError naming
    it) when it cannot be read."""
    import pandas as pd

    try:
        if Path(path).name.endswith((".csv", ".csv.gz")):
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise
    except Exception as err:       # pyarrow's ArrowInvalid, OSError, ...: all mean "not a table"
        kind = "CSV" if Path(path).name.endswith((".csv", ".csv.gz")) else "parquet"
        raise CorruptFile(f"{path}: not a readable {kind} table ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:200]})") from None


def companion(path: str | Path, kind: str) -> Path | None:
    """The `kind` file ("cells", "differences" or "points") that goes with `path`: a
    results/<grid> folder's own (cells.parquet, ...) or a published folder's, or those beside a
    metrics.parquet or metrics.csv.gz file given; None where there is none."""
    path = Path(path)
    own, published = _COMPANIONS[kind]
    if path.is_file():      # a grid's metrics file: its companions lie beside it
        beside = {METRICS_FILE: own, PUBLISHED_METRICS: published}.get(path.name)
        found = [path.with_name(beside)] if beside else []
    else:
        found = [path / own, path / published]
    return next((f for f in found if f.is_file()), None)


def load_results(paths: str | Path | Iterable[str | Path]):
    """The tidy DataFrame of one or more grid folders (results/<grid>), published folders
    (docs/results/<grid>), or metrics files.

    A grid folder's aggregated table is read when present and readable (otherwise, with a
    warning, its evaluation runs' tables); an unreadable run table is a CorruptFile error.
    """
    import pandas as pd

    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = []
    for path in map(Path, paths):
        if path.is_file():
            frames.append(read_metrics(path))
            continue
        if (path / METRICS_FILE).is_file():
            try:
                frames.append(read_metrics(path / METRICS_FILE))
                continue
            except CorruptFile as err:
                if not (path / "runs").is_dir():
                    raise
                print(f"warning: {err}; reading the runs' own tables instead", file=sys.stderr)
        if (path / "runs").is_dir():
            files = sorted((path / "runs").glob("*/metrics.parquet"))
            frames += [read_metrics(f).assign(grid=path.name) for f in files]
        elif (path / PUBLISHED_METRICS).is_file():
            frames.append(read_metrics(path / PUBLISHED_METRICS))
        else:
            raise FileNotFoundError(f"{path}: no metrics.parquet, no runs/ with results and no {PUBLISHED_METRICS}")
    if not frames:
        return tidy([])
    return tidy(pd.concat(frames, ignore_index=True))


def load_cells(paths: str | Path | Iterable[str | Path]):
    """The cells tables of the grid or published folders among `paths` (None when there is none)."""
    import pandas as pd

    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = [read_metrics(f) for f in (companion(p, "cells") for p in paths) if f is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def load_differences(paths: str | Path | Iterable[str | Path]):
    """The paired differences' rows of the grid or published folders among `paths` (None when
    there is none)."""
    import pandas as pd

    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = [read_metrics(f) for f in (companion(p, "differences") for p in paths) if f is not None]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else None

