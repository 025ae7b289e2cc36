"""The websockets of shared ports, carried by the share service so that revoking a link (or its
expiry) also ends the connections already open through it.

nginx checks a share link before every request to B/shared/tools/<port>/ (runtime/shares.py
`_check_port`), but an upgraded connection is one request: nginx relays it for as long as both
ends keep it, and it has no way to close one connection from outside. So the gateway sends the
upgrade requests of shared ports here instead (runtime/nginx.py `_share_locations`, with the link's
id from the check); this module connects to the port, sends the request on, and copies bytes both
ways, keeping each connection under its link. `close_link` ends them all (revoke), and a sweeper
ends those whose link has expired. Plain HTTP requests to a shared port are checked one by one
and go from nginx to the port directly.
"""
from __future__ import annotations

import socket
import threading
import time

BUFFER = 64 * 1024
SWEEP_SECONDS = 1.0
# Request headers not sent on to the port: the gateway's own.
GATEWAY_ONLY = ("x-mlws-share-link",)


class Relays:
    """Open relayed connections by link id, with the time their link expires."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open: dict[str, set[tuple[socket.socket, socket.socket]]] = {}
        self._expires: dict[str, float] = {}

    def add(self, link_id: str, expires: float, pair: tuple[socket.socket, socket.socket]) -> None:
        with self._lock:
            self._open.setdefault(link_id, set()).add(pair)
            self._expires[link_id] = expires

    def remove(self, link_id: str, pair: tuple[socket.socket, socket.socket]) -> None:
        with self._lock:
            pairs = self._open.get(link_id, set())
            pairs.discard(pair)
            if not pairs:
                self._open.pop(link_id, None)
                self._expires.pop(link_id, None)

    def count(self, link_id: str) -> int:
        with self._lock:
            return len(self._open.get(link_id, ()))

    def close_link(self, link_id: str) -> int:
        """End every connection open through this link; returns how many there were."""
        with self._lock:
            pairs = list(self._open.get(link_id, ()))
        for pair in pairs:
            for sock in pair:
                _shut(sock)
        return len(pairs)

    def close_expired(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        with self._lock:
            expired = [link_id for link_id, expires in self._expires.items() if expires <= now]
        for link_id in expired:
            self.close_link(link_id)
        return expired

    def sweep_forever(self) -> None:
        while True:
            time.sleep(SWEEP_SECONDS)
            self.close_expired()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by its other end


def request_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    """The request line and headers as they go to the port (the gateway's own headers left out)."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers if name.lower() not in GATEWAY_ONLY]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    backend = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    backend.settimeout(None)
    backend.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return backend


def pipe(read, write_sock: socket.socket, other: socket.socket) -> None:
    """Copy from `read` (a function returning bytes, b"" at the end) to `write_sock` until either
    side ends, then end the other direction too."""
    try:
        while True:
            data = read(BUFFER)
            if not data:
                break
            write_sock.sendall(data)
    except OSError:
        pass
    finally:
        _shut(write_sock)
        _shut(other)


def carry(gateway_read, gateway_sock: socket.socket, backend: socket.socket) -> None:
    """Both directions until one side closes: gateway -> port in a thread, port -> gateway here.
    `gateway_read` reads what the gateway sent (the request handler's buffered reader)."""
    upstream = threading.Thread(target=pipe, args=(gateway_read, backend, gateway_sock), daemon=True)
    upstream.start()
    pipe(backend.recv, gateway_sock, backend)
    upstream.join(timeout=5)
