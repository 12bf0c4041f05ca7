"""An HTTP server on loopback for the tests' stand-ins of remote services (DeepL, the Hub, ...).

Each stand-in writes only its request handler; this module runs it on 127.0.0.1 at a free
port, in a thread, and stops it so that it is really gone for clients (kept-alive
connections included).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["LoopbackServer", "running"]


class LoopbackServer(ThreadingHTTPServer):
    """A threading HTTP server that can drop its kept-alive connections when it stops."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Close kept-alive connections too, so a stopped server is really gone for clients."""
        with self.connections_lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout) leaves a closed socket behind; that is expected here.
        pass


@contextlib.contextmanager
def running(handler: type[BaseHTTPRequestHandler]) -> Iterator[LoopbackServer]:
    """Serve ``handler`` on 127.0.0.1 (a free port) for the block's duration."""
    server = LoopbackServer(handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.drop_connections()
        server.server_close()
        thread.join(timeout=5)
