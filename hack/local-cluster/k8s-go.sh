# Sourced by hack/local-cluster/build.sh and hack/kind/build.sh: how a module
# of our own builds commands of k8s.io/kubernetes@${K8S_VERSION} (versions.env).
# Needs die() from the caller.

# The replace lines a consumer module needs: k8s.io/kubernetes requires its
# staging modules at v0.0.0 and replaces them with ./staging/...; a consumer
# replaces each with its published tag. Generated from the release's own go.mod.
k8s_staging_replaces() {
  local gomod staging_ver
  gomod="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  [[ -f "$gomod" ]] || die "could not download go.mod of k8s.io/kubernetes@${K8S_VERSION} from $(go env GOPROXY)"
  staging_ver="v0.${K8S_VERSION#v1.}"
  grep -E '=> \./staging/src/' "$gomod" | awk -v v="$staging_ver" '{print "replace " $1 " => " $1 " " v}'
}

# -ldflags that stamp the version a release build stamps (`kubectl version`,
# kubeadm's and kubelet's version checks read it).
k8s_ldflags() {
  local major minor flags
  major="${K8S_VERSION#v}"; major="${major%%.*}"
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  flags="-s -w -X k8s.io/component-base/version.gitVersion=${K8S_VERSION}"
  flags+=" -X k8s.io/component-base/version.gitMajor=${major} -X k8s.io/component-base/version.gitMinor=${minor}"
  flags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  flags+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
  echo "$flags"
}
