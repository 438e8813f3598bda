#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing
# (apt tools, .venv, Go-built control plane), then lint, types, layers, the
# docs build and pytest.
#
# Test order: pytest-randomly shuffles the tests (modules, then the tests in
# each) and re-seeds Python's `random` before each test, from one seed.
# The seed is ALIASD_TEST_SEED, 1 unless set, so every run, CI's included, runs
# the same order with the same data: a failure replays exactly. To look for
# order dependence, run with ALIASD_TEST_SEED=random (a fresh seed, printed as
# "Using --randomly-seed=N") and replay a failure with ALIASD_TEST_SEED=N.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
hack/setup.sh
echo "== ruff" >&2
.venv/bin/ruff check aliasd tests bench hack/devtools
echo "== mypy" >&2
.venv/bin/mypy
echo "== import-linter" >&2
.venv/bin/lint-imports
echo "== mkdocs build --strict" >&2
# The docs site, built to catch broken links and pages missing from the nav;
# built into a temporary directory, nothing is left in the work tree.
site="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$site" \
  || { rm -rf "$site"; exit 1; }
rm -rf "$site"
seed="${ALIASD_TEST_SEED:-1}"
if [[ $seed == random ]]; then
  seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
fi
echo "== pytest (ALIASD_TEST_SEED=$seed replays this order)" >&2
exec .venv/bin/pytest --randomly-seed="$seed" "$@"
