"""Every flag of the ``aliasd`` command line, declared once: its name, its
environment variable, how its value is parsed, its default, whether it repeats,
its help and the commands that take it. The argparse parser, the environment
handling and the generated reference (``docs/reference/flags.md``) all come
from :data:`FLAGS`.

A flag ``--dns-listen`` can also be set as ``ALIASD_DNS_LISTEN``; a repeatable
flag's variable takes a comma-separated list. The command line wins over the
environment, the environment over the default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from aliasd.coredns.patcher import MODES
from aliasd.model import ConfigError
from aliasd.runtime.statuswriter import DEFAULT_RATE as STATUS_RATE
from aliasd.runtime.statuswriter import INFLIGHT as STATUS_INFLIGHT

if TYPE_CHECKING:  # parsers import their modules lazily: `aliasd --help` stays fast
    import ipaddress

    from aliasd.coredns.plan import Forward
    from aliasd.policy import NamePolicy
    from aliasd.zoneconfig import TakeoverPolicy

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

RUN, COREDNS, LIST = "run", "coredns", "list"
COMMANDS = (RUN, COREDNS, LIST)
ENV_PREFIX = "ALIASD_"
POD_NAMESPACE = "{pod_namespace}"
"""Stands for the pod's namespace in a default (``aliasd-system`` outside a pod)."""


def pod_namespace() -> str:
    return os.environ.get("POD_NAMESPACE") or "aliasd-system"


@dataclass(frozen=True, kw_only=True)
class _Declared:
    name: str  # --dns-listen
    help: str
    commands: tuple[str, ...]  # the commands that take it

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str | None:
        return ENV_PREFIX + self.dest.upper()


@dataclass(frozen=True, kw_only=True)
class Flag(_Declared, Generic[T_co]):
    """A flag with one value: ``parse(text, flag_name)`` turns the text into
    its value or raises ``ValueError``/``ConfigError`` naming the flag."""

    parse: Callable[[str, str], T_co]
    default: str | None = None  # may contain POD_NAMESPACE
    choices: tuple[str, ...] = ()
    short: str | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()

    def default_text(self) -> str | None:
        return None if self.default is None else self.default.replace(
            POD_NAMESPACE, pod_namespace())


@dataclass(frozen=True, kw_only=True)
class ListFlag(_Declared, Generic[T_co]):
    """A repeatable flag: every value may also be a comma-separated list;
    ``parse(items, flag_name)`` turns all the items into its value."""

    parse: Callable[[list[str], str], T_co]
    default: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


@dataclass(frozen=True, kw_only=True)
class Switch(_Declared):
    """A flag without a value and without an environment variable: an operator's
    decision for one invocation, never a setting left in a pod's environment."""

    @property
    def env(self) -> None:
        return None


AnyFlag = Flag[Any] | ListFlag[Any] | Switch


# Parsers: (text, flag) -> value. They import their modules lazily.

def _text(text: str, flag: str) -> str:
    return text


def _path(text: str, flag: str) -> Path:
    return Path(text)


def _items(items: list[str], flag: str) -> list[str]:
    return items


def _audiences(items: list[str], flag: str) -> list[str]:
    if not items:
        raise ConfigError(f"{flag} needs at least one audience: a token for any audience "
                          "would be one for the API server too")
    return items


def _listen(text: str, flag: str) -> tuple[str, int]:
    from aliasd.dns.server import parse_listen

    return parse_listen(text, flag=flag)


