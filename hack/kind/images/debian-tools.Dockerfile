# kube-proxy (iptables, conntrack) and the kind CNI (ip, kubectl) on Debian.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
ARG PACKAGES
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${PACKAGES} \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY bin/ /usr/local/bin/
