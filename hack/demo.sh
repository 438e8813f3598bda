#!/usr/bin/env bash
# The one-command demo, from a fresh machine: installs what is missing (apt
# tools, .venv, the Go-built local control plane), then runs `aliasd demo`.
#   hack/demo.sh            # Ctrl-C stops and cleans up
#   hack/demo.sh --check    # assert and exit 0/1
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
hack/setup.sh
exec .venv/bin/aliasd demo "$@"
