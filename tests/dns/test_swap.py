"""DnsServer.swap(snapshot, changed) on a listening server, asked over UDP by
dnspython: answers for unchanged names stay cached across the swap, changed
ones are answered anew, and nothing in between is ever served."""

from __future__ import annotations

import dns.asyncquery
import dns.message

from aliasd import resolver, zoneconfig
from aliasd.dns.server import DnsServer, ServerConfig
from aliasd.model import AliasClaim, Owner
from aliasd.zone import Snapshot

CFG = zoneconfig.ZoneConfig.from_names(["internal"], ns_addresses=["127.0.0.1"])


def snapshot(api: str, *, serial: int) -> Snapshot:
    claims = [AliasClaim("api.internal", Owner(1, "a", "api"), addresses=(api,)),
              AliasClaim("db.internal", Owner(1, "a", "db"), addresses=("10.0.0.2",)),
              AliasClaim("www.internal", Owner(1, "a", "www"), cname="api.internal")]
    return resolver.build(claims, config=CFG, serial=serial).snapshot


async def ask(server: DnsServer, name: str) -> list[str]:
    host, port = server.address
    r = await dns.asyncquery.udp(dns.message.make_query(name, "A"), host, port=port,
                                 timeout=3)
    return [rd.to_text() for rs in r.answer for rd in rs]


async def test_swap_keeps_answers_of_unchanged_names() -> None:
    server = DnsServer(snapshot("10.0.0.1", serial=1), ServerConfig(host="127.0.0.1", port=0))
    await server.start()
    try:
        for name in ("api.internal.", "db.internal.", "www.internal."):
            await ask(server, name)
        assert server.answerer.cache_size == 3
        server.swap(snapshot("10.0.0.9", serial=2), frozenset({"api.internal."}))
        assert server.answerer.cache_size == 1  # db: www read api.internal
        slow = server.stats.slow
        assert await ask(server, "db.internal.") == ["10.0.0.2"]
        assert server.stats.slow == slow  # from the cache kept across the swap
        assert await ask(server, "api.internal.") == ["10.0.0.9"]
        assert await ask(server, "www.internal.") == ["api.internal.", "10.0.0.9"]
        assert server.stats.slow == slow + 2
        server.swap(snapshot("10.0.0.9", serial=3))  # changed unknown: keep nothing
        assert server.answerer.cache_size == 0
        assert await ask(server, "db.internal.") == ["10.0.0.2"]
    finally:
        await server.stop()
