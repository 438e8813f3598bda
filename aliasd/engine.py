"""The incremental engine: claim changes in, the next snapshot out (pure: no
I/O, no clock; ``now`` is an argument).

Sources hand over each object's claims when that object changes
(:meth:`Engine.set`). The engine keeps an index name → claims, and on
:meth:`Engine.commit` re-resolves only the names those changes touched
(conflicts, weights, overrides, takeovers, fallback: :func:`resolver.resolve`).
The next snapshot shares everything else with the previous one (persistent
HAMT maps from ``immutables``), and the serial moves only when an answer
changed. :func:`resolver.build_keyed` computes the same thing from scratch: it
is the check (on relist, and in the stateful property test), never the hot path.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

import immutables

from aliasd.model import OVERRIDE_KIND, AliasClaim, Check
from aliasd.names import WILDCARD, is_wildcard
from aliasd.policy import policy_namespace
from aliasd.resolver import (
    Conflict,
    Delta,
    Hold,
    Invalid,
    Resolution,
    Result,
    apex_rrsets,
    held_back,
    next_serial,
    owner_names,
    resolve,
    validate,
    zone_infos,
)
from aliasd.zone import CNAME, MAX_CNAME_CHAIN, RRset, Snapshot, Weighted
from aliasd.zoneconfig import ZoneConfig

V = TypeVar("V")
KEY_SEP = "\0"
"""Separates a source's name from its object's key: ``kubernetes\\0svc/ns/name``."""


@dataclass(frozen=True)
class Commit:
    """What one :meth:`Engine.commit` produced."""

    result: Result
    # A new snapshot (with a new serial) to serve; False: only who-won-what
    # changed (a losing claim, an invalid one), the answers did not.
    new_snapshot: bool
    # Owner names whose RRsets, weighted group or unusable status differ from
    # the previous snapshot (plus names answering through a CNAME to them, and
    # the zone apexes, whose SOA serial moved); None: anything may have changed
    # (readiness flipped, a taken-over zone came or went). A name a wildcard
    # answers is not listed (they are countless): an answer that read one lists
    # the wildcard and the names between in Lookup.depends.
    changed: frozenset[str] | None


_RESULT_NUMBERS = itertools.count(1)
"""Result numbers, unique in the process: a delta never names the result of
another engine (the relist checker replaces the engine)."""


class Engine:
    """The claims of every object, the index name → claims, and the current result."""

    def __init__(self, config: ZoneConfig, *, serial: int, ready: bool = False,
                 track_changes: bool = False) -> None:
        self.config = config
        self.claims: immutables.Map[str, tuple[AliasClaim, ...]] = immutables.Map()
        self._valid: dict[str, tuple[tuple[str, AliasClaim], ...]] = {}
        self._keys_of: dict[str, set[str]] = {}  # source prefix -> its keys
        self._by_name: dict[str, dict[str, list[AliasClaim]]] = {}
        self._touched: set[str] = set()
        self._invalid: immutables.Map[str, tuple[Invalid, ...]] = immutables.Map()
        self._invalid_dirty = False
        self._invalid_keys: set[str] = set()  # whose invalid claims changed since the commit
        self._number = 0  # the current result's number (see resolver.Delta)
        # With ``track_changes`` (a state file is written): objects whose
        # claims, or which of them are invalid, changed since the writer last
        # took them (it re-encodes only those). Off, nothing takes them, and
        # the set would grow with every object ever seen.
        self.track_changes = track_changes
        self.changed_keys: set[str] = set()
        # The name policy: namespace -> its aliasd.io/allowed-names value, and
        # which objects have claims under which namespace's policy (so that a
        # change of one namespace's policy re-validates only its objects).
        self.annotations: immutables.Map[str, str] = immutables.Map()
        self._ns_keys: dict[str, set[str]] = {}
        self._key_ns: dict[str, frozenset[str]] = {}
        # Names kept for the namespace that last won them (ZoneConfig.name_hold).
        self.holds: immutables.Map[str, Hold] = immutables.Map()
        self._res: immutables.Map[str, Resolution] = immutables.Map()
        self._conflicted: immutables.Map[str, tuple[Conflict, ...]] = immutables.Map()
        self._overridden: immutables.Map[str, tuple[Conflict, ...]] = immutables.Map()
        self._takeovers: immutables.Map[str, bool] = immutables.Map()
        self._entry_count = 0
        self._cname_refs: dict[str, set[str]] = {}  # CNAME target -> names pointing at it
        self._weighted: immutables.Map[str, Weighted] = immutables.Map()
        self._unusable: immutables.Map[str, bool] = immutables.Map()
        # Closest enclosers with a wildcard: P for every existing name *.P.
        self._wildcards: immutables.Map[str, bool] = immutables.Map()
        # Health: the checks of valid claims -> the names they serve (with a
        # count of claims), and those of them that currently fail.
        self._check_names: dict[Check, dict[str, int]] = {}
        self.unhealthy: frozenset[Check] = frozenset()
        self._serial = serial
        self._ready = ready
        rrsets: dict[str, Mapping[int, RRset]] = {}
        names: dict[str, int] = {}
        for owner, sets in apex_rrsets(config, serial).items():
            rrsets[owner] = MappingProxyType(sets)
            for n in owner_names(Resolution(owner, (), rrsets=((owner, sets),)),
                                 config.zones):
                names[n] = names.get(n, 0) + 1
        self._rrsets: immutables.Map[str, Mapping[int, RRset]] = immutables.Map(rrsets)
        self._names: immutables.Map[str, int] = immutables.Map(names)
        self.result = self._result(self._snapshot())

    # ---- input ----------------------------------------------------------------------

    def set(self, key: str, claims: Iterable[AliasClaim]) -> bool:
        """The claims of one object (``source\\0key``) are now ``claims`` (none:
        the object is gone or claims nothing). Cheap when nothing changed.
        Returns whether anything did."""
        new = tuple(claims)
        if self.claims.get(key, ()) == new:
            return False
        prefix = key.split(KEY_SEP, 1)[0]
        if new:
            self.claims = self.claims.set(key, new)
            self._keys_of.setdefault(prefix, set()).add(key)
        else:
            self.claims = self.claims.delete(key)
            keys = self._keys_of.get(prefix)
            if keys is not None:
                keys.discard(key)
        namespaces = frozenset(ns for c in new if (ns := policy_namespace(c.owner)))
        for ns in self._key_ns.get(key, frozenset()) - namespaces:
            ns_keys = self._ns_keys[ns]
            ns_keys.discard(key)
            if not ns_keys:
                del self._ns_keys[ns]
        for ns in namespaces:
            self._ns_keys.setdefault(ns, set()).add(key)
        if namespaces:
            self._key_ns[key] = namespaces
        else:
            self._key_ns.pop(key, None)
        self._validate(key, new)
        return True

    def set_namespace(self, namespace: str, annotation: str | None) -> bool:
        """``namespace``'s ``aliasd.io/allowed-names`` is now ``annotation``
        (None: absent, the default applies). Re-validates that namespace's
        objects only; nothing to do (False) when the value did not change."""
        if self.annotations.get(namespace) == annotation:
            return False
        self.annotations = (self.annotations.delete(namespace) if annotation is None
                            else self.annotations.set(namespace, annotation))
        for key in sorted(self._ns_keys.get(namespace, ())):
            self._validate(key, self.claims.get(key, ()))
        return True

    def set_health(self, check: Check, healthy: bool) -> bool:
        """A target's health check now passes (or fails). Re-resolves only the
        names whose claims carry it; a check no valid claim carries is ignored
        (its prober was stopped after it sent this). Returns whether anything
        changed."""
        if check not in self._check_names or (check not in self.unhealthy) == healthy:
            return False
        self.unhealthy = (self.unhealthy - {check}) if healthy else (self.unhealthy | {check})
        self._touched.update(self._check_names[check])
        return True

    @property
    def checks(self) -> frozenset[Check]:
        """Every health check a valid claim carries (what the probers probe)."""
        return frozenset(self._check_names)

    def _index_check(self, check: Check, name: str, delta: int) -> None:
        names = self._check_names.setdefault(check, {})
        count = names.get(name, 0) + delta
        if count > 0:
            names[name] = count
            return
        names.pop(name, None)
        if not names:
            # No claim carries it any more: it starts healthy if it comes back.
            del self._check_names[check]
            self.unhealthy -= {check}

    def _validate(self, key: str, new: tuple[AliasClaim, ...]) -> None:
        """(Re)index the valid claims of one object and record its invalid ones."""
        for name, old in self._valid.pop(key, ()):
            if old.check is not None:
                self._index_check(old.check, name, -1)
            self._touched.add(name)
            per = self._by_name.get(name)
            if per is not None:
                per.pop(key, None)
                if not per:
                    del self._by_name[name]
        valid, invalid = validate(new, self.config, self.annotations)
        if valid:
            self._valid[key] = valid
        for name, claim in valid:
            if claim.check is not None:
                self._index_check(claim.check, name, +1)
            self._touched.add(name)
            self._by_name.setdefault(name, {}).setdefault(key, []).append(claim)
        if self.track_changes:
            self.changed_keys.add(key)
        if invalid != self._invalid.get(key, ()):
            self._invalid = (self._invalid.set(key, invalid) if invalid
                             else self._invalid.delete(key))
            self._invalid_dirty = True
            self._invalid_keys.add(key)

    def replace(self, prefix: str, claims: Iterable[AliasClaim]) -> bool:
        """Every claim of a whole-state source (the aliases file, the overrides):
        each name is one object, so a reload re-resolves only the names that
        changed."""
        grouped: dict[str, list[AliasClaim]] = {}
        for c in claims:
            grouped.setdefault(f"{prefix}{KEY_SEP}{c.name.strip().lower()}", []).append(c)
        changed = False
        for key in self._keys_of.get(prefix, set()) - grouped.keys():
            changed |= self.set(key, ())
        for key, cs in grouped.items():
            changed |= self.set(key, cs)
        return changed

    @property
    def invalid(self) -> Mapping[str, tuple[Invalid, ...]]:
        """Each object's invalid claims, as of the last ``set``."""
        return self._invalid

    @property
    def pending(self) -> bool:
        """Whether a commit has anything to do (ready aside)."""
        return bool(self._touched) or self._invalid_dirty

    # ---- output ---------------------------------------------------------------------

    def commit(self, *, now: float, ready: bool, min_serial: int = 0) -> Commit | None:
        """Re-resolve the touched names (and those whose hold expired by
        ``now``). None when neither an answer nor who won what changed (nor
        readiness): no new result, no new serial. A new serial is above
        ``min_serial`` (a snapshot served from elsewhere)."""
        touched, self._touched = self._touched, set()
        if self.holds:  # few: names whose winner went away within name_hold
            touched.update(n for n, h in self.holds.items() if h.until <= now)
        status = self._invalid_dirty
        self._invalid_dirty = False
        invalid_keys, self._invalid_keys = self._invalid_keys, set()
        resolved: list[str] = []  # names whose resolution or conflicts changed
        answer_changes: list[tuple[Resolution | None, Resolution | None]] = []
        with self._res.mutate() as res, self._conflicted.mutate() as conflicted, \
                self._overridden.mutate() as overridden, self.holds.mutate() as holds:
            for name in sorted(touched):
                per = self._by_name.get(name)
                old = res.get(name)
                claims = [c for cs in per.values() for c in cs] if per else []
                hold = _hold(old, claims, holds.get(name), now=now,
                             grace=self.config.name_hold)
                _put(holds, name, hold)
                claims, waiting = held_back(name, claims, hold)
                new = resolve(name, claims, self.config, self.unhealthy) if claims else None
                conflicts = (new.conflicts if new else ()) + waiting
                if new == old and conflicted.get(name, ()) == conflicts:
                    continue
                status = True
                resolved.append(name)
                self._entry_count += (len(new.entries) if new else 0) - (
                    len(old.entries) if old else 0)
                _put(res, name, new)
                _put(conflicted, name, conflicts)
                _put(overridden, name, new.overridden if new else None)
                if (old.answers if old else None) != (new.answers if new else None):
                    answer_changes.append((old, new))
            self._res = res.finish()
            self._conflicted = conflicted.finish()
            self._overridden = overridden.finish()
            self.holds = holds.finish()
        delta = Delta(self._number, frozenset(resolved), frozenset(invalid_keys))
        if not answer_changes and ready == self._ready:
            if not status:
                return None
            self.result = self._result(self.result.snapshot, delta)
            return Commit(self.result, False, frozenset())
        self._serial = next_serial(max(self._serial, min_serial), now)
        takeovers = self._takeovers
        changed: frozenset[str] | None = self._apply(answer_changes)
        if ready != self._ready or set(self._takeovers) != set(takeovers):
            # Readiness, or a taken-over zone came or went (every name below it
            # turns from REFUSED to NXDOMAIN or back): anything may have changed.
            self._ready = ready
            changed = None
        self.result = self._result(self._snapshot(), delta)
        return Commit(self.result, True, changed)

    def _apply(self, changes: list[tuple[Resolution | None, Resolution | None]]
               ) -> frozenset[str]:
        """Move the answer maps from the old resolutions to the new ones; the names
        whose answers may differ."""
        zones = self.config.zones
        changed: set[str] = set()
        with self._rrsets.mutate() as rrsets, self._names.mutate() as names, \
                self._weighted.mutate() as weighted, self._unusable.mutate() as unusable, \
                self._takeovers.mutate() as takeovers, \
                self._wildcards.mutate() as wildcards:
            for old, new in changes:
                if old is not None:
                    for owner, _ in old.rrsets:
                        del rrsets[owner]
                        changed.add(owner)
                    for n in owner_names(old, zones):
                        count = names[n] - 1
                        if count:
                            names[n] = count
                        else:
                            del names[n]
                            changed.add(n)
                            if is_wildcard(n):
                                del wildcards[n.removeprefix(WILDCARD)]
                    _put(weighted, old.name, None)
                    _put(unusable, old.name, None)
                    _put(takeovers, old.name, None)
                    for target in _cname_targets(old):
                        refs = self._cname_refs.get(target)
                        if refs is not None:
                            refs.discard(old.name)
                            if not refs:
                                del self._cname_refs[target]
                if new is not None:
                    for owner, sets in new.rrsets:
                        rrsets[owner] = sets
                        changed.add(owner)
                    for n in owner_names(new, zones):
                        count = names.get(n, 0)
                        names[n] = count + 1
                        if not count:
                            changed.add(n)
                            if is_wildcard(n):
                                wildcards[n.removeprefix(WILDCARD)] = True
                    _put(weighted, new.name, new.weighted)
                    _put(unusable, new.name, True if new.unusable else None)
                    _put(takeovers, new.name, True if new.takeover else None)
                    for target in _cname_targets(new):
                        self._cname_refs.setdefault(target, set()).add(new.name)
            # The serial moved: every apex SOA.
            for origin, sets in apex_rrsets(self.config, self._serial).items():
                if origin in zones:
                    rrsets[origin] = MappingProxyType(sets)
            self._rrsets = rrsets.finish()
            self._names = names.finish()
            self._weighted = weighted.finish()
            self._unusable = unusable.finish()
            self._takeovers = takeovers.finish()
            self._wildcards = wildcards.finish()
        changed.update(zones)
        changed.update(self._takeovers.keys())
        # A name answering through a CNAME to a changed name changes too.
        frontier = set(changed)
        for _ in range(MAX_CNAME_CHAIN):
            frontier = {src for t in frontier for src in self._cname_refs.get(t, ())} - changed
            if not frontier:
                break
            changed |= frontier
        return frozenset(changed)

    def _snapshot(self) -> Snapshot:
        return Snapshot(serial=self._serial,
                        zones=zone_infos(self.config, self._serial, self._takeovers.keys()),
                        rrsets=self._rrsets, ready=self._ready, names=self._names,
                        weighted=self._weighted, unusable=self._unusable,
                        wildcards=self._wildcards)

    def _result(self, snapshot: Snapshot, delta: Delta | None = None) -> Result:
        """The next result (numbered; ``delta``: what changed from the current
        one, None: anything may have)."""
        self._number = next(_RESULT_NUMBERS)
        return Result(snapshot, resolutions=self._res, invalid=self._invalid,
                      conflicted=self._conflicted, overridden=self._overridden,
                      takeovers=self._takeovers, entry_count=self._entry_count,
                      number=self._number, delta=delta)

    @property
    def serial(self) -> int:
        return self._serial

    @property
    def next_expiry(self) -> float | None:
        """When the first hold expires (commit then); None: no hold."""
        return min((h.until for h in self.holds.values()), default=None)


