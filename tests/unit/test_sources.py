"""Pure parts of the sources: the aliases file, object mapping, watch events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aliasd.model import ConfigError
from aliasd.sources import mapping
from aliasd.sources.file import parse_aliases
from aliasd.sources.watch import Gone, Informer, apply_event, diff_relist
from aliasd.zoneconfig import ZoneConfig

CFG = ZoneConfig.from_names(["internal"])


def test_example_file_parses() -> None:
    with open("examples/aliases.yaml") as f:
        claims = parse_aliases(f.read(), path="examples/aliases.yaml", config=CFG)
    by_name = {c.name: c for c in claims}
    assert by_name["my-fruits.internal"].addresses == ("10.96.0.10", "fd00::10")
    assert by_name["legacy-db"].cname == "db.example.com."


@pytest.mark.parametrize(("text", "msg"), [
    ("aliases: [", "f.yaml: not valid YAML at line 1"),
    ("other: 1", "f.yaml: expected a mapping with the single key 'aliases'"),
    ("aliases:\n  a: {addresses: [1.2.3.4], cname: x.com}",
     "f.yaml: alias 'a': needs exactly one of 'addresses', 'cname' or 'targets'"),
    ("aliases:\n  a: {addresses: [1.2.3.999]}", "f.yaml: alias 'a': '1.2.3.999' is not an IP"),
    ("aliases:\n  a: {addresses: [1.2.3.4], ttl: 0}", "f.yaml: alias 'a': ttl 0 is outside"),
    ("aliases:\n  a: {addresses: [1.2.3.4], color: red}", "f.yaml: alias 'a': unknown key(s)"),
    ("aliases:\n  x.example.com: {addresses: [1.2.3.4]}",
     "f.yaml: alias 'x.example.com': alias 'x.example.com' is outside the served zones"),
    ("aliases:\n  a: {addresses: [1.2.3.4]}\n  a.internal: {addresses: [1.2.3.5]}",
     "f.yaml: alias 'a.internal' is the same name as 'a'"),
    ("aliases:\n  a: {addresses: [1.2.3.4], ports: [{name: http, port: 70000}]}",
     "f.yaml: alias 'a': port 'http': 70000 is not a port number"),
])
def test_bad_files_name_file_alias_and_problem(text: str, msg: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_aliases(text, path="f.yaml", config=CFG)
    assert str(e.value).startswith(msg)


def svc(**spec: object) -> dict[str, object]:
    return {"metadata": {"name": "s", "namespace": "n", "uid": "u",
                         "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {"aliasd.io/alias": "a, b.internal  c"}},
            "spec": spec}


def test_service_mapping() -> None:
    claims, problems = mapping.service_claims(
        svc(clusterIP="10.96.0.5", clusterIPs=["10.96.0.5", "fd00::5"],
            ports=[{"name": "http", "port": 80}, {"port": 81}]), [])
    assert [c.name for c in claims] == ["a", "b.internal", "c"]
    assert claims[0].addresses == ("10.96.0.5", "fd00::5")
    assert [p.name for p in claims[0].ports] == ["http"]
    assert claims[0].owner.created == 1767225600.0
    assert problems == []
    ext, _ = mapping.service_claims(svc(type="ExternalName", externalName="db.example.com"), [])
    assert ext[0].cname == "db.example.com" and ext[0].addresses == ()


def test_serviceentry_prefers_spec_then_status_then_endpoints() -> None:
    se = {"metadata": {"name": "se", "namespace": "n"},
          "spec": {"hosts": ["x.internal", "*.w.internal", "out.example.com"],
                   "endpoints": [{"address": "svc.ns.svc.cluster.local"}]},
          "status": {"addresses": [{"value": "240.240.0.1"}]}}

    def in_zone(h: str) -> bool:
        return h.endswith(".internal")

    def services(ns: str, name: str) -> tuple[tuple[str, ...], str | None]:
        return (("10.96.1.1",), None)

    claims, _ = mapping.serviceentry_claims(se, in_zone=in_zone, services=services)
    assert [(c.name, c.addresses) for c in claims] == [("x.internal", ("240.240.0.1",)),
                                                       ("*.w.internal", ("240.240.0.1",))]
    del se["status"]
    claims, _ = mapping.serviceentry_claims(se, in_zone=in_zone, services=services)
    assert claims[0].addresses == ("10.96.1.1",)
    claims, problems = mapping.serviceentry_claims(se, in_zone=in_zone,
                                                   services=lambda ns, n: None)
    assert claims == [] and problems[0].reason == "NoUsableAddress"
    assert "svc.ns.svc.cluster.local does not exist" in problems[0].message


@pytest.mark.parametrize(("export_to", "served", "scope"), [
    (None, True, ""), ([], True, ""), (["*"], True, ""), ([".", "*"], True, ""),
    (["."], False, "spec.exportTo '.': the entry is exported to its own namespace only"),
    (["~"], False, "spec.exportTo '~': the entry is exported to no namespace"),
    (["shop", "pay"], False, "spec.exportTo 'shop', 'pay': the entry is exported to "
                             "namespaces 'shop', 'pay' only"),
])
def test_serviceentry_is_an_alias_only_when_exported_to_every_namespace(
        export_to: list[str] | None, served: bool, scope: str) -> None:
    spec: dict[str, Any] = {"hosts": ["x.internal"], "addresses": ["240.240.0.1"]}
    if export_to is not None:
        spec["exportTo"] = export_to
    se = mapping.trim_serviceentry({"metadata": {"name": "se", "namespace": "n"},
                                    "spec": spec})
    claims, problems = mapping.serviceentry_claims(
        se, in_zone=lambda h: h.endswith(".internal"), services=lambda ns, n: None)
    assert [c.name for c in claims] == (["x.internal"] if served else [])
    assert [(p.reason, p.message) for p in problems] == ([] if served else [(
        "NotExported", f"{scope}, and an alias answers every pod in the cluster; x.internal "
        "not served (export it to '*' to serve it)")])


def test_watch_events_and_relist_diff() -> None:
    cache: dict[str, dict[str, object]] = {}
    obj = {"metadata": {"name": "a", "namespace": "n", "resourceVersion": "5"}}
    assert apply_event(cache, {"type": "ADDED", "object": obj})[:3] == ("n/a", None, obj)
    bm = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}
    assert apply_event(cache, bm) == ("", None, None, "9")
    assert apply_event(cache, {"type": "WEIRD", "object": {}})[0] == ""
    with pytest.raises(Gone):
        apply_event(cache, {"type": "ERROR", "object": {"code": 410, "message": "too old"}})
    new_b = {"metadata": {"name": "b", "namespace": "n", "resourceVersion": "7"}}
    changes = diff_relist(cache, [new_b])
    assert changes == [("n/a", obj, None), ("n/b", None, new_b)]
    assert diff_relist(cache, [new_b]) == []  # nothing duplicated


class _Resp:
    def __init__(self, body: dict[str, Any]) -> None:
        self.status, self.body = 200, body

    async def __aenter__(self) -> _Resp:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def json(self, *, loads: Any, content_type: Any) -> Any:
        return loads(json.dumps(self.body))


def _obj(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "n", "resourceVersion": rv}}


async def test_paged_relist_hands_on_what_a_diff_of_the_whole_list_does() -> None:
    """Pages are merged as they arrive (the next one in flight, 100 objects a
    loop turn); the changes equal diff_relist's on the whole list: new and
    changed objects handed on, unchanged ones not, vanished ones deleted."""
    first = [_obj(f"o{i}", "1") for i in range(250)]
    second = ([_obj(f"o{i}", "2" if i % 3 == 0 else "1") for i in range(0, 250, 2)]
              + [_obj(f"x{i}", "1") for i in range(120)])
    listing: list[list[dict[str, Any]]] = []

    async def list_fn(*, limit: int, _continue: str | None = None, **_: Any) -> _Resp:
        start = int(_continue or 0)
        items = listing[-1][start:start + limit]
        more = start + limit < len(listing[-1])
        return _Resp({"metadata": {"resourceVersion": "10",
                                   "continue": str(start + limit) if more else None},
                      "items": items})

    seen: list[tuple[str, object, object]] = []
    inf = Informer("t", list_fn, on_change=lambda k, o, n: seen.append((k, o, n)),
                   page_size=40)
    reference: dict[str, dict[str, Any]] = {}
    for items in (first, second):
        listing.append(items)
        seen.clear()
        assert await inf._relist() == "10"
        expected = diff_relist(reference, items)
        assert sorted(seen, key=lambda c: c[0]) == sorted(expected, key=lambda c: c[0])
        assert inf.items == reference
