"""Who may switch an override, and the trail of who did.

An :class:`Authenticator` turns a bearer token into the caller's name for one
write (``update`` or ``delete`` of one alias) or refuses it with a status:

* :class:`StaticToken`, the ``--api-token-file`` token (standalone use): its
  holder may write every name and is known by its remote address;
* :class:`KubernetesAuth`, in a cluster: a TokenReview says who the token
  belongs to, a SubjectAccessReview whether RBAC lets them ``update``/``delete``
  ``overrides.aliasd.io`` named after the alias (the kube-rbac-proxy way). The
  review asks for aliasd's audiences (``--api-token-audiences``), so a token
  minted for the API server (which would carry its holder's full rights if
  captured here) is refused; both decisions are cached a short while, so a
  caller repeating a write costs the API server nothing more;
* :class:`AnyOf` tries each in turn.

A :class:`Trail` records every write, allowed or refused: :class:`LogTrail`
logs it, :class:`EventTrail` also creates a Kubernetes Event on the overrides
ConfigMap, which tenants can read where they cannot read aliasd's log.

The write endpoint is reachable by every pod, so refusals are bounded: allowed
writes are always recorded, refused ones within a :class:`Budget` (a burst, then
one per interval, the way client-go's Event spam filter bounds Events per
object); the next one recorded says how many were left out. And at most
``MAX_REVIEWS`` token reviews run at once: more callers get 429, not a queue.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from kubernetes_asyncio.client import (
    ApiClient,
    AuthenticationV1Api,
    AuthorizationV1Api,
    CoreV1Api,
)

from aliasd.events import Budget, Event, Send
from aliasd.kubeapi import TRANSIENT, call, message
from aliasd.model import Owner

log = logging.getLogger(__name__)

GROUP = "aliasd.io"
RESOURCE = "overrides"
READ_RESOURCE = "aliases"
"""With ``--read-access token``: reading the zone (/v1/aliases, /v1/overrides)
is ``list`` on ``aliases.aliasd.io``."""
REFUSED_BURST = 25
"""Refused writes recorded at once before the budget applies."""
REFUSED_EVERY = 10.0
"""Then one refused write recorded per this many seconds."""
MAX_REVIEWS = 16
"""TokenReview + SubjectAccessReview pairs in flight at once; more: 429."""
DEFAULT_AUDIENCES = ("aliasd",)
"""What a token for the write API must be minted for (``kubectl create token
SA --audience aliasd``, or a projected ``serviceAccountToken`` volume)."""
ALLOWED_TTL = 120.0
"""Seconds a reviewed token's user, and an allowed write, are cached (the API
server's webhook token authenticator caches 2 minutes)."""
REFUSED_TTL = 10.0
"""Seconds an unknown token or a write RBAC refuses is cached."""
CACHE_SIZE = 4096
"""Decisions of each kind cached at most; the least recent go first."""


class Refused(Exception):
    """A write the caller may not do: ``status`` 401 (no or unknown token), 403
    (known but not allowed, or the write API is off), 429 (too many writes
    being authorized at once) or 503 (cannot decide)."""

    def __init__(self, status: int, text: str, *, who: str = "") -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.who = who  # the authenticated user, when known


class Authenticator(Protocol):
    async def authorize(self, token: str, *, verb: str, name: str, remote: str,
                        resource: str = RESOURCE) -> str:
        """The caller's name if it may ``verb`` the ``resource`` (``overrides``:
        an override; ``aliases``: read the zone) named ``name`` (no trailing
        dot; empty: all of them), else :class:`Refused`."""
        ...


class StaticToken:
    """The shared ``--api-token-file`` token: every name, known by its address."""

    def __init__(self, token: str) -> None:
        self.token = token.encode()

    async def authorize(self, token: str, *, verb: str, name: str, remote: str,
                        resource: str = RESOURCE) -> str:
        if not hmac.compare_digest(token.encode(), self.token):
            raise Refused(401, "the bearer token is wrong")
        return remote


class Decisions:
    """Decisions cached for a while, at most ``size`` of them: a value, or the
    refusal to raise again (503s, which say nothing about the caller, are
    never cached)."""

    def __init__(self, *, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any, *, now: float) -> Any:
        """The cached value (a ``Refused`` is raised anew), or None."""
        item = self._items.get(key)
        if item is None:
            return None
        until, value = item
        if now >= until:
            del self._items[key]
            return None
        if isinstance(value, Refused):
            raise Refused(value.status, value.text, who=value.who)
        return value

    def put(self, key: Any, value: Any, *, now: float, ttl: float) -> None:
        self._items.pop(key, None)
        self._items[key] = (now + ttl, value)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


