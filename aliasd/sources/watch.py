"""List-then-watch one Kubernetes resource into a cache of raw JSON objects.

Done right once (kopf's ``watching.py`` shape): resume from the last
resourceVersion, bookmarks on, 410 Gone → relist and diff so nothing is lost
or duplicated, other errors → reconnect with capped exponential backoff and
jitter. Objects stay plain dicts, trimmed at the edge by a transform to the
fields aliasd reads (client-go's transform functions): deserializing into
client models, or keeping managedFields and last-applied copies, would cost
more than everything else aliasd does per object.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from aliasd.kubeapi import TRANSIENT
from aliasd.model import SourceError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ListFn = Callable[..., Awaitable[Any]]
Transform = Callable[[Obj], Obj]
OnChange = Callable[[str, Obj | None, Obj | None], None]
"""(key, old, new): new None = deleted, old None = added."""

WATCH_TIMEOUT = 300
SLICE = 100
"""Listed objects handled per loop turn (a few milliseconds of work)."""


class Gone(Exception):
    """The resourceVersion is too old (HTTP 410): relist."""


class NotFound(Exception):
    """The resource is not served (CRD missing or removed)."""


def obj_key(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def apply_event(
    cache: dict[str, Obj], event: Obj, transform: Transform | None = None
) -> tuple[str, Obj | None, Obj | None, str | None]:
    """Apply one watch event to ``cache``: (key, old, new, resourceVersion).

    ``key`` is "" for events that change no object (bookmarks, unknown types).
    Raises Gone for a 410 ERROR event and SourceError for other ERRORs. The
    object is cached as ``transform`` returns it (the fields aliasd reads).
    """
    etype = event.get("type")
    obj = event.get("object") or {}
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    if etype == "ERROR":
        if obj.get("code") == 410:
            raise Gone(obj.get("message", "gone"))
        raise SourceError(f"watch error: {obj.get('message', obj)}")
    if etype == "BOOKMARK":
        return "", None, None, rv
    if etype not in ("ADDED", "MODIFIED", "DELETED"):
        log.warning("unknown watch event type %r, skipped", etype)
        return "", None, None, rv
    k = obj_key(obj)
    old = cache.get(k)
    if etype == "DELETED":
        cache.pop(k, None)
        return k, old, None, rv
    if transform is not None:
        obj = transform(obj)
    cache[k] = obj
    return k, old, obj, rv


def diff_relist(
    cache: dict[str, Obj], items: list[Obj]
) -> list[tuple[str, Obj | None, Obj | None]]:
    """Replace ``cache`` with ``items``; the changes, so a relist after 410 neither
    loses a delete that happened while we were away nor repeats an add."""
    fresh = {obj_key(o): o for o in items}
    changes: list[tuple[str, Obj | None, Obj | None]] = []
    for k, old in list(cache.items()):
        if k not in fresh:
            changes.append((k, old, None))
            del cache[k]
    for k, new in fresh.items():
        prev = cache.get(k)
        prev_rv = (prev or {}).get("metadata", {}).get("resourceVersion")
        if prev is None or prev_rv != new.get("metadata", {}).get("resourceVersion"):
            changes.append((k, prev, new))
        cache[k] = new
    return changes


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, initial: float = 0.2, cap: float = 30.0) -> None:
        self.initial, self.cap, self.attempt = initial, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.initial * (2 ** self.attempt))
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


class Informer:
    """Keeps ``items`` equal to the API server's objects of one resource."""

    def __init__(self, name: str, list_fn: ListFn, *, on_change: OnChange,
                 on_restart: Callable[[], None] = lambda: None,
                 on_sync: Callable[[], None] = lambda: None,
                 on_relist: Callable[[], None] = lambda: None,
                 transform: Transform | None = None, page_size: int = 500) -> None:
        self.name = name
        self.transform = transform
        self.page_size = page_size
        self.on_sync = on_sync
        self.on_relist = on_relist  # a list after the first: events may have been missed
        self.list_fn = list_fn
        self.on_change = on_change
        self.on_restart = on_restart
        self.items: dict[str, Obj] = {}
        self.synced = False
        self.error: str | None = None

    async def run(self) -> None:
        backoff = Backoff()
        rv: str | None = None
        failing = False
        while True:
            try:
                if rv is None:
                    rv = await self._relist()
                rv = await self._watch(rv)
                backoff.reset()
                if failing:
                    log.info("%s: watch recovered", self.name)
                failing = False
                self.error = None
            except Gone:
                log.info("%s: resourceVersion too old (410), relisting", self.name)
                self.on_restart()
                rv = None
            except NotFound:
                raise
            except (*TRANSIENT, ValueError, SourceError) as e:
                self.error = f"{type(e).__name__}: {e}"[:300]
                self.on_restart()
                delay = backoff.next()
                if not failing:  # log a failure streak once at WARNING, not every retry
                    log.warning("%s: list/watch failed, retrying with backoff: %s",
                                self.name, self.error)
                else:
                    log.debug("%s: still failing (%s), next try in %.1fs", self.name,
                              self.error, delay)
                failing = True
                await asyncio.sleep(delay)

    async def _relist(self) -> str:
        """List in pages (``limit``/``continue``). Each page is handled as it
        arrives (transformed, compared with the cache, handed on) while the
        API server prepares the next one, in slices of ``SLICE`` objects so a
        DNS query never waits behind a whole page; objects the list no longer
        has are deleted at the end. A relist after 410 thus neither loses a
        delete that happened while we were away nor repeats an add."""
        relist = self.synced
        seen: set[str] = set()
        fetch: asyncio.Future[Obj] = asyncio.ensure_future(self._page(None))
        try:
            while True:
                body = await fetch
                meta = body.get("metadata") or {}
                token = meta.get("continue")
                if token:  # in flight while this page is handled
                    fetch = asyncio.ensure_future(self._page(token))
                page = body.get("items") or []
                del body
                for start in range(0, len(page), SLICE):
                    if start or token:
                        await asyncio.sleep(0)  # let queries (and the next page) in
                    self._merge(page[start:start + SLICE], seen)
                if not token:
                    break
        finally:
            if not fetch.done():
                fetch.cancel()
        gone = [k for k in self.items if k not in seen]
        for k in gone:
            self.on_change(k, self.items.pop(k), None)
        self.synced = True
        self.error = None
        self.on_sync()  # readiness may have changed even when no object did
        if relist:
            self.on_relist()
        rv: str = meta.get("resourceVersion", "")
        return rv

    async def _page(self, token: str | None) -> Obj:
        kw: dict[str, Any] = {"limit": self.page_size}
        if token:
            kw["_continue"] = token
        try:
            data = await self.list_fn(_preload_content=False, _request_timeout=60, **kw)
        except ApiException as e:
            if e.status == 404:
                raise NotFound(self.name) from e
            if e.status == 410:  # the continue token expired: start over
                raise Gone(self.name) from e
            raise
        async with data as resp:
            self._check_status(resp, "list")
            body: Obj = await resp.json(loads=json.loads, content_type=None)
        return body

    def _check_status(self, resp: aiohttp.ClientResponse, verb: str) -> None:
        """A list or watch answer's status: 404 → NotFound, 410 → Gone, any
        other but 200 → SourceError."""
        if resp.status == 404:
            raise NotFound(self.name)
        if resp.status == 410:
            raise Gone(self.name)
        if resp.status != 200:
            raise SourceError(f"{verb} {self.name}: HTTP {resp.status}")

    def _merge(self, items: list[Obj], seen: set[str]) -> None:
        """Listed objects into the cache: hand on the new and the changed ones."""
        cache, transform = self.items, self.transform
        for o in items:
            k = obj_key(o)
            seen.add(k)
            prev = cache.get(k)
            if prev is not None and (prev.get("metadata", {}).get("resourceVersion")
                                     == o.get("metadata", {}).get("resourceVersion")):
                continue
            new = transform(o) if transform else o
            cache[k] = new
            self.on_change(k, prev, new)

    async def _watch(self, rv: str) -> str:
        data = await self.list_fn(
            watch=True, resource_version=rv, allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT, _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=WATCH_TIMEOUT + 30),
        )
        async with data as resp:
            self._check_status(resp, "watch")
            buf = b""
            # Split lines by hand: one watch event can exceed aiohttp's line limit.
            async for chunk in resp.content.iter_any():
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    k, old, new, new_rv = apply_event(self.items, json.loads(line), self.transform)
                    if new_rv:
                        rv = new_rv
                    if k:
                        self.on_change(k, old, new)
        return rv
