"""Corefile editing (pure): find server blocks, insert/replace/remove aliasd's
marked blocks, and nothing else. Removal restores the text byte for byte.

Only what editing needs is parsed: comments, quoted tokens, nested braces,
snippets ``(name) { }`` and top-level ``import`` lines, so a server block for a
zone can be found and attributed (ours, inside markers; or the user's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BEGIN = "# aliasd:begin zone="
END = "# aliasd:end zone="
_NL_FLAG = " +nl"  # we added the newline that separates our block from the text
_REGION = re.compile(
    r"^# aliasd:begin zone=(?P<zone>\S+)(?P<nl> \+nl)?[^\n]*\n"
    r".*?^# aliasd:end zone=(?P=zone)[^\n]*(\n|\Z)",
    re.M | re.S,
)


@dataclass(frozen=True)
class ServerBlock:
    keys: tuple[str, ...]
    start: int  # offset of the first key
    body: str  # text between the braces
    managed: bool


@dataclass(frozen=True)
class Managed:
    zone: str
    start: int
    end: int
    added_newline: bool


class CorefileError(ValueError):
    """The Corefile cannot be parsed (unbalanced braces, unterminated quote)."""


def managed_regions(text: str) -> list[Managed]:
    out = []
    for m in _REGION.finditer(text):
        start = m.start()
        nl = m.group("nl") is not None
        if nl and start > 0 and text[start - 1] == "\n":
            start -= 1
        out.append(Managed(m.group("zone"), start, m.end(), nl))
    return out


def _tokens(text: str) -> list[tuple[str, int]]:
    """(token, offset); braces are their own tokens, newlines are "\\n" tokens."""
    out: list[tuple[str, int]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c == "\n":
            out.append(("\n", i))
            i += 1
        elif c in " \t\r":
            i += 1
        elif c in "{}":
            out.append((c, i))
            i += 1
        elif c in "\"`":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise CorefileError(f"unterminated quote at offset {i}")
            out.append((text[i:j + 1], i))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in " \t\r\n{}#":
                j += 1
            out.append((text[i:j], i))
            i = j
    return out


def server_blocks(text: str) -> list[ServerBlock]:
    """Top-level server blocks (snippets and imports skipped)."""
    regions = managed_regions(text)
    blocks: list[ServerBlock] = []
    depth = 0
    keys: list[tuple[str, int]] = []
    open_at = 0
    for tok, off in _tokens(text):
        if tok == "{":
            if depth == 0:
                open_at = off
                current = keys
                keys = []
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth < 0:
                raise CorefileError(f"unbalanced '}}' at offset {off}")
            if depth == 0 and current and not current[0][0].startswith("("):
                first = current[0][1]
                names = tuple(k.strip(",") for k, _ in current if k.strip(","))
                blocks.append(ServerBlock(names, first, text[open_at + 1:off],
                                          any(r.start <= first < r.end for r in regions)))
        elif depth == 0:
            if tok == "\n":
                if keys and keys[0][0] == "import":
                    keys = []
                continue
            keys.append((tok, off))
    if depth != 0:
        raise CorefileError("unbalanced '{': a block is not closed")
    return blocks


def split_key(key: str) -> tuple[str, int]:
    """``dns://internal:53`` → ("internal.", 53); port defaults to 53."""
    k = re.sub(r"^[a-z]+://", "", key.strip())
    zone, _, port = k.rpartition(":") if ":" in k else (k, "", "53")
    zone = zone or "."
    try:
        p = int(port)
    except ValueError:
        p = 53
    return (zone.lower().rstrip(".") + ".") if zone != "." else ".", p


def root_block(text: str) -> ServerBlock | None:
    for b in server_blocks(text):
        if not b.managed and any(split_key(k)[0] == "." for k in b.keys):
            return b
    return None


def directive(block: ServerBlock, name: str) -> list[str] | None:
    """Arguments of the first top-level ``name`` directive in ``block`` (e.g. bind)."""
    depth = 0
    line: list[str] = []
    for tok, _ in [*_tokens(block.body), ("\n", -1)]:
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
        elif tok == "\n":
            if line and line[0] == name:
                return line[1:]
            line = []
        elif depth == 0:
            line.append(tok)
    return None


def directives(block: ServerBlock) -> list[tuple[str, list[str]]]:
    """Every top-level directive of ``block``: (plugin, arguments before its ``{``)."""
    out: list[tuple[str, list[str]]] = []
    depth = 0
    line: list[str] = []
    for tok, _ in [*_tokens(block.body), ("\n", -1)]:
        if tok == "{":
            if depth == 0 and line:
                out.append((line[0], line[1:]))
                line = []
            depth += 1
        elif tok == "}":
            depth -= 1
        elif tok == "\n":
            if depth == 0 and line:
                out.append((line[0], line[1:]))
            line = []
        elif depth == 0:
            line.append(tok)
    return out


