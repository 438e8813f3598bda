"""The ``aliasd`` command line: it parses the flags (declared in
:mod:`aliasd.flags`), builds the typed configs, calls the package that owns
the work and prints the result, or one line ``aliasd: error: ...``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from aliasd import flags
from aliasd.coredns.wiring import ACTIONS, Action
from aliasd.model import AliasdError, ConfigError

if TYPE_CHECKING:  # the commands import their modules lazily: `aliasd --help` stays fast

    from kubernetes_asyncio.client import ApiClient

    from aliasd.coredns.patcher import PatcherConfig
    from aliasd.zoneconfig import ZoneConfig

log = logging.getLogger("aliasd")


def build_parser() -> argparse.ArgumentParser:
    """The parser of :data:`aliasd.flags.FLAGS`: values stay raw, :func:`flags.parse`
    applies the environment, the defaults and the flags' parsers."""
    parser = argparse.ArgumentParser(
        prog="aliasd",
        description="Stable DNS names for Kubernetes services: aliasd serves an alias zone "
                    "authoritatively and wires CoreDNS to forward it.",
    )
    flags.add_to(parser, flags.GLOBAL)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="serve the alias zones (DNS + HTTP)",
                         description="Serve the alias zones over DNS (UDP and TCP) and HTTP.")
    flags.add_to(run, flags.flags_of(flags.RUN))

    cdns = sub.add_parser(
        "coredns", help="show, apply or undo aliasd's cluster DNS wiring",
        description="Show (diff), apply or remove aliasd's blocks in the CoreDNS Corefile "
                    "(or its keys in coredns-custom, or its kube-dns stubDomains entries). "
                    "remove restores the Corefile byte for byte to what it would be "
                    "without aliasd, and deletes only aliasd's coredns-custom keys.")
    cdns.add_argument("action", choices=list(ACTIONS),
                      help="diff: print the pending change; exit 0 if there is none, 1 if "
                           "there is one, 2 on error (like diff(1))")
    flags.add_to(cdns, flags.flags_of(flags.COREDNS))

    ls = sub.add_parser(
        "list", help="the current aliases: of a running aliasd, or computed from the cluster",
        description="List aliases (name, targets, owner, ttl, conflicts). With --server, "
                    "ask a running aliasd (its /v1/aliases); otherwise compute them from "
                    "the cluster the kubeconfig points at, exactly as aliasd would.")
    flags.add_to(ls, flags.flags_of(flags.LIST))
    return parser


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


def _zone_config(opts: flags.Options) -> ZoneConfig:
    from aliasd.zoneconfig import ZoneConfig

    names = opts.get(flags.DEFAULT_ALLOWED_NAMES)
    policy = opts.get(flags.POLICY_CONFIGMAP)
    if policy is not None:
        names = dataclasses.replace(names, source=f"ConfigMap {policy[0]}/{policy[1]}")
    try:
        return ZoneConfig.from_names(
            opts.get(flags.ZONE), ns_addresses=opts.get(flags.NS_ADDRESS),
            takeover=opts.get(flags.ALLOW_TAKEOVER), names=names,
            name_hold=opts.value(flags.NAME_HOLD))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _patcher_config(opts: flags.Options, zones: ZoneConfig) -> PatcherConfig:
    from aliasd.coredns.patcher import PatcherConfig

    return PatcherConfig(
        zones=zones.zones, mode=opts.value(flags.COREDNS_MODE),
        forward_to=opts.get(flags.FORWARD_TO), dns_service=opts.value(flags.DNS_SERVICE),
        coredns_configmap=opts.value(flags.COREDNS_CONFIGMAP))


async def _serve(opts: flags.Options) -> int:
    from aliasd import root
    from aliasd.app import AppConfig
    from aliasd.dns.server import ServerConfig

    zones = _zone_config(opts)
    dns_host, dns_port = opts.value(flags.DNS_LISTEN)
    http_host, http_port = opts.value(flags.HTTP_LISTEN)
    app_config = AppConfig(
        zones=zones,
        dns=ServerConfig(host=dns_host, port=dns_port,
                         allow_transfer=opts.get(flags.ALLOW_TRANSFER),
                         tcp_idle_timeout=opts.value(flags.TCP_IDLE_TIMEOUT),
                         tcp_max_connections=opts.value(flags.TCP_MAX_CONNECTIONS),
                         tcp_max_connections_per_client=opts.value(
                             flags.TCP_MAX_CONNECTIONS_PER_CLIENT)),
        http_host=http_host, http_port=http_port,
        aliases_file=opts.get(flags.ALIASES_FILE),
        state_file=opts.get(flags.STATE_FILE),
        api_token=opts.get(flags.API_TOKEN_FILE),
        lame_duck=opts.value(flags.LAME_DUCK),
        probe_limit=opts.value(flags.HEALTH_MAX_CONCURRENT_PROBES),
        metrics_listen=opts.get(flags.METRICS_LISTEN),
        reads_need_token=opts.value(flags.READ_ACCESS) == "token",
    )
    kubernetes = opts.value(flags.KUBERNETES)
    kubeconfig = opts.get(flags.KUBECONFIG)
    use_kube = kubernetes == "on" or (kubernetes == "auto" and (
        kubeconfig or os.environ.get("KUBECONFIG")
        or os.environ.get("KUBERNETES_SERVICE_HOST")))
    kube = None
    if use_kube:
        patcher = _patcher_config(opts, zones)
        kube = root.KubeConfig(
            kubeconfig=kubeconfig, namespaces=tuple(opts.get(flags.NAMESPACES)),
            overrides_configmap=opts.value(flags.OVERRIDES_CONFIGMAP),
            policy_configmap=opts.get(flags.POLICY_CONFIGMAP),
            audiences=tuple(opts.get(flags.API_TOKEN_AUDIENCES)),
            patcher=None if patcher.mode == "off" else patcher,
            leader_lease=(opts.value(flags.LEADER_LEASE)
                          if opts.value(flags.LEADER_ELECTION) == "on" else None),
            lease_duration=opts.value(flags.LEADER_LEASE_DURATION),
            status_rate=opts.value(flags.ALIAS_STATUS_RATE))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await root.serve(root.RunConfig(app=app_config, kube=kube), stop)
    log.info("stopped")
    return 0


