"""Who may switch an override, and the trail of who did (issue 16, part 4).

An :class:`Authenticator` turns a bearer token into the caller's name for one
write (``update`` or ``delete`` of one alias) or refuses it with a status:

* :class:`StaticToken`, the ``--api-token-file`` token (standalone use): its
  holder may write every name and is known by its remote address;
* :class:`KubernetesAuth`, in a cluster: a TokenReview says who the token
  belongs to, a SubjectAccessReview whether RBAC lets them ``update``/``delete``
  ``overrides.aliasd.io`` named after the alias (the kube-rbac-proxy way);
* :class:`AnyOf` tries each in turn.

A :class:`Trail` records every write, allowed or refused: :class:`LogTrail`
logs it, :class:`EventTrail` also creates a Kubernetes Event on the overrides
ConfigMap, which tenants can read where they cannot read aliasd's log.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes_asyncio.client import (
    ApiClient,
    AuthenticationV1Api,
    AuthorizationV1Api,
    CoreV1Api,
)

from aliasd.kubeapi import TRANSIENT, call, message
from aliasd.model import utc_timestamp

log = logging.getLogger(__name__)

GROUP = "aliasd.io"
RESOURCE = "overrides"


class Refused(Exception):
    """A write the caller may not do: ``status`` 401 (no or unknown token), 403
    (known but not allowed, or the write API is off) or 503 (cannot decide)."""

    def __init__(self, status: int, text: str, *, who: str = "") -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.who = who  # the authenticated user, when known


class Authenticator(Protocol):
    async def authorize(self, token: str, *, verb: str, name: str, remote: str) -> str:
        """The caller's name if it may ``verb`` the override ``name`` (no
        trailing dot), else :class:`Refused`."""
        ...


class StaticToken:
    """The shared ``--api-token-file`` token: every name, known by its address."""

    def __init__(self, token: str) -> None:
        self.token = token.encode()

    async def authorize(self, token: str, *, verb: str, name: str, remote: str) -> str:
        if not hmac.compare_digest(token.encode(), self.token):
            raise Refused(401, "the bearer token is wrong")
        return remote


class KubernetesAuth:
    """TokenReview, then a SubjectAccessReview per write: verb ``update`` or
    ``delete``, group ``aliasd.io``, resource ``overrides``, resourceName the
    alias, in ``namespace`` (where the overrides ConfigMap lives), so a Role
    there decides who may switch which name."""

    def __init__(self, api: ApiClient, *, namespace: str) -> None:
        self.authn = AuthenticationV1Api(api)
        self.authz = AuthorizationV1Api(api)
        self.namespace = namespace

    async def authorize(self, token: str, *, verb: str, name: str, remote: str) -> str:
        try:
            status, review = await call(self.authn.create_token_review, {
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token}})
        except TRANSIENT as e:
            raise Refused(503, f"cannot review the token: {str(e).splitlines()[0][:200]}"
                          ) from None
        if status >= 300:
            raise Refused(503, f"cannot review the token: {message(status, review)}")
        result = review.get("status") or {}
        if not result.get("authenticated"):
            why = result.get("error") or "not authenticated"
            raise Refused(401, f"the bearer token is not valid: {why}"[:300])
        user = result.get("user") or {}
        who = str(user.get("username", ""))
        spec: dict[str, Any] = {
            "user": who, "groups": user.get("groups") or [],
            "resourceAttributes": {"namespace": self.namespace, "verb": verb, "group": GROUP,
                                   "resource": RESOURCE, "name": name}}
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
            raise Refused(403, f"{who} may not {verb} {RESOURCE}.{GROUP} {name!r} in "
                          f"namespace {self.namespace} (RBAC)", who=who)
        return who


class AnyOf:
    """The first authenticator that knows the token decides; when none does,
    the last one's refusal stands."""

    def __init__(self, authenticators: Sequence[Authenticator]) -> None:
        self.authenticators = list(authenticators)

    async def authorize(self, token: str, *, verb: str, name: str, remote: str) -> str:
        refused = Refused(403, "the write API is off: start aliasd with --api-token-file")
        for a in self.authenticators:
            try:
                return await a.authorize(token, verb=verb, name=name, remote=remote)
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
    """Standalone: the trail is aliasd's log."""

    def record(self, write: Write) -> None:
        level = logging.WARNING if write.refused is not None else logging.INFO
        log.log(level, "%s", write.message())


class EventTrail(LogTrail):
    """In a cluster: the log, and an Event on the overrides ConfigMap (created
    in the background: the answer to the write does not wait for it)."""

    def __init__(self, api: ApiClient, *, namespace: str, name: str) -> None:
        self.core = CoreV1Api(api)
        self.namespace, self.name = namespace, name
        self.instance = os.environ.get("POD_NAME") or socket.gethostname()
        self.tasks: set[asyncio.Task[None]] = set()

    def record(self, write: Write) -> None:
        super().record(write)
        task = asyncio.get_running_loop().create_task(self._emit(write))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _emit(self, write: Write) -> None:
        ref = f"{self.namespace}/{self.name}"
        try:
            # The uid ties the Event to the object (kubectl describe matches on it).
            status, cm = await call(self.core.read_namespaced_config_map, self.name,
                                    self.namespace)
            uid = (cm.get("metadata") or {}).get("uid", "") if status < 300 else ""
            now = utc_timestamp(time.time())
            status, body = await call(self.core.create_namespaced_event, self.namespace, {
                "metadata": {"generateName": f"{self.name}.", "namespace": self.namespace},
                "involvedObject": {"kind": "ConfigMap", "namespace": self.namespace,
                                   "name": self.name, "uid": uid, "apiVersion": "v1"},
                "reason": write.reason, "message": write.message()[:1024],
                "type": "Warning" if write.refused is not None else "Normal",
                "source": {"component": "aliasd"}, "reportingComponent": "aliasd",
                "reportingInstance": self.instance,
                "firstTimestamp": now, "lastTimestamp": now, "count": 1})
            if status >= 300:
                log.warning("could not record Event %s on ConfigMap %s: %s", write.reason, ref,
                            message(status, body))
        except TRANSIENT as e:
            log.warning("could not record Event %s on ConfigMap %s: %s", write.reason, ref,
                        str(e).splitlines()[0])
