"""The one task supervisor: every long-running part runs under :func:`supervise`.

Like ``asyncio.TaskGroup`` (the first task to fail stops the others, and
nothing outlives the call), with two differences the callers need: a task may
return early without stopping the rest (a part with nothing to do, such as the
CoreDNS wiring when it is off), and the failure is re-raised as it is, not
wrapped in an ``ExceptionGroup``, so the CLI still turns a ``ConfigError``
into its one-line message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Mapping
from typing import Any


async def supervise(tasks: Mapping[str, Coroutine[Any, Any, object]], *,
                    until: Awaitable[object] | None = None) -> None:
    """Run each of ``tasks`` (by name) until ``until`` completes, or, without
    it, until every task has returned. The first task to raise (or ``until``,
    if it raises) stops the others and its exception is re-raised. On the way
    out every task still running is cancelled and awaited."""
    running = [asyncio.ensure_future(coro) for coro in tasks.values()]
    for name, task in zip(tasks, running, strict=True):
        if isinstance(task, asyncio.Task):
            task.set_name(name)
    waiter = asyncio.ensure_future(until) if until is not None else None
    try:
        pending: set[asyncio.Future[Any]] = set(running)
        if waiter is not None:
            pending.add(waiter)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                if not finished.cancelled() and finished.exception() is not None:
                    raise finished.exception()  # type: ignore[misc]
            if waiter is not None and waiter.done():
                if waiter.cancelled():
                    raise asyncio.CancelledError
                return
    finally:
        everything = [*running, *([waiter] if waiter is not None else [])]
        for task in everything:
            task.cancel()
        # Their outcomes are retrieved here: a second failure while stopping
        # does not hide the first.
        await asyncio.gather(*everything, return_exceptions=True)