def _networks(items: list[str],
              flag: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    from aliasd.dns.server import parse_networks

    return parse_networks(items, flag=flag)


def _ref(text: str, flag: str) -> tuple[str, str]:
    from aliasd.kubeapi import split_ref

    return split_ref(text, flag=flag)


def _ref_text(text: str, flag: str) -> str:
    _ref(text, flag)
    return text


def _forward(text: str, flag: str) -> Forward:
    from aliasd.coredns.patcher import parse_forward

    return parse_forward(text, flag=flag)


def _takeover(items: list[str], flag: str) -> TakeoverPolicy:
    from aliasd.zoneconfig import TakeoverPolicy

    return TakeoverPolicy.parse(items)


def _names(items: list[str], flag: str) -> NamePolicy:
    from aliasd.policy import NamePolicy

    return NamePolicy.parse(items)


def _number(text: str, flag: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{flag} {text!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{flag} must be positive, got {text}")
    return value


def _seconds(text: str, flag: str) -> float:
    return float(_number(text, flag, float))


def _count(text: str, flag: str) -> int:
    return int(_number(text, flag, int))


def _seconds_or_zero(text: str, flag: str) -> float:
    return 0.0 if text in ("0", "0.0") else _seconds(text, flag)


def read_token(path: str, flag: str) -> str:
    """The bearer token in the file ``path``: one word, not empty."""
    try:
        token = Path(path).read_text().strip()
    except OSError as e:
        raise ConfigError(f"{flag} {path}: {e.strerror or e}") from None
    if not token:
        raise ConfigError(f"{flag} {path} is empty")
    if any(c.isspace() for c in token):
        raise ConfigError(f"{flag} {path}: the token contains whitespace")
    return token


ALL = COMMANDS
WIRING = (RUN, COREDNS)

LOG_LEVEL = Flag(name="--log-level", commands=ALL, parse=_text, default="info",
                 choices=("debug", "info", "warning", "error"), help="log level")
LOG_FORMAT = Flag(name="--log-format", commands=ALL, parse=_text, default="text",
                  choices=("text", "json"), help="log format")
ZONE = ListFlag(name="--zone", commands=ALL, parse=_items, default=("internal",),
                help="zone aliasd serves authoritatively; the first is the default for "
                     "bare labels")
DNS_LISTEN = Flag(name="--dns-listen", commands=(RUN,), parse=_listen, default="0.0.0.0:5353",
                  help="DNS address (UDP and TCP)")
HTTP_LISTEN = Flag(name="--http-listen", commands=(RUN,), parse=_listen,
                   default="0.0.0.0:8080",
                   help="HTTP address for /healthz, /readyz, /metrics (unless --metrics-listen), "
                        "/v1/aliases, /v1/overrides")
METRICS_LISTEN = Flag(name="--metrics-listen", commands=(RUN,), parse=_listen,
                     help="serve /metrics (and /healthz) on this address instead of "
                          "--http-listen, so a NetworkPolicy can open it to Prometheus alone")
READ_ACCESS = Flag(name="--read-access", commands=(RUN,), parse=_text, default="open",
                   choices=("open", "token"),
                   help="who may read /v1/aliases and /v1/overrides (the whole zone, its "
                        "owners): open = every client that reaches the HTTP port; token = "
                        "the --api-token-file token, or a Kubernetes token whose user RBAC "
                        "lets list aliases.aliasd.io in the overrides ConfigMap's namespace")
ALIASES_FILE = Flag(name="--aliases-file", commands=(RUN,), parse=_path,
                    help="YAML file of static aliases, reloaded on change")
NS_ADDRESS = ListFlag(name="--ns-address", commands=(RUN,), parse=_items,
                      help="IP of this server, for the zone's NS glue")
ALLOW_TRANSFER = ListFlag(name="--allow-transfer", commands=(RUN,), parse=_networks,
                          help="CIDR allowed to AXFR the zones; others get REFUSED")
TCP_IDLE_TIMEOUT = Flag(name="--tcp-idle-timeout", commands=(RUN,), parse=_seconds,
                        default="10",
                        help="seconds a TCP connection may go without a complete query "
                             "before it is closed (RFC 7766 6.2.3)")
TCP_MAX_CONNECTIONS = Flag(name="--tcp-max-connections", commands=(RUN,), parse=_count,
                           default="256", help="concurrent TCP connections")
TCP_MAX_CONNECTIONS_PER_CLIENT = Flag(
    name="--tcp-max-connections-per-client", commands=(RUN,), parse=_count, default="64",
    help="concurrent TCP connections from one client address, so that one client cannot "
         "take every connection (a quarter of the default total: the few CoreDNS pods "
         "forward every query, and a truncated answer is retried over TCP)")
LAME_DUCK = Flag(name="--lame-duck", commands=(RUN,), parse=_seconds_or_zero, default="0",
                 help="seconds to keep answering DNS after SIGTERM with /readyz failing, so "
                      "that Services stop sending queries first (in a pod: a few seconds, "
                      "less than terminationGracePeriodSeconds)")
HEALTH_MAX_CONCURRENT_PROBES = Flag(
    name="--health-max-concurrent-probes", commands=(RUN,), parse=_count, default="64",
    help="health probes in flight at once (each replica probes the checked targets of "
         "Aliases and the aliases file for itself)")
KUBERNETES = Flag(name="--kubernetes", commands=(RUN,), parse=_text, default="auto",
                  choices=("auto", "on", "off"),
                  help="watch Kubernetes; auto = on when --kubeconfig/KUBECONFIG is set or in "
                       "a pod")
KUBECONFIG = Flag(name="--kubeconfig", commands=ALL, parse=_text,
                  help="kubeconfig file (default: $KUBECONFIG, in-cluster config, "
                       "~/.kube/config)")
NAMESPACES = ListFlag(name="--namespaces", commands=(RUN, LIST), parse=_items,
                      help="namespaces to read Services from (default: all)")
STATE_FILE = Flag(name="--state-file", commands=(RUN,), parse=_path,
                  help="file for the last good snapshot (and, without Kubernetes, the HTTP "
                       "overrides): served at start until the sources sync")
API_TOKEN_FILE = Flag(name="--api-token-file", commands=(RUN,), parse=read_token,
                      help="file holding a bearer token for the write API (PUT/DELETE "
                           "/v1/overrides) that may write every name; in a cluster Kubernetes "
                           "tokens are accepted too (RBAC decides); without either the write "
                           "API is off")
API_TOKEN_AUDIENCES = ListFlag(
    name="--api-token-audiences", commands=(RUN,), parse=_audiences, default=("aliasd",),
    help="audiences a Kubernetes token for the write API must be issued for (kubectl create "
         "token SA --audience aliasd, or a projected serviceAccountToken volume): a token "
         "for the API server is refused, so one captured here is no use against it")
OVERRIDES_CONFIGMAP = Flag(name="--overrides-configmap", commands=(RUN, LIST), parse=_ref,
                           default=f"{POD_NAMESPACE}/aliasd-overrides",
                           help="NAMESPACE/NAME of the ConfigMap holding the HTTP overrides")
ALLOW_TAKEOVER = ListFlag(name="--allow-takeover", commands=(RUN, LIST), parse=_takeover,
                          help="allow aliasd.io/takeover of names under this suffix "
                               "(example.com) or from this namespace (namespace=NAME); both "
                               "kinds given: both must match")
DEFAULT_ALLOWED_NAMES = ListFlag(
    name="--default-allowed-names", commands=(RUN, LIST), parse=_names,
    help="names a namespace without the aliasd.io/allowed-names annotation may claim: exact "
         "names and *.suffix patterns, {namespace} replaced by the namespace (e.g. "
         "'*.{namespace}.internal'); default: any name in the served zones")
NAME_HOLD = Flag(
    name="--name-hold", commands=(RUN,), parse=_seconds_or_zero, default="0",
    help="seconds a name stays with the namespace whose claim last won it after that claim "
         "goes away, so a waiting claim from another namespace does not win while the owner "
         "recreates its Service (e.g. 600); 0: handed over at once, which a move of a name "
         "to another namespace relies on")
POLICY_CONFIGMAP = Flag(
    name="--policy-configmap", commands=(RUN, LIST), parse=_ref,
    help="NAMESPACE/NAME of a ConfigMap (in aliasd's namespace) whose keys are namespaces and "
         "values their allowed names; the Namespaces' aliasd.io/allowed-names annotations are "
         "then ignored, so tenants that create namespaces cannot grant themselves names")
COREDNS_MODE = Flag(name="--coredns-mode", commands=WIRING, parse=_text, default="auto",
                    choices=MODES,
                    help="which cluster DNS config to wire: auto detects kube-system/coredns "
                         "(or, when its Corefile imports custom/*.server as on AKS and k3s, "
                         "coredns-custom), kube-dns and node-local-dns")
FORWARD_TO = Flag(name="--forward-to", commands=WIRING, parse=_forward,
                  help="IP:PORT the cluster DNS forwards the zones to (default: the cluster "
                       "IP of --dns-service)")
DNS_SERVICE = Flag(name="--dns-service", commands=WIRING, parse=_ref_text,
                   default=f"{POD_NAMESPACE}/aliasd",
                   help="NAMESPACE/NAME of aliasd's Service, whose cluster IP CoreDNS "
                        "forwards to")
COREDNS_CONFIGMAP = Flag(name="--coredns-configmap", commands=WIRING, parse=_ref_text,
                         default="kube-system/coredns",
                         help="NAMESPACE/NAME of the CoreDNS ConfigMap")
LEADER_ELECTION = Flag(name="--leader-election", commands=(RUN,), parse=_text, default="on",
                       choices=("on", "off"),
                       help="with several replicas, only the holder of a Lease patches the "
                            "cluster DNS and writes the status of Alias objects")
LEADER_LEASE = Flag(name="--leader-lease", commands=WIRING, parse=_ref,
                    default=f"{POD_NAMESPACE}/aliasd",
                    help="NAMESPACE/NAME of the leader-election Lease (coredns remove: "
                         "refuses while a running aliasd holds it)")
LEADER_LEASE_DURATION = Flag(name="--leader-lease-duration", commands=(RUN,), parse=_seconds,
                             default="15",
                             help="seconds a leader's Lease lasts without renewal")
ALIAS_STATUS_RATE = Flag(name="--alias-status-rate", commands=(RUN,), parse=_seconds,
                         default=f"{STATUS_RATE:g}",
                         help="Alias status writes per second at most (a token bucket whose "
                              f"burst is the same number; at most {STATUS_INFLIGHT} writes in "
                              "flight); only the leader writes")
FORCE = Switch(name="--force", commands=(COREDNS,),
               help="remove even while a running aliasd holds the Lease (it puts the block "
                    "back at once unless it is stopped)")
STOP_DEPLOYMENT = Flag(name="--stop-deployment", commands=(COREDNS,), parse=_ref,
                       help="coredns remove: first scale this NAMESPACE/NAME Deployment (aliasd's) "
                            "to zero and wait until no replica holds the Lease; nothing is "
                            "stopped when the removal cannot be planned, and the Deployment is "
                            "scaled back when it fails (the Helm chart's uninstall hook)")
SERVER = Flag(name="--server", commands=(LIST,), parse=_text,
              help="URL of a running aliasd's HTTP endpoint, e.g. http://127.0.0.1:8080")
TOKEN_FILE = Flag(name="--token-file", commands=(LIST,), parse=read_token,
                  help="file holding a bearer token for --server, when that aliasd fences "
                       "its reads (--read-access token): its --api-token-file token, or a "
                       "Kubernetes token allowed to list aliases.aliasd.io")
OUTPUT = Flag(name="--output", short="-o", commands=(LIST,), parse=_text, default="table",
              choices=("table", "wide", "json", "yaml"), help="output format")

FLAGS: tuple[AnyFlag, ...] = (
    LOG_LEVEL, LOG_FORMAT,
    ZONE, DNS_LISTEN, HTTP_LISTEN, METRICS_LISTEN, READ_ACCESS, ALIASES_FILE, NS_ADDRESS,
    ALLOW_TRANSFER,
    TCP_IDLE_TIMEOUT, TCP_MAX_CONNECTIONS, TCP_MAX_CONNECTIONS_PER_CLIENT, LAME_DUCK,
    HEALTH_MAX_CONCURRENT_PROBES,
    KUBERNETES, KUBECONFIG, NAMESPACES, STATE_FILE, API_TOKEN_FILE, API_TOKEN_AUDIENCES,
    OVERRIDES_CONFIGMAP,
    ALLOW_TAKEOVER, DEFAULT_ALLOWED_NAMES, POLICY_CONFIGMAP, NAME_HOLD,
    COREDNS_MODE, FORWARD_TO, DNS_SERVICE, COREDNS_CONFIGMAP,
    LEADER_ELECTION, LEADER_LEASE, LEADER_LEASE_DURATION, ALIAS_STATUS_RATE, FORCE,
    STOP_DEPLOYMENT,
    SERVER, TOKEN_FILE, OUTPUT,
)
GLOBAL = (LOG_LEVEL, LOG_FORMAT)
"""Flags given before the command (``aliasd --log-level debug run``)."""


def flags_of(command: str) -> tuple[AnyFlag, ...]:
    """The flags ``command`` takes after its name, in declaration order."""
    return tuple(f for f in FLAGS if command in f.commands and f not in GLOBAL)


def add_to(parser: argparse.ArgumentParser, flags: Sequence[AnyFlag]) -> None:
    """Declare ``flags`` on ``parser``. Values stay raw (None when not given):
    :func:`parse` applies the environment, the defaults and the parsers, so
    that a bad value fails as ``aliasd: error: --flag ...`` whichever way it
    came."""
    for flag in flags:
        shown = _help(flag).replace("%", "%%")
        if isinstance(flag, Switch):
            parser.add_argument(flag.name, action="store_true", help=shown)
        elif isinstance(flag, ListFlag):
            parser.add_argument(flag.name, dest=flag.dest, action="append", default=None,
                                help=shown)
        else:
            names = [flag.short, flag.name] if flag.short else [flag.name]
            parser.add_argument(*names, dest=flag.dest, default=None,
                                choices=flag.choices or None, help=shown)


def _help(flag: AnyFlag) -> str:
    if isinstance(flag, Switch):
        return flag.help
    if isinstance(flag, ListFlag):
        return f"{flag.help} (repeatable; env {flag.env}, comma-separated)"
    default = flag.default_text()
    if default is None:
        return f"{flag.help} (env {flag.env})"
    return f"{flag.help} (env {flag.env}; default: {default})"


def _split(values: Sequence[str]) -> list[str]:
    return [x.strip() for v in values for x in v.split(",") if x.strip()]


class Options:
    """The parsed value of every flag of one command. A flag the command does not
    take has its default, whatever the environment says."""

    def __init__(self, values: Mapping[str, object]) -> None:
        self._values = dict(values)

    @overload
    def get(self, flag: Flag[T]) -> T | None: ...
    @overload
    def get(self, flag: ListFlag[T]) -> T: ...
    @overload
    def get(self, flag: Switch) -> bool: ...

    def get(self, flag: AnyFlag) -> object:
        if flag.name in self._values:
            return self._values[flag.name]
        return _value(flag, None, {})  # not this command's: parsed on demand, from the default

    def value(self, flag: Flag[T]) -> T:
        """The value of a flag that has a default."""
        value = self.get(flag)
        if value is None:
            raise LookupError(f"{flag.name} has no default")
        return value


def parse(command: str, given: argparse.Namespace,
          environ: Mapping[str, str] | None = None) -> Options:
    """The value of every flag of ``command``: from the command line, else its
    environment variable, else its default, parsed in declaration order.
    ``ConfigError`` names the flag (or the variable) that is wrong."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for flag in FLAGS:
        if command in flag.commands:
            try:
                values[flag.name] = _value(flag, getattr(given, flag.dest, None), env)
            except ValueError as e:
                raise ConfigError(str(e)) from None
    return Options(values)


def _value(flag: AnyFlag, raw: Any, env: Mapping[str, str]) -> object:
    if isinstance(flag, Switch):
        return bool(raw)
    from_env = env.get(flag.env)
    if isinstance(flag, ListFlag):
        if raw is not None:
            items = _split(raw)
        elif from_env is not None:
            items = _split([from_env])
        else:
            items = list(flag.default)
        return flag.parse(items, flag.name)
    text: str | None = raw
    if text is None and from_env is not None:
        if flag.choices and from_env not in flag.choices:
            raise ConfigError(f"{flag.env} {from_env!r}: expected one of "
                              f"{', '.join(flag.choices)}")
        text = from_env
    if text is None:
        text = flag.default_text()
    return None if text is None else flag.parse(text, flag.name)
