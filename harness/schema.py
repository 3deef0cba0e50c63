"""python -m harness.schema: every field of a grid file, with its type and default.

Read from the grid's own pydantic models (harness.config.GridConfig, through its JSON
schema), so the list cannot drift from what submit accepts. A section that is one of
several kinds (a dataset's source, its targets) lists each kind's fields under
`[kind=...]`. --format markdown gives the same table for docs.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from harness.errors import exit_on_user_error, quiet_broken_pipe

BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "exclusiveMinimum": ">", "minimum": ">=",
          "exclusiveMaximum": "<", "maximum": "<="}
REQUIRED = "(required)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.schema", description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=("text", "markdown"), default="text")
    return parser.parse_args(argv)


class Schema:
    def __init__(self, root: dict):
        self.root, self.defs = root, root.get("$defs", {})

    def deref(self, node: dict) -> dict:
        while "$ref" in node:
            node = {**self.defs[node["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def is_section(self, node: dict) -> bool:
        return "properties" in self.deref(node)

    def type_of(self, node: dict) -> str:
        node = self.deref(node)
        if "const" in node:
            return json.dumps(node["const"])
        if "enum" in node:
            return " | ".join(str(v) for v in node["enum"])
        options = node.get("anyOf") or node.get("oneOf")
        if options:
            refs = [o["$ref"].rsplit("/", 1)[-1] for o in options if "$ref" in o]
            if "SameAs" in refs:            # a sweepable hyper-parameter (harness.config._axis)
                one = " or ".join(self.type_of(o) for o in options
                                  if "$ref" not in o and o.get("type") != "array")
                return f"{one}; a list sweeps it, {{same_as: NAME}} ties it"
            return " or ".join(self.type_of(o) for o in options)
        kind = node.get("type")
        if kind == "array":
            text = f"list of {self.type_of(node.get('items', {}))}"
            return text + (f" (at least {node['minItems']})" if node.get("minItems") else "")
        if "enum" in node.get("propertyNames", {}) and "$ref" in node.get("additionalProperties", {}):
            keys = " | ".join(node["propertyNames"]["enum"])
            section = node["additionalProperties"]["$ref"].rsplit("/", 1)[-1]
            return f"mapping of {keys} to settings as under finetune ({section})"
        if kind == "object" or "properties" in node:
            return "mapping"
        if kind == "null":
            return "null"
        names = {"integer": "whole number", "number": "number", "string": "text", "boolean": "true | false"}
        text = names.get(kind, kind or "any")
        bounds = [f"{sign} {node[key]}" for key, sign in BOUNDS.items() if key in node]
        return " ".join([text, ", ".join(bounds)]).strip()

    def rows(self, node: dict | None = None, prefix: str = "") -> list[tuple[str, str, str]]:
        node = self.deref(node or self.root)
        required = set(node.get("required", ()))
        out = []
        for name, field in node.get("properties", {}).items():
            path = f"{prefix}{name}"
            default = REQUIRED if name in required else json.dumps(field.get("default"))
            out.extend(self.field_rows(field, path, default))
        return out

    def field_rows(self, field: dict, path: str, default: str) -> list[tuple[str, str, str]]:
        field = self.deref(field)
        options = field.get("oneOf") or field.get("anyOf") or []
        if field.get("type") == "array" and self._variants(field.get("items", {})):
            return [(path, "list of mappings" + (f" (at least {field['minItems']})" if field.get("minItems") else ""),
                     default)] + self.variant_rows(field["items"], f"{path}[]")
        if field.get("type") == "array" and self.is_section(field.get("items", {})):
            return [(path, "list of mappings", default)] + self.rows(field["items"], f"{path}[].")
        if self._variants(field):
            return [(path, "mapping", default)] + self.variant_rows(field, path)
        sections = [o for o in options if self.is_section(o)]
        if self.is_section(field) or (sections and not any("SameAs" in o.get("$ref", "") for o in options)):
            kinds = " or ".join(["mapping", *("null" for o in options if o.get("type") == "null")])
            shown = default if default in (REQUIRED, "null") else ""
            return [(path, kinds, shown)] + self.rows(sections[0] if sections else field, f"{path}.")
        return [(path, self.type_of(field), default)]

    def _variants(self, node: dict) -> bool:
        return "discriminator" in self.deref(node)

    def variant_rows(self, node: dict, path: str) -> list[tuple[str, str, str]]:
        node = self.deref(node)
        tag = node["discriminator"]["propertyName"]
        out = []
        for value, ref in node["discriminator"]["mapping"].items():
            out.extend(self.rows({"$ref": ref}, f"{path}[{tag}={value}]."))
        return out


def schema_rows() -> list[tuple[str, str, str]]:
    from harness.config import GridConfig

    return Schema(GridConfig.model_json_schema()).rows()


def schema_table(fmt: str = "text") -> str:
    from tabulate import tabulate

    return tabulate(schema_rows(), headers=("field", "type", "default"),
                    tablefmt="github" if fmt == "markdown" else "simple", disable_numparse=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with quiet_broken_pipe(), exit_on_user_error():
        print(schema_table(args.format))


if __name__ == "__main__":
    main()
