"""Tables for people: the dry-run plan, and the paper's tables as pivots of the tidy results.

    python -m harness.tables results/<grid> [--format latex|markdown|csv] [--out DIR]

Table 1 (translation: SDEdit and EGSDE, PSNR/SSIM/LPIPS/FID/KID), Table 3 (unconditional:
FID/KID/LPIPS), Table 4 (the distillation weighting ablation) and the attribute table
(missing-class recovery, class preservation). Mean ± std over seeds; the best value bold.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.params import label as param_label

if TYPE_CHECKING:
    import pandas as pd

    from harness.grid import Plan
    from harness.submit import Triage

HIGHER_IS_BETTER = {"psnr", "ssim", "missing_class_share", "class_preservation"}
METRIC_NAMES = {"fid": "FID", "kid": "KID×1e3", "lpips": "LPIPS", "psnr": "PSNR", "ssim": "SSIM",
                "feature_dist_builtin": "FeatDist†", "feature_dist_inception": "FeatDist†",
                "missing_class_share": "missing-class share", "class_preservation": "class kept"}
SUBSTITUTE_NOTE = ("† FeatDist: cosine distance of the named extractor's features between paired images, "
                   "reported because LPIPS could not be measured ({reason}). It is a substitute, not LPIPS.")


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---------------------------------------------------------------- the dry-run plan
def plan_table(plan: "Plan", todo: "Triage | None" = None) -> str:
    """One row per run: id, stage, data, method, weighting, the hyper-parameters that vary, deps."""
    from tabulate import tabulate

    finetune = [r for r in plan.runs if r.stage == "finetune"]
    keys = sorted({k for r in finetune for k in r.params})
    varying = [k for k in keys if len({repr(r.params[k]) for r in finetune if k in r.params}) > 1]
    shown = sorted({"steps", "lambda_distill", *varying})
    done = set(todo.done) if todo else set()
    running = set(todo.running) if todo else set()
    failed = set(todo.failed) if todo else set()
    cancelled = set(todo.cancelled) if todo else set()
    rows = []
    for r in plan.runs:
        params = " ".join(f"{k}={_short(r.params[k])}" for k in shown if k in r.params)
        state = ("done" if r.run_id in done else "running" if r.run_id in running
                 else "failed" if r.run_id in failed else "cancelled" if r.run_id in cancelled
                 else "to submit")
        deps = ",".join(r.depends_on) if len(r.depends_on) <= 2 else f"{len(r.depends_on)} runs"
        rows.append((r.run_id, r.stage, f"{r.dataset}/{r.target}" if r.target else r.dataset,
                     r.method or "", r.weighting or "", params, deps, state))
    return tabulate(rows, headers=("run", "stage", "data", "method", "weighting", "parameters",
                                   "depends on", "state"), tablefmt="simple", disable_numparse=True)


# ---------------------------------------------------------------- the paper's tables
@dataclass
class Table:
    name: str
    title: str
    means: "pd.DataFrame"                 # rows: model labels; columns: (group, metric)
    stds: "pd.DataFrame"
    counts: "pd.DataFrame"
    notes: list[str] = field(default_factory=list)

    def cell(self, row, column, bold: bool, fmt: str) -> str:
        mean, std, n = self.means.loc[row, column], self.stds.loc[row, column], self.counts.loc[row, column]
        if mean is None or (isinstance(mean, float) and math.isnan(mean)):
            return "–"
        digits = 3 if abs(mean) < 10 else 1
        text = f"{mean:.{digits}f}"
        if n > 1 and not math.isnan(std):
            text += f" ± {std:.{digits}f}"
        if bold:
            text = r"\textbf{" + text + "}" if fmt == "latex" else f"**{text}**"
        return text

    def best(self, column) -> set:
        values = self.means[column].dropna()
        if len(values) < 2:
            return set()
        metric = column[-1]
        best = values.max() if metric in HIGHER_IS_BETTER else values.min()
        return set(values.index[values == best])

    def formatted(self, fmt: str) -> "pd.DataFrame":
        import pandas as pd

        out = pd.DataFrame(index=self.means.index, columns=self.means.columns, dtype=object)
        for column in self.means.columns:
            best = self.best(column)
            for row in self.means.index:
                out.loc[row, column] = self.cell(row, column, row in best, fmt)
        out.columns = pd.MultiIndex.from_tuples(
            [tuple(c[:-1]) + (METRIC_NAMES.get(c[-1], c[-1]),) for c in out.columns])
        return out

    def render(self, fmt: str) -> str:
        from tabulate import tabulate

        if fmt == "csv":
            flat = self.means.copy()
            flat.columns = [" ".join(map(str, c)) for c in flat.columns]
            stds = self.stds.copy()
            stds.columns = [" ".join(map(str, c)) + " std" for c in stds.columns]
            return flat.join(stds).to_csv()
        table = self.formatted(fmt)
        if fmt == "latex":
            body = table.to_latex(escape=False, multicolumn=True, multicolumn_format="c",
                                  caption=self.title, label=f"tab:{self.name}")
            notes = "".join(f"% {n}\n" for n in self.notes)
            return notes + _latex_symbols(body)
        headers = ["model"] + [" ".join(str(p) for p in c if p) for c in table.columns]
        text = f"**{self.title}**\n\n" + tabulate(table.reset_index().values.tolist(), headers=headers,
                                                  tablefmt="github")
        return text + "".join(f"\n\n{n}" for n in self.notes)


LATEX_SYMBOLS = {"±": r"$\pm$", "×": r"$\times$", "†": r"$^\dagger$", "λ": r"$\lambda$", "γ": r"$\gamma$",
                 "_": r"\_"}


def _latex_symbols(text: str) -> str:
    """Symbols in the cells and labels as LaTeX writes them (commands are left alone)."""
    out = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("\\") or "\\label" in line:
            out.append(line)
            continue
        for symbol, latex in LATEX_SYMBOLS.items():
            line = line.replace(symbol, latex)
        out.append(line)
    return "".join(out)


def model_labels(df: "pd.DataFrame") -> "pd.Series":
    """'naive', 'sdft/min-snr λd=1 λa=1', 'naive @1000': what tells runs apart besides the seed."""
    params = [c for c in df.columns if c.startswith("p_")]
    keys = ["method", "weighting"]
    varying = []
    for p in params:
        spread = df.groupby(keys, dropna=False)[p].nunique(dropna=True)
        if (spread > 1).any():
            varying.append(p)
    def label(row) -> str:
        text = row["method"] + (f"/{row['weighting']}" if isinstance(row["weighting"], str) else "")
        for p in varying:
            if row[p] is not None and not (isinstance(row[p], float) and math.isnan(row[p])):
                text += f" {param_label(p[2:])}={_short(row[p])}"
        if row.get("is_early"):
            text += f" @{int(row['ckpt_step'])}"
        return text

    return df.apply(label, axis=1)


METHOD_ORDER = {"source": 0, "scratch": 1, "naive": 2, "sdft": 3}


def prepare(df: "pd.DataFrame") -> "pd.DataFrame":
    """Label the rows, mark earlier checkpoints, keep the main reference and extractor."""
    df = df.copy()
    final = df.groupby("eval_id")["ckpt_step"].transform("max")
    df["is_early"] = df["ckpt_step"].notna() & (df["ckpt_step"] < final)
    df["model"] = model_labels(df)
    df["order"] = df["method"].map(METHOD_ORDER).fillna(9)
    return df


def _pivot(df, columns: list[tuple], name: str, title: str, notes=None) -> Table | None:
    """columns: (group label, selection dict, metric) -> one column of mean ± std over seeds."""
    import pandas as pd

    means, stds, counts = {}, {}, {}
    for group, selection, metric in columns:
        part = df[df["metric"] == metric]
        for key, value in selection.items():
            part = part[part[key].isna()] if value is None else part[part[key] == value]
        if part.empty:
            continue
        stats = part.groupby("model")["value"].agg(["mean", "std", "count"])
        means[(group, metric)], stds[(group, metric)], counts[(group, metric)] = (
            stats["mean"], stats["std"], stats["count"])
    if not means:
        return None
    order = df.drop_duplicates("model").sort_values(["order", "model"])["model"].tolist()
    frame = lambda d: pd.DataFrame(d).reindex([m for m in order if m in pd.DataFrame(d).index])  # noqa: E731
    return Table(name, title, frame(means), frame(stds), frame(counts).fillna(0), notes or [])


def _reference(df) -> str:
    return "full-domain" if (df["reference"] == "full-domain").any() else "target"


def _extractor(df) -> str:
    extractors = set(df.loc[df["metric"] == "fid", "extractor"].dropna())
    return "inception" if "inception" in extractors else (sorted(extractors) or ["builtin"])[0]


def _distance(df) -> tuple[str, list[str]]:
    """LPIPS where measured, else its named substitute and a note saying why."""
    lpips = df[df["metric"] == "lpips"]
    if lpips["value"].notna().any():
        return "lpips", []
    substitutes = sorted(m for m in df["metric"].unique() if m.startswith("feature_dist_"))
    if not substitutes:
        return "lpips", []
    reason = (lpips["note"].dropna().iloc[0] if lpips["note"].notna().any() else "no weights")
    return substitutes[0], [SUBSTITUTE_NOTE.format(reason=reason.removeprefix("not measured: "))]


def best_lambda_rows(sdft: "pd.DataFrame", ref: str, ext: str) -> "pd.DataFrame | None":
    """The sdft rows of each weighting at the lambda with its lowest mean unconditional FID;
    None when no weighting was swept over lambda."""
    lam = "p_lambda_distill"
    if lam not in sdft or sdft.groupby("weighting")[lam].nunique().max() < 2:
        return None
    fid = sdft[(sdft.metric == "fid") & (sdft.task == "unconditional") & (sdft.reference == ref)
               & (sdft.extractor == ext)]
    if fid.empty:
        return None
    means = fid.groupby(["weighting", lam])["value"].mean()
    best = {weighting: value for weighting, value in means.groupby(level=0).idxmin().map(lambda ix: ix[1]).items()}
    return sdft[sdft.apply(lambda r: best.get(r["weighting"]) == r[lam], axis=1)]


def paper_tables(results: "pd.DataFrame") -> list[Table]:
    if results.empty:
        return []
    df = prepare(results)
    ref, ext = _reference(df), _extractor(df)
    distance, notes = _distance(df)
    realism = lambda task, **extra: [  # noqa: E731
        (task, {"task": task, "reference": ref, "extractor": ext, **extra}, "fid"),
        (task, {"task": task, "reference": ref, "extractor": ext, **extra}, "kid")]
    tables = []
    t0s = sorted(df.loc[df["task"] != "unconditional", "t0"].dropna().unique())
    for t0 in t0s:
        columns = []
        for task in ("sdedit", "egsde"):
            sel = {"task": task, "t0": t0, "subset": "all"}
            columns += [(task, {**sel, "reference": "source"}, "psnr"),
                        (task, {**sel, "reference": "source"}, "ssim"),
                        (task, {**sel, "reference": "source"}, distance)]
            columns += realism(task, t0=t0)
        table = _pivot(df[df["method"] != "source"], columns, f"table1_t{t0:g}",
                       f"Table 1: translation from the source domain (t0 = {t0:g}; {ext} features, "
                       f"FID/KID against the {ref} set)", notes)
        if table:
            tables.append(table)
    uncond = realism("unconditional") + [("unconditional", {"task": "unconditional",
                                                            "reference": "source-model"}, distance)]
    table3 = _pivot(df, uncond, "table3", f"Table 3: unconditional generation ({ext} features, "
                    f"FID/KID against the {ref} set; {METRIC_NAMES.get(distance, distance)} to the source "
                    "model's sample from the same noise)", notes)
    tables += [table3] if table3 else []
    sdft = df[(df["method"] == "sdft") & ~df["is_early"]]
    if sdft["weighting"].nunique() > 1:
        t0 = 0.5 if 0.5 in t0s else (t0s[0] if t0s else None)
        columns = uncond + ([("sdedit", {"task": "sdedit", "t0": t0, "subset": "all", "reference": "source"}, m)
                             for m in ("psnr", "ssim")] if t0 is not None else [])
        best = best_lambda_rows(sdft, ref, ext)
        if best is not None:
            table4 = _pivot(best, columns, "table4", "Table 4: distillation weighting ablation, each weighting "
                            "at its own best lambda (lowest mean unconditional FID; weights are unnormalised, "
                            "so a shared lambda would compare their scale, not their shape)", notes)
            sweep = _pivot(sdft, columns, "table4_sweep", "Table 4, every lambda of the sweep", notes)
            tables += [t for t in (table4, sweep) if t]
        else:
            table4 = _pivot(sdft, columns, "table4", "Table 4: distillation weighting ablation (sdft method)",
                            notes)
            tables += [table4] if table4 else []
    columns = [("unconditional", {"task": "unconditional"}, "missing_class_share")]
    for task in ("sdedit", "egsde"):
        for t0 in t0s:
            for subset in ("missing-classes", "present-classes"):
                columns.append((f"{task} t0={t0:g} {subset}", {"task": task, "t0": t0, "subset": subset},
                                "class_preservation"))
    attributes = _pivot(df, columns, "attributes", "Attribute recovery: share of samples in the classes "
                        "the target set lacks (the full target domain has 0.30), and the share of "
                        "translated source images that keep their class")
    tables += [attributes] if attributes else []
    return tables


def write_tables(tables: list[Table], out_dir: Path, formats=("markdown", "latex", "csv")) -> list[Path]:
    from harness.store import atomic_write_bytes

    suffix = {"markdown": "md", "latex": "tex", "csv": "csv"}
    written = []
    for table in tables:
        for fmt in formats:
            path = Path(out_dir) / f"{table.name}.{suffix[fmt]}"
            atomic_write_bytes(path, table.render(fmt).encode())
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    from harness.errors import UserError, exit_on_user_error, quiet_broken_pipe
    from harness.results import load_results

    parser = argparse.ArgumentParser(prog="python -m harness.tables", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results/<grid> folders (or metrics files)")
    parser.add_argument("--format", choices=("latex", "markdown", "csv"), default="markdown")
    parser.add_argument("--out", default=None, help="also write each table to this folder")
    args = parser.parse_args(argv)
    with quiet_broken_pipe(), exit_on_user_error(FileNotFoundError):
        tables = paper_tables(load_results(args.results))
        if not tables:
            raise UserError(f"{' '.join(args.results)}: no evaluated runs to tabulate")
        for table in tables:
            print(table.render(args.format), end="\n\n")
        if args.out:
            write_tables(tables, Path(args.out), formats=(args.format,))


if __name__ == "__main__":
    main()
    sys.exit(0)
