"""The state file (``--state-file``): the claims of the last good snapshot and,
standalone, the HTTP overrides, so that a restart can answer before (or
without) the sources (issue 7, staged fallback).

Written atomically (temporary file in the same directory, fsync, rename), so a
crash mid-write leaves the previous version, never half a file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aliasd.model import AliasClaim, Owner, Port

log = logging.getLogger(__name__)

VERSION = 1


@dataclass(frozen=True)
class State:
    claims: tuple[AliasClaim, ...]
    overrides: tuple[dict[str, Any], ...]
    written: float  # seconds since the epoch


def claim_to_json(c: AliasClaim) -> dict[str, Any]:
    o = c.owner
    return {
        "name": c.name, "addresses": list(c.addresses), "cname": c.cname, "ttl": c.ttl,
        "ports": [[p.name, p.protocol, p.port] for p in c.ports], "weight": c.weight,
        "takeover": c.takeover, "fallback": c.fallback,
        "owner": {"created": o.created, "namespace": o.namespace, "name": o.name,
                  "kind": o.kind, "uid": o.uid},
    }


def claim_from_json(d: Any) -> AliasClaim:
    """The inverse of :func:`claim_to_json`; ``ValueError`` on anything else."""
    try:
        o = d["owner"]
        return AliasClaim(
            name=str(d["name"]),
            owner=Owner(float(o["created"]), str(o["namespace"]), str(o["name"]),
                        str(o["kind"]), str(o["uid"])),
            addresses=tuple(str(a) for a in d["addresses"]),
            cname=None if d["cname"] is None else str(d["cname"]),
            ttl=int(d["ttl"]),
            ports=tuple(Port(str(n), str(p), int(num)) for n, p, num in d["ports"]),
            weight=None if d["weight"] is None else int(d["weight"]),
            takeover=bool(d["takeover"]), fallback=bool(d["fallback"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"a stored claim is malformed ({type(e).__name__}: {e})") from None


class StateFile:
    """One JSON file; ``save`` replaces the part it is given and keeps the other."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._claims = "[]"  # the claims part, as JSON text
        self._overrides: list[dict[str, Any]] = []
        # Object key -> (its claims, their JSON): a snapshot save encodes only
        # the objects whose claims changed since the last one.
        self._encoded: dict[str, tuple[tuple[AliasClaim, ...], str]] = {}
        # Snapshots are saved from a worker thread, overrides from the event
        # loop: one at a time, each with the other's latest part.
        self._lock = threading.Lock()

    def load(self) -> State | None:
        """The stored state; None if there is no file. A malformed file is an
        error naming the file and the problem (``ValueError``)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ValueError(f"state file {self.path}: {e.strerror or e}") from None
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("version") != VERSION:
                raise ValueError(f"not an aliasd state file of version {VERSION}")
            claims = tuple(claim_from_json(c) for c in doc["claims"])
            overrides = tuple(doc["overrides"])
            if not all(isinstance(o, dict) for o in overrides):
                raise ValueError("overrides must be objects")
            written = float(doc["written"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"state file {self.path}: {e}") from None
        self._claims = _dumps([claim_to_json(c) for c in claims])
        self._overrides = list(overrides)
        return State(claims, overrides, written)

    def save(self, *, now: float, claims: Iterable[AliasClaim] | None = None,
             keyed: Mapping[str, tuple[AliasClaim, ...]] | None = None,
             skip: Mapping[str, Set[AliasClaim]] | None = None,
             overrides: Sequence[dict[str, Any]] | None = None) -> None:
        """Write the file atomically; ``OSError`` if that fails (the old file stays).
        ``keyed``: the claims by object (the engine's map), encoded per object
        and only for the objects whose claims changed since the last save;
        ``skip``: claims of some of those objects to leave out."""
        with self._lock:
            self._save(now, claims, keyed, skip or {}, overrides)

    def _save(self, now: float, claims: Iterable[AliasClaim] | None,
              keyed: Mapping[str, tuple[AliasClaim, ...]] | None,
              skip: Mapping[str, Set[AliasClaim]],
              overrides: Sequence[dict[str, Any]] | None) -> None:
        if keyed is not None:
            new_claims = self._encode(keyed, skip)
        elif claims is not None:
            new_claims = _dumps([claim_to_json(c) for c in claims])
        else:
            new_claims = self._claims
        new_overrides = self._overrides if overrides is None else list(overrides)
        # The same document json.dump wrote, assembled from encoded parts.
        text = (f'{{"version":{VERSION},"written":{json.dumps(now)},"claims":{new_claims},'
                f'"overrides":{_dumps(new_overrides)}}}')
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._claims, self._overrides = new_claims, new_overrides

    def _encode(self, keyed: Mapping[str, tuple[AliasClaim, ...]],
                skip: Mapping[str, Set[AliasClaim]]) -> str:
        """The claims array: at 10,000 claims, re-encoding all of them cost
        ~0.17 s of CPU in the writer thread (GIL held against the loop) on
        every save, i.e. every second while answers change."""
        old, new = self._encoded, {}
        parts = []
        for key, claims in keyed.items():
            left_out = skip.get(key)
            if left_out:  # rare (denied claims): encoded every time, not cached
                text = _dumps([claim_to_json(c) for c in claims if c not in left_out])[1:-1]
                if text:
                    parts.append(text)
                continue
            hit = old.get(key)
            if hit is None or hit[0] is not claims:
                hit = (claims, _dumps([claim_to_json(c) for c in claims])[1:-1])
            new[key] = hit
            if hit[1]:
                parts.append(hit[1])
        self._encoded = new
        return "[" + ",".join(parts) + "]"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
