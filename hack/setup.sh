#!/usr/bin/env bash
# Install everything the demo and the tests need, idempotently:
#   - Debian tools (dig, dnsperf, curl, jq) with apt-get
#   - Python deps into ./.venv
#   - kube-apiserver, etcd, coredns and kustomize built with Go into ~/.cache/aliasd/bin
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { echo "setup: $*" >&2; }

need_apt=()
command -v dig >/dev/null 2>&1 || need_apt+=(bind9-dnsutils)
command -v dnsperf >/dev/null 2>&1 || need_apt+=(dnsperf)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)  # the README walkthroughs (tests run them)
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
if ((${#need_apt[@]})); then
  sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
  command -v apt-get >/dev/null 2>&1 || { echo "setup: error: need ${need_apt[*]} and apt-get is not available: install them by hand" >&2; exit 2; }
  log "installing ${need_apt[*]} with apt-get"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >&2
fi

py="${PYTHON:-python3}"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "setup: error: Python >= 3.11 is required ($py is $("$py" --version 2>&1))" >&2; exit 2; }
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f $stamp ]]; then
  log "installing Python dependencies into .venv"
  [[ -x .venv/bin/python ]] || "$py" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' >&2
  rm -f .venv/.installed-*; touch "$stamp"
fi

hack/local-cluster/build.sh >/dev/null
