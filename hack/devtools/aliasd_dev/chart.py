"""The values table of the chart README (``charts/aliasd/README.md``), generated
from the ``# --`` comments of ``charts/aliasd/values.yaml`` and the types of
``values.schema.json``, in the form of helm-docs (ExternalDNS's chart README):
Key, Type, Default, Description. ``python -m aliasd_dev.reference chart`` writes
it between the README's two markers; ``--check`` fails when it is stale."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[3] / "charts" / "aliasd"
BEGIN = "<!-- values table: generated from values.yaml, do not edit -->"
END = "<!-- end of values table -->"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):")
_DOC = re.compile(r"^ *# -- (?P<text>.*)$")


def documented_keys(values_text: str) -> list[tuple[str, str]]:
    """(dotted key, description) for every key preceded by a ``# --`` comment,
    in file order. Keys inside list items are not followed."""
    out: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    pending: str | None = None
    for line in values_text.splitlines():
        doc = _DOC.match(line)
        if doc:
            pending = doc.group("text").strip()
            continue
        key = _KEY.match(line)
        if not key:
            continue
        indent = len(key.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key.group("key")))
        if pending is not None:
            out.append((".".join(k for _, k in stack), pending))
            pending = None
    return out


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def _schema_type(schema: dict[str, Any], dotted: str) -> str | None:
    node: Any = schema
    for part in dotted.split("."):
        node = (node.get("properties") or {}).get(part)
        if node is None:
            return None
    kind = node.get("type")
    if isinstance(kind, list):
        return " or ".join(k for k in kind if k != "null")
    if kind is None and "enum" in node:
        return "string"
    return str(kind) if kind else None


_SCHEMA_NAMES = {"array": "list", "integer": "int"}
_PYTHON_NAMES = {"str": "string", "bool": "boolean", "int": "int", "float": "number",
                 "list": "list", "dict": "object", "NoneType": "null"}


def _type(value: Any, schema_type: str | None) -> str:
    """The schema's type where it declares one, else that of the default."""
    if schema_type:
        return _SCHEMA_NAMES.get(schema_type, schema_type)
    return _PYTHON_NAMES.get(type(value).__name__, type(value).__name__)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def values_table(chart: Path = CHART) -> str:
    values_text = (chart / "values.yaml").read_text()
    values = yaml.safe_load(values_text)
    schema = json.loads((chart / "values.schema.json").read_text())
    rows = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for key, description in documented_keys(values_text):
        value = _lookup(values, key)
        default = json.dumps(value, separators=(",", ":"))
        rows.append(f"| {key} | {_type(value, _schema_type(schema, key))} | "
                    f"`{_cell(default)}` | {_cell(description)} |")
    return "\n".join(rows) + "\n"


def readme(chart: Path = CHART) -> str:
    """The chart README with its values table regenerated."""
    text = (chart / "README.md").read_text()
    head, found, rest = text.partition(BEGIN + "\n")
    _, found_end, tail = rest.partition(END)
    if not found or not found_end:
        raise ValueError(f"{chart / 'README.md'} lacks the markers {BEGIN!r} and {END!r}")
    return head + BEGIN + "\n\n" + values_table(chart) + "\n" + END + tail
