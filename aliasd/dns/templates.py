"""Answers that are the same for a whole class of questions but the question
itself: one per (anchor, rcode, EDNS shape) for an empty answer section, one
per (wildcard, qtype, EDNS shape) for a name a wildcard answers (RFC 4592).

A flood of names that do not exist, or of names under a wildcard, is answered
from a handful of templates and leaves the answer cache alone.
"""

from __future__ import annotations

from aliasd.dns.wire import TC, flag_headers, name_stop
from aliasd.names import WILDCARD
from aliasd.zone import AAAA, CNAME, NS, OPT, SOA, SRV, A, Lookup, Rcode, Snapshot, SoaData

Anchors = tuple[tuple[str, str], ...]
"""Names strictly inside a zone that its SOA's names end with, longest first,
each with its dotted form."""


class Template:
    """An answer that is the same for a whole class of questions except for the
    question itself, learnt from a slow answer whose question ended at ``qend``:

    * an answer with an empty answer section for one (anchor, rcode, EDNS
      shape): NXDOMAIN, NODATA, REFUSED, SERVFAIL;
    * the answer synthesized from one wildcard for one (qtype, EDNS shape)
      (RFC 4592): its owner name is the qname, which dnslib writes as a
      pointer to the question (0xC00C), the same bytes for every qname.

    What follows the question compresses its names against the question: dnslib
    points each one at the longest suffix it shares with the question. The
    *anchor* is the longest suffix of the qname shared with any name in that tail
    (the zone, ``ns.<zone>`` for names under it, or a wildcard's closest
    encloser), so for every qname with the same anchor the pointers land in the
    anchor or the tail itself, both at the same distance from the end of the
    question: moving every pointer by the difference in question length gives the
    slow path's bytes exactly (the property tests in tests/unit/test_fastpath.py
    hold it). A name in a wildcard answer below the closest encloser (a CNAME
    target there that does not exist) would share more with some qnames:
    ``avoid`` holds the labels just below the closest encloser that such qnames
    have, and those take the slow path."""

    __slots__ = ("_pointers", "_qend", "_tail", "avoid", "headers", "rcode", "tails")

    def __init__(self, answer: bytes, qend: int, pointers: tuple[int, ...],
                 avoid: frozenset[str] = frozenset()) -> None:
        self.rcode = Rcode(answer[3] & 0xF).name
        self.headers = flag_headers(answer)
        self._qend = qend
        self._tail = answer[qend:]
        self._pointers = pointers
        self.tails: dict[int, bytes] = {qend: self._tail}
        self.avoid = avoid

    def tail(self, qend: int) -> bytes:
        """The tail for a question ending at ``qend`` (at most ~250 of them)."""
        out = bytearray(self._tail)
        shift = qend - self._qend
        for p in self._pointers:
            target = ((out[p] & 0x3F) << 8 | out[p + 1]) + shift
            out[p], out[p + 1] = 0xC0 | target >> 8, target & 0xFF
        tail = self.tails[qend] = bytes(out)
        return tail

    @classmethod
    def learn(cls, answer: bytes, qend: int, anchor_start: int, *, wildcard: bool = False,
              avoid: frozenset[str] = frozenset()) -> Template | None:
        """A template from a slow answer, or None if it is not of the form the
        patching reproduces (then that question takes the slow path). With
        ``wildcard``, the answer section may hold RRsets, and an owner name
        may point at the whole qname."""
        if answer[2] & TC or (not wildcard and answer[6:8] != b"\x00\x00"):
            return None
        pointers: list[int] = []
        pos = qend
        n = len(answer)

        def name(owner: bool) -> bool:
            nonlocal pos
            stop = name_stop(answer, pos, True)
            if stop < 0:
                return False
            if answer[stop] == 0:
                pos = stop + 1
                return True
            target = (answer[stop] & 0x3F) << 8 | answer[stop + 1]
            pos = stop + 2
            if wildcard and owner and target == 12:
                return True  # the qname itself, 0xC00C for every question
            # Into the anchor or the tail only, never the rest of the qname.
            if not (anchor_start <= target < qend - 4 or qend <= target < stop):
                return False
            pointers.append(stop - qend)
            return True

        def record() -> bool:
            nonlocal pos
            if not name(True) or pos + 10 > n:
                return False
            rtype = answer[pos] << 8 | answer[pos + 1]
            end = pos + 10 + (answer[pos + 8] << 8 | answer[pos + 9])
            pos += 10
            if rtype in (A, AAAA, OPT):
                pos = end
            elif rtype in (CNAME, NS):
                name(False)
            elif rtype == SRV:
                pos += 6
                name(False)
            elif rtype == SOA:
                if not (name(False) and name(False)):
                    return False
                pos += 20
            else:
                return False
            return pos == end

        count = sum((answer[i] << 8 | answer[i + 1]) for i in (6, 8, 10))
        for _ in range(count):
            if not record():
                return None
        if pos != n:
            return None
        return cls(answer, qend, tuple(pointers), avoid)


def zone_anchors(snapshot: Snapshot) -> dict[str, Anchors]:
    """Per zone origin, the suffixes of its SOA's names strictly inside it
    (``ns.<zone>``, ``hostmaster.<zone>``): a qname under one of them shares
    more than the zone with the SOA in the authority section."""
    out = {}
    for z in snapshot.zones:
        soa = z.soa.rdata[0]
        assert isinstance(soa, SoaData)
        found = set()
        for n in (soa.mname, soa.rname):
            labels = n.rstrip(".").split(".")
            for i in range(len(labels)):
                suffix = ".".join(labels[i:]) + "."
                if suffix.endswith("." + z.origin) and suffix != z.origin:
                    found.add(suffix)
        out[z.origin] = tuple((a, "." + a) for a in sorted(found, key=len, reverse=True))
    return out


def wildcard_template(answer: bytes, qend: int, qname: str, lookup: Lookup) -> Template | None:
    """The template of the wildcard that answered ``qname`` (RFC 4592) in
    ``answer``, if that answer can serve as one: None when this qname's bytes
    are its own (the next one may teach the template)."""
    source = lookup.wildcard
    assert source is not None
    ce = source[len(WILDCARD):]
    dotted = "." + ce
    avoid = frozenset(n[:-len(dotted)].rsplit(".", 1)[-1] for n in _names_in(lookup)
                      if n != qname and n.endswith(dotted))
    if label_below(qname, ce) in avoid:
        return None
    return Template.learn(answer, qend, qend - 4 - len(ce) - 1, wildcard=True, avoid=avoid)


def label_below(name: str, encloser: str) -> str:
    """The label of ``name`` just below its ancestor ``encloser``."""
    below = name[:len(name) - len(encloser) - 1]
    return below[below.rfind(".") + 1:]


def _names_in(lookup: Lookup) -> set[str]:
    """Every name written in an answer: owners and names in RDATA."""
    out: set[str] = set()
    for section in (lookup.answer, lookup.authority, lookup.additional):
        for rrset in section:
            out.add(rrset.name)
            for rd in rrset.rdata:
                if isinstance(rd, str) and rrset.rtype in (CNAME, NS):
                    out.add(rd)
                elif isinstance(rd, tuple):
                    out.add(rd[3])
                elif isinstance(rd, SoaData):
                    out.update((rd.mname, rd.rname))
    return out
