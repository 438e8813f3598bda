#!/usr/bin/env bash
# Build kube-apiserver, etcd, coredns, kubectl, kustomize and helm from the Go module proxy into a cache
# outside the repository. Idempotent: binaries already present are kept.
#
#   hack/local-cluster/build.sh          # build what is missing, print the bin dir
#
# Output: the last line on stdout is the directory holding the binaries.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=k8s-go.sh
source "$here/k8s-go.sh"

cache="${ALIASD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aliasd}"
bindir="$cache/bin/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_coredns-${COREDNS_VERSION}"
mkdir -p "$bindir"

log() { echo "local-cluster: $*" >&2; }
die() { echo "local-cluster: error: $*" >&2; exit 2; }

kustomize_ok() { [[ -x "$bindir/kustomize" ]] && [[ "$("$bindir/kustomize" version 2>/dev/null)" == "${KUSTOMIZE_VERSION}" ]]; }
# helm reports the version given at link time (as its Makefile sets it for a release).
helm_ok() { [[ -x "$bindir/helm" ]] && [[ "$("$bindir/helm" version --template '{{.Version}}' 2>/dev/null)" == "${HELM_VERSION}" ]]; }
have_all=1
for b in kube-apiserver etcd coredns kubectl; do [[ -x "$bindir/$b" ]] || have_all=0; done
kustomize_ok || have_all=0
helm_ok || have_all=0
if [[ $have_all == 1 ]]; then
  echo "$bindir"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "Go toolchain not found on PATH: install Go >= 1.24 (apt-get install golang-go, or https://go.dev/dl) and rerun"
export CGO_ENABLED=0 GOTOOLCHAIN=local
# Fail in one line, fast, when the module proxy cannot be reached.
if ! timeout 60 go list -m "k8s.io/kubernetes@${K8S_VERSION}" >/dev/null 2>"$cache/proxy-check.log"; then
  die "cannot reach the Go module proxy ($(go env GOPROXY)) for k8s.io/kubernetes@${K8S_VERSION}: $(tail -n1 "$cache/proxy-check.log")"
fi

t0=$SECONDS
if [[ ! -x "$bindir/coredns" ]]; then
  log "building coredns ${COREDNS_VERSION} (first time: a few minutes)"
  GOBIN="$bindir" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@${COREDNS_VERSION}" \
    || die "building coredns ${COREDNS_VERSION} failed (above); is the Go module proxy ($(go env GOPROXY)) reachable?"
  log "coredns done ($((SECONDS - t0))s)"
fi

if ! kustomize_ok; then
  log "building kustomize ${KUSTOMIZE_VERSION}"
  GOBIN="$bindir" go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}" \
    || die "building kustomize ${KUSTOMIZE_VERSION} failed (above); is the Go module proxy ($(go env GOPROXY)) reachable?"
  log "kustomize done ($((SECONDS - t0))s)"
fi

if ! helm_ok; then
  log "building helm ${HELM_VERSION}"
  # The link-time values helm's Makefile sets for a release: the version, and
  # the Kubernetes version `helm template` and `helm lint` assume without a
  # cluster (here the local control plane's, not that of helm's client-go).
  k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
  helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.metadata="
  helm_ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${k8s_minor}"
  helm_ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${k8s_minor}"
  GOBIN="$bindir" go install -trimpath -ldflags "$helm_ldflags" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" \
    || die "building helm ${HELM_VERSION} failed (above); is the Go module proxy ($(go env GOPROXY)) reachable?"
  log "helm done ($((SECONDS - t0))s)"
fi

if [[ ! -x "$bindir/kube-apiserver" || ! -x "$bindir/etcd" || ! -x "$bindir/kubectl" ]]; then
  work="$cache/build/k8s-${K8S_VERSION}"
  rm -rf "$work"; mkdir -p "$work"
  cp -r "$here/wrapper/." "$work/"
  {
    echo "module aliasd.local/controlplane"
    echo
    echo "go 1.24.0"
    echo
    echo "require ("
    echo "	k8s.io/kubernetes ${K8S_VERSION}"
    echo "	go.etcd.io/etcd/server/v3 ${ETCD_VERSION}"
    echo ")"
    echo
    k8s_staging_replaces
  } >"$work/go.mod"
  log "wrapper go.mod: $(grep -c '^replace' "$work/go.mod") staging replaces"
  cd "$work"
  export GOFLAGS="-mod=mod"
  log "resolving modules (first time: downloads several hundred MB of sources)"
  go get "k8s.io/kubernetes/cmd/kube-apiserver@${K8S_VERSION}" "k8s.io/kubernetes/cmd/kubectl@${K8S_VERSION}" \
    "go.etcd.io/etcd/server/v3/etcdmain@${ETCD_VERSION}" >&2 \
    || die "resolving k8s.io/kubernetes@${K8S_VERSION} failed (above); is the Go module proxy ($(go env GOPROXY)) reachable?"
  ldflags="$(k8s_ldflags)"
  if [[ ! -x "$bindir/etcd" ]]; then
    log "building etcd ${ETCD_VERSION}"
    go build -trimpath -ldflags "-s -w" -o "$bindir/etcd.tmp" ./cmd/etcd
    mv "$bindir/etcd.tmp" "$bindir/etcd"
    log "etcd done ($((SECONDS - t0))s)"
  fi
  if [[ ! -x "$bindir/kube-apiserver" ]]; then
    log "building kube-apiserver ${K8S_VERSION} (first time: 10+ minutes on 2 cores)"
    go build -trimpath -ldflags "$ldflags" -o "$bindir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
    mv "$bindir/kube-apiserver.tmp" "$bindir/kube-apiserver"
    log "kube-apiserver done ($((SECONDS - t0))s)"
  fi
  if [[ ! -x "$bindir/kubectl" ]]; then
    # The README walkthroughs are run by the tests, kubectl commands included.
    log "building kubectl ${K8S_VERSION}"
    go build -trimpath -ldflags "$ldflags" -o "$bindir/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl
    mv "$bindir/kubectl.tmp" "$bindir/kubectl"
    log "kubectl done ($((SECONDS - t0))s)"
  fi
fi
log "all binaries built in $((SECONDS - t0))s"
echo "$bindir"
