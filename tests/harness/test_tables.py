"""The paper's tables as pivots of the tidy table: mean ± std over seeds, the best in bold."""
import math

import pandas as pd
import pytest

from factories import ROOT, run_module
from harness.results import tidy, write_parquet
from harness.tables import paper_tables


def rows():
    out = []
    fids = {("naive", None): [3.0, 3.2], ("sdft", "sdft"): [2.5, 2.7], ("sdft", "constant"): [2.9, 2.9],
            ("scratch", None): [9.0, 11.0]}
    for (method, weighting), values in fids.items():
        for seed, fid in enumerate(values):
            base = dict(run_id=f"{method}{weighting}{seed}", eval_id=f"e{method}{weighting}{seed}", method=method,
                        weighting=weighting, seed=seed, ckpt_step=100, extractor="builtin", n=100)
            out.append({**base, "task": "unconditional", "t0": None, "reference": "full-domain", "subset": "all",
                        "metric": "fid", "value": fid})
            out.append({**base, "task": "unconditional", "t0": None, "reference": "classifier",
                        "subset": "missing-classes", "metric": "missing_class_share", "value": fid / 20})
            for task in ("sdedit", "egsde"):
                out.append({**base, "task": task, "t0": 0.5, "reference": "source", "subset": "all",
                            "metric": "psnr", "value": 20 - fid})
                out.append({**base, "task": task, "t0": 0.5, "reference": "source", "subset": "all",
                            "metric": "lpips", "value": math.nan, "note": "not measured: no AlexNet weights"})
                out.append({**base, "task": task, "t0": 0.5, "reference": "source", "subset": "all",
                            "metric": "feature_dist_builtin", "value": fid / 100})
    return tidy(out)


def test_tables_pivot_mean_and_std_over_seeds_and_bold_the_best():
    tables = {t.name: t for t in paper_tables(rows())}
    assert {"table1_t0.5", "table3", "table4", "attributes"} <= set(tables)
    t3 = tables["table3"]
    assert t3.means.loc["sdft/sdft", ("unconditional", "fid")] == pytest.approx(2.6)
    assert t3.stds.loc["scratch", ("unconditional", "fid")] == pytest.approx(math.sqrt(2))
    markdown = t3.render("markdown")
    assert "**2.600 ± 0.141**" in markdown                      # lowest FID is best
    latex = tables["table1_t0.5"].render("latex")
    assert r"\textbf{17.4 $\pm$ 0.1}" in latex                  # highest PSNR is best
    assert "FeatDist" in latex and "not LPIPS" in latex           # the substitute says what it is
    t4 = tables["table4"]
    assert list(t4.means.index) == ["sdft/constant", "sdft/sdft"]


def test_tables_cli_formats_and_bad_path(tmp_path):
    grid = tmp_path / "grid"
    grid.mkdir()
    write_parquet(grid / "metrics.parquet", rows())
    for fmt, marker in (("latex", r"\begin{tabular}"), ("markdown", "| model"), ("csv", "model,")):
        proc = run_module("harness.tables", str(grid), "--format", fmt, "--out", str(tmp_path / fmt))
        assert proc.returncode == 0 and marker in proc.stdout, proc.stderr
    assert (tmp_path / "latex" / "table3.tex").is_file()
    bad = run_module("harness.tables", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "nowhere" in bad.stderr


def test_weighting_ablation_takes_each_weighting_at_its_best_lambda():
    df = rows()
    swept = []
    for lam, shift in ((1.0, 0.0), (10.0, -1.0)):
        part = df[df.method == "sdft"].copy()
        part["p_lambda_distill"] = lam
        part["eval_id"] = part["eval_id"] + str(lam)
        # constant is best at lambda 1, sdft at lambda 10
        bonus = part.weighting.map({"sdft": shift, "constant": -shift})
        part.loc[part.metric == "fid", "value"] += bonus[part.metric == "fid"]
        swept.append(part)
    df = tidy(pd.concat([df[df.method != "sdft"], *swept], ignore_index=True))
    tables = {t.name: t for t in paper_tables(df)}
    assert set(tables["table4"].means.index) == {"sdft/sdft λd=10", "sdft/constant λd=1"}
    assert len(tables["table4_sweep"].means) == 4


def test_load_results_reads_a_grid_folder(tmp_path):
    from harness.results import load_results

    grid = tmp_path / "g"
    grid.mkdir()
    write_parquet(grid / "metrics.parquet", rows())
    df = load_results(grid)
    assert isinstance(df, pd.DataFrame) and len(df) == len(rows())
    assert df.query("metric == 'fid' and method == 'naive'").value.mean() == pytest.approx(3.1)


# ---------------------------------------------------------------- damaged tables, closed pipes
def test_a_corrupt_run_table_is_one_line_naming_it(tmp_path):
    grid = tmp_path / "grid"
    (grid / "runs" / "e1").mkdir(parents=True)
    bad = grid / "runs" / "e1" / "metrics.parquet"
    bad.write_bytes(b"PAR1 cut off")
    proc = run_module("harness.tables", str(grid))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {bad}: not a readable parquet table")


def test_a_corrupt_grid_table_falls_back_to_the_runs(tmp_path):
    from harness.results import load_results

    grid = tmp_path / "grid"
    (grid / "runs" / "e1").mkdir(parents=True)
    write_parquet(grid / "runs" / "e1" / "metrics.parquet", rows())
    (grid / "metrics.parquet").write_bytes(b"\x00" * 64)
    proc = run_module("harness.tables", str(grid))
    assert proc.returncode == 0 and "Table 3" in proc.stdout
    assert proc.stderr.startswith(f"warning: {grid / 'metrics.parquet'}: not a readable parquet table")
    assert len(load_results(grid)) == len(rows())


def test_a_closed_pipe_is_no_traceback(tmp_path):
    """`python -m harness.tables ... | head`: the reader is gone before the first write."""
    import os
    import subprocess
    import sys

    grid = tmp_path / "grid"
    grid.mkdir()
    write_parquet(grid / "metrics.parquet", rows())
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([sys.executable, "-m", "harness.tables", str(grid)], stdout=write,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120)
    os.close(write)
    assert proc.stderr == "" and proc.returncode == 141
