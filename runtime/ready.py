"""Readiness watcher: `python -m runtime.ready <checks.json>`, a one-shot supervised program.

Polls every process's `ready` check from the manifest (HTTP answer below 500 over a TCP port or a
unix socket, or a TCP port / unix socket that accepts connections) and prints one line when all are
ready, or, after the time limit, which are not. The gateway does not wait for it: while a backend does not answer, nginx shows the
"starting" page.
"""
from __future__ import annotations

import http.client
import json
import socket
import sys
import time

from runtime.unix_http import UnixHTTPConnection


def check_once(check: dict) -> bool:
    try:
        if "tcp" in check:
            with socket.create_connection(("127.0.0.1", int(check["tcp"])), timeout=2):
                return True
        if "socket" in check:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(check["socket"])
                return True
        if "unix" in check:
            connection = UnixHTTPConnection(check["unix"], timeout=5)
        else:
            connection = http.client.HTTPConnection("127.0.0.1", int(check["port"]), timeout=5)
        try:
            connection.request("GET", check["path"], headers=check.get("headers") or {})
            return connection.getresponse().status < 500
        finally:
            connection.close()
    except (OSError, http.client.HTTPException):
        return False


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    began = time.monotonic()
    pending = {check["name"]: check for check in spec["checks"]}
    while pending and time.monotonic() - began < spec.get("timeout", 600):
        for name in [name for name, check in pending.items() if check_once(check)]:
            del pending[name]
        if pending:
            time.sleep(0.5)
    elapsed = time.monotonic() - began
    if pending:
        print(f"mlws: WARNING: not ready after {elapsed:.0f} s: {', '.join(sorted(pending))}", flush=True)
        return 0
    print(f"mlws: workspace ready ({len(spec['checks'])} checks passed in {elapsed:.1f} s): {spec['url']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
