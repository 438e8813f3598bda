"""The desired cluster DNS config (pure): Corefile blocks, kube-dns stubDomains,
and the guarded JSON Patch that gets there."""

from __future__ import annotations

import json

import jsonpatch
import pytest

from aliasd.coredns import corefile
from aliasd.coredns.patcher import COREDNS, COREDNS_CUSTOM, KUBE_DNS, Change, parse_forward
from aliasd.coredns.plan import (
    STUB_ANNOTATION,
    Forward,
    corefile_text,
    custom_data,
    custom_key,
    custom_names,
    imports_custom_servers,
    stub_domains,
)
from aliasd.model import ApplyError, ConfigError
from tests.support.corefiles import KUBE_DNS_STYLE, KUBEADM, NODE_LOCAL, SHAPES

FWD = Forward("10.96.0.53", 53)


INTERNAL_TAKEN = {"internal": "zone internal already has a server block aliasd does not own; "
                              "aliasd leaves it alone, so that block decides where internal "
                              "goes"}


def test_block_uses_the_root_port_and_bind() -> None:
    text, conflicts = corefile_text(KUBEADM, ["internal."], FWD)
    assert conflicts == {}
    (ours,) = [b for b in corefile.server_blocks(text) if b.managed]
    assert ours.keys == ("internal:53",)
    assert corefile.directive(ours, "bind") == ["127.0.0.1"]
    assert corefile.directive(ours, "forward") == [".", "10.96.0.53:53"]
    nl, _ = corefile_text(NODE_LOCAL, ["internal"], Forward("10.96.0.99", 53))
    (ours,) = [b for b in corefile.server_blocks(nl) if b.managed]
    assert corefile.directive(ours, "bind") == ["169.254.20.10", "10.96.0.10"]
    assert nl.startswith(NODE_LOCAL)


def test_zones_come_and_go_and_removal_is_exact() -> None:
    two, _ = corefile_text(KUBE_DNS_STYLE, ["internal.", "corp."], FWD)
    assert [r.zone for r in corefile.managed_regions(two)] == ["internal", "corp"]
    one, _ = corefile_text(two, ["corp."], FWD)
    assert [r.zone for r in corefile.managed_regions(one)] == ["corp"]
    moved, _ = corefile_text(one, ["corp."], Forward("fd00::53", 5353))
    assert "forward . [fd00::53]:5353" in moved
    assert corefile_text(moved, [], None)[0] == KUBE_DNS_STYLE
    # No forward target known yet: existing blocks are kept, none is invented.
    assert corefile_text(one, ["corp.", "new."], None)[0] == one


def test_user_owned_zone_is_a_conflict_and_left_alone() -> None:
    user = KUBEADM + "internal:53 {\n    forward . 10.0.0.1\n}\n"
    text, conflicts = corefile_text(user, ["internal.", "corp."], FWD)
    assert conflicts == INTERNAL_TAKEN
    assert text.startswith(user) and "corp:53 {" in text
    # A block of ours that the user later shadows with their own is withdrawn.
    ours, _ = corefile_text(KUBEADM, ["internal."], FWD)
    shadowed = ours + "internal:53 {\n    forward . 10.0.0.1\n}\n"
    assert corefile_text(shadowed, ["internal."], FWD) == (user, INTERNAL_TAKEN)


def test_unparseable_corefile_is_an_apply_error() -> None:
    with pytest.raises(ApplyError, match="cannot parse the Corefile: unbalanced"):
        corefile_text(".:53 {\n  errors\n", ["internal"], FWD)


