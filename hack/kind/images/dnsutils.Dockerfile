# Stand-in for registry.k8s.io/e2e-test-images/jessie-dnsutils (dig, getent).
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bind9-dnsutils iproute2 procps \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
