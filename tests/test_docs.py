"""The docs, without a cluster: every walkthrough the tests run is found on
the page they name, in the shape they rely on (the walkthroughs themselves
run in tests/coredns/ and tests/e2e/); the README's links lead somewhere; the
docs cite RFCs and upstream issues, never a tracker the reader cannot see.
``mkdocs build --strict`` (hack/test.sh) checks the links between pages."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support import ROOT, walkthrough

WALKTHROUGHS = [walkthrough.MIGRATION, walkthrough.FAILOVER, walkthrough.HEALTH]


@pytest.mark.parametrize("page", WALKTHROUGHS)
def test_each_walkthrough_page_has_one_setup_and_one_steps_block(page: str) -> None:
    (setup,) = walkthrough.blocks(page, "setup")
    (steps,) = walkthrough.blocks(page)
    assert "# => " not in setup
    # The walkthrough tests count six checked answers.
    assert steps.count("# => ") == 6


def test_the_migration_walkthrough_has_what_the_kind_run_relies_on() -> None:
    (setup,) = walkthrough.blocks(walkthrough.MIGRATION, "setup")
    (steps,) = walkthrough.blocks(walkthrough.MIGRATION)
    assert re.search(r"--image=\S+", setup)
    assert [ln for ln in setup.splitlines() if ln.startswith("ask()")]
    # tests/e2e measures the 50/50 split where the steps leave it.
    assert "\n# all on Kubernetes" in steps


def test_the_failover_setup_port_forwards_8080() -> None:
    (setup,) = walkthrough.blocks(walkthrough.FAILOVER, "setup")
    assert "8080:8080" in setup and "127.0.0.1:8080" in setup


def test_the_hook_role_allows_exactly_one_name() -> None:
    docs = list(yaml.safe_load_all(walkthrough.hook_role()))
    assert [d["kind"] for d in docs] == ["Role", "RoleBinding"]
    (rule,) = docs[0]["rules"]
    assert rule["resources"] == ["overrides"] and rule["apiGroups"] == ["aliasd.io"]
    assert rule["resourceNames"] == ["valkey-master.internal"]


def test_the_readme_is_short_and_its_links_lead_somewhere() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t)]
    assert local
    assert [t for t in local if not (ROOT / t).exists()] == []


def test_the_docs_cite_no_tracker_of_this_project() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = [f"{p.relative_to(ROOT)}:{n}" for p in pages
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\bissue [0-9]", line, re.I)]
    assert found == []
