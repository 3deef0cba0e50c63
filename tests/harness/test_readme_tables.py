"""The tables and the grid reference in README.md and docs/*.md are made from committed files
and the schema by harness.tables, never typed by hand; the grids they show are valid grids."""
import re

import pytest
import yaml

from factories import ROOT, run_module
from runs.errors import UserError
from report import readme
from report.results import load_results, write_csv, write_parquet
from test_tables import rows


def test_every_generated_block_in_the_readme_and_docs_is_what_its_source_gives():
    """Fails when a figure in a tables block (or a line of the grid reference) was typed or
    edited by hand, or when the tidy table or the schema it comes from changed without
    `python -m harness.tables --readme`."""
    found = {"tables": 0, "schema": 0}
    stale = []
    for path in readme.documents(ROOT):
        text = path.read_text()
        found["tables"] += len(readme.BLOCK.findall(text))
        found["schema"] += len(readme.SCHEMA_BLOCK.findall(text))
        if readme.regenerate(text, path.parent) != text:
            stale.append(path.relative_to(ROOT).as_posix())
    assert found["tables"] >= 5 and found["schema"] == 1, found
    assert not stale, f"stale generated blocks in {stale}: run python -m harness.tables --readme"


def test_the_grids_the_readme_and_docs_show_are_valid_grids():
    """Every YAML example that is a whole grid (it has `name:` and `datasets:`) passes the
    schema, so a newcomer's copy of it fails on their data paths at most."""
    from runs.config import GridConfig

    shown = []
    for path in readme.documents(ROOT):
        for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S):
            grid = yaml.safe_load(block)
            if isinstance(grid, dict) and {"name", "datasets"} <= grid.keys():
                GridConfig.model_validate(grid)
                shown.append(path.name)
    assert "README.md" in shown and "grid.md" in shown


def test_a_block_is_filled_from_its_csv_and_the_rest_of_the_file_is_left_alone(tmp_path):
    write_csv(tmp_path / "metrics.csv.gz", rows())
    before = "# Results\n\nprose stays\n\n<!-- tables: metrics.csv.gz table3 -->\nstale 1.0\n<!-- end tables -->\ntail\n"
    (tmp_path / "README.md").write_text(before)
    assert readme.update(tmp_path / "README.md")
    after = (tmp_path / "README.md").read_text()
    assert after.startswith("# Results\n\nprose stays\n\n<!-- tables: metrics.csv.gz table3 -->\n")
    assert after.endswith("<!-- end tables -->\ntail\n") and "stale" not in after
    # the CSV round trip gives the same cell as the table made from the rows themselves
    assert "**2.600 [2.400, 2.900]**" in after
    assert not readme.update(tmp_path / "README.md")       # filled blocks are a fixed point


def test_published_csv_reads_back_as_the_same_tidy_table(tmp_path):
    df = rows()
    write_csv(tmp_path / "metrics.csv.gz", df)
    back = load_results(tmp_path / "metrics.csv.gz")
    assert list(back.columns) == list(df.columns) and len(back) == len(df)
    assert back["value"].tolist() == pytest.approx(df["value"].tolist(), nan_ok=True)
    # gzip without a time stamp: the same rows give the same bytes (diffable commits)
    first = (tmp_path / "metrics.csv.gz").read_bytes()
    write_csv(tmp_path / "again.csv.gz", df)
    assert (tmp_path / "again.csv.gz").read_bytes() == first


def test_an_unknown_table_or_file_is_one_line_naming_it(tmp_path):
    write_csv(tmp_path / "metrics.csv.gz", rows())
    with pytest.raises(UserError, match=r"metrics.csv.gz: no table 'table9'"):
        readme.regenerate("<!-- tables: metrics.csv.gz table9 -->\n<!-- end tables -->", tmp_path)
    with pytest.raises(UserError, match=r"gone.csv.gz: no such tidy table"):
        readme.regenerate("<!-- tables: gone.csv.gz table3 -->\n<!-- end tables -->", tmp_path)
    (tmp_path / "README.md").write_text("# nothing generated\n")
    proc = run_module("harness.tables", "--readme", str(tmp_path / "README.md"))
    assert proc.returncode == 2
    assert re.fullmatch(r"error: \S+README.md: no '<!-- tables: FILE NAME\.\.\. -->' block to fill\n", proc.stderr)
    assert (tmp_path / "README.md").read_text() == "# nothing generated\n"


def test_publish_replaces_the_folder_with_the_grid_s_report_and_its_tidy_table(tmp_path):
    from report.publish import publish
    from report.results import CELLS_FILE

    grid = tmp_path / "results" / "demo"
    (grid / "tables").mkdir(parents=True)
    write_parquet(grid / "metrics.parquet", rows())
    write_parquet(grid / CELLS_FILE, rows().iloc[:0])          # one seed: no cell of several runs
    (grid / "tables" / "table3.md").write_text("t3")
    (grid / "report.md").write_text(f"Query them with `harness.results.load_results('{grid}')`.\n"
                                    f"TensorBoard: `tensorboard --logdir {grid / 'runs'}`):\n")
    out = tmp_path / "docs" / "demo"
    (out / "images").mkdir(parents=True)
    (out / "images" / "stale.png").write_text("from an older grid")
    publish(grid, out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "metrics.csv.gz", "report.md", "tables", "tables/table3.md"]
    # the published copy names no folder of the machine that ran it
    assert (out / "report.md").read_text() == ("Query them with `harness.results.load_results('metrics.csv.gz')`.\n"
                                               "TensorBoard: `tensorboard --logdir results/demo/runs`):\n")
    assert len(load_results(out / "metrics.csv.gz")) == len(rows())
    with pytest.raises(UserError, match="not an aggregated grid folder"):
        publish(tmp_path / "results" / "missing", out)
    assert (out / "report.md").is_file()                         # a failed publish leaves the old folder


@pytest.mark.parametrize("target", ["folder with other files", "file"])
def test_publish_refuses_a_folder_it_did_not_write(tmp_path, target):
    """`--publish .` or `--publish docs` would have deleted the folder's other files."""
    from report.publish import publish

    grid = tmp_path / "results" / "demo"
    grid.mkdir(parents=True)
    write_parquet(grid / "metrics.parquet", rows())
    (grid / "report.md").write_text("report\n")
    out = tmp_path / "docs"
    if target == "file":
        out.write_text("notes")
        expected = "a file, not a folder"
    else:
        (out / "images").mkdir(parents=True)
        (out / "notes.md").write_text("mine")
        expected = r"holds what no publish wrote \(notes\.md\); give a new or empty folder"
    with pytest.raises(UserError, match=expected):
        publish(grid, out)
    assert (out / "notes.md").read_text() == "mine" if target != "file" else out.read_text() == "notes"


def published_grid(tmp_path, extra_file, extra_rows):
    """A grid folder with the tidy table, one more aggregate file and a report, published
    into docs/g under tmp_path; returns the published folder."""
    from report.publish import publish

    grid = tmp_path / "results" / "g"
    grid.mkdir(parents=True)
    write_parquet(grid / "metrics.parquet", rows())
    write_parquet(grid / extra_file, extra_rows)
    (grid / "report.md").write_text("report\n")
    return publish(grid, tmp_path / "docs" / "g")


def test_the_paired_differences_are_published_and_rendered_in_a_block(tmp_path):
    """The differences need the per-item files, which are not published: the aggregate keeps
    their rows (DIFFERENCES_FILE), publish copies them, and a block renders them again."""
    import pandas as pd

    from report.results import PUBLISHED_DIFFERENCES
    from report.results import DIFFERENCES_FILE

    diffs = pd.DataFrame({"model": ["sdft (sdft)", "scratch"], "group": ["unconditional"] * 2,
                          "metric": ["fid"] * 2, "value": [-1.5, 40.0], "ci_low": [-2.5, 30.0],
                          "ci_high": [0.5, 50.0], "note": [None, None], "order": [3, 1],
                          "selected_by": ["lowest FID against the full domain"] * 2})
    out = published_grid(tmp_path, DIFFERENCES_FILE, diffs)
    assert (out / PUBLISHED_DIFFERENCES).is_file()
    block = "<!-- tables: docs/g/metrics.csv.gz differences -->\n<!-- end tables -->"
    text = readme.regenerate(block, tmp_path)
    assert "Paired differences against the selected naive (test split)" in text
    assert "by the lowest FID against the full domain" in text
    # the interval that excludes 0 is bold, the one that holds it is not; rows in method order
    assert "**40.0 [30.0, 50.0]**" in text and "-1.500 [-2.500, 0.500]" in text
    assert "**-1.500" not in text and text.index("scratch") < text.index("sdft (sdft)")
    (out / PUBLISHED_DIFFERENCES).unlink()
    with pytest.raises(UserError, match="no table 'differences'"):
        readme.regenerate(block, tmp_path)


def test_the_forgetting_curve_is_published_and_rendered_in_a_block(tmp_path):
    """The curve's points (report/results.py POINTS_FILE) are published beside the tidy
    table and a block renders the `forgetting_curve` table from them."""
    import pandas as pd

    from report.results import POINTS_FILE
    from report.results import PUBLISHED_CURVE

    points = pd.DataFrame({"dataset": ["d"] * 3, "target": ["t"] * 3, "model": ["source", "naive", "naive"],
                           "order": [0, 1, 1], "step": [None, 600, 2000],
                           "metric": ["missing_class_share_corrected"] * 3, "value": [0.273, 0.283, 0.082],
                           "ci_low": [0.204, 0.2, 0.0], "ci_high": [0.348, 0.36, 0.202], "rows": [1, 3, 3]})
    out = published_grid(tmp_path, POINTS_FILE, points)
    assert (out / PUBLISHED_CURVE).is_file()
    text = readme.regenerate("<!-- tables: docs/g/metrics.csv.gz forgetting_curve -->\n<!-- end tables -->",
                             tmp_path)
    assert "The forgetting curve" in text and "naive @600" in text and "0.082 [0.000, 0.202]" in text
    assert text.index("source") < text.index("naive @600") < text.index("naive @2000")


def test_a_grid_its_metrics_file_and_its_publication_read_the_same_cells(tmp_path):
    """`harness.tables results/g/metrics.parquet` once found no cells.parquet beside it and
    fell back to the span rule: other intervals than `harness.tables results/g` for the
    same grid."""
    from report.results import CELLS_FILE, PUBLISHED_CELLS, PUBLISHED_METRICS, companion

    out = published_grid(tmp_path, CELLS_FILE, rows())
    grid = tmp_path / "results" / "g"
    assert companion(grid, "cells") == companion(grid / "metrics.parquet", "cells") == grid / CELLS_FILE
    assert companion(grid, "differences") is None                  # none written: none found
    assert companion(grid / "metrics.parquet", "differences") is None
    assert companion(out, "cells") == companion(out / PUBLISHED_METRICS, "cells") == out / PUBLISHED_CELLS
    assert companion(grid / "report.md", "cells") is None      # beside another file: none


# the documents that answer the paper's questions, and the section of each that does
ANSWERS = (("docs/results.md", None), ("docs/evaluation-classes.md", "## 7."),
           ("docs/methods.md", "## The benchmark grid"),
           ("README.md", "## The benchmark"))


def test_every_result_the_answers_quote_is_in_one_of_their_generated_tables():
    assert readme.documents()[0] == ROOT / "README.md"          # its default root is the project's
    for path, heading in ANSWERS:
        assert readme.unquoted_results((ROOT / path).read_text(), heading) == [], path
    # a number typed by hand is seen, in prose but not in code, and only in the section asked for
    block = "<!-- tables: x.csv.gz t -->\n| naive | 0.273 [0.204, 0.348] |\n<!-- end tables -->\n"
    text = f"# A\n\n## 1. one\n\n{block}naive 0.273, sdft 0.301.\n```\n0.999\n```\n## 2. two\n\n1.234\n"
    assert readme.unquoted_results(text) == ["0.301", "1.234"]
    assert readme.unquoted_results(text, "## 1.") == ["0.301"]
    assert readme.unquoted_results(text, "## 2.") == ["1.234"]


def test_a_gpu_figures_block_shows_the_last_line_of_its_setting_with_goals_and_what_is_missing(tmp_path):
    figures = tmp_path / "adm-gpu-speed.jsonl"
    figures.write_text("\n".join([
        '{"setting": "gpu_bf16", "mfu": 0.5, "deepspeed_over_torch": 1.0}',          # an earlier run
        '{"setting": "gpu_bf16_compiled", "mfu": 0.6}',
        '{"setting": "gpu_bf16", "device": "NVIDIA H200", "torch": "2.14.1", "mfu": 0.2, "deepspeed_over_torch": 1.05, '
        '"unipc8_10k_projected_s": 250.0, "peak_memory_arm": "deepspeed"}',
        ""]))
    (tmp_path / "README.md").write_text("<!-- tables: adm-gpu-speed.jsonl gpu_bf16 -->\n<!-- end tables -->\n")
    assert readme.update(tmp_path / "README.md")
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in (tmp_path / "README.md").read_text().splitlines() if line.startswith("| ")}
    assert lines["MFU (of the card's dense bf16 peak; DeepSpeed's where it ran)"] == ["0.2", ">= 0.35", "MISSED"]
    # which card and torch measured it: lines of several machines share the file
    assert ("**Setting `gpu_bf16` of adm-gpu-speed.jsonl** (NVIDIA H200, torch 2.14.1, peak memory of the "
            "deepspeed arm)") in (tmp_path / "README.md").read_text()
    assert lines["DeepSpeed over plain torch"] == ["1.05", "<= 1.1", "met"]
    assert lines["unipc 8: 10,000 samples, s"] == ["250.0", "<= 300.0", "met"]
    assert lines["dpm-solver++ 10: 10,000 samples, s"] == ["not measured", "<= 300.0", ""]
    with pytest.raises(UserError, match="no line of setting 'gpu_fp16'"):
        readme.render_block(figures, ["gpu_fp16"])


@pytest.mark.parametrize("given", ["docs/results/reproduce-forgetting", "docs/results/reproduce-forgetting/metrics.csv.gz"])
def test_harness_tables_reads_a_published_folder_as_the_docs_blocks_do(given):
    """A clone has no results/ of its own: `sdft tables docs/results/GRID` prints the tables
    the docs show, the cells' intervals, the paired differences and the curve included."""
    source = ROOT / "docs" / "results" / "reproduce-forgetting" / "metrics.csv.gz"
    proc = run_module("harness.tables", str(ROOT / given), check=True)
    for name in ("table3", "differences_seeds", "forgetting_curve"):
        block = readme.render_block(source, [name]).strip()
        assert block in proc.stdout, f"{name} of {given} is not the docs' table"
