"""The grid file's fields as Markdown tables, made from the schema itself (runs.config).

docs/grid.md holds this reference between `<!-- schema: grid -->` and `<!-- end schema -->`;
report/readme.py fills the block and tests/harness/test_readme_tables.py fails when
the committed text is not what the schema gives, so the reference cannot fall behind the
code. Types, bounds and defaults come from pydantic (each field's JSON schema); the notes
are the field's `description` or, where it has none, the comments written beside the field
in the source, so the one place a field is explained stays the code. `sdft schema`
(harness.schema) prints the same rows as one flat table.
"""
from __future__ import annotations

import inspect
import io
import re
import sys
import tokenize
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, TypeAdapter


@dataclass(frozen=True)
class Row:
    field: str
    type: str
    default: str
    notes: str


@dataclass
class Section:
    path: str            # where the mapping sits in a grid file: "datasets[].source"
    variant: str         # "kind: folder" for one member of a tagged union, else ""
    model: type[BaseModel]
    rows: tuple[Row, ...]
    also: list[str] = field(default_factory=list)    # other places the same mapping is written


# ---------------------------------------------------------------- walking the models
def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's value may be (through Optional, unions, lists, dicts)."""
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is Literal or origin is None:
        return []
    args = typing.get_args(annotation)
    if origin is dict:
        args = args[1:]
    return [m for arg in args for m in _models_in(arg)]


def _shape(annotation: Any) -> str:
    """How a field holding mappings is written: '' (one), '[]' (a list), '.<key>' (a dict)."""
    origin = typing.get_origin(_strip(annotation))
    if origin in (Union, getattr(__import__("types"), "UnionType", Union)):
        inner = [a for a in typing.get_args(_strip(annotation)) if a is not type(None)]
        return _shape(inner[0]) if inner else ""
    return {list: "[]", dict: ".<key>"}.get(origin, "")


def _variant(model: type[BaseModel]) -> str:
    kind = model.model_fields.get("kind")
    if kind is not None and typing.get_origin(_strip(kind.annotation)) is Literal:
        return "kind: " + ", ".join(map(str, typing.get_args(_strip(kind.annotation))))
    return ""


def sections(root: type[BaseModel] | None = None, path: str = "") -> list[Section]:
    """Every mapping of a grid file, top level first, each with its fields' rows."""
    if root is None:
        from runs.config import GridConfig
        root = GridConfig
    out: list[Section] = []
    seen: dict[type[BaseModel], Section] = {}

    def visit(model: type[BaseModel], where: str) -> None:
        if model in seen:
            if where not in (seen[model].path, *seen[model].also):
                seen[model].also.append(where)
            return
        rows, below = [], []
        for name, info in model.model_fields.items():
            inner = _models_in(info.annotation)
            if inner:
                nested = (f"{where}.{name}" if where else name) + _shape(info.annotation)
                rows.append(Row(name, _nested_type(info.annotation, nested), _default(info), _notes(model, name, info)))
                below.extend((m, nested) for m in inner)
            else:
                rows.append(Row(name, _type(info), _default(info), _notes(model, name, info)))
        seen[model] = Section(where, _variant(model), model, tuple(rows))
        out.append(seen[model])
        for child, child_path in below:
            visit(child, child_path)

    visit(root, path)
    return out


# ---------------------------------------------------------------- types and defaults
def _nested_type(annotation: Any, path: str) -> str:
    shape = _shape(annotation)
    optional = type(None) in typing.get_args(_strip(annotation))
    what = {"[]": "list of mappings", ".<key>": "mapping of mappings"}.get(shape, "mapping")
    if shape == ".<key>":
        keys = _schema(annotation).get("propertyNames", {}).get("enum")
        if keys:
            what += " (keys: " + ", ".join(f"`{k}`" for k in keys) + ")"
    return f"{what}: `{path}` below" + (", or unset" if optional else "")


def _schema(annotation: Any) -> dict:
    try:
        return TypeAdapter(annotation).json_schema()
    except Exception:          # a type pydantic cannot describe (Any): shown as "any"
        return {}


# JSON schema's names, and pydantic's own where a validator runs before the bound (runs.numbers)
_BOUNDS = (("minimum", "≥"), ("ge", "≥"), ("exclusiveMinimum", ">"), ("gt", ">"),
           ("maximum", "≤"), ("le", "≤"), ("exclusiveMaximum", "<"), ("lt", "<"))


def _describe(schema: dict) -> str:
    """One value's JSON schema, in words."""
    if "const" in schema:
        return f"`{_value(schema['const'])}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{_value(v)}`" for v in schema["enum"])
    if "anyOf" in schema:
        parts = [s for s in schema["anyOf"] if s.get("type") != "null"]
        text = " or ".join(_describe(s) for s in parts)
        return text + (" or unset" if len(parts) < len(schema["anyOf"]) else "")
    kind = schema.get("type")
    if kind == "array":
        text = "list of " + _describe(schema.get("items", {}))
        if schema.get("minItems"):
            text += f" (at least {schema['minItems']})"
        return text
    if kind == "object":
        return "mapping"
    words = {"integer": "whole number", "number": "number", "boolean": "true or false",
             "string": "text"}.get(kind, "any")
    bounds = [f"{sign} {_value(schema[key])}" for key, sign in _BOUNDS if key in schema]
    if "pattern" in schema:
        bounds.append(f"matching `{schema['pattern']}`")
    if "maxLength" in schema:
        bounds.append(f"at most {schema['maxLength']} characters")
    return words + (", " + ", ".join(bounds) if bounds else "")


