"""Wildcard hosts through the real API server and the real CoreDNS
(RFC 4592): a ServiceEntry host *.wild-se.internal and a Service annotated
*.wild-svc.internal answer any name below them, asked of aliasd and of CoreDNS
forwarding the zone; a name that exists below, and the wildcard's parent, are
not taken; a wildcard at the apex is refused with an Event."""

from __future__ import annotations

from pathlib import Path

import dns.rcode
import pytest

from aliasd_dev import LocalCluster, free_udp_tcp_port
from tests.support.dnsclient import a_records, dig, dig_short, query, rcode
from tests.support.kube import events, service
from tests.support.process import run_aliasd
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

SE_IP = "240.0.16.1"


def status(server: tuple[str, int], name: str) -> tuple[str, list[str]]:
    """dig's status and answer lines."""
    out = dig(server, name, "A", "+noall", "+comments", "+answer")
    st = next((line.split("status: ")[1].split(",")[0] for line in out.splitlines()
               if "status: " in line), "")
    return st, [" ".join(line.split()) for line in out.splitlines()
                if line and not line.startswith(";")]


def test_wildcard_hosts_resolve_through_coredns_and_take_no_existing_name(
        coredns: LocalCluster, namespace: str, tmp_path: Path) -> None:
    api_ip = service(coredns, namespace, "api",
                     alias="api.wild-se.internal")["spec"]["clusterIP"]
    tenant_ip = service(coredns, namespace, "tenant",
                        alias="*.wild-svc.internal")["spec"]["clusterIP"]
    se = f"/apis/networking.istio.io/v1/namespaces/{namespace}/serviceentries"
    coredns.request("POST", se, {
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "wild"},
        "spec": {"hosts": ["*.wild-se.internal", "*.internal"], "addresses": [SE_IP],
                 "location": "MESH_EXTERNAL", "resolution": "STATIC",
                 "ports": [{"name": "http", "number": 80, "protocol": "HTTP"}],
                 "endpoints": [{"address": "192.0.2.9"}]}})
    port = free_udp_tcp_port()
    # Wildcards from namespaces need a grant of the name policy: here any name.
    with run_aliasd(["--kubeconfig", str(coredns.kubeconfig), "--zone", "internal",
                     "--coredns-mode", "corefile", "--forward-to", f"127.0.0.1:{port}",
                     "--leader-election", "off", "--default-allowed-names", "*"],
                    tmp=tmp_path, dns_port=port) as p:
        wait_for(lambda: a_records(p, "anything.wild-se.internal.") == [SE_IP],
                 what="the ServiceEntry's wildcard host")
        # Asked of aliasd: names below the wildcards, and what they do not take.
        assert a_records(p, "a.b.wild-se.internal.") == [SE_IP]
        assert a_records(p, "api.wild-se.internal.") == [api_ip]  # exists: not hijacked
        assert rcode(p, "x.api.wild-se.internal.") == "NXDOMAIN"  # closest encloser api
        r = query(p.dns, "wild-se.internal.", "A")  # the wildcard's parent: NODATA
        assert (r.rcode(), r.answer, r.authority[0].name.to_text()) == (
            dns.rcode.NOERROR, [], "internal.")
        wait_for(lambda: a_records(p, "anything.wild-svc.internal.") == [tenant_ip],
                 what="the Service's wildcard alias")
        assert rcode(p, "random-name.internal.") == "NXDOMAIN"  # *.internal: refused
        # The question a pod asks, through the real CoreDNS forwarding the zone.
        wait_for(lambda: dig_short(coredns.coredns_addr, "anything.wild-se.internal")
                 == [SE_IP], timeout=30, what="CoreDNS to forward the zone to aliasd")
        assert status(coredns.coredns_addr, "AnyThing.Wild-SE.internal.") == (
            "NOERROR", [f"AnyThing.Wild-SE.internal. 30 IN A {SE_IP}"])
        assert dig_short(coredns.coredns_addr, "pod-7.wild-svc.internal") == [tenant_ip]
        assert dig_short(coredns.coredns_addr, "api.wild-se.internal") == [api_ip]
        assert status(coredns.coredns_addr, "wild-se.internal.") == ("NOERROR", [])
        assert status(coredns.coredns_addr, "x.api.wild-se.internal.")[0] == "NXDOMAIN"
        assert status(coredns.coredns_addr, "random-name.internal.")[0] == "NXDOMAIN"
        # The apex wildcard got its Event, on the ServiceEntry.
        got = wait_for(lambda: [m for r, m in events(coredns, namespace, "wild")
                                if r == "InvalidAlias"], what="InvalidAlias event")
        assert got == ["alias '*.internal' is a wildcard at the zone apex, which would answer "
                       "every name of internal. that does not exist; use one under a "
                       "subdomain, e.g. *.team.internal."]
        # Live: the ServiceEntry goes, its wildcard with it.
        coredns.request("DELETE", f"{se}/wild")
        wait_for(lambda: rcode(p, "anything.wild-se.internal.") == "NXDOMAIN",
                 what="the wildcard to go with its ServiceEntry")
        assert a_records(p, "api.wild-se.internal.") == [api_ip]
