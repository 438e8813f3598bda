#!/usr/bin/env bash
# The one-command demo, from a fresh machine: installs what is missing (apt
# tools, .venv, the Go-built local control plane), then runs the demo, a
# repository tool (hack/devtools/aliasd_dev/demo.py), not part of the package.
#   hack/demo.sh            # Ctrl-C stops and cleans up
#   hack/demo.sh --check    # assert and exit 0/1
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
hack/setup.sh
export PYTHONPATH="$root/hack/devtools${PYTHONPATH:+:$PYTHONPATH}"
exec .venv/bin/python -m aliasd_dev.demo "$@"
