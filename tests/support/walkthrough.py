"""The walkthroughs of the docs as scripts, run from the pages they live on,
shared by the runs against the local control plane
(tests/coredns/test_walkthroughs.py) and against kind
(tests/e2e/test_walkthroughs.py). A page holds a ``walkthrough: setup`` block
(what a user does once) and a ``walkthrough: steps`` block, each an HTML
comment on the line before a ``sh`` code block; a line ``CMD  # => EXPECTED``
must print EXPECTED, retried until ``$CHECK_SECONDS`` (default 20) have
passed: DNS follows the API server within moments, not instantly, and in kind
CoreDNS serves a new server block only after its reload (up to ~75 s)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from tests.support import ROOT

DOCS = ROOT / "docs"
# The pages the tests run, relative to docs/.
MIGRATION = "guides/migrating-a-service.md"
FAILOVER = "guides/failover.md"
HEALTH = "guides/health-checks.md"
# The Role that lets a failover hook's ServiceAccount switch exactly one name.
HOOK_ROLE = "reference/overrides.md"

CHECK = r'''
check() {  # check CMD EXPECTED: retry until CMD prints EXPECTED (${CHECK_SECONDS:-20} s)
  local got="" want="" err deadline=$((SECONDS + ${CHECK_SECONDS:-20}))
  err=$(mktemp)
  while :; do
    want=$(eval "echo \"$2\"" 2>&1) || true
    got=$(eval "$1" 2>"$err") || true  # stdout only: kubectl warns on stderr
    if [[ "$got" == "$want" ]]; then echo "ok: $1"; rm -f "$err"; return 0; fi
    ((SECONDS < deadline)) || break
    sleep 0.2
  done
  printf 'FAILED: %s\n  want: %s\n  got:  %s\n  stderr: %s\n' "$1" "$want" "$got" "$(cat "$err")"
  rm -f "$err"
  return 1
}
'''


def page(path: str) -> str:
    """The text of docs page ``path`` (relative to docs/)."""
    return (DOCS / path).read_text()


def blocks(path: str, kind: str = "steps") -> list[str]:
    """The ``walkthrough: KIND`` blocks (setup or steps) of docs page ``path``."""
    found = re.findall(rf"<!-- walkthrough: {kind} -->\n```sh\n(.*?)\n```", page(path), re.S)
    assert found, f"no walkthrough: {kind} block in docs/{path}"
    return list(found)


def hook_role(path: str = HOOK_ROLE) -> str:
    """The Role (and its RoleBinding) for the failover hook on docs page ``path``."""
    found = re.search(r"```yaml\n(apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n.*?)```",
                      page(path), re.S)
    assert found, f"no Role for the failover hook in docs/{path}"
    return found.group(1)


def script(block: str) -> str:
    """``block`` with each ``CMD  # => EXPECTED`` line turned into ``check``."""
    out = []
    for line in block.splitlines():
        cmd, sep, want = line.partition("# => ")
        out.append(f"check {shlex.quote(cmd.strip())} {shlex.quote(want.strip())}"
                   if sep else line)
    return "\n".join(out)


def run(prelude: str, block: str, *, env: dict[str, str], tmp: Path,
        timeout: float = 600) -> str:
    """Run ``block`` (checks asserted) after ``prelude`` in bash; its stdout.
    Background jobs the prelude starts (a port-forward) end with the script."""
    path = tmp / "walkthrough.sh"
    path.write_text(f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
                    f"{CHECK}\n{prelude}\n{script(block)}\n")
    done = subprocess.run(["bash", str(path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return done.stdout
