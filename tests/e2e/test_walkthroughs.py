"""The walkthroughs of docs/guides/migrating-a-service.md and
docs/guides/failover.md in kind, run from those pages as written
(tests/support/walkthrough.py): the setup blocks too (the
agnhost pod for ``ask``, ``set env``, the token Secret, the overrides-api
overlay, the port-forward; only the port-forward's local port is a free one
instead of 8080), every ``# =>`` answer asserted from a pod through CoreDNS;
the 50/50 split measured from that pod; and the Kubernetes-token path ("Who
may switch an answer", docs/reference/overrides.md) from a pod with that
page's Role."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import walkthrough
from tests.support.kind import Kind, lease_holder, say
from tests.support.stats import CHI2_1DF_P1E9, chi2
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e
MIGRATION = walkthrough.MIGRATION
FAILOVER = walkthrough.FAILOVER
DATACENTER_IP = "192.0.2.10"
# The datacenter's DNS, which the story assumes: CoreDNS's upstream is the
# host's resolver here, so a user-owned block answers legacy-lb.example.com
# (aliasd's takeover block, for exactly that name, is more specific).
DATACENTER_BLOCK = f"""example.com:53 {{
    hosts {{
        {DATACENTER_IP} legacy-lb.example.com
    }}
}}
"""
SAMPLES = 2000


def edit_corefile(kind: Kind, change: Callable[[str], str]) -> None:
    """Change the Corefile with a JSON Patch ``test``: never undo a concurrent
    edit of aliasd's (it patches the same key)."""
    def attempt() -> bool:
        old = kind.corefile()
        kind.kubectl("-n", "kube-system", "patch", "configmap", "coredns", "--type=json",
                     "-p", json.dumps([{"op": "test", "path": "/data/Corefile", "value": old},
                                       {"op": "replace", "path": "/data/Corefile",
                                        "value": change(old)}]))
        return True
    wait_for(attempt, timeout=60, interval=0.5, what="the Corefile edit")


def bash_env(kind: Kind) -> dict[str, str]:
    # In kind CoreDNS serves a new server block (the datacenter's, a takeover)
    # only after the kubelet's ConfigMap sync and its reload: up to ~75 s.
    return {**kind.env, "CHECK_SECONDS": "180"}


def setup_lines(page: str, prefix: str) -> str:
    (setup,) = walkthrough.blocks(page, "setup")
    return "\n".join(ln for ln in setup.splitlines() if ln.startswith(prefix))


