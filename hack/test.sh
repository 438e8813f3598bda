#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing
# (apt tools, .venv, Go-built control plane), then lint, types and pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
hack/setup.sh
echo "== ruff" >&2
.venv/bin/ruff check aliasd tests bench hack/devtools
echo "== mypy" >&2
.venv/bin/mypy
echo "== pytest" >&2
exec .venv/bin/pytest "$@"
