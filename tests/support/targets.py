"""Health-checked targets for tests: a real HTTP server on a loopback
address (127.0.0.0/8 is all loopback on Linux, so each target has an address
of its own) that can be stopped and started again on the same port, made to
answer slowly, or made to fail every n-th request."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True  # started again on the same port after a stop
    daemon_threads = True
    request_queue_size = 128  # probes arrive in bursts
    target: TargetServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a probe resets its connection once it has its answer


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        target = self.server.target
        with target.lock:
            target.requests += 1
            n = target.requests
        if target.delay:
            time.sleep(target.delay)
        failing = target.fail_every and n % target.fail_every == 0
        status = 503 if failing else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class TargetServer:
    """Listens on ``host`` (a free port chosen on the first start)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.delay = 0.0  # seconds before answering
        self.fail_every = 0  # answer 503 to every n-th request (0: never)
        self.requests = 0
        self.lock = threading.Lock()
        self._server: _Server | None = None
        self.start()

    def start(self) -> None:
        assert self._server is None
        server = _Server((self.host, self.port), _Handler)
        server.target = self
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self._server = server

    def stop(self) -> None:
        """Close the listening socket: connections are refused."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    @property
    def up(self) -> bool:
        return self._server is not None

    def close(self) -> None:
        self.stop()
