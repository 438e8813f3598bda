#!/usr/bin/env bash
# Create a kind cluster, deploy aliasd into it, and dig an alias from a pod.
#   hack/kind-up.sh --helm   (or: make kind-up-helm)  installs the chart, charts/aliasd
#   hack/kind-up.sh          (or: make kind-up)       applies manifests/kind (kustomize)
# Safe to rerun: the cluster is kept, the image rebuilt and loaded, and the
# Deployment restarted when the image changed. One cluster holds one of the
# two installs: the script refuses to lay one over the other.
#
# Overrides a user does not need (the e2e tests use them for a cluster built
# offline by hack/kind/build.sh):
#   KIND_CLUSTER_NAME  cluster name (default: aliasd, as in kind-config.yaml)
#   KIND_NODE_IMAGE    kind node image (default: kind's own)
#   ALIASD_BASE_IMAGE  the Dockerfile's BASE_IMAGE (default: python:3.12-slim)
#   DIG_IMAGE          image of the pod that runs dig
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
with=kustomize
case "${1-}" in
  "") ;;
  --helm) with=helm ;;
  -h|--help) sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "kind-up: error: unknown argument: $1 (usage: hack/kind-up.sh [--helm])" >&2; exit 2 ;;
esac
tools=(docker kind kubectl); [[ $with == helm ]] && tools+=(helm)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "kind-up: error: $tool not found on PATH" >&2; exit 2; }
done
name="${KIND_CLUSTER_NAME:-aliasd}"
dig_image="${DIG_IMAGE:-registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7}"
log() { echo "kind-up: $*" >&2; }
die() { echo "kind-up: error: $*" >&2; exit 1; }
t0=$SECONDS

# A failing `kind get clusters` (a busy Docker daemon) is not "no cluster":
# retry it, and stop rather than try to create a cluster that may exist.
for attempt in 1 2 3 4 5; do
  if clusters="$(kind get clusters 2>/dev/null)"; then break; fi
  ((attempt < 5)) || die "cannot list kind clusters (is the Docker daemon running?): kind get clusters"
  sleep 2
done
if ! grep -qx "$name" <<<"$clusters"; then
  kind create cluster --config kind-config.yaml --name "$name" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi
kind export kubeconfig --name "$name" >/dev/null 2>&1

# Which install is there already: the chart's objects say managed-by Helm.
installed="$(kubectl -n aliasd-system get deployment aliasd --ignore-not-found \
  -o jsonpath='{.metadata.name} {.metadata.labels.app\.kubernetes\.io/managed-by}' 2>/dev/null || true)"
case "$with:$installed" in
  helm:aliasd\ Helm | helm: | kustomize: | kustomize:aliasd\ ) ;;
  helm:*) die "aliasd is installed here with kustomize; remove it first (docs/operations/uninstall.md), then rerun with --helm" ;;
  kustomize:*) die "aliasd is installed here with Helm; rerun with --helm, or \`helm uninstall aliasd -n aliasd-system\` first" ;;
esac

docker build -t aliasd:dev ${ALIASD_BASE_IMAGE:+--build-arg "BASE_IMAGE=$ALIASD_BASE_IMAGE"} .
image_id="$(docker image inspect -f '{{.Id}}' aliasd:dev)"
kind load docker-image aliasd:dev --name "$name"
if [[ $with == helm ]]; then
  # A rebuilt image keeps its tag: its ID in a pod annotation rolls the pods
  # when it changed since the last run, and only then.
  helm upgrade --install aliasd charts/aliasd --namespace aliasd-system --create-namespace \
    --set image.repository=aliasd --set image.tag=dev --set image.pullPolicy=Never \
    --set-string "podAnnotations.aliasd\.io/image-id=$image_id"
