"""HTTP over unix sockets: the backends, the login service and the runtime's own small services
(tooling, shares, SSH setup) all listen on sockets in the runtime folder
(<runtime-dir>/sockets/<tool>.sock and friends). A client (http.client) and the one way the
runtime's services serve."""
from __future__ import annotations

import http.client
import http.server
import os
import socket
import socketserver


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


class ThreadingUnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # socketserver's default backlog is 5, and a full unix socket backlog refuses a connection at
    # once (EAGAIN) where TCP would send its SYN again: a burst from nginx would get 502s.
    request_queue_size = 1024


def serve_forever(path: str, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
    """Serve `handler` on the unix socket `path`, for the workspace user alone: the socket is
    born 0600 (umask while it is bound, so there is no moment it is open to others), and a stale
    socket left by a killed run is removed first (bind would refuse it)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    old_umask = os.umask(0o177)
    try:
        server = ThreadingUnixServer(path, handler)
    finally:
        os.umask(old_umask)
    server.serve_forever()
