"""The generated reference pages match the code they are generated from."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aliasd_dev import reference
from tests.support import ROOT


def test_flags_page_is_up_to_date() -> None:
    page = ROOT / "docs" / "reference" / "flags.md"
    assert page.read_text() == reference.flags_markdown(), (
        "docs/reference/flags.md is stale: run "
        "PYTHONPATH=hack/devtools .venv/bin/python -m aliasd_dev.reference flags")


def test_metrics_page_is_up_to_date() -> None:
    page = ROOT / "docs" / "reference" / "metrics.md"
    assert page.read_text() == reference.metrics_markdown(), (
        "docs/reference/metrics.md is stale: run "
        "PYTHONPATH=hack/devtools .venv/bin/python -m aliasd_dev.reference metrics")


def test_metrics_page_has_a_row_per_family() -> None:
    text = reference.metrics_markdown()
    for name in ("aliasd_dns_queries_total", "aliasd_engine_runs_total", "aliasd_ready",
                 "aliasd_watch_restarts_total", "aliasd_loop_lag_seconds",
                 "aliasd_kube_api_responses_total"):
        assert f"| `{name}` |" in text


def test_flags_page_names_every_flag_and_variable() -> None:
    from aliasd import flags

    page = reference.flags_markdown()
    for flag in flags.FLAGS:
        assert f"`{flag.name}`" in page
        if flag.env:
            assert f"`{flag.env}`" in page


def test_check_fails_in_one_line_when_stale(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference, "ROOT", tmp_path)
    assert reference.main(["flags"]) == 0
    written = tmp_path / "docs" / "reference" / "flags.md"
    assert written.read_text() == reference.flags_markdown()
    assert reference.main(["flags", "--check"]) == 0
    written.write_text(written.read_text().replace("| `--zone` |", "| `--zones` |"))
    assert reference.main(["flags", "--check"]) == 1
    written.unlink()
    assert reference.main(["flags", "--check"]) == 1


def test_check_from_the_command_line(tmp_path: Path) -> None:
    """As CI runs it: exit 0 when up to date; 1 and one line on stderr when stale."""
    tree = tmp_path / "repo"
    shutil.copytree(ROOT / "hack" / "devtools", tree / "hack" / "devtools",
                    ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-m", "aliasd_dev.reference", "flags", "--check"]
    env = {"PYTHONPATH": str(tree / "hack" / "devtools"), "PATH": "/usr/bin:/bin"}
    stale = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60,
                           check=False, cwd=tmp_path)
    assert (stale.returncode, stale.stdout) == (1, "")
    assert stale.stderr == ("docs/reference/flags.md is stale: run "
                            "python -m aliasd_dev.reference flags\n")
    page = tree / "docs" / "reference" / "flags.md"
    page.parent.mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "reference" / "flags.md", page)
    fresh = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60,
                           check=False, cwd=tmp_path)
    assert (fresh.returncode, fresh.stdout, fresh.stderr) == (0, "", "")


def test_chart_readme_values_table_is_up_to_date() -> None:
    page = ROOT / "charts" / "aliasd" / "README.md"
    assert page.read_text() == reference.chart_readme(), (
        "charts/aliasd/README.md is stale: run "
        "PYTHONPATH=hack/devtools .venv/bin/python -m aliasd_dev.reference chart")


def test_chart_values_table_has_a_row_per_documented_value(tmp_path: Path) -> None:
    """A ``# --`` comment makes a row, nested keys by their dotted path, and a
    README without the markers is an error, not a README without a table."""
    import json

    from aliasd_dev import chart

    (tmp_path / "values.yaml").write_text(
        "# -- how many\nreplicas: 2\nimage:\n  # -- where from\n  repository: r\n"
        "  tag: ''\nlist:\n  - name: x\n# -- on or off\nflag: true\n")
    (tmp_path / "values.schema.json").write_text(json.dumps(
        {"properties": {"replicas": {"type": "integer"}}}))
    assert chart.values_table(tmp_path).splitlines()[2:] == [
        "| replicas | int | `2` | how many |",
        "| image.repository | string | `\"r\"` | where from |",
        "| flag | boolean | `true` | on or off |"]
    (tmp_path / "README.md").write_text(f"# x\n\n{chart.BEGIN}\nold\n{chart.END}\n\nafter\n")
    assert chart.readme(tmp_path) == (
        f"# x\n\n{chart.BEGIN}\n\n{chart.values_table(tmp_path)}\n{chart.END}\n\nafter\n")
    (tmp_path / "README.md").write_text("# x\n")
    with pytest.raises(ValueError):
        chart.readme(tmp_path)
    values = yaml.safe_load((ROOT / "charts" / "aliasd" / "values.yaml").read_text())
    documented = {k for k, _ in chart.documented_keys(
        (ROOT / "charts" / "aliasd" / "values.yaml").read_text())}
    # Every top-level value is in the table, itself or by its keys.
    assert {k.split(".")[0] for k in documented} == set(values)
