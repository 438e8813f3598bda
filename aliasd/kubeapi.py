"""The Kubernetes client edge shared by the sources and the CoreDNS patcher:
building the client, counting its responses, and calls that return raw JSON
with the HTTP status."""

from __future__ import annotations

import json
import os
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
from kubernetes_asyncio import config as kconfig
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from aliasd.model import ConfigError

TRANSIENT = (aiohttp.ClientError, ApiException, OSError, TimeoutError)
"""Errors worth a retry: the API server is unreachable or failed the request."""


class ApiResponses(Collector):
    """Every answer of the API server, by HTTP method and status code (like
    client-go's ``rest_client_requests_total``): a refused call (403: a Role
    missing a verb) shows here whichever part of aliasd made it, and whether
    or not that part logs it."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def count(self, method: str, status: int) -> None:
        self.counts[method, str(status)] += 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "aliasd_kube_api_responses",
            "Kubernetes API server responses, by HTTP method and status code",
            labels=["method", "code"])
        for (method, code), n in sorted(self.counts.items()):
            family.add_metric([method, code], n)
        yield family


RESPONSES = ApiResponses()
"""One per process, like the clients it counts."""


class _CountingClient(ApiClient):
    """An ``ApiClient`` that counts each response's status in ``RESPONSES``."""

    async def request(self, method: str, url: str, *args: Any, **kw: Any) -> Any:
        try:
            resp = await super().request(method, url, *args, **kw)
        except ApiException as e:
            RESPONSES.count(method, e.status or 0)
            raise
        RESPONSES.count(method, resp.status)
        return resp


async def make_client(kubeconfig: str | None) -> ApiClient:
    """From ``kubeconfig``, else $KUBECONFIG, else the in-cluster config inside a
    pod, else ~/.kube/config (like kubectl)."""
    in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    _check_exists(kubeconfig or os.environ.get("KUBECONFIG"))
    config = Configuration()
    try:
        if kubeconfig or os.environ.get("KUBECONFIG") or not in_pod:
            await kconfig.load_kube_config(config_file=kubeconfig, client_configuration=config)
        else:
            kconfig.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=config)
        return _CountingClient(configuration=config)
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


REQUEST_TIMEOUT = 30.0
"""Seconds a raw request may take, as :func:`call` allows."""


class RawClient:
    """JSON requests to the API server over an aiohttp session of its own, for
    a path that sends many small requests (the Alias status writer): none of
    the generated client's per-request work, which reads ``~/.netrc`` in a
    thread and the proxy variables on every request (``trust_env``) and
    walks the body to serialize it. Same server, credentials and TLS as
    ``api``; at most ``connections`` requests in flight."""

    def __init__(self, api: ApiClient, *, connections: int) -> None:
        self._config: Configuration = api.configuration
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        c = self._config
        context = ssl.create_default_context(cafile=c.ssl_ca_cert)
        if c.cert_file:
            context.load_cert_chain(c.cert_file, keyfile=c.key_file)
        if not c.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        connector = aiohttp.TCPConnector(limit=self._connections, ssl=context)
        return aiohttp.ClientSession(connector=connector, trust_env=False)

    async def request(self, method: str, path: str, body: bytes, *,
                      content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body of a refusal) of ``method path`` with
        ``body``. A success's body (the whole object, for a patch) is read
        but not decoded: the caller needs only that it landed, and decoding
        10,000 of them in a status storm is CPU the DNS server wants."""
        if self._session is None:
            self._session = self._open()
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        # Read per request: in a pod the token file is rotated (the client's hook).
        token = await self._config.get_api_key_with_prefix("BearerToken")
        if token:
            headers["Authorization"] = token
        async with self._session.request(
                method, f"{self._config.host}{path}", data=body, headers=headers,
                proxy=self._config.proxy or None, server_hostname=self._config.tls_server_name,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as resp:
            RESPONSES.count(method, resp.status)
            raw = await resp.read()
        if resp.status < 300:
            return resp.status, {}
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {"message": raw[:300].decode(errors="replace")}
        return resp.status, answer if isinstance(answer, dict) else {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def message(status: int, body: dict[str, Any]) -> str:
    """One line for a failed call: the API server's message, or the status."""
    return f"HTTP {status}: {body.get('message') or body.get('reason') or 'no message'}"


def split_ref(text: str, *, flag: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` from a flag (``ConfigError`` otherwise)."""
    ns, _, name = text.partition("/")
    if not ns or not name or "/" in name:
        raise ConfigError(f"{flag} {text!r}: expected NAMESPACE/NAME")
    return ns, name
