"""What the tests share, so that no test module imports another: running aliasd
as a real process and reading its HTTP API and metrics (``process``), asking
DNS servers with real clients (``dnsclient``), objects in the local API server
(``kube``), polling with a deadline (``waiting``), Corefiles as distributions
ship them (``corefiles``) and the session CoreDNS's ConfigMaps (``coredns``),
the fakes of the runtime tests (``runtime``), the kind cluster of the e2e
suite (``kind``), rendering and installing the Helm chart (``chart``), the
docs' walkthroughs as scripts (``walkthrough``) and the chi-square check of
weighted answers (``stats``). Fixtures stay in the
conftest.py next to the tests that use them; ``ROOT`` is the repository."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
