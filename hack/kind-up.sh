#!/usr/bin/env bash
# Create a kind cluster, deploy aliasd into it, and dig an alias from a pod.
#   hack/kind-up.sh        (or: make kind-up)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind-up: error: $tool not found on PATH" >&2; exit 2; }
done
name=aliasd
kind get clusters | grep -qx "$name" || kind create cluster --config kind-config.yaml
docker build -t aliasd:dev .
kind load docker-image aliasd:dev --name "$name"
kubectl apply -k manifests/kind
kubectl -n aliasd-system rollout status deploy/aliasd --timeout=180s
kubectl apply -f examples/fruits/00-namespace.yaml -f examples/fruits/10-service.yaml
# The ServiceEntry needs Istio's CRD; without Istio it is skipped.
kubectl apply -f examples/fruits/20-serviceentry.yaml 2>/dev/null || echo "kind-up: no Istio CRDs, ServiceEntry example skipped"
echo "kind-up: the fruits Service's cluster IP: $(kubectl -n micro-shake-factory get svc fruits-api-service -o jsonpath='{.spec.clusterIP}')"
# CoreDNS reloads its Corefile within ~30 s of aliasd's patch (kubelet sync + reload).
for i in $(seq 1 30); do
  if kubectl run "dig-$i" --rm -i --restart=Never --quiet \
       --image=registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7 -- dig +short my-fruits.internal | grep -q .; then
    kubectl run dig --rm -i --restart=Never --quiet \
      --image=registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7 -- dig my-fruits.internal
    exit 0
  fi
  sleep 5
done
echo "kind-up: error: my-fruits.internal did not resolve from a pod; see: kubectl -n aliasd-system logs deploy/aliasd" >&2
exit 1
