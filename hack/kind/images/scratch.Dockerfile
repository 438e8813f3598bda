# One static Go binary (kube-apiserver, kube-controller-manager,
# kube-scheduler, etcd, coredns, pause): kubeadm names the command, PATH finds it.
FROM scratch
COPY bin/ /usr/local/bin/
ENV PATH=/usr/local/bin