def _hold(old: Resolution | None, claims: list[AliasClaim], hold: Hold | None, *,
          now: float, grace: float) -> Hold | None:
    """The hold on a name, given what won it before and its claims now: kept
    until it expires (the namespace claiming the name again within it wins,
    however young its new claim); made when the namespaced claim that won it
    is gone and its namespace has no other."""
    if hold is not None:
        return hold if hold.until > now else None
    winner = old.entries[0].claim.owner if old is not None and old.entries else None
    if (grace <= 0 or winner is None or winner.kind == OVERRIDE_KIND or not winner.namespace
            or _claimed_by(claims, winner.namespace)):
        return None
    return Hold(winner, now + grace)


def _claimed_by(claims: list[AliasClaim], namespace: str) -> bool:
    return any(c.owner.namespace == namespace and c.owner.kind != OVERRIDE_KIND
               for c in claims)


def _put(m: immutables.MapMutation[str, V], key: str, value: V | None) -> None:
    """Set ``key`` (falsy ``value``: remove it)."""
    if value is None or value == ():
        m.pop(key, None)
    else:
        m[key] = value


def _cname_targets(res: Resolution) -> set[str]:
    sets = [s for _, s in res.rrsets[:1]]
    if res.weighted is not None:
        sets += list(res.weighted.variants)
    return {str(s[CNAME].rdata[0]) for s in sets if CNAME in s}