def _type(info) -> str:
    from runs.config import Axis

    axis = next((m for m in info.metadata if isinstance(m, Axis)), None)
    if axis is None:
        return _describe(_schema(Annotated[(info.annotation, *info.metadata)] if info.metadata
                                 else info.annotation))
    one = _describe(_schema(axis.kind)) if getattr(axis, "kind", None) is not None else "a value"
    return f"{one}; a list of them is an axis; or `{{same_as: <setting>}}`"


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, BaseModel):
        return "(the defaults below)"
    return str(value)


def _default(info) -> str:
    if info.is_required():
        return "required"
    default = info.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        return "all defaults"
    return "unset" if default is None else f"`{_value(default)}`"


# ---------------------------------------------------------------- notes from the source
def _notes(model: type[BaseModel], name: str, info) -> str:
    if info.description:
        return _cell(info.description)
    owner = next((c for c in model.__mro__ if name in c.__dict__.get("__annotations__", {})), model)
    comments = _comments_of(owner)
    if comments is None:                  # made at run time: its fields are declared elsewhere
        return _cell(_declared_comment(name) or "")
    return _cell(comments.get(name, ""))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


@cache
def _comments_of(owner: type) -> dict[str, str] | None:
    """Field name -> the comment lines just above it and the comment after it, in the class's
    own source; None for a class made at run time (create_model), which has none."""
    try:
        lines, _ = inspect.getsourcelines(owner)
    except (OSError, TypeError):
        return None
    return _comments(lines, re.compile(r"^ {4}(\w+)\s*:"))


@cache
def _declared_comment(name: str) -> str | None:
    """The comments beside a setting declared in a module's table of declarations
    (runs.params: `Param("lr", ...)`), for the fields create_model makes from it; or a
    comment of the form "`name`: text" in the module that builds the model."""
    methods = sorted(m for m in sys.modules if m.startswith("runs.methods."))     # each method's own Params
    for module in ("runs.params", "runs.adapters", "runs.config", "runs.cluster", *methods):
        source = inspect.getsource(sys.modules[module]) if module in sys.modules else ""
        found = _comments(source.splitlines(keepends=True),
                          re.compile(r"^\s*\w+\(\s*[\"'](\w+)[\"']")).get(name)
        if found:
            return found
        tagged = re.search(rf"#.*`{re.escape(name)}`: (.+)$", source, re.M)
        if tagged:
            return tagged.group(1)
    return None


def _comments(lines: list[str], field: re.Pattern) -> dict[str, str]:
    out: dict[str, str] = {}
    above: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = field.match(line)
        if match:
            after = _trailing_comment(line)
            out.setdefault(match.group(1), " ".join([*above, *([after] if after else [])]))
        above = []
    return out


def _trailing_comment(line: str) -> str | None:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    comments = [t.string for t in tokens if t.type == tokenize.COMMENT]
    return comments[0].lstrip("#").strip() if comments else None


# ---------------------------------------------------------------- one list, every path
def flat_rows(root: type[BaseModel] | None = None) -> list[Row]:
    """Every field at every place a grid file can hold it, the field named by its whole path
    (`datasets[].source[kind=builtin].resolution`): the rows of sections(), listed again under
    each other place a mapping is written, for `sdft schema` and grep."""
    out = []
    for section in sections(root):
        variant = f"[{section.variant.replace(': ', '=').replace(', ', '|')}]" if section.variant else ""
        for path in (section.path, *section.also):
            prefix = f"{path}{variant}." if path else ""
            out.extend(Row(prefix + row.field, row.type, row.default, row.notes) for row in section.rows)
    return out


# ---------------------------------------------------------------- Markdown
def render() -> str:
    """The grid's reference: one table per mapping of the file."""
    parts = []
    for section in sections():
        where = f"`{section.path}`" if section.path else "The top level"
        title = where + "".join(f", `{p}`" for p in section.also)
        title += f" ({section.variant})" if section.variant else ""
        doc = section.model.__dict__.get("__doc__")          # its own, not BaseModel's
        lead = f"{_cell(inspect.cleandoc(doc).split(chr(10) * 2)[0])}\n\n" if doc else ""
        table = ["| field | type | default | notes |", "|---|---|---|---|"]
        table += [f"| `{r.field}` | {r.type} | {r.default} | {r.notes} |" for r in section.rows]
        parts.append(f"### {title}\n\n{lead}" + "\n".join(table) + "\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render())
