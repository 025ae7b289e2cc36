"""http.client over a unix socket: the backends, the login service and nginx's check socket all
listen on sockets in the runtime folder (<runtime-dir>/sockets/<tool>.sock and friends)."""
from __future__ import annotations

import http.client
import socket


class UnixHTTPConnection(http.client.HTTPConnection):
    """`host` is only what the Host header says."""

    def __init__(self, socket_path: str, host: str = "localhost", timeout: float = 10.0):
        super().__init__(host, timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock
