"""The grid reference of docs/grid.md: types, bounds and defaults from the schema, notes from
the comments beside each field, one table per mapping of the file."""
from typing import Literal

from factories import run_module
from runs import grid_reference
from runs.strict import Strict
from runs.numbers import Real, Whole
from report import readme


class Inner(Strict):
    """What the inner block holds.

    Not this second paragraph."""
    kind: Literal["a", "b"] = "a"


class Toy(Strict):
    # how many things
    # (two lines of comment)
    count: Whole(gt=0, le=5) = 2
    rate: Real(ge=0, lt=1) | None = None   # a rate, if any
    items: list[Inner] = []
    inner: Inner = Inner()
    label: str


def test_rows_carry_the_schema_s_type_bounds_default_and_the_comments_beside_the_field():
    top, inner = grid_reference.sections(Toy)
    rows = {row.field: row for row in top.rows}
    assert rows["count"] == grid_reference.Row("count", "whole number, > 0, ≤ 5", "`2`",
                                               "how many things (two lines of comment)")
    assert rows["rate"] == grid_reference.Row("rate", "number, ≥ 0, < 1 or unset", "unset", "a rate, if any")
    assert rows["label"].default == "required" and rows["label"].notes == ""
    assert rows["items"].type == "list of mappings: `items[]` below"
    # one mapping written in two places is described once, under both names
    assert (inner.path, inner.also, inner.variant) == ("items[]", ["inner"], "kind: a, b")
    # sdft schema's flat list names each field by its whole path, at every place it is written
    flat = {row.field: row for row in grid_reference.flat_rows(Toy)}
    assert flat["count"] == rows["count"] and flat["items"] == rows["items"]
    listed, nested = flat["items[][kind=a|b].kind"], flat["inner[kind=a|b].kind"]
    assert (listed.type, listed.default) == (nested.type, nested.default) == ("one of `a`, `b`", "`a`")


def test_the_finetune_section_says_a_setting_can_be_swept_or_tied():
    finetune = next(s for s in grid_reference.sections() if s.path == "finetune")
    lr = next(r for r in finetune.rows if r.field == "lr")
    assert lr.type == "number, > 0; a list of them is an axis; or `{same_as: <setting>}`"
    # the notes of settings declared in runs.params come from the comments there
    clip = next(r for r in finetune.rows if r.field == "grad_clip")
    assert clip.notes == "none in the official code"


def test_a_schema_block_is_filled_and_the_cli_fills_every_file_it_is_given(tmp_path):
    for name in ("a.md", "b.md"):
        (tmp_path / name).write_text("# Grid\n\n<!-- schema: grid -->\nstale\n<!-- end schema -->\ntail\n")
    proc = run_module("harness.tables", "--readme", str(tmp_path / "a.md"), str(tmp_path / "b.md"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("tables rewritten") == 2
    text = (tmp_path / "b.md").read_text()
    assert "stale" not in text and text.endswith("<!-- end schema -->\ntail\n")
    assert "### `cluster`\n\nSlurm resources" in text and "| `timeout_min` | whole number, > 1" in text
    assert not readme.update(tmp_path / "a.md")          # a filled block is a fixed point