async def _coredns(opts: flags.Options, action: Action) -> int:
    from aliasd.coredns.wiring import wire
    from aliasd.kubeapi import make_client

    config = _patcher_config(opts, _zone_config(opts))
    if config.mode == "off":
        raise ConfigError("--coredns-mode off: nothing to do")
    stop = opts.get(flags.STOP_DEPLOYMENT)
    if stop is not None and action != "remove":
        raise ConfigError(f"{flags.STOP_DEPLOYMENT.name} goes with remove only")
    api = await make_client(opts.get(flags.KUBECONFIG))
    try:
        if stop is not None:
            from aliasd.coredns.uninstall import Stop, stop_and_remove

            changes = stop_and_remove(
                api, config, stop=Stop(stop[0], stop[1], lease=opts.value(flags.LEADER_LEASE)),
                say=lambda text: print(f"aliasd: {text}", file=sys.stderr))
        else:
            if action == "remove" and not opts.get(flags.FORCE):
                await _refuse_while_running(api, opts)
            changes = wire(api, config, action=action)
        pending = False
        async for change in changes:
            ref = change.target.ref
            sys.stdout.write(change.diff())
            for why in change.conflicts.values():
                print(f"aliasd: warning: {ref}: {why}", file=sys.stderr)
            pending |= change.changed
            if action != "diff":
                verb = "removed aliasd's part" if action == "remove" else "patched"
                print(f"{ref}: {verb if change.changed else 'unchanged'}", file=sys.stderr)
        return 1 if pending and action == "diff" else 0
    finally:
        await api.close()


async def _refuse_while_running(api: ApiClient, opts: flags.Options) -> None:
    """A running aliasd would put its blocks back within a second of ``remove``:
    say how to stop it instead of reporting a success that lasts 0.4 s."""
    from aliasd.coredns.lease import LeaseError, read_lease, settled_holder

    namespace, name = opts.value(flags.LEADER_LEASE)
    ref = f"{namespace}/{name}"

    def waiting(left: float) -> None:
        print(f"aliasd: Lease {ref} was just released; waiting up to {left:.0f} s for "
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
            f"aliasd is running (Lease {ref} held by {holder}) and would put its blocks back; "
            f"stop it first: kubectl -n {namespace} scale deployment aliasd --replicas=0 "
            f"(or pass {flags.FORCE.name})")


async def _list_aliases(opts: flags.Options) -> int:
    from aliasd import listing

    server = opts.get(flags.SERVER)
    if opts.get(flags.TOKEN_FILE) is not None and not server:
        raise ConfigError(f"{flags.TOKEN_FILE.name} is the token for {flags.SERVER.name}; "
                          "without it aliasd list reads the cluster with the kubeconfig")
    if server:
        doc = await listing.from_server(server, opts.get(flags.TOKEN_FILE))
    else:
        from aliasd.root import list_from_cluster

        doc = await list_from_cluster(
            opts.get(flags.KUBECONFIG), zones=_zone_config(opts),
            namespaces=opts.get(flags.NAMESPACES),
            overrides=opts.value(flags.OVERRIDES_CONFIGMAP),
            policy=opts.get(flags.POLICY_CONFIGMAP))
    sys.stdout.write(listing.render(doc, opts.value(flags.OUTPUT)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        opts = flags.parse(args.command, args)
        configure_logging(opts.value(flags.LOG_LEVEL), opts.value(flags.LOG_FORMAT))
        if args.command == flags.RUN:
            return run_async(_serve(opts))
        if args.command == flags.COREDNS:
            return run_async(_coredns(opts, args.action))
        if args.command == flags.LIST:
            return run_async(_list_aliases(opts))
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