# Plugins that answer a zone from data of their own (not by passing the query
# on, as forward does), and where their zone list starts among the arguments.
# Without zones they serve the server block's zones.
_ZONE_ARGS = {"kubernetes": 0, "k8s_external": 0, "etcd": 0, "federation": 0, "auto": 0,
              "secondary": 0, "file": 1, "hosts": 1, "template": 2,
              "route53": 0, "clouddns": 0, "azure": 0}


def plugin_zones(text: str) -> list[tuple[str, str]]:
    """(zone, plugin) for every zone a plugin of any server block of ``text``
    serves from its own data (the root ``.`` left out: a catch-all such as
    ``hosts`` with ``fallthrough`` in the root block claims no zone)."""
    out: list[tuple[str, str]] = []
    for block in server_blocks(text):
        if block.managed:
            continue
        for plugin, args in directives(block):
            start = _ZONE_ARGS.get(plugin)
            if start is None:
                continue
            # route53 & co. write ZONE:ID; a CIDR (kubernetes reverse zones) is
            # under in-addr.arpa/ip6.arpa, which takeovers never reach anyway.
            zones = [a.split(":", 1)[0] for a in args[start:]
                     if "/" not in a and not a.startswith("\"")]
            if not zones:
                zones = [split_key(k)[0] for k in block.keys]
            for z in zones:
                zone = split_key(z)[0]
                if zone != ".":
                    out.append((zone, plugin))
    return list(dict.fromkeys(out))


def user_blocks_for(text: str, zone: str) -> list[ServerBlock]:
    """Server blocks for ``zone`` that aliasd does not own."""
    z = zone.lower().rstrip(".") + "."
    return [b for b in server_blocks(text) if not b.managed
            and any(split_key(k)[0] == z for k in b.keys)]


def render_server(zone: str, *, port: int, forward_to: str, bind: str | None) -> str:
    """The server block that forwards ``zone`` to aliasd (no markers)."""
    z = zone.rstrip(".")
    bind_line = f"    bind {bind}\n" if bind else ""
    # No cache plugin: aliasd is authoritative and answers in microseconds, and
    # a CoreDNS cache would hand one weighted draw to every client for a whole
    # TTL and delay an override by the old answer's TTL.
    return f"{z}:{port} {{\n{bind_line}    errors\n    forward . {forward_to}\n}}\n"


def render_block(zone: str, *, port: int, forward_to: str, bind: str | None) -> str:
    """:func:`render_server` between aliasd's markers, for a Corefile aliasd shares."""
    z = zone.rstrip(".")
    return (f"{BEGIN}{z} (managed by aliasd; edits here are overwritten)\n"
            f"{render_server(z, port=port, forward_to=forward_to, bind=bind)}{END}{z}\n")


def top_level_imports(text: str) -> list[str]:
    """The arguments of the Corefile's top-level ``import`` lines (outside any
    block), e.g. ``custom/*.server``; imports inside server blocks are snippets
    or plugin fragments and not listed."""
    out: list[str] = []
    depth = 0
    line: list[str] = []
    for tok, _ in [*_tokens(text), ("\n", -1)]:
        if tok == "{":
            depth += 1
            line = []
        elif tok == "}":
            depth -= 1
            line = []
        elif tok == "\n":
            if depth == 0 and line and line[0] == "import":
                out += [t.strip("\"`") for t in line[1:]]
            line = []
        else:
            line.append(tok)
    return out


def remove_managed(text: str, zone: str | None = None) -> str:
    """Text without aliasd's regions (all, or the one for ``zone``)."""
    out = text
    for r in reversed(managed_regions(text)):
        if zone is None or r.zone == zone.rstrip("."):
            out = out[:r.start] + out[r.end:]
    return out


def upsert_managed(text: str, zone: str, block: str) -> str:
    """Insert ``block`` (from :func:`render_block`) or replace the zone's region."""
    z = zone.rstrip(".")
    flagged = block.replace(f"{BEGIN}{z} ", f"{BEGIN}{z}{_NL_FLAG} ", 1)
    for r in managed_regions(text):
        if r.zone == z:
            new = "\n" + flagged if r.added_newline else block
            return text[:r.start] + new + text[r.end:]
    if text and not text.endswith("\n"):
        return text + "\n" + flagged
    return text + block