T = TypeVar("T")


class KubernetesAuth:
    """TokenReview for ``audiences``, then a SubjectAccessReview per write:
    verb ``update`` or ``delete``, group ``aliasd.io``, resource ``overrides``,
    resourceName the alias, in ``namespace`` (where the overrides ConfigMap
    lives), so a Role there decides who may switch which name. Both are cached
    (by a hash of the token, never the token): allowed ``ALLOWED_TTL``,
    refused ``REFUSED_TTL``. ``reviews`` counts the reviews made and the
    answers taken from the cache."""

    def __init__(self, api: ApiClient, *, namespace: str,
                 audiences: Sequence[str] = DEFAULT_AUDIENCES,
                 reviews: Counter[str] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 max_reviews: int = MAX_REVIEWS) -> None:
        self.authn = AuthenticationV1Api(api)
        self.authz = AuthorizationV1Api(api)
        self.namespace = namespace
        self.audiences = list(audiences)
        self.reviews = reviews if reviews is not None else Counter()
        self.clock = clock
        self.max_reviews = max_reviews
        self.reviewing = 0
        self.users = Decisions()
        self.access = Decisions()

    async def authorize(self, token: str, *, verb: str, name: str, remote: str,
                        resource: str = RESOURCE) -> str:
        key = hashlib.sha256(token.encode()).digest()
        user = self._cached("token", self.users, key)
        if user is None:
            user = await self._limited(functools.partial(self._review_token, key, token))
        if self._cached("access", self.access, (key, verb, resource, name)) is None:
            await self._limited(functools.partial(self._review_access, key, user, verb=verb,
                                                  resource=resource, name=name))
        return str(user.get("username", ""))

    def _cached(self, kind: str, cache: Decisions, key: Any) -> Any:
        try:
            value = cache.get(key, now=self.clock())
        except Refused:
            self.reviews[f"{kind}_cached"] += 1
            raise
        if value is not None:
            self.reviews[f"{kind}_cached"] += 1
        return value

    async def _limited(self, review: Callable[[], Awaitable[T]]) -> T:
        # Each unknown token costs the API server a review: a flood gets 429
        # at once instead of queueing reviews (and memory) without bound.
        if self.reviewing >= self.max_reviews:
            raise Refused(429, f"{self.reviewing} writes are being authorized; retry later")
        self.reviewing += 1
        try:
            return await review()
        finally:
            self.reviewing -= 1

    async def _review_token(self, key: bytes, token: str) -> dict[str, Any]:
        self.reviews["token"] += 1
        try:
            status, review = await call(self.authn.create_token_review, {
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": self.audiences}})
        except TRANSIENT as e:
            raise Refused(503, f"cannot review the token: {str(e).splitlines()[0][:200]}"
                          ) from None
        if status >= 300:
            raise Refused(503, f"cannot review the token: {message(status, review)}")
        result = review.get("status") or {}
        refused = None
        if not result.get("authenticated"):
            why = result.get("error") or "not authenticated"
            refused = Refused(401, f"the bearer token is not valid: {why}"[:300])
        elif not set(result.get("audiences") or ()) & set(self.audiences):
            # An authenticator that ignores audiences must not let a token
            # for another audience through (the TokenReview API's contract).
            refused = Refused(401, "the bearer token is not valid: not issued for the "
                                   f"audiences {', '.join(self.audiences)}")
        if refused is not None:
            self.users.put(key, refused, now=self.clock(), ttl=REFUSED_TTL)
            raise refused
        user: dict[str, Any] = result.get("user") or {}
        self.users.put(key, user, now=self.clock(), ttl=ALLOWED_TTL)
        return user

    async def _review_access(self, key: bytes, user: dict[str, Any], *, verb: str,
                             resource: str, name: str) -> bool:
        self.reviews["access"] += 1
        who = str(user.get("username", ""))
        attributes = {"namespace": self.namespace, "verb": verb, "group": GROUP,
                      "resource": resource}
        if name:
            attributes["name"] = name
        spec: dict[str, Any] = {
            "user": who, "groups": user.get("groups") or [], "resourceAttributes": attributes}
        if user.get("uid"):
            spec["uid"] = user["uid"]
        if user.get("extra"):
            spec["extra"] = user["extra"]
        try:
            status, sar = await call(self.authz.create_subject_access_review, {
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": spec})
        except TRANSIENT as e:
            raise Refused(503, f"cannot review access: {str(e).splitlines()[0][:200]}",
                          who=who) from None
        if status >= 300:
            raise Refused(503, f"cannot review access: {message(status, sar)}", who=who)
        if not (sar.get("status") or {}).get("allowed"):
            what = f"{resource}.{GROUP} {name!r}" if name else f"{resource}.{GROUP}"
            refused = Refused(403, f"{who} may not {verb} {what} in namespace "
                                   f"{self.namespace} (RBAC)", who=who)
            self.access.put((key, verb, resource, name), refused, now=self.clock(),
                            ttl=REFUSED_TTL)
            raise refused
        self.access.put((key, verb, resource, name), True, now=self.clock(), ttl=ALLOWED_TTL)
        return True


class AnyOf:
    """The first authenticator that knows the token decides; when none does,
    the last one's refusal stands."""

    def __init__(self, authenticators: Sequence[Authenticator]) -> None:
        self.authenticators = list(authenticators)

    async def authorize(self, token: str, *, verb: str, name: str, remote: str,
                        resource: str = RESOURCE) -> str:
        refused = Refused(403, "the write API is off: start aliasd with --api-token-file")
        for a in self.authenticators:
            try:
                return await a.authorize(token, verb=verb, name=name, remote=remote,
                                         resource=resource)
            except Refused as e:
                refused = e
                if e.status != 401:  # known token, not allowed (or cannot tell): final
                    raise
        raise refused


@dataclass(frozen=True)
class Write:
    """One write as the trail records it."""

    who: str  # the user, or the remote address (static token, or unauthenticated)
    verb: str  # "update" | "delete"
    name: str  # the alias, trailing dot
    before: str  # the override before, described ("none": no override)
    after: str  # what it is now (allowed) or what was asked (refused)
    refused: Refused | None = None

    @property
    def reason(self) -> str:
        if self.refused is not None:
            return "OverrideRefused"
        return "OverrideDeleted" if self.verb == "delete" else "OverrideSet"

    def message(self) -> str:
        if self.refused is not None:
            return (f"{self.who} was refused ({self.refused.status}: {self.refused.text}) to "
                    f"{self.verb} the override of {self.name}; it stays {self.before} "
                    f"(asked: {self.after})")
        done = "deleted" if self.verb == "delete" else "set"
        return f"{self.who} {done} the override of {self.name}: {self.before} -> {self.after}"


class Trail(Protocol):
    def record(self, write: Write) -> None: ...


class LogTrail:
    """Standalone: the trail is aliasd's log. Every allowed write is recorded;
    refused ones within ``budget``, the next one recorded counting those left out."""

    def __init__(self, *, budget: Budget | None = None) -> None:
        self.budget = budget or Budget(REFUSED_BURST, REFUSED_EVERY)
        self.left_out = 0  # refused writes not recorded since the last one that was

    def record(self, write: Write) -> None:
        text = self.admit(write)
        if text is None:
            return
        level = logging.WARNING if write.refused is not None else logging.INFO
        log.log(level, "%s", text)
        self.emit(write, text)

    def admit(self, write: Write) -> str | None:
        """The trail's text for ``write``, or None when the budget leaves it out."""
        if write.refused is None:
            return write.message()
        if not self.budget.take():
            self.left_out += 1
            return None
        text = write.message()
        if self.left_out:
            text += (f" (and {self.left_out} more refused writes before it, not recorded: "
                     f"at most {self.budget.burst} at once, then one per "
                     f"{self.budget.every:g} s)")
            self.left_out = 0
        return text

    def emit(self, write: Write, text: str) -> None:
        """Where the trail goes besides the log: nowhere, standalone."""


class EventTrail(LogTrail):
    """In a cluster: the log, and an Event on the overrides ConfigMap (sent in
    the background: the answer to the write does not wait for it)."""

    def __init__(self, api: ApiClient, *, send: Send, namespace: str, name: str,
                 budget: Budget | None = None) -> None:
        super().__init__(budget=budget)
        self.core = CoreV1Api(api)
        self.send = send
        self.namespace, self.name = namespace, name
        self.tasks: set[asyncio.Task[None]] = set()

    def emit(self, write: Write, text: str) -> None:
        task = asyncio.get_running_loop().create_task(self._event(write, text))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _event(self, write: Write, text: str) -> None:
        # The uid ties the Event to the object (kubectl describe matches on it).
        uid = ""
        try:
            status, cm = await call(self.core.read_namespaced_config_map, self.name,
                                    self.namespace)
            uid = (cm.get("metadata") or {}).get("uid", "") if status < 300 else ""
        except TRANSIENT as e:
            log.warning("could not read ConfigMap %s/%s for its Event: %s", self.namespace,
                        self.name, str(e).splitlines()[0])
        self.send(Event(Owner(0.0, self.namespace, self.name, "ConfigMap", uid), write.reason,
                        text, warning=write.refused is not None))