@pytest.fixture(scope="module")
def walkthrough_cluster(kind: Kind, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The migration's setup block run as written (it is the once-per-cluster
    setup of both walkthroughs); yields the ``ask`` function it defines."""
    (setup,) = walkthrough.blocks(MIGRATION, "setup")
    image = re.search(r"--image=(\S+)", setup)
    assert image, setup
    subprocess.run(["kind", "load", "docker-image", image.group(1), "--name",
                    kind.env["KIND_CLUSTER_NAME"]], env=kind.env, check=True,
                   capture_output=True, timeout=300)
    edit_corefile(kind, lambda text: text + DATACENTER_BLOCK)
    kind.kubectl("delete", "pod", "dnsutils", "--ignore-not-found", "--wait=true")
    walkthrough.run("", setup, env=bash_env(kind), tmp=tmp_path_factory.mktemp("setup"))
    kind.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/serviceentries.networking.istio.io")
    kind.kubectl("-n", "aliasd-system", "rollout", "status", "deployment/aliasd",
                 "--timeout=180s", timeout=200)
    kind.wait_settled()
    kind.kubectl("wait", "--for=condition=Ready", "pod/dnsutils", "--timeout=120s")
    try:
        yield setup_lines(MIGRATION, "ask()")
    finally:
        edit_corefile(kind, lambda text: text.replace(DATACENTER_BLOCK, ""))
        kind.kubectl("delete", "pod", "dnsutils", "--wait=false")
        # The failover setup rolled aliasd (the overrides-api overlay): leave it
        # settled, the Lease held by a new pod, as every e2e test does.
        kind.wait_settled()
        wait_for(lambda: lease_holder(kind), timeout=60, what="a Lease holder")


def sample(kind: Kind, name: str, n: int) -> Counter[str]:
    """``n`` lookups of ``name`` from the walkthrough's pod through CoreDNS
    (one dig process, ``-f``: fast enough for the statistics)."""
    out = kind.kubectl("exec", "dnsutils", "--", "sh", "-c",
                       f"yes {name} | head -n {n} >/tmp/q && dig +short +time=2 +tries=2 -f /tmp/q",
                       timeout=600)
    return Counter(out.split())


def every_coredns_answers_from_aliasd(kind: Kind, name: str) -> bool:
    """Each CoreDNS pod, asked directly, answers ``name`` with aliasd's TTL (5,
    from the ServiceEntry; the datacenter block says 3600)."""
    for pod in kind.json("-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns")["items"]:
        out = kind.kubectl("exec", "dnsutils", "--", "dig", "+noall", "+answer", "+time=2",
                           "+tries=1", f"@{pod['status']['podIP']}", name, check=False)
        if not out.split() or out.split()[1] != "5":
            return False
    return True


def test_walkthrough_migrating_a_service(kind: Kind, walkthrough_cluster: str,
                                         tmp_path: Path) -> None:
    (block,) = walkthrough.blocks(MIGRATION)
    # Run as two scripts, split where the page leaves 50/50 for 0/100, so the
    # split can be measured in between.
    cut = block.index("\n# all on Kubernetes")
    first, rest = block[:cut], block[cut + 1:]
    out = walkthrough.run(walkthrough_cluster, first, env=bash_env(kind), tmp=tmp_path)
    new_ip = kind.cluster_ip("shop", "fruits-v2")
    # The page's check passes once one CoreDNS replica has reloaded; until
    # the other has too, it answers from the datacenter alone (a 75/25 mix).
    wait_for(lambda: every_coredns_answers_from_aliasd(kind, "legacy-lb.example.com"),
             timeout=180, interval=2, what="every CoreDNS replica to serve the takeover")
    got = sample(kind, "legacy-lb.example.com", SAMPLES)
    say(f"e2e: walkthrough migration at 50/50: {dict(got)} in {SAMPLES} lookups from a pod "
        f"through CoreDNS (chi-square {chi2(dict(got), {DATACENTER_IP: 0.5, new_ip: 0.5}):.2f})")
    assert set(got) == {DATACENTER_IP, new_ip} and sum(got.values()) == SAMPLES, got
    # p < 1e-9 of failing by chance with a fair 50/50 draw per query.
    assert chi2(dict(got), {DATACENTER_IP: 0.5, new_ip: 0.5}) < CHI2_1DF_P1E9, got
    out += walkthrough.run(walkthrough_cluster, rest, env=bash_env(kind), tmp=tmp_path)
    assert out.count("ok: ") == block.count("# => ") == 6
    assert "legacy-lb.example.com" not in kind.corefile().replace(DATACENTER_BLOCK, "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def override_events(kind: Kind, reason: str) -> list[str]:
    return [e["message"] for e in kind.json("-n", "aliasd-system", "get", "events",
                                            "--field-selector", f"reason={reason}")["items"]]


def test_walkthrough_failover_with_an_http_switch(kind: Kind, walkthrough_cluster: str,
                                                  tmp_path: Path) -> None:
    port = free_port()  # never assume 8080 is free on a shared machine
    (setup,) = walkthrough.blocks(FAILOVER, "setup")
    setup = setup.replace("8080:8080", f"{port}:8080").replace("127.0.0.1:8080",
                                                                f"127.0.0.1:{port}")
    prelude = (f"{walkthrough_cluster}\n{setup}\n"
               'for _ in $(seq 150); do curl -sf "$ALIASD/healthz" >/dev/null && break; '
               "sleep 0.2; done")
    (block,) = walkthrough.blocks(FAILOVER)
    out = walkthrough.run(prelude, block, env=bash_env(kind), tmp=tmp_path)
    assert out.count("ok: ") == block.count("# => ") == 6
    assert any(m.endswith("set the override of valkey-master.internal.: none -> 10.0.0.7 "
                          "(ttl 5)") for m in override_events(kind, "OverrideSet"))


HOOK = r"""
import json, sys, urllib.error, urllib.request
def call(method, name, body=None, path="/var/run/secrets/tokens/token"):
    token = open(path).read()
    req = urllib.request.Request(
        "http://aliasd.aliasd-system.svc:8080/v1/overrides/" + name, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + token})
    try:
        return urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
print(call(*sys.argv[1:3], json.loads(sys.argv[3]) if len(sys.argv) > 3 else None,
           *sys.argv[4:]))
"""


def test_kubernetes_token_switches_exactly_one_name(kind: Kind, walkthrough_cluster: str
                                                    ) -> None:
    """"Who may switch an answer" (docs/reference/overrides.md): that page's
    Role for the hook's ServiceAccount, the hook's own token for the audience
    aliasd from a projected volume; its token for the API server is refused."""
    kind.kubectl("apply", "-f", "-", input=kind.kubectl(
        "create", "namespace", "cache", "--dry-run=client", "-o", "yaml"))
    kind.kubectl("-n", "cache", "create", "serviceaccount", "sentinel-hook")
    kind.kubectl("apply", "-f", "-", input=walkthrough.hook_role())
    kind.pod("sentinel-hook", "aliasd:dev", ["python", "-c", "import time; time.sleep(86400)"],
             namespace="cache", service_account="sentinel-hook", token_audience="aliasd")

    def hook(*args: str) -> str:
        return kind.kubectl("-n", "cache", "exec", "sentinel-hook", "--", "python", "-c",
                            HOOK, *args).strip()

    body = json.dumps({"addresses": ["10.0.0.9"], "ttl": 5})
    # The token the pod has for the API server: not meant for aliasd, refused.
    assert hook("PUT", "valkey-master.internal", body,
                "/var/run/secrets/kubernetes.io/serviceaccount/token") == "401"
    assert hook("PUT", "valkey-master.internal", body) in ("200", "201")
    wait_for(lambda: kind.kubectl("exec", "dnsutils", "--", "dig", "+short",
                                  "valkey-master.internal").split() == ["10.0.0.9"],
             timeout=30, what="the hook's override through CoreDNS")
    assert hook("PUT", "payments.internal", json.dumps({"addresses": ["10.6.6.6"]})) == "403"
    assert hook("DELETE", "valkey-master.internal") == "200"
    who = "system:serviceaccount:cache:sentinel-hook"
    assert (f"{who} set the override of valkey-master.internal.: none -> 10.0.0.9 (ttl 5)"
            in override_events(kind, "OverrideSet"))
    assert any(m.startswith(f"{who} was refused (403") and "payments.internal" in m
               for m in override_events(kind, "OverrideRefused"))
    kind.kubectl("delete", "namespace", "cache", "--wait=false")
