"""The Kubernetes client edge shared by the sources and the CoreDNS patcher:
building the client, and calls that return raw JSON with the HTTP status."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio import config as kconfig
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from aliasd.model import ConfigError

TRANSIENT = (aiohttp.ClientError, ApiException, OSError, TimeoutError)
"""Errors worth a retry: the API server is unreachable or failed the request."""


async def make_client(kubeconfig: str | None) -> ApiClient:
    """From ``kubeconfig``, else $KUBECONFIG, else the in-cluster config inside a
    pod, else ~/.kube/config (like kubectl)."""
    in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    _check_exists(kubeconfig or os.environ.get("KUBECONFIG"))
    try:
        if kubeconfig or os.environ.get("KUBECONFIG") or not in_pod:
            return await kconfig.new_client_from_config(config_file=kubeconfig)
        kconfig.load_incluster_config()  # type: ignore[no-untyped-call]
        return ApiClient()
    except (kconfig.ConfigException, OSError, ValueError, TypeError) as e:
        where = (kubeconfig or os.environ.get("KUBECONFIG")
                 or ("in-cluster config" if in_pod else "~/.kube/config"))
        raise ConfigError(f"cannot load Kubernetes config from {where}: {e}") from None


def _check_exists(path: str | None) -> None:
    """A missing file is a one-line error (the client would log a warning and
    then complain about a missing current-context)."""
    if path and not os.path.isfile(os.path.expanduser(path.split(os.pathsep)[0])):
        raise ConfigError(f"cannot load Kubernetes config from {path}: no such file")


async def call(fn: Callable[..., Awaitable[Any]], *args: Any, **kw: Any
               ) -> tuple[int, dict[str, Any]]:
    """``fn(*args, **kw)`` with the raw response: (HTTP status, JSON body)."""
    data = await fn(*args, _preload_content=False, _request_timeout=30, **kw)
    async with data as resp:
        text = await resp.text()
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {"message": text[:300]}
        return resp.status, body if isinstance(body, dict) else {}


def message(status: int, body: dict[str, Any]) -> str:
    """One line for a failed call: the API server's message, or the status."""
    return f"HTTP {status}: {body.get('message') or body.get('reason') or 'no message'}"


def split_ref(text: str, *, flag: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` from a flag (``ConfigError`` otherwise)."""
    ns, _, name = text.partition("/")
    if not ns or not name or "/" in name:
        raise ConfigError(f"{flag} {text!r}: expected NAMESPACE/NAME")
    return ns, name
