#!/usr/bin/env bash
# Everything a kind cluster needs, built offline into a cache outside the
# repository (no container registry is contacted):
#   - docker.io from apt-get, dockerd started when none answers
#   - kind, kubelet, kubeadm, kube-proxy, kube-scheduler, kube-controller-manager,
#     etcd, coredns and pause built with Go from the Go module proxy
#   - the kind node image (Debian by debootstrap + systemd, containerd, runc and
#     the CNI plugins from Debian, our own small CNI DaemonSet) with every image
#     kubeadm asks for preloaded
#   - stand-ins for the registry images the repository names: the Dockerfile's
#     base (python:3.12-slim) and the dig pod image
# Idempotent: a second run with warm caches takes seconds.
#
#   hack/kind/build.sh     # prints progress on stderr; the last stdout line is an env file
#
# The env file sets PATH (kind, the docker wrapper kind needs here, kubectl)
# and the overrides hack/kind-up.sh takes: KIND_NODE_IMAGE, ALIASD_BASE_IMAGE,
# DIG_IMAGE. Versions: hack/local-cluster/versions.env.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=../local-cluster/versions.env
source "$root/hack/local-cluster/versions.env"
# shellcheck source=../local-cluster/k8s-go.sh
source "$root/hack/local-cluster/k8s-go.sh"

cache="${ALIASD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aliasd}/kind"
bin="$cache/bin"
out="$cache/k8s-${K8S_VERSION}"
mkdir -p "$bin" "$out"

t_start=$SECONDS
log() { echo "kind-build: $*" >&2; }
die() { echo "kind-build: error: $*" >&2; exit 2; }
step() { step_name="$1"; step_t0=$SECONDS; log "$1 ..."; }
done_step() { log "$step_name done ($((SECONDS - step_t0))s)"; }
sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"

export CGO_ENABLED=0 GOTOOLCHAIN=local

# --- docker -----------------------------------------------------------------
step "docker engine"
if ! command -v dockerd >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || die "no dockerd and no apt-get: install Docker by hand"
  log "installing docker.io with apt-get"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq docker.io >&2
fi
command -v debootstrap >/dev/null 2>&1 || {
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq debootstrap >&2; }
# Debian's own client, whatever else is first on PATH (a newer client without
# buildx cannot build with this daemon).
docker=/usr/bin/docker; [[ -x $docker ]] || docker="$(command -v docker)"
if ! $docker info >/dev/null 2>&1; then
  log "starting dockerd (log: $cache/dockerd.log)"
  $sudo setsid nohup dockerd >"$cache/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 60); do $docker info >/dev/null 2>&1 && break; sleep 1; done
  $docker info >/dev/null 2>&1 || die "dockerd did not answer within 60 s; see $cache/dockerd.log"
fi
done_step

# --- Go binaries --------------------------------------------------------------
# The wrapper module that builds the node's Kubernetes commands
# (hack/local-cluster/k8s-go.sh: the staging replaces, the version stamp).
k8s_wrapper_gomod() {
  printf 'module aliasd.local/kindnode\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes %s\n\n' "$K8S_VERSION"
  k8s_staging_replaces
}
k8s_cmds=(kubelet kubeadm kube-proxy kube-scheduler kube-controller-manager)
step "Go binaries (kind ${KIND_VERSION}, ${k8s_cmds[*]} ${K8S_VERSION}, etcd ${KIND_ETCD_VERSION}, coredns ${KIND_COREDNS_VERSION}, pause)"
command -v go >/dev/null 2>&1 || die "Go toolchain not found on PATH: install Go >= 1.24 and rerun"
if [[ ! -x "$bin/kind" ]] || [[ "$("$bin/kind" version 2>/dev/null | awk '{print $2}')" != "$KIND_VERSION" ]]; then
  log "building kind ${KIND_VERSION}"
  GOBIN="$bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kind@${KIND_VERSION}" \
    || die "building kind failed (above); is the Go module proxy ($(go env GOPROXY)) reachable?"
