"""The state file (``--state-file``): the claims of the last good snapshot,
the Namespaces' name policy (``aliasd.io/allowed-names``) they were validated
against and, standalone, the HTTP overrides, so that a restart can answer
before (or without) the sources.

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aliasd.model import AliasClaim, Check, Owner, Port

log = logging.getLogger(__name__)

VERSION = 1


@dataclass(frozen=True)
class State:
    claims: tuple[AliasClaim, ...]
    overrides: tuple[dict[str, Any], ...]
    written: float  # seconds since the epoch
    # Namespace -> its aliasd.io/allowed-names: without them, a restart with
    # --default-allowed-names and no API server would deny every name that only
    # an annotation allows.
    annotations: Mapping[str, str] = field(default_factory=dict)


def claim_to_json(c: AliasClaim) -> dict[str, Any]:
    o = c.owner
    return {
        "name": c.name, "addresses": list(c.addresses), "cname": c.cname, "ttl": c.ttl,
        "ports": [[p.name, p.protocol, p.port] for p in c.ports], "weight": c.weight,
        "takeover": c.takeover, "fallback": c.fallback, "priority": c.priority,
        "check": None if c.check is None else check_to_json(c.check),
        "owner": {"created": o.created, "namespace": o.namespace, "name": o.name,
                  "kind": o.kind, "uid": o.uid},
    }


def check_to_json(c: Check) -> dict[str, Any]:
    return {"kind": c.kind, "host": c.host, "port": c.port, "path": c.path,
            "expect": [list(r) for r in c.expect], "interval": c.interval,
            "timeout": c.timeout, "healthy": c.healthy, "unhealthy": c.unhealthy}


def check_from_json(d: Any) -> Check:
    return Check(str(d["kind"]), str(d["host"]), int(d["port"]), str(d["path"]),
                 tuple((int(a), int(b)) for a, b in d["expect"]), float(d["interval"]),
                 float(d["timeout"]), int(d["healthy"]), int(d["unhealthy"]))


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
            # Absent in files written before failover existed.
            priority=int(d.get("priority", 0)),
            check=None if d.get("check") is None else check_from_json(d["check"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"a stored claim is malformed ({type(e).__name__}: {e})") from None


class StateFile:
    """One JSON file: the claims, by object, and the overrides. The claims are
    staged object by object as they change (``stage``), so a save costs the
    change, not the cluster; ``save`` writes the whole document."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The claims read from the file, written back as they were until the
        # first ``stage`` (a restart's file stays whole until the sources sync).
        self._loaded = b""
        # Object key -> its claims as JSON (the array's items, no brackets).
        self._parts: dict[str, bytes] = {}
        self._overrides: list[dict[str, Any]] = []
        self._annotations: dict[str, str] = {}
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
            annotations = doc.get("annotations", {})  # absent: written before they were kept
            if not isinstance(annotations, dict) or not all(
                    isinstance(v, str) for v in annotations.values()):
                raise ValueError("annotations must map namespaces to strings")
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"state file {self.path}: {e}") from None
        self._loaded = _items(claims)
        self._parts = {}
        self._overrides = list(overrides)
        self._annotations = dict(annotations)
        return State(claims, overrides, written, annotations)

    def stage(self, objects: Iterable[tuple[str, Iterable[AliasClaim]]]) -> None:
        """The claims of some objects for the next save (none: the object is
        gone); O(their claims). From the first call on, the file holds the
        staged objects instead of the claims it was loaded with. Call it from
        the thread that calls ``save`` or when no save is running."""
        with self._lock:
            self._loaded = b""
            for key, claims in objects:
                part = _items(claims)
                if part:
                    self._parts[key] = part
                else:
                    self._parts.pop(key, None)

    def save(self, *, now: float, overrides: Sequence[dict[str, Any]] | None = None,
             annotations: Mapping[str, str] | None = None) -> None:
        """Write the file atomically; ``OSError`` if that fails (the old file
        stays). ``overrides``, ``annotations``: these instead of the last ones."""
        with self._lock:
            new_overrides = self._overrides if overrides is None else list(overrides)
            new_annotations = self._annotations if annotations is None else dict(annotations)
            parts = [self._loaded] if self._loaded else list(self._parts.values())
            self._write(now, parts, new_overrides, new_annotations)
            self._overrides = new_overrides
            self._annotations = new_annotations

    def _write(self, now: float, parts: list[bytes], overrides: list[dict[str, Any]],
               annotations: dict[str, str]) -> None:
        # The document json.dump would write, written in slices: a thread
        # writing it holds the GIL against the event loop for one slice at a
        # time (joining all of a 10,000-claim file at once is milliseconds).
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(f'{{"version":{VERSION},"written":{json.dumps(now)},"claims":['
                        .encode())
                for i in range(0, len(parts), WRITE_SLICE):
                    if i:
                        f.write(b",")
                    f.write(b",".join(parts[i:i + WRITE_SLICE]))
                f.write(f'],"overrides":{_dumps(overrides)},'
                        f'"annotations":{_dumps(annotations)}}}'.encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


WRITE_SLICE = 256  # objects per write


def _items(claims: Iterable[AliasClaim]) -> bytes:
    """Claims as the items of a JSON array (no brackets)."""
    return _dumps([claim_to_json(c) for c in claims])[1:-1].encode()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