def test_stub_domains_merge_keeps_other_entries_and_remove_is_exact() -> None:
    original = '{"acme.local":   ["1.2.3.4"]}'
    text, ann, conflicts = stub_domains(original, {"keep": "me"}, ["internal."], FWD)
    assert json.loads(text or "") == {"acme.local": ["1.2.3.4"], "internal": ["10.96.0.53"]}
    assert conflicts == {} and ann["keep"] == "me"
    assert json.loads(ann[STUB_ANNOTATION]) == {"original": original, "zones": ["internal"]}
    # Idempotent: the same input gives the same text, byte for byte.
    assert stub_domains(text, ann, ["internal."], FWD) == (text, ann, {})
    assert stub_domains(text, ann, [], None) == (original, {"keep": "me"}, {})
    # Someone added an entry meanwhile: it survives the removal.
    edited = json.dumps({**json.loads(text or ""), "b.local": ["5.6.7.8"]})
    back, ann2, _ = stub_domains(edited, ann, [], None)
    assert json.loads(back or "") == {"acme.local": ["1.2.3.4"], "b.local": ["5.6.7.8"]}
    assert STUB_ANNOTATION not in ann2
    # No stubDomains key before: none after.
    text, ann, _ = stub_domains(None, {}, ["internal"], FWD)
    assert stub_domains(text, ann, [], None) == (None, {}, {})


def test_stub_domains_conflict_and_port_rules() -> None:
    mine = '{"internal": ["10.0.0.1"]}'
    assert stub_domains(mine, {}, ["internal"], FWD) == (mine, {}, {
        "internal": "zone internal already has a stubDomains entry aliasd does not own; "
                    "aliasd leaves it alone"})
    with pytest.raises(ApplyError, match="must listen on port 53"):
        stub_domains(None, {}, ["internal"], Forward("10.96.0.53", 5353))
    with pytest.raises(ApplyError, match="stubDomains is not valid JSON"):
        stub_domains("{nope", {}, ["internal"], FWD)
    with pytest.raises(ApplyError, match="not a JSON object"):
        stub_domains('["a"]', {}, ["internal"], FWD)


def _cm(data: dict[str, str] | None, annotations: dict[str, str] | None = None
        ) -> dict[str, object]:
    meta: dict[str, object] = {"name": "coredns", "namespace": "kube-system",
                               "resourceVersion": "42"}
    if annotations is not None:
        meta["annotations"] = annotations
    obj: dict[str, object] = {"metadata": meta}
    if data is not None:
        obj["data"] = data
    return obj


def test_patch_tests_the_value_it_replaces_and_applies_exactly() -> None:
    obj = _cm({"Corefile": KUBEADM})
    new, _ = corefile_text(KUBEADM, ["internal"], FWD)
    change = Change(COREDNS, obj, {"Corefile": new}, {})
    ops = change.patch()
    assert ops == [{"op": "test", "path": "/data/Corefile", "value": KUBEADM},
                   {"op": "replace", "path": "/data/Corefile", "value": new}]
    assert jsonpatch.apply_patch(obj, ops)["data"] == {"Corefile": new}
    # Someone else's edit in between: the test op fails instead of overwriting it.
    theirs = _cm({"Corefile": KUBEADM + "# ops edit\n"})
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(theirs, ops)
    assert "+internal:53 {" in change.diff() and change.changed
    assert not Change(COREDNS, obj, {"Corefile": KUBEADM}, {}).changed


def test_patch_adding_members_is_pinned_to_the_resource_version() -> None:
    obj = _cm(None)
    text, ann, _ = stub_domains(None, {}, ["internal"], FWD)
    change = Change(KUBE_DNS, obj, {"stubDomains": text or ""}, ann)
    ops = change.patch()
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "42"}
    patched = jsonpatch.apply_patch(obj, ops)
    assert patched["data"] == {"stubDomains": text}
    assert patched["metadata"]["annotations"] == ann
    undone = jsonpatch.apply_patch(patched, Change(KUBE_DNS, patched, {}, {}).patch())
    assert undone["data"] == {} and undone["metadata"]["annotations"] == {}