def differences(incremental: Snapshot, scratch: Snapshot) -> list[str]:
    """How two snapshots differ, record for record (empty: they serve the same)."""
    out: list[str] = []
    if incremental.serial != scratch.serial or incremental.ready != scratch.ready:
        out.append(f"serial/ready {incremental.serial}/{incremental.ready} != "
                   f"{scratch.serial}/{scratch.ready}")
    if incremental.zones != scratch.zones:
        out.append(f"zones {incremental.zones} != {scratch.zones}")
    a = {k: dict(v) for k, v in incremental.rrsets.items()}
    b = {k: dict(v) for k, v in scratch.rrsets.items()}
    for k in sorted(a.keys() | b.keys()):
        if a.get(k) != b.get(k):
            out.append(f"rrsets {k}: {a.get(k)} != {b.get(k)}")
    for what, x, y in (("names", set(incremental.names), set(scratch.names)),
                       ("unusable", set(incremental.unusable), set(scratch.unusable)),
                       ("wildcards", set(incremental.wildcards), set(scratch.wildcards))):
        if x != y:
            out.append(f"{what}: only incremental {sorted(x - y)}, only scratch {sorted(y - x)}")
    if dict(incremental.weighted) != dict(scratch.weighted):
        out.append(f"weighted {dict(incremental.weighted)} != {dict(scratch.weighted)}")
    return out
