"""The ``aliasd`` command line. Every flag can also come from ``ALIASD_<FLAG>``
(upper case, dashes as underscores; repeatable flags take a comma list)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aliasd.coredns.wiring import ACTIONS, Action
from aliasd.model import AliasdError, ConfigError

if TYPE_CHECKING:  # the commands import their modules lazily: `aliasd --help` stays fast

    from kubernetes_asyncio.client import ApiClient

    from aliasd.coredns.patcher import PatcherConfig

log = logging.getLogger("aliasd")

def _add(p: argparse.ArgumentParser, flag: str, *, default: Any = None, repeat: bool = False,
         help: str, short: str | None = None, **kw: Any) -> None:
    dest = flag.lstrip("-").replace("-", "_")
    env_name = "ALIASD_" + dest.upper()
    env = os.environ.get(env_name)
    if repeat:
        value = [v.strip() for v in env.split(",") if v.strip()] if env is not None else None
        p.add_argument(flag, action="append", default=None, help=f"{help} (repeatable; "
                       f"env {env_name}, comma-separated)", **kw)
        p.set_defaults(**{dest + "_env": value, dest + "_default": default})
        return
    names = [short, flag] if short else [flag]
    p.add_argument(*names, default=env if env is not None else default,
                   help=f"{help} (env {env_name}; default: %(default)s)", **kw)


def _list(ns: argparse.Namespace, name: str) -> list[str]:
    given = getattr(ns, name)
    if given is not None:
        out: list[str] = []
        for v in given:
            out += [x.strip() for x in v.split(",") if x.strip()]
        return out
    env = getattr(ns, name + "_env")
    if env is not None:
        return list(env)
    return list(getattr(ns, name + "_default") or [])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aliasd",
        description="Stable DNS names for Kubernetes services: aliasd serves an alias zone "
                    "authoritatively and wires CoreDNS to forward it.",
    )
    _add(parser, "--log-level", default="info", choices=["debug", "info", "warning", "error"],
         help="log level")
    _add(parser, "--log-format", default="text", choices=["text", "json"], help="log format")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="serve the alias zones (DNS + HTTP)",
                         description="Serve the alias zones over DNS (UDP and TCP) and HTTP.")
    _add(run, "--zone", repeat=True, default=["internal"],
         help="zone to serve authoritatively; the first is the default for bare labels")
    _add(run, "--dns-listen", default="0.0.0.0:5353", help="DNS address (UDP and TCP)")
    _add(run, "--http-listen", default="0.0.0.0:8080",
         help="HTTP address for /healthz, /readyz, /metrics, /v1/aliases")
    _add(run, "--aliases-file", help="YAML file of static aliases, reloaded on change")
    _add(run, "--ns-address", repeat=True, help="IP of this server, for the zone's NS glue")
    _add(run, "--allow-transfer", repeat=True, help="CIDR allowed to AXFR the zones")
    _add(run, "--tcp-idle-timeout", default="10", help="seconds before an idle TCP "
         "connection is closed (RFC 7766)")
    _add(run, "--tcp-max-connections", default="256", help="concurrent TCP connections")
    _add(run, "--lame-duck", default="0", help="seconds to keep answering DNS after SIGTERM "
         "with /readyz failing, so that Services stop sending queries first (in a pod: a "
         "few seconds, less than terminationGracePeriodSeconds)")
    _add(run, "--kubernetes", default="auto", choices=["auto", "on", "off"],
         help="watch Kubernetes; auto = on when --kubeconfig/KUBECONFIG is set or in a pod")
    _add(run, "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, in-cluster "
         "config, ~/.kube/config)")
    _add(run, "--namespaces", repeat=True,
         help="namespaces to watch for Services (default: all)")
    _add(run, "--state-file", help="file for the last good snapshot (and, without "
         "Kubernetes, the HTTP overrides): served at start until the sources sync")
    _add(run, "--api-token-file", help="file holding a bearer token for the write API "
         "(PUT/DELETE /v1/overrides) that may write every name; in a cluster Kubernetes "
         "tokens are accepted too (RBAC decides); without either the write API is off")
    _add(run, "--overrides-configmap", default=f"{_pod_namespace()}/aliasd-overrides",
         help="NAMESPACE/NAME of the ConfigMap holding the HTTP overrides")
    _add(run, "--allow-takeover", repeat=True,
         help="allow aliasd.io/takeover of names under this suffix (example.com) or from "
              "this namespace (namespace=NAME); both kinds given: both must match")
    _add(run, "--default-allowed-names", repeat=True,
         help="names a namespace without the aliasd.io/allowed-names annotation may claim: "
              "exact names and *.suffix patterns, {namespace} replaced by the namespace "
              "(e.g. '*.{namespace}.internal'); default: any name in the served zones")
    _coredns_flags(run)
    _add(run, "--leader-election", default="on", choices=["on", "off"],
         help="with several replicas, only the holder of a Lease patches the cluster DNS")
    _add(run, "--leader-lease", default=f"{_pod_namespace()}/aliasd",
         help="NAMESPACE/NAME of the leader-election Lease")
    _add(run, "--leader-lease-duration", default="15",
         help="seconds a leader's Lease lasts without renewal")

    cdns = sub.add_parser(
        "coredns", help="show, apply or undo aliasd's cluster DNS wiring",
        description="Show (diff), apply or remove aliasd's blocks in the CoreDNS Corefile "
                    "(or its keys in coredns-custom, or its kube-dns stubDomains entries). "
                    "remove restores the Corefile byte for byte to what it would be "
                    "without aliasd, and deletes only aliasd's coredns-custom keys.")
    cdns.add_argument("action", choices=list(ACTIONS),
                      help="diff: print the pending change; exit 0 if there is none, 1 if "
                           "there is one, 2 on error (like diff(1))")
    cdns.add_argument("--force", action="store_true",
                      help="remove even while a running aliasd holds the Lease (it puts "
                           "the block back at once unless it is stopped)")
    _add(cdns, "--leader-lease", default=f"{_pod_namespace()}/aliasd",
         help="NAMESPACE/NAME of the running aliasd's leader-election Lease")
    _add(cdns, "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, in-cluster "
         "config, ~/.kube/config)")
    _add(cdns, "--zone", repeat=True, default=["internal"], help="zones aliasd serves")
    _coredns_flags(cdns)

    ls = sub.add_parser(
        "list", help="the current aliases: of a running aliasd, or computed from the cluster",
        description="List aliases (name, targets, owner, ttl, conflicts). With --server, "
                    "ask a running aliasd (its /v1/aliases); otherwise compute them from "
                    "the cluster the kubeconfig points at, exactly as aliasd would.")
    _add(ls, "--server", help="URL of a running aliasd's HTTP endpoint, e.g. "
         "http://127.0.0.1:8080")
    _add(ls, "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, in-cluster "
         "config, ~/.kube/config)")
    _add(ls, "--zone", repeat=True, default=["internal"], help="zones aliasd serves")
    _add(ls, "--namespaces", repeat=True, help="namespaces to read (default: all)")
    _add(ls, "--overrides-configmap", default=f"{_pod_namespace()}/aliasd-overrides",
         help="NAMESPACE/NAME of the ConfigMap holding the HTTP overrides")
    _add(ls, "--allow-takeover", repeat=True, help="as for aliasd run")
    _add(ls, "--default-allowed-names", repeat=True, help="as for aliasd run")
    _add(ls, "--output", default="table", choices=["table", "wide", "json", "yaml"],
         help="output format", short="-o")

    return parser


def _pod_namespace() -> str:
    return os.environ.get("POD_NAMESPACE") or "aliasd-system"


def _coredns_flags(p: argparse.ArgumentParser) -> None:
    from aliasd.coredns.patcher import MODES

    _add(p, "--coredns-mode", default="auto", choices=list(MODES),
         help="which cluster DNS config to wire: auto detects kube-system/coredns (or, when "
              "its Corefile imports custom/*.server as on AKS and k3s, coredns-custom), "
              "kube-dns and node-local-dns")
    _add(p, "--forward-to", help="IP:PORT the cluster DNS forwards the zones to (default: "
         "the cluster IP of --dns-service)")
    _add(p, "--dns-service", default=f"{_pod_namespace()}/aliasd",
         help="NAMESPACE/NAME of aliasd's Service, whose cluster IP CoreDNS forwards to")
    _add(p, "--coredns-configmap", default="kube-system/coredns",
         help="NAMESPACE/NAME of the CoreDNS ConfigMap")


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        class _Json(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                doc = {"time": self.formatTime(record), "level": record.levelname.lower(),
                       "logger": record.name, "msg": record.getMessage()}
                if record.exc_info:
                    doc["exc"] = self.formatException(record.exc_info)
                return json.dumps(doc)
        handler.setFormatter(_Json())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kubernetes_asyncio and aiohttp are chatty at INFO/DEBUG.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: int = uvloop.run(coro)
    return result


def _number(text: str, flag: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{flag} {text!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{flag} must be positive, got {text}")
    return value


async def _serve(args: argparse.Namespace) -> int:
    from aliasd import root
    from aliasd.app import AppConfig
    from aliasd.dns.server import ServerConfig, parse_listen, parse_networks
    from aliasd.kubeapi import split_ref
    from aliasd.policy import NamePolicy
    from aliasd.registry import TakeoverPolicy, ZoneConfig

    try:
        zones = ZoneConfig.from_names(
            _list(args, "zone"), ns_addresses=_list(args, "ns_address"),
            takeover=TakeoverPolicy.parse(_list(args, "allow_takeover")),
            names=NamePolicy.parse(_list(args, "default_allowed_names")))
        dns_host, dns_port = parse_listen(args.dns_listen, flag="--dns-listen")
        http_host, http_port = parse_listen(args.http_listen, flag="--http-listen")
        transfer = parse_networks(_list(args, "allow_transfer"), flag="--allow-transfer")
        idle = _number(args.tcp_idle_timeout, "--tcp-idle-timeout", float)
        max_conns = int(_number(args.tcp_max_connections, "--tcp-max-connections", int))
        patcher_config = _patcher_config(args, zones.zones)  # bad wiring flags fail early
        lease_duration = _number(args.leader_lease_duration, "--leader-lease-duration", float)
        lame_duck = 0.0 if args.lame_duck in ("0", "0.0") else _number(
            args.lame_duck, "--lame-duck", float)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    app_config = AppConfig(
        zones=zones,
        dns=ServerConfig(host=dns_host, port=dns_port, allow_transfer=transfer,
                         tcp_idle_timeout=idle, tcp_max_connections=max_conns),
        http_host=http_host, http_port=http_port,
        aliases_file=Path(args.aliases_file) if args.aliases_file else None,
        state_file=Path(args.state_file) if args.state_file else None,
        api_token=_read_token(args.api_token_file) if args.api_token_file else None,
        lame_duck=lame_duck,
    )
    use_kube = args.kubernetes == "on" or (args.kubernetes == "auto" and (
        args.kubeconfig or os.environ.get("KUBECONFIG")
        or os.environ.get("KUBERNETES_SERVICE_HOST")))
    kube = None
    if use_kube:
        kube = root.KubeConfig(
            kubeconfig=args.kubeconfig, namespaces=tuple(_list(args, "namespaces")),
            overrides_configmap=split_ref(args.overrides_configmap,
                                          flag="--overrides-configmap"),
            patcher=None if args.coredns_mode == "off" else patcher_config,
            leader_lease=(split_ref(args.leader_lease, flag="--leader-lease")
                          if args.leader_election == "on" else None),
            lease_duration=lease_duration)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await root.serve(root.RunConfig(app=app_config, kube=kube), stop)
    log.info("stopped")
    return 0


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as e:
        raise ConfigError(f"--api-token-file {path}: {e.strerror or e}") from None
    if not token:
        raise ConfigError(f"--api-token-file {path} is empty")
    if any(c.isspace() for c in token):
        raise ConfigError(f"--api-token-file {path}: the token contains whitespace")
    return token


def _patcher_config(args: argparse.Namespace, zones: Sequence[str]) -> PatcherConfig:
    from aliasd.coredns.patcher import PatcherConfig, parse_forward
    from aliasd.kubeapi import split_ref

    split_ref(args.dns_service, flag="--dns-service")
    return PatcherConfig(
        zones=tuple(zones), mode=args.coredns_mode,
        forward_to=parse_forward(args.forward_to) if args.forward_to else None,
        dns_service=args.dns_service, coredns_configmap=args.coredns_configmap)


async def _coredns(args: argparse.Namespace) -> int:
    from aliasd.coredns.wiring import wire
    from aliasd.kubeapi import make_client
    from aliasd.registry import ZoneConfig

    try:
        zones = ZoneConfig.from_names(_list(args, "zone")).zones
    except ValueError as e:
        raise ConfigError(str(e)) from None
    config = _patcher_config(args, zones)
    if config.mode == "off":
        raise ConfigError("--coredns-mode off: nothing to do")
    action: Action = args.action
    api = await make_client(args.kubeconfig)
    try:
        if action == "remove" and not args.force:
            await _refuse_while_running(api, args.leader_lease)
        pending = False
        async for change in wire(api, config, action=action):
            ref = change.target.ref
            sys.stdout.write(change.diff())
            for zone in change.conflicts:
                print(f"aliasd: warning: {ref} already has a server block for zone {zone} "
                      "that aliasd does not own; left alone", file=sys.stderr)
            pending |= change.changed
            if action != "diff":
                verb = "removed aliasd's part" if action == "remove" else "patched"
                print(f"{ref}: {verb if change.changed else 'unchanged'}", file=sys.stderr)
        return 1 if pending and action == "diff" else 0
    finally:
        await api.close()


async def _refuse_while_running(api: ApiClient, lease_ref: str) -> None:
    """A running aliasd would put its blocks back within a second of ``remove``:
    say how to stop it instead of reporting a success that lasts 0.4 s."""
    from aliasd.coredns.lease import LeaseError, read_lease, settled_holder
    from aliasd.kubeapi import split_ref

    namespace, name = split_ref(lease_ref, flag="--leader-lease")

    def waiting(left: float) -> None:
        print(f"aliasd: Lease {lease_ref} was just released; waiting up to {left:.0f} s for "
              "another aliasd replica to take it", file=sys.stderr)

    try:
        holder = await settled_holder(
            functools.partial(read_lease, api, namespace=namespace, name=name),
            on_wait=waiting)
    except LeaseError as e:
        print(f"aliasd: warning: cannot tell whether aliasd is running ({e})", file=sys.stderr)
        return
    if holder is not None:
        raise ConfigError(
            f"aliasd is running (Lease {lease_ref} held by {holder}) and would put its blocks "
            f"back; stop it first: kubectl -n {namespace} scale deployment aliasd "
            "--replicas=0 (or pass --force)")


async def _list_aliases(args: argparse.Namespace) -> int:
    from aliasd import listing

    if args.server:
        doc = await listing.from_server(args.server)
    else:
        from aliasd.policy import NamePolicy
        from aliasd.registry import TakeoverPolicy, ZoneConfig

        try:
            zones = ZoneConfig.from_names(
                _list(args, "zone"), takeover=TakeoverPolicy.parse(_list(args, "allow_takeover")),
                names=NamePolicy.parse(_list(args, "default_allowed_names")))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        from aliasd.kubeapi import split_ref
        from aliasd.root import list_from_cluster

        doc = await list_from_cluster(
            args.kubeconfig, zones=zones, namespaces=_list(args, "namespaces"),
            overrides=split_ref(args.overrides_configmap, flag="--overrides-configmap"))
    sys.stdout.write(listing.render(doc, args.output))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        if args.command == "run":
            return run_async(_serve(args))
        if args.command == "coredns":
            return run_async(_coredns(args))
        if args.command == "list":
            return run_async(_list_aliases(args))
    except AliasdError as e:
        print(f"aliasd: error: {e}", file=sys.stderr)
        # `coredns diff` exits 1 for "a change is pending": errors must differ.
        return 2 if args.command == "coredns" else 1
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
