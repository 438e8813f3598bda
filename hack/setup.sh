#!/usr/bin/env bash
# Install everything the demo and the tests need, idempotently:
#   - Debian tools (dig, dnsperf, curl, jq, nsd for bench/dns_qps.py, lua5.4 for the
#     Argo CD health check's test) with apt-get
#   - Python deps into ./.venv
#   - kube-apiserver, etcd, coredns, kubectl, kustomize and helm built with Go into ~/.cache/aliasd/bin
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { echo "setup: $*" >&2; }

need_apt=()
command -v dig >/dev/null 2>&1 || need_apt+=(bind9-dnsutils)
command -v dnsperf >/dev/null 2>&1 || need_apt+=(dnsperf)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)  # the docs' walkthroughs (tests run them)
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
command -v nsd >/dev/null 2>&1 || need_apt+=(nsd)  # bench/dns_qps.py: the C reference
command -v lua5.4 >/dev/null 2>&1 || need_apt+=(lua5.4)  # the Argo CD health check's test
if ((${#need_apt[@]})); then
  sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
  command -v apt-get >/dev/null 2>&1 || { echo "setup: error: need ${need_apt[*]} and apt-get is not available: install them by hand" >&2; exit 2; }
  log "installing ${need_apt[*]} with apt-get"
  $sudo apt-get update -qq >&2
  # No daemon may start from the install (Debian's nsd would take port 53):
  # policy-rc.d exit 101 is Debian's "do not start services" switch.
  policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy"
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
    "${need_apt[@]}" >&2 || { [[ -z $policy ]] || $sudo rm -f "$policy"; exit 1; }
  [[ -z $policy ]] || $sudo rm -f "$policy"
  if [[ " ${need_apt[*]} " == *" nsd "* ]]; then
    # The bench runs its own nsd on a loopback port; the system service stays off.
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
      $sudo systemctl disable --now nsd >/dev/null 2>&1 || true
    elif [[ -f /run/nsd/nsd.pid ]]; then
      $sudo kill "$(cat /run/nsd/nsd.pid)" 2>/dev/null || true
    fi
  fi
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