fi
missing=()
for c in "${k8s_cmds[@]}"; do [[ -x "$out/$c" ]] || missing+=("$c"); done
if ((${#missing[@]})); then
  work="$cache/build/k8s-${K8S_VERSION}"
  rm -rf "$work"; mkdir -p "$work"
  k8s_wrapper_gomod >"$work/go.mod"
  ldflags="$(k8s_ldflags)"
  pkgs=(); for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c@${K8S_VERSION}"); done
  (cd "$work" && GOFLAGS=-mod=mod go get "${pkgs[@]}" >&2) \
    || die "resolving k8s.io/kubernetes@${K8S_VERSION} failed (above); is the Go module proxy reachable?"
  for c in "${missing[@]}"; do
    log "building $c ${K8S_VERSION}"
    (cd "$work" && GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$out/$c.tmp" "k8s.io/kubernetes/cmd/$c")
    mv "$out/$c.tmp" "$out/$c"
  done
fi
if [[ ! -x "$out/etcd-${KIND_ETCD_VERSION}" ]]; then
  log "building etcd ${KIND_ETCD_VERSION}"
  work="$cache/build/etcd-${KIND_ETCD_VERSION}"
  rm -rf "$work"; mkdir -p "$work"
  cp -r "$root/hack/local-cluster/wrapper/cmd/etcd/." "$work/"
  printf 'module aliasd.local/etcd\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$KIND_ETCD_VERSION" >"$work/go.mod"
  (cd "$work" && GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3/etcdmain@${KIND_ETCD_VERSION}" >&2 \
    && GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" .) \
    || die "building etcd ${KIND_ETCD_VERSION} failed (above)"
  mv "$out/etcd.tmp" "$out/etcd-${KIND_ETCD_VERSION}"
fi
if [[ ! -x "$out/coredns-${KIND_COREDNS_VERSION}" ]]; then
  log "building coredns ${KIND_COREDNS_VERSION}"
  work="$cache/build/coredns-${KIND_COREDNS_VERSION}"; mkdir -p "$work"
  GOBIN="$work" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@${KIND_COREDNS_VERSION}" \
    || die "building coredns ${KIND_COREDNS_VERSION} failed (above)"
  mv "$work/coredns" "$out/coredns-${KIND_COREDNS_VERSION}"
fi
if [[ ! -x "$out/pause" ]] || ! cmp -s "$here/pause/main.go" "$out/pause.go"; then
  log "building pause"
  work="$cache/build/pause"; rm -rf "$work"; mkdir -p "$work"
  cp "$here/pause/main.go" "$work/"
  printf 'module aliasd.local/pause\n\ngo 1.24.0\n' >"$work/go.mod"
  (cd "$work" && go build -trimpath -ldflags "-s -w" -o "$out/pause" .)
  cp "$here/pause/main.go" "$out/pause.go"
fi
done_step

# --- the control plane binaries the local cluster already builds -------------
step "kube-apiserver and kubectl ${K8S_VERSION} (hack/local-cluster/build.sh)"
cp_bindir="$("$root/hack/local-cluster/build.sh" | tail -n1)"
done_step

# --- images -------------------------------------------------------------------
# Tags are content hashes of their inputs: an unchanged input is never rebuilt.
inputs_hash() { cat "$@" | sha256sum | cut -c1-12; }
have_image() { $docker image inspect "$1" >/dev/null 2>&1; }
ctx="$cache/context"
debian_image="aliasd.local/debian:${DEBIAN_SUITE}"
step "Debian ${DEBIAN_SUITE} base image (debootstrap)"
if ! have_image "$debian_image"; then
  mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  rootfs="$cache/rootfs-${DEBIAN_SUITE}"
  $sudo rm -rf "$rootfs"
  log "debootstrap --variant=minbase ${DEBIAN_SUITE} from $mirror (first time: a few minutes)"
  $sudo debootstrap --variant=minbase "$DEBIAN_SUITE" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $cache/debootstrap.log"
  $sudo rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  $sudo tar -C "$rootfs" -c . | $docker import --change 'CMD ["/bin/bash"]' - "$debian_image" >/dev/null
  $sudo rm -rf "$rootfs"
fi
done_step

build_image() {  # build_image TAG DOCKERFILE CONTEXT [docker build args...]
  local tag="$1" file="$2" dir="$3"; shift 3
  have_image "$tag" && return 0
  log "building image $tag"
  $docker build -q -t "$tag" -f "$file" --build-arg "DEBIAN_IMAGE=$debian_image" "$@" "$dir" >/dev/null \
    || die "building $tag failed (above)"
}
fresh_ctx() { rm -rf "$ctx/$1"; mkdir -p "$ctx/$1/bin"; echo "$ctx/$1"; }

step "stand-in images (dig pod image, python:3.12-slim)"
dig_image="aliasd.local/dnsutils:$(inputs_hash "$here/images/dnsutils.Dockerfile")"
build_image "$dig_image" "$here/images/dnsutils.Dockerfile" "$(fresh_ctx dnsutils)"
c="$(fresh_ctx python)"; cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$c/ca-certificates.crt"
base_image="aliasd.local/python:$(inputs_hash "$here/images/python.Dockerfile" "$c/ca-certificates.crt")"
build_image "$base_image" "$here/images/python.Dockerfile" "$c"
done_step

step "images kubeadm ${K8S_VERSION} needs"
reg=registry.k8s.io
scratch_image() {  # scratch_image TAG BINARY NAME [ENTRYPOINT]: BINARY as /usr/local/bin/NAME
  local tag="$1" binary="$2" name="$3" entry="${4:-}" c
  have_image "$tag" && return 0
  c="$(fresh_ctx "img-$name")"
  cp "$binary" "$c/bin/$name"
  { cat "$here/images/scratch.Dockerfile"; [[ -z $entry ]] || echo "ENTRYPOINT [\"/usr/local/bin/$name\"]"; } >"$c/Dockerfile"
  build_image "$tag" "$c/Dockerfile" "$c"
}
scratch_image "$reg/kube-apiserver:${K8S_VERSION}" "$cp_bindir/kube-apiserver" kube-apiserver
scratch_image "$reg/kube-controller-manager:${K8S_VERSION}" "$out/kube-controller-manager" kube-controller-manager
scratch_image "$reg/kube-scheduler:${K8S_VERSION}" "$out/kube-scheduler" kube-scheduler
scratch_image "$reg/etcd:${KIND_ETCD_VERSION#v}-0" "$out/etcd-${KIND_ETCD_VERSION}" etcd
scratch_image "$reg/coredns/coredns:${KIND_COREDNS_VERSION}" "$out/coredns-${KIND_COREDNS_VERSION}" coredns entrypoint
scratch_image "$reg/pause:${KIND_PAUSE_VERSION}" "$out/pause" pause entrypoint
if ! have_image "$reg/kube-proxy:${K8S_VERSION}"; then
  c="$(fresh_ctx kube-proxy)"; cp "$out/kube-proxy" "$c/bin/"
  build_image "$reg/kube-proxy:${K8S_VERSION}" "$here/images/debian-tools.Dockerfile" "$c" \
    --build-arg "PACKAGES=iptables conntrack ipset kmod"
fi
cni_image="aliasd.local/kind-cni:${K8S_VERSION}"
if ! have_image "$cni_image"; then
  c="$(fresh_ctx cni)"; cp "$cp_bindir/kubectl" "$c/bin/"
  build_image "$cni_image" "$here/images/debian-tools.Dockerfile" "$c" --build-arg "PACKAGES=iproute2"
fi
preload=("$reg/kube-apiserver:${K8S_VERSION}" "$reg/kube-controller-manager:${K8S_VERSION}"
  "$reg/kube-scheduler:${K8S_VERSION}" "$reg/kube-proxy:${K8S_VERSION}" "$reg/etcd:${KIND_ETCD_VERSION#v}-0"
  "$reg/coredns/coredns:${KIND_COREDNS_VERSION}" "$reg/pause:${KIND_PAUSE_VERSION}" "$cni_image" "$dig_image")
done_step

step "kind node image"
c="$ctx/node"; rm -rf "$c"; mkdir -p "$c/bin"
cp -r "$here/images/node/." "$c/"
sed -i "s/PAUSE_VERSION/${KIND_PAUSE_VERSION}/" "$c/files/etc/containerd/config.toml"
sed -i "s#CNI_IMAGE#${cni_image}#" "$c/files/kind/manifests/default-cni.yaml"
echo "${K8S_VERSION}" >"$c/files/kind/version"
cp "$out/kubelet" "$out/kubeadm" "$cp_bindir/kubectl" "$c/bin/"
ids="$(for i in "${preload[@]}"; do $docker image inspect -f '{{.Id}}' "$i"; done)"
node_hash="$( (cd "$c" && find . -type f | sort | xargs sha256sum; echo "$ids"; echo "$debian_image") | sha256sum | cut -c1-12)"
node_image="aliasd.local/kind-node:${K8S_VERSION}-${node_hash}"
if ! have_image "$node_image"; then
  build_image "$node_image-files" "$c/Dockerfile" "$c"
  # Preload the images into containerd's store the way kind's own node image
  # build does: containerd in a build container, `ctr images import`, commit.
  log "preloading ${#preload[@]} images into the node image"
  bc="aliasd-kind-build-$$"
  $docker rm -f "$bc" >/dev/null 2>&1 || true
  $docker run -d --name "$bc" --entrypoint=sleep "$node_image-files" infinity >/dev/null
  trap '$docker rm -f "$bc" >/dev/null 2>&1 || true' EXIT
  $docker exec "$bc" bash -c 'nohup containerd >/tmp/containerd.log 2>&1 &
    for i in $(seq 50); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; cat /tmp/containerd.log; exit 1' \
    || die "containerd did not start in the node build container"
  $docker save "${preload[@]}" | $docker exec -i "$bc" ctr --namespace=k8s.io images import \
      --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests - >/dev/null \
    || die "ctr images import failed"
  $docker exec "$bc" bash -c 'pkill containerd
    # `sleep` as PID 1 reaps nothing: wait for containerd to be gone or a zombie
    while ps -o stat= -C containerd | grep -qv Z; do sleep 0.2; done; rm -rf /tmp/* /run/containerd'
  $docker commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint"]' --change 'CMD ["/sbin/init"]' \
    "$bc" "$node_image" >/dev/null
  $docker rm -f "$bc" >/dev/null; trap - EXIT
  $docker rmi "$node_image-files" >/dev/null
fi
done_step

# --- the env file -------------------------------------------------------------
pathdir="$cache/path"; mkdir -p "$pathdir"
install -m 755 "$here/docker" "$pathdir/docker"
ln -sf "$bin/kind" "$pathdir/kind"
ln -sf "$cp_bindir/kubectl" "$pathdir/kubectl"
envfile="$cache/env"
cat >"$envfile.tmp" <<ENV
# Written by hack/kind/build.sh: source it, then run hack/kind-up.sh.
export PATH="$pathdir:\$PATH"
export KIND_NODE_IMAGE="$node_image"
export ALIASD_BASE_IMAGE="$base_image"
export DIG_IMAGE="$dig_image"
ENV
mv "$envfile.tmp" "$envfile"
log "all done in $((SECONDS - t_start))s"
echo "$envfile"
