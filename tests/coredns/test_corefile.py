"""Corefile editing: insert-then-remove is the identity; user blocks are found."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aliasd.coredns import corefile
from tests.support.corefiles import KUBE_DNS_STYLE, KUBEADM

USER_OWNED = KUBEADM + "internal:53 {\n    forward . 10.0.0.1\n}\n"


def block(zone: str = "internal") -> str:
    return corefile.render_block(zone, port=53, forward_to="10.96.0.53:53", bind=None)


def test_kubeadm_root_block_and_port() -> None:
    root = corefile.root_block(KUBEADM)
    assert root is not None and root.keys == (".:53",)
    assert "bind 127.0.0.1" in root.body
    assert corefile.split_key("dns://internal:1053") == ("internal.", 1053)
    assert corefile.split_key(".") == (".", 53)


def test_user_owned_block_is_found_and_ours_is_not() -> None:
    assert [b.keys for b in corefile.user_blocks_for(USER_OWNED, "internal")] == [
        ("internal:53",)]
    ours = corefile.upsert_managed(KUBEADM, "internal", block())
    assert corefile.user_blocks_for(ours, "internal") == []
    assert [b.managed for b in corefile.server_blocks(ours)] == [False, True]
    assert corefile.user_blocks_for(KUBE_DNS_STYLE, "example.org.")[0].keys == ("example.org:53",)


def test_upsert_is_idempotent_and_replaces_in_place() -> None:
    once = corefile.upsert_managed(KUBE_DNS_STYLE, "internal", block())
    assert corefile.upsert_managed(once, "internal", block()) == once
    other = corefile.render_block("internal", port=53, forward_to="10.96.0.99:53", bind=None)
    changed = corefile.upsert_managed(once, "internal", other)
    assert "10.96.0.99:53" in changed and "10.96.0.53:53" not in changed
    assert corefile.remove_managed(changed) == KUBE_DNS_STYLE


word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-_/:", min_size=1, max_size=12)
comment = st.builds(lambda w: f"# {w}", st.text(alphabet=" abc{}\"#xyz", max_size=20))
ws = st.sampled_from(["", " ", "  ", "\t", "\n", "\n\n"])
line_sep = st.sampled_from(["\n", "\n\n", " \n", "\r\n", "\n\t", "\n# note\n"])


@st.composite
def directive(draw: st.DrawFn, depth: int = 0) -> str:
    parts = draw(st.lists(st.one_of(word, st.builds(lambda w: f'"{w} x"', word)),
                          min_size=1, max_size=4))
    line = " ".join(parts)
    if depth < 2 and draw(st.booleans()):
        inner = draw(st.lists(directive(depth + 1), max_size=3))
        line += " {\n" + "".join("  " + d + "\n" for d in inner) + "}"
    if draw(st.booleans()):
        line += " " + draw(comment)
    return line


@st.composite
def corefiles(draw: st.DrawFn) -> str:
    items = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["server", "snippet", "import", "comment"]))
        if kind == "server":
            keys = draw(st.lists(word, min_size=1, max_size=3))
            body = draw(st.lists(directive(), max_size=4))
            items.append(" ".join(keys) + " {" + draw(ws) + "\n" + "\n".join(body) + "\n"
                         + draw(ws) + "}")
        elif kind == "snippet":
            items.append(f"({draw(word)}) {{\n  {draw(directive())}\n}}")
        elif kind == "import":
            items.append(f"import {draw(word)}")
        else:
            items.append(draw(comment))
    text = draw(line_sep).join(items)
    return text + draw(st.sampled_from(["", "\n", "\n\n", " "]))


@settings(max_examples=500)
@given(corefiles(), st.lists(st.sampled_from(["internal", "corp.example", "x.internal"]),
                             min_size=1, max_size=3, unique=True))
def test_insert_then_remove_is_identity(text: str, zones: list[str]) -> None:
    edited = text
    for z in zones:
        edited = corefile.upsert_managed(edited, z, block(z))
    assert corefile.server_blocks(edited)  # still parses, our blocks are there
    for z in zones:
        assert corefile.user_blocks_for(edited, z) == []
    assert corefile.remove_managed(edited) == text
    # removing zone by zone, in any order, also restores it
    for z in reversed(zones):
        edited = corefile.remove_managed(edited, z)
    assert edited == text
