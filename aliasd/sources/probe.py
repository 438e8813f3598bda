"""One health probe: a TCP connect, or an HTTP/1.1 GET whose status line is
all that is read, on a raw non-blocking socket. :class:`Probe` is what the
prober drives; :func:`probe` is one probe, awaited."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
from collections.abc import Callable

from aliasd.model import HTTP, Check

log = logging.getLogger(__name__)

MAX_STATUS_LINE = 4096
_LINGER_0 = struct.pack("ii", 1, 0)
_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN)
_CONNECTING, _ANSWERING = 1, 2


class Probe:
    """One probe in flight on a raw non-blocking socket: no transport,
    protocol, task or future per probe, and no address lookup (the host is an
    IP address). ``on_done`` gets None when the probe passed, else why it
    failed, exactly once unless :meth:`cancel` comes first.

    Until :meth:`wait`, the probe only goes as far as it can without waiting
    (the kernel often completes a handshake within ``connect()`` itself: a
    loopback or same-host peer answers in the same softirq); from then on the
    loop wakes it when its socket is ready, and at its timeout.

    The socket closes with a reset (SO_LINGER 0), as HAProxy ends its checks:
    a probe that closed normally would leave a TIME_WAIT socket behind each
    time, some 12,000 of them at 1,000 targets every 5 s."""

    __slots__ = ("_buf", "_check", "_deadline", "_fd", "_loop", "_on_done", "_phase", "_sock",
                 "_timer", "_waking", "_watched")

    def __init__(self, check: Check, on_done: Callable[[str | None], None], *,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._check = check
        self._loop = loop
        self._on_done: Callable[[str | None], None] | None = on_done
        self._sock: socket.socket | None = None
        self._fd = -1
        self._buf = b""
        self._phase = _CONNECTING
        self._waking = False  # wait() was called
        self._watched = 0  # the phase whose readiness the loop watches (0: none)
        self._deadline = loop.time() + check.timeout
        self._timer: asyncio.TimerHandle | None = None
        self._guard(self._connect)

    def wait(self) -> None:
        """From now on, let the loop wake this probe: when its socket is ready
        (after one more try without waiting), and at its timeout."""
        if self._sock is None or self._waking:
            return  # over, or waiting already
        self._waking = True
        if self._loop.time() >= self._deadline:
            self._timed_out()
            return
        self._timer = self._loop.call_at(self._deadline, self._timed_out)
        self._guard(self._advance)

    def cancel(self) -> None:
        """Stop without an answer: ``on_done`` is not called."""
        self._on_done = None
        self._close()

    def _connect(self) -> None:
        family = socket.AF_INET6 if ":" in self._check.host else socket.AF_INET
        sock = self._sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        self._fd = sock.fileno()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
        err = sock.connect_ex((self._check.host, self._check.port))
        if err not in (0, *_IN_PROGRESS):
            self._finish(os.strerror(err))
            return
        self._advance()

    def _advance(self) -> None:
        """As far as the socket goes now; where it must wait, watch it if waking."""
        sock = self._sock
        if sock is None:
            return
        if self._phase == _CONNECTING:
            try:
                sock.getpeername()
            except OSError:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._finish(os.strerror(err))
                else:
                    self._watch()
                return
            if self._check.kind != HTTP:
                self._finish(None)
                return
            try:  # a fresh socket's send buffer takes a request line and a few headers
                sock.send(self._request())
            except OSError as e:
                self._finish(_why(e))
                return
            self._phase = _ANSWERING
            self._watch()  # the answer has not come yet: no read before it is due
            return
        try:
            data = sock.recv(MAX_STATUS_LINE + 1)
        except (BlockingIOError, InterruptedError):
            self._watch()
            return
        except OSError as e:
            self._finish(_why(e))
            return
        if not data:
            self._finish("closed before a status line")
            return
        self._buf += data
        if b"\n" in self._buf or len(self._buf) > MAX_STATUS_LINE:
            self._finish(_status_error(self._check, self._buf.split(b"\n", 1)[0]))
        else:
            self._watch()

    def _request(self) -> bytes:
        check = self._check
        host = f"[{check.host}]" if ":" in check.host else check.host
        return (f"GET {check.path} HTTP/1.1\r\nHost: {host}:{check.port}\r\n"
                f"User-Agent: aliasd-health\r\nConnection: close\r\n\r\n").encode()

    def _watch(self) -> None:
        if not self._waking or self._watched == self._phase:
            return
        self._unwatch()
        if self._phase == _CONNECTING:
            self._loop.add_writer(self._fd, self._guard, self._advance)
        else:
            self._loop.add_reader(self._fd, self._guard, self._advance)
        self._watched = self._phase

    def _unwatch(self) -> None:
        if self._watched == _CONNECTING:
            self._loop.remove_writer(self._fd)
        elif self._watched == _ANSWERING:
            self._loop.remove_reader(self._fd)
        self._watched = 0

    def _timed_out(self) -> None:
        self._finish(f"no answer within {self._check.timeout:g} s")

    def _guard(self, step: Callable[[], None]) -> None:
        try:
            step()
        except OSError as e:  # no socket to be had (EMFILE), an unusable address
            self._finish(_why(e))
        except Exception as e:  # a probe bug must not leave the check unprobed
            log.exception("probe of %s failed", self._check.target)
            self._finish(f"probe error: {type(e).__name__}")

    def _finish(self, error: str | None) -> None:
        self._close()
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(error)

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is None:
            return
        self._unwatch()
        self._sock.close()
        self._sock = None


def _why(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else str(e) or type(e).__name__


def _status_error(check: Check, line: bytes) -> str | None:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return "the answer is not HTTP"
    status = int(parts[1])
    if any(lo <= status <= hi for lo, hi in check.expect):
        return None
    return f"HTTP {status}"


def start_probe(check: Check, on_done: Callable[[str | None], None]) -> Probe:
    """Probe ``check`` once, from the running loop; ``on_done`` as :class:`Probe`'s."""
    return Probe(check, on_done, loop=asyncio.get_running_loop())


async def probe(check: Check) -> str | None:
    """Probe ``check`` once: None when it passes, else why it failed."""
    done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    def answer(error: str | None) -> None:
        if not done.done():
            done.set_result(error)

    running = start_probe(check, answer)
    running.wait()
    try:
        return await done
    finally:
        running.cancel()