@pytest.mark.parametrize(("text", "expected"), [
    ("10.96.0.53:53", Forward("10.96.0.53", 53)),
    ("10.96.0.53", Forward("10.96.0.53", 53)),
    ("[fd00::53]:5353", Forward("fd00::53", 5353)),
    ("fd00::53", Forward("fd00::53", 53)),
])
def test_parse_forward(text: str, expected: Forward) -> None:
    assert parse_forward(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("aliasd.aliasd-system.svc:53", "need IP:PORT with an IP address"),
    ("10.96.0.53:0", "port must be 1..65535"),
    ("10.96.0.53:dns", "port must be 1..65535"),
])
def test_parse_forward_rejects(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_forward(text)


# ---- coredns-custom mode (AKS, k3s) -------------------------------------------------

CUSTOM_BLOCK = ("# managed by aliasd; `aliasd coredns remove` deletes this key\n"
                "internal:53 {\n    errors\n    forward . 10.96.0.53:53\n}\n")


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_custom_import_is_detected_in_the_real_shapes(shape: str) -> None:
    assert imports_custom_servers(SHAPES[shape])
    assert not imports_custom_servers(KUBEADM)
    # An import inside the root block is a plugin fragment (*.override), not blocks.
    assert not imports_custom_servers(".:53 {\n    import custom/*.server\n}\n")
    assert not imports_custom_servers("import custom/*.override\n")
    assert imports_custom_servers('import "/etc/coredns/custom/*.server"\n')


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_custom_keys_per_zone_and_takeover_others_untouched(shape: str) -> None:
    user = {"log.override": "log\n",
            "corp.server": "corp.example:53 {\n    forward . 10.1.1.1\n}\n"}
    data, conflicts = custom_data(user, SHAPES[shape], ["internal.", "legacy-lb.example.com"],
                                  FWD)
    assert conflicts == {}
    assert data == {**user, "aliasd-internal.server": CUSTOM_BLOCK,
                    "aliasd-legacy-lb.example.com.server":
                        CUSTOM_BLOCK.replace("internal:53", "legacy-lb.example.com:53")}
    assert custom_names(data) == ["internal", "legacy-lb.example.com"]
    # Idempotent; a zone dropped loses its key; removal leaves exactly the user's keys.
    assert custom_data(data, SHAPES[shape], ["internal", "legacy-lb.example.com"], FWD)[0] == data
    assert custom_key("legacy-lb.example.com.") not in custom_data(data, SHAPES[shape],
                                                                   ["internal"], FWD)[0]
    assert custom_data(data, SHAPES[shape], [], None) == (user, {})


def test_custom_block_follows_the_platform_port_and_bind() -> None:
    platform = SHAPES["aks"].replace(".:53 {\n", ".:1053 {\n    bind 10.0.0.10\n")
    data, _ = custom_data({}, platform, ["internal"], FWD)
    (block,) = corefile.server_blocks(data["aliasd-internal.server"])
    assert block.keys == ("internal:1053",)
    assert corefile.directive(block, "bind") == ["10.0.0.10"]


def test_custom_zone_with_a_block_elsewhere_is_a_conflict() -> None:
    # In the platform Corefile, or in someone else's *.server key: CoreDNS refuses
    # two blocks for one zone, so aliasd writes none.
    platform = SHAPES["k3s"] + "internal:53 {\n    forward . 10.0.0.1\n}\n"
    assert custom_data({}, platform, ["internal", "corp"], FWD)[1] == INTERNAL_TAKEN
    theirs = {"mine.server": "corp:53 {\n    forward . 10.0.0.2\n}\n"}
    data, conflicts = custom_data(theirs, SHAPES["k3s"], ["internal", "corp"], FWD)
    assert list(conflicts) == ["corp"]
    assert sorted(data) == ["aliasd-internal.server", "mine.server"]
    # A broken key of someone else's is CoreDNS's problem, not a reason to stop.
    broken = {"broken.server": "oops {\n"}
    assert custom_data(broken, SHAPES["k3s"], ["internal"], FWD)[0]["broken.server"] == "oops {\n"


def test_custom_diff_names_each_key() -> None:
    obj = _cm({"log.override": "log\n"})
    data, _ = custom_data({"log.override": "log\n"}, SHAPES["aks"], ["internal"], FWD)
    diff = Change(COREDNS_CUSTOM, obj, data, {}).diff()
    assert diff.splitlines()[:2] == [
        "--- a/kube-system/coredns-custom:data.aliasd-internal.server",
        "+++ b/kube-system/coredns-custom:data.aliasd-internal.server"]
    assert "log.override" not in diff


@pytest.mark.parametrize("name", ["svc.cluster.local", "cluster.local", "local.cluster.local",
                                  "in-addr.arpa", "10.in-addr.arpa", "ip6.arpa"])
def test_zones_of_the_kubernetes_plugin_are_never_wired(name: str) -> None:
    # kubeadm's Corefile serves cluster.local, in-addr.arpa and ip6.arpa from
    # the kubernetes plugin of its "." block: no block key names them, but a
    # block for one of them (or below, or above) would take them from it.
    zone = next(z for z in ("cluster.local", "in-addr.arpa", "ip6.arpa")
                if f".{name}".endswith(f".{z}") or f".{z}".endswith(f".{name}"))
    why = (f"zone {name} overlaps {zone}, which the kubernetes plugin of the Corefile serves; "
           f"aliasd adds no server block for it, so the Corefile keeps answering it")
    text, conflicts = corefile_text(KUBEADM, ["internal", name], FWD)
    assert conflicts == {name: why}
    assert [r.zone for r in corefile.managed_regions(text)] == ["internal"]
    for shape in sorted(SHAPES):
        data, conflicts = custom_data({}, SHAPES[shape], ["internal", name], FWD)
        assert conflicts == {name: why}
        assert sorted(data) == ["aliasd-internal.server"]


def test_zones_of_any_plugin_in_any_block_are_never_wired() -> None:
    corp = ("corp.example:53 {\n    file /etc/coredns/db.corp corp.example\n}\n"
            "cluster.k8s.example:53 {\n    kubernetes\n}\n"
            "ext.example:53 {\n    hosts /etc/hosts hosts.ext.example {\n      fallthrough\n"
            "    }\n    forward . 192.0.2.1\n}\n")
    names = ["internal", "api.corp.example", "svc.cluster.k8s.example", "k8s.example",
             "hosts.ext.example", "a.hosts.ext.example", "legacy.ext.example"]
    text, conflicts = corefile_text(KUBEADM + corp, names, FWD)
    assert {n: why.split(",")[0] for n, why in conflicts.items()} == {
        "svc.cluster.k8s.example": "zone svc.cluster.k8s.example overlaps cluster.k8s.example",
        "k8s.example": "zone k8s.example overlaps cluster.k8s.example",
        "hosts.ext.example": "zone hosts.ext.example overlaps hosts.ext.example"}
    # A name below a zone served from files, hosts or a forward, not from the
    # cluster's service discovery, is what a takeover is for: one name moves.
    assert [r.zone for r in corefile.managed_regions(text)] == [
        "internal", "api.corp.example", "a.hosts.ext.example", "legacy.ext.example"]
    # In someone else's coredns-custom key too.
    data, conflicts = custom_data({"corp.server": corp}, SHAPES["aks"], names, FWD)
    assert sorted(conflicts) == ["hosts.ext.example", "k8s.example", "svc.cluster.k8s.example"]
    assert sorted(data) == ["aliasd-a.hosts.ext.example.server",
                            "aliasd-api.corp.example.server", "aliasd-internal.server",
                            "aliasd-legacy.ext.example.server", "corp.server"]


def test_a_name_too_long_for_a_configmap_key_is_refused_alone() -> None:
    # 253 characters: a valid name, but aliasd-<name>.server is 267.
    long = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 53, "example"])
    assert len(long) == 253 and len(custom_key(long)) == 267
    data, conflicts = custom_data({}, SHAPES["aks"], ["internal", long, "lb.example.com"], FWD)
    assert conflicts == {long: f"name {long}: its coredns-custom key would be 267 characters, "
                               "longer than a ConfigMap key may be (253); aliasd adds no key "
                               "for it"}
    assert sorted(data) == ["aliasd-internal.server", "aliasd-lb.example.com.server"]
