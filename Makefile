# The kind path (needs docker, kind and kubectl). The tests do not use this:
# they run everything against the local control plane (hack/test.sh).
.PHONY: kind-up kind-up-helm kind-down image test demo

image:
	docker build -t aliasd:dev .

kind-up:
	hack/kind-up.sh

kind-up-helm:
	hack/kind-up.sh --helm

kind-down:
	kind delete cluster --name aliasd

test:
	hack/test.sh

demo:
	hack/demo.sh
