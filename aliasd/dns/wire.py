"""Reading DNS messages from the raw bytes, without dnslib (RFC 1035 4.1).

One label walker, :func:`name_stop`, serves every reader here: the query
shape of the fast path, the question length the slow path splices, the text
of a name, and the compression pointers of an answer that a template moves.
"""

from __future__ import annotations

from typing import NamedTuple

from aliasd.zone import OPT

MAX_TCP = 65535
# The largest answer sent over UDP, whatever EDNS buffer size the client asks
# for (DNS Flag Day 2020; BIND's and NSD's default): bigger answers are
# truncated (TC=1) and the client retries over TCP. Above it, answers would be
# fragmented, and any client could make this server reflect up to 64 KiB per query.
MAX_UDP = 1232
QR, AA, TC, RD = 0x80, 0x04, 0x02, 0x01  # in header byte 2
CD = 0x10  # in header byte 3
# Header counts (QD, AN, NS, AR) of a query with one question, without and with an OPT.
COUNTS_NO_EDNS = b"\x00\x01\x00\x00\x00\x00\x00\x00"
COUNTS_EDNS = b"\x00\x01\x00\x00\x00\x00\x00\x01"
OPT_HEAD = b"\x00\x00\x29"  # root owner, type OPT
# The last byte of a cache key: no EDNS, EDNS, EDNS with DO. Distinct, so a key
# always names one question and one EDNS shape.
NO_EDNS, EDNS, EDNS_DO = b"\x01", b"\x00", b"\x80"


def name_stop(data: bytes, pos: int, pointers: bool = False,
              labels: list[bytes] | None = None) -> int:
    """Walk the name at ``pos``: the offset of the byte that ends it, its root
    label (0) or, with ``pointers``, its compression pointer (RFC 1035 4.1.4);
    -1 when a label type is unknown or the name runs past the data. With
    ``labels``, append each label walked to it."""
    n = len(data)
    while pos < n:
        length = data[pos]
        if length == 0:
            return pos
        if length > 63:
            return pos if pointers and length >= 0xC0 and pos + 1 < n else -1
        if labels is not None:
            labels.append(data[pos + 1:pos + 1 + length])
        pos += length + 1
    return -1


class Shape(NamedTuple):
    """What :func:`fast_shape` learned of a query (built with ``tuple.__new__``:
    NamedTuple's own ``__new__`` is a Python frame, on every query)."""

    qend: int  # the end of the question
    key: bytes  # the lower-cased question and the EDNS shape: the cache key
    limit: int  # the answer size limit
    edns: int  # 0 no OPT, 1 OPT, 2 OPT with DO


def udp_limit(requested: int) -> int:
    """The size an answer over UDP may have, for a query that asked for
    ``requested`` bytes (0: no EDNS): 512 at least (RFC 1035 4.2.1), then what
    the client asked for (RFC 6891 6.2.5), never more than :data:`MAX_UDP`."""
    return 512 if requested < 512 else (requested if requested < MAX_UDP else MAX_UDP)


def fast_shape(data: bytes, tcp: bool) -> Shape | None:
    """Recognise ``QUERY, 1 question, [1 OPT v0]`` from the raw bytes, or None."""
    n = len(data)
    if n < 17 or data[2] & 0xFE or data[3] & 0x4F:
        # QR/opcode/AA/TC set, or Z/rcode bits set: not a plain query.
        return None
    stop = name_stop(data, 12)
    qend = stop + 5
    if stop < 0 or qend - 12 > 259 or qend > n:
        return None
    counts = data[4:12]
    if counts == COUNTS_NO_EDNS:
        if qend != n:
            return None
        return tuple.__new__(Shape, (qend, data[12:qend].lower() + NO_EDNS,
                                     MAX_TCP if tcp else udp_limit(0), 0))
    if counts != COUNTS_EDNS or n < qend + 11:
        return None
    if data[qend] != 0 or data[qend + 1] != 0 or data[qend + 2] != OPT or data[qend + 6] != 0:
        return None  # not an OPT at the root, or EDNS version != 0 (BADVERS: slow path)
    rdlen = (data[qend + 9] << 8) | data[qend + 10]
    j = qend + 11
    end = j + rdlen
    if end != n:
        return None
    while j < end:  # options must tile the RDATA exactly, as dnslib needs
        if j + 4 > end:
            return None
        j += 4 + ((data[j + 2] << 8) | data[j + 3])
    if j != end:
        return None
    udp = (data[qend + 3] << 8) | data[qend + 4]
    limit = MAX_TCP if tcp else udp_limit(udp)
    if data[qend + 7] & 0x80:
        return tuple.__new__(Shape, (qend, data[12:qend].lower() + EDNS_DO, limit, 2))
    return tuple.__new__(Shape, (qend, data[12:qend].lower() + EDNS, limit, 1))


def wire_name(wire: bytes) -> str | None:
    """``b"\\x03www\\x08internal\\x00..."`` → ``"www.internal."``; None when a label
    holds a dot (that name could pose as another one) or is not UTF-8 (dnslib
    refuses it: FORMERR): the slow path takes those."""
    labels: list[bytes] = []
    if name_stop(wire, 0, False, labels) < 0:
        return None
    if not labels:
        return "."
    text = b".".join(labels)
    if text.count(b".") != len(labels) - 1:
        return None
    try:
        return text.decode() + "."
    except UnicodeDecodeError:
        return None


def question_len(data: bytes) -> int:
    """Length of the (uncompressed) first question, or 0 if it cannot be spliced."""
    stop = name_stop(data, 12)
    end = stop + 5
    return end - 12 if stop >= 0 and end <= len(data) else 0


def flag_headers(answer: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """Header bytes 2-12 of ``answer`` for each (RD, CD) a query may carry, indexed
    by ``(query[2] & RD) | (query[3] & CD) >> 3``: copying the query's bits back
    is then one tuple index, not bit arithmetic."""
    f0, f1 = answer[2] & ~RD & 0xFF, answer[3] & ~CD & 0xFF
    counts = answer[4:12]
    return (bytes((f0, f1)) + counts, bytes((f0 | RD, f1)) + counts,
            bytes((f0, f1 | CD)) + counts, bytes((f0 | RD, f1 | CD)) + counts)
