"""The paced UDP probe the benchmarks share: latency at a fixed rate (equal
load for every server), not at saturation."""

from __future__ import annotations

import asyncio
import time


async def paced_rtts(port: int, wires: list[bytes], rate: int, seconds: float) -> list[float]:
    """Send ``wires`` round-robin to 127.0.0.1:``port`` at ``rate`` q/s for
    ``seconds`` (each with its own ID); every RTT in ms, sorted, a query with no
    answer within a second of the last send as ``inf``."""
    loop = asyncio.get_running_loop()
    sent: dict[int, float] = {}
    rtts: list[float] = []

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            t = sent.pop(int.from_bytes(data[:2], "big"), None)
            if t is not None:
                rtts.append((time.perf_counter() - t) * 1000)

    transport, _ = await loop.create_datagram_endpoint(P, remote_addr=("127.0.0.1", port))
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        qid = i % 65536
        sent[qid] = time.perf_counter()
        transport.sendto(qid.to_bytes(2, "big") + wires[i % len(wires)][2:])
        delay = start + (i + 1) / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.sleep(1)
    transport.close()
    # IDs wrap at 65536: an answer overwritten before it came is lost, not late.
    return sorted(rtts) + [float("inf")] * (total - len(rtts))