else
  old_id="$(kubectl -n aliasd-system get deployment aliasd -o jsonpath='{.metadata.annotations.aliasd\.io/image-id}' 2>/dev/null || true)"
  kubectl apply -k manifests/kind
  # A rebuilt image keeps its tag: restart the pods when the image ID changed
  # since the last run (the Deployment records it in an annotation).
  kubectl -n aliasd-system annotate --overwrite deployment aliasd "aliasd.io/image-id=$image_id" >/dev/null
  if [[ -n $old_id && $old_id != "$image_id" ]]; then
    log "image changed: restarting aliasd"
    kubectl -n aliasd-system rollout restart deployment aliasd
  fi
fi

# wait_pods NAMESPACE SELECTOR WHAT: until every pod is Ready; fail at once,
# naming the image, when one cannot be pulled (instead of timing out later).
wait_pods() {
  local ns="$1" sel="$2" what="$3" deadline=$((SECONDS + 180)) bad
  while ((SECONDS < deadline)); do
    bad="$(kubectl -n "$ns" get pods -l "$sel" -o jsonpath='{range .items[*]}{range .status.containerStatuses[*]}{.state.waiting.reason} {.image}{"\n"}{end}{end}' \
      | grep -E '^(ErrImagePull|ImagePullBackOff|ErrImageNeverPull|InvalidImageName)' | head -n1 || true)"
    [[ -z $bad ]] || die "$what: cannot pull image ${bad#* } (${bad%% *}); with kind, build it and \`kind load docker-image\` it"
    if [[ $ns/$sel == aliasd-system/* ]]; then
      kubectl -n "$ns" rollout status deploy/aliasd --timeout=5s >/dev/null 2>&1 && return 0
    elif kubectl -n "$ns" wait --for=condition=Ready pod -l "$sel" --timeout=5s >/dev/null 2>&1; then
      return 0
    fi
  done
  die "$what not ready within 180 s; see: kubectl -n $ns describe pods -l $sel"
}
wait_pods aliasd-system app.kubernetes.io/name=aliasd "aliasd"
log "aliasd is running ($((SECONDS - t0)) s)"

kubectl apply -f examples/fruits/00-namespace.yaml -f examples/fruits/10-service.yaml
# The ServiceEntry needs Istio's CRD; without Istio it is skipped.
kubectl apply -f examples/fruits/20-serviceentry.yaml 2>/dev/null || log "no Istio CRDs, ServiceEntry example skipped"
ip="$(kubectl -n micro-shake-factory get svc fruits-api-service -o jsonpath='{.spec.clusterIP}')"
log "the fruits Service's cluster IP: $ip"

# Its own pod name: a reader's `kubectl run dig` right after must not meet it.
kubectl delete pod kind-up-dig --ignore-not-found --wait=true >/dev/null
kubectl run kind-up-dig --image="$dig_image" --restart=Never --command -- sleep 3600 >/dev/null
wait_pods default run=kind-up-dig "the dig pod"
# Each CoreDNS replica serves the new block once the kubelet has synced the
# ConfigMap into it and the reload plugin has noticed: typically 30-75 s after
# aliasd's patch. Ask every replica directly until all of them answer.
log "waiting for every CoreDNS replica to serve my-fruits.internal (up to 3 minutes)"
deadline=$((SECONDS + 180))
while :; do
  pending=()
  for dns in $(kubectl -n kube-system get pods -l k8s-app=kube-dns -o jsonpath='{.items[*].status.podIP}'); do
    got="$(kubectl exec kind-up-dig -- dig +short +time=2 +tries=1 "@$dns" my-fruits.internal A 2>/dev/null || true)"
    [[ $got == "$ip" ]] || pending+=("$dns")
  done
  ((${#pending[@]} == 0)) && break
  ((SECONDS < deadline)) || die "CoreDNS replica(s) ${pending[*]} do not answer my-fruits.internal; see: kubectl -n aliasd-system logs deploy/aliasd, kubectl -n kube-system get configmap coredns -o yaml"
  sleep 2
done
log "every CoreDNS replica answers ($((SECONDS - t0)) s); through the pod's resolver:"
kubectl exec kind-up-dig -- dig my-fruits.internal
kubectl delete pod kind-up-dig --wait=false >/dev/null
