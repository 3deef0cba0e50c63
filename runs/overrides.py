"""Command-line overrides of a grid file, as hydra takes them: `finetune.lr=3e-4 'seeds=[0,1]'`.

Each override is `dotted.path=value`; the value is YAML (`[0, 1]` a list, `{same_as: lr}`
a mapping, `3e-4` a number once validated). A path walks mappings by key and lists by
index (`datasets.0.source.pretrain.steps=10`) and may add a key the file leaves out (a
setting with a default); what the result means is then checked by the grid's own schema,
as if the file had said it. hydra itself is not used: its composition and plugins are a
framework of their own, and the grid is one file with one schema.
"""
from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from runs.errors import UserError

KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_/-]*|[0-9]+")


def parse_override(text: str) -> tuple[list[str], Any]:
    """'finetune.lr=3e-4' -> (['finetune', 'lr'], '3e-4' as YAML reads it)."""
    path, sep, value = text.partition("=")
    keys = path.strip().split(".")
    if not sep or not all(KEY.fullmatch(k) for k in keys):
        raise UserError(f"override {text!r}: expected dotted.key=value (e.g. finetune.lr=3e-4)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as err:
        raise UserError(f"override {text!r}: the value is not valid YAML "
                        f"({getattr(err, 'problem', None) or err})") from None
    if value.strip() and parsed is None and value.strip() not in ("null", "~", "Null", "NULL"):
        parsed = value          # a YAML comment or the like: take the text as it is
    return keys, parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """A copy of the grid file's mapping with each override set, in order."""
    out = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = out
        for depth, key in enumerate(keys):
            last = depth == len(keys) - 1
            where = ".".join(keys[:depth]) or "(top level)"
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise UserError(f"override {text!r}: {where} is a list of {len(node)}; "
                                    f"expected an index 0..{len(node) - 1}, got {key!r}")
                key = int(key)
            elif not isinstance(node, dict):
                raise UserError(f"override {text!r}: {where} is {type(node).__name__} "
                                f"{node!r}, not a mapping with keys")
            if last:
                node[key] = value
            else:
                if isinstance(node, dict) and node.get(key) is None:
                    node[key] = {}          # a section the file leaves to its defaults
                node = node[key]
    return out


def grid_text(raw: dict, source: str, overrides: list[str]) -> str:
    """The grid as YAML with a header saying where it came from (the grid record, --print)."""
    header = f"# {source}" + (f" with the command-line overrides: {' '.join(overrides)}" if overrides else "")
    return header + "\n" + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, default_flow_style=None)
