"""The generated reference pages, written from the code that declares what they
describe, so that they cannot drift from it:

    PYTHONPATH=hack/devtools .venv/bin/python -m aliasd_dev.reference flags
    PYTHONPATH=hack/devtools .venv/bin/python -m aliasd_dev.reference metrics
    PYTHONPATH=hack/devtools .venv/bin/python -m aliasd_dev.reference metrics --check
    PYTHONPATH=hack/devtools .venv/bin/python -m aliasd_dev.reference chart

``flags`` renders ``aliasd.flags.FLAGS``; ``metrics`` the registry ``/metrics``
serves; ``chart`` the values table of the chart README (``aliasd_dev.chart``).
``--check`` writes nothing and exits 1 with one line when the page is stale
(tests/devtools/test_reference.py compares the pages the same way)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aliasd import flags

ROOT = Path(__file__).resolve().parents[3]


def _cell(text: str) -> str:
    """``text`` inside a table cell: no pipe ends the cell, no star turns into emphasis."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("<", "&lt;")


def _default(flag: flags.AnyFlag) -> str:
    if isinstance(flag, flags.Switch):
        return "off"
    if isinstance(flag, flags.ListFlag):
        return ", ".join(f"`{d}`" for d in flag.default)
    if flag.default is None:
        return ""
    return f"`{flag.default.replace(flags.POD_NAMESPACE, '$POD_NAMESPACE')}`"


def _row(flag: flags.AnyFlag) -> str:
    name = f"`{flag.short}`, `{flag.name}`" if isinstance(flag, flags.Flag) and flag.short \
        else f"`{flag.name}`"
    help_text = _cell(flag.help)
    if isinstance(flag, flags.Flag) and flag.choices:
        help_text += "; one of " + ", ".join(f"`{c}`" for c in flag.choices)
    if isinstance(flag, flags.ListFlag):
        help_text += " (repeatable)"
    env = f"`{flag.env}`" if flag.env else ""
    return f"| {name} | {env} | {_default(flag)} | {help_text} |"


def _table(rows: Sequence[flags.AnyFlag]) -> list[str]:
    return ["| flag | env | default | meaning |", "| --- | --- | --- | --- |",
            *(_row(f) for f in rows)]


def flags_markdown() -> str:
    """``docs/reference/flags.md``: one table per command, from ``aliasd.flags.FLAGS``."""
    out = [
        "# Flags",
        "",
        "<!-- Generated from aliasd/flags.py by `python -m aliasd_dev.reference flags`;"
        " do not edit. -->",
        "",
        "Every flag can also be set as an environment variable `ALIASD_<FLAG>` (upper case,",
        "`-` becomes `_`); a repeatable flag takes a comma-separated list there, e.g.",
        "`ALIASD_ZONE=internal,corp.example`, and any value of it on the command line may",
        "be such a list too. The command line wins over the environment, the environment",
        "over the default. `$POD_NAMESPACE` is the namespace of aliasd's pod",
        "(`aliasd-system` outside a pod).",
        "",
        "A bad flag, file or port produces one line `aliasd: error: ...` and a non-zero",
        "exit (2 for `aliasd coredns`, whose `diff` exits 1 when a change is pending; 1",
        "otherwise), never a traceback.",
        "",
        "## Every command",
        "",
        "Given before the command: `aliasd --log-format json run ...`.",
        "",
        *_table(flags.GLOBAL),
    ]
    titles = {flags.RUN: "`aliasd run`: serve the alias zones",
              flags.COREDNS: "`aliasd coredns diff|apply|remove`: the cluster DNS wiring",
              flags.LIST: "`aliasd list`: the current aliases"}
    for command in flags.COMMANDS:
        out += ["", f"## {titles[command]}", "", *_table(flags.flags_of(command))]
    return "\n".join(out) + "\n"


_METRICS_HEADER = """\
# Metrics

Served at `/metrics` on the HTTP port (`--http-listen`), in the Prometheus
text format. Counters are read at scrape time from plain integers, so the DNS
query path never takes a lock.

This page is generated from the metrics registry by
`PYTHONPATH=hack/devtools python -m aliasd_dev.reference metrics`; edit the
help texts in the code, not here.

| name | type | labels | help |
| --- | --- | --- | --- |
"""


def metrics_markdown() -> str:
    """The metrics reference: one row per metric family ``/metrics`` serves."""
    from aliasd.app import AppConfig
    from aliasd.root import metrics_registry
    from aliasd.zoneconfig import ZoneConfig

    registry = metrics_registry(AppConfig(zones=ZoneConfig.from_names(["internal"])))
    rows = []
    for family in sorted(registry.collect(), key=lambda f: f.name):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = ", ".join(f"`{label}`" for label in getattr(family, "_labelnames", ()))
        help_text = " ".join(family.documentation.split()).replace("|", "\\|")
        rows.append(f"| `{name}` | {family.type} | {labels} | {help_text} |\n")
    return _METRICS_HEADER + "".join(rows)


def chart_readme() -> str:
    """``charts/aliasd/README.md`` with its values table regenerated from values.yaml."""
    from aliasd_dev import chart

    return chart.readme(ROOT / "charts" / "aliasd")


REFERENCES: dict[str, tuple[Callable[[], str], str]] = {
    "flags": (flags_markdown, "docs/reference/flags.md"),
    "metrics": (metrics_markdown, "docs/reference/metrics.md"),
    "chart": (chart_readme, "charts/aliasd/README.md"),
}
"""What ``python -m aliasd_dev.reference NAME`` writes: (render, path from the root)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aliasd_dev.reference",
                                     description="Write a generated reference page.")
    parser.add_argument("page", choices=sorted(REFERENCES))
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the page is not up to date")
    args = parser.parse_args(argv)
    render, relative = REFERENCES[args.page]
    path, text = ROOT / relative, render()
    if args.check:
        if not path.is_file() or path.read_text() != text:
            print(f"{relative} is stale: run python -m aliasd_dev.reference {args.page}",
                  file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
