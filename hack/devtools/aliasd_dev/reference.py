"""Generated reference pages for the docs, built from the code itself.

``PYTHONPATH=hack/devtools python -m aliasd_dev.reference metrics`` (from the
repository root) prints the metrics reference (a markdown table built from the
registry ``/metrics`` serves) and writes it to ``docs/reference/metrics.md``;
with ``--check`` it writes nothing and fails when the committed page is stale
(tests/devtools/test_reference.py runs the same comparison).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
METRICS_PAGE = ROOT / "docs" / "reference" / "metrics.md"

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
    from aliasd.registry import ZoneConfig
    from aliasd.root import metrics_registry

    registry = metrics_registry(AppConfig(zones=ZoneConfig.from_names(["internal"])))
    rows = []
    for family in sorted(registry.collect(), key=lambda f: f.name):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = ", ".join(f"`{label}`" for label in getattr(family, "_labelnames", ()))
        help_text = " ".join(family.documentation.split()).replace("|", "\\|")
        rows.append(f"| `{name}` | {family.type} | {labels} | {help_text} |\n")
    return _METRICS_HEADER + "".join(rows)


def _write(page: Path, text: str, *, check: bool) -> int:
    if check:
        if not page.exists() or page.read_text() != text:
            sys.stderr.write(f"{page.relative_to(ROOT)} is stale: run PYTHONPATH=hack/devtools "
                             f"python -m aliasd_dev.reference {page.stem}\n")
            return 1
        return 0
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    sys.stdout.write(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aliasd_dev.reference",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    metrics = commands.add_parser("metrics", help="the metrics reference (docs/reference/"
                                  "metrics.md)")
    metrics.add_argument("--check", action="store_true",
                         help="write nothing; fail when the committed page is stale")
    args = parser.parse_args(argv)
    if args.command == "metrics":
        return _write(METRICS_PAGE, metrics_markdown(), check=args.check)
    return 2


if __name__ == "__main__":
    sys.exit(main())
