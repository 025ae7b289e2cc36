"""Regression guard for interactive latency (issue 10): no websocket behind the gateway may run over
TCP with Nagle's algorithm on. Not a timing test: it reads the transport and socket options of the
real connections.

Why: a small websocket message on a TCP socket with Nagle on waits for the peer's delayed ACK
(~40 ms on Linux) whenever an earlier small segment is still unacknowledged: a kernel round trip
went from ~7 ms to ~48 ms that way (Jupyter Server's Tornado websocket does not set TCP_NODELAY).
The gateway avoids it in two ways, and this file checks both on a running workspace:

* every backend websocket of the workspace (Jupyter's kernels and terminals, the tools) is an
  AF_UNIX connection from nginx to the backend's socket, where Nagle does not exist;
* nginx's TCP sockets, towards the client and towards a TCP backend (`/tools/<port>/`), have
  TCP_NODELAY set (`tcp_nodelay on`: nginx sets it on both sides of an upgraded connection).

The live check looks at the gateway's nginx worker itself: each of its socket descriptors is
duplicated with pidfd_getfd(2) (Linux >= 5.6; we are the workspace's ancestor, or root) and asked
for its family, peer and TCP_NODELAY. A static check over the rendered configuration of the
minimal flavor covers the tools this file does not start.
"""
from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import harness as h  # noqa: E402

REPO = h.ROOT
SYS_PIDFD_GETFD = 438  # same number on x86_64 and aarch64 (the generic syscall table)

# A TCP "tool" that accepts a websocket upgrade (101) and then holds the connection: the
# /tools/<port>/ websocket path, the one backend path that is TCP.
WS_HOLD_SERVER = textwrap.dedent("""
    import base64, hashlib, socket, sys, threading
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(sys.argv[1])))
    listener.listen(16)
    def serve(conn):
        data = b""
        while b"\\r\\n\\r\\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        key = [line.split(b":", 1)[1].strip() for line in data.split(b"\\r\\n") if line.lower().startswith(b"sec-websocket-key:")][0]
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\\r\\n\\r\\n")
        while conn.recv(4096):
            pass
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
""")


# ---- reading another process's sockets --------------------------------------------------------

def _pidfd_getfd(pid: int, fd: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        dup = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if dup < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd({pid}, {fd}): {os.strerror(err)}")
        return dup
    finally:
        os.close(pidfd)


def process_sockets(pid: int) -> list[dict]:
    """Every socket of `pid`: family, local and peer address, TCP_NODELAY (TCP only)."""
    found = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if not target.startswith("socket:"):
            continue
        try:
            dup = _pidfd_getfd(pid, int(name))
        except OSError as error:
            if os.geteuid() == 0:  # root (CI) always may: a failure here is a real one
                raise
            pytest.skip(f"cannot read the gateway's sockets here ({error}); needs Linux >= 5.6 and ptrace rights")
        sock = socket.socket(fileno=dup)
        try:
            entry = {"fd": int(name), "family": sock.family, "type": sock.type}
            try:
                entry["local"] = sock.getsockname()
            except OSError:
                entry["local"] = None
            try:
                entry["peer"] = sock.getpeername()
            except OSError:
                entry["peer"] = None  # a listener, or not connected
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
                entry["nodelay"] = bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            found.append(entry)
        finally:
            sock.close()  # closes our duplicate only
    return found


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    stat = handle.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def gateway_workers(runtime_dir: str) -> list[int]:
    with open(os.path.join(runtime_dir, "nginx", "nginx.pid")) as handle:
        master = int(handle.read().strip())
    workers = children(master)
    assert workers, f"the gateway's nginx master {master} has no workers"
    return workers


# ---- the checks (plain functions: the suite also feeds them a broken case) ---------------------

def websocket_transport_problems(sockets: list[dict], client_ports: dict[str, int], gateway_port: int,
                                 unix_backends: dict[str, str], tcp_backends: dict[str, int]) -> list[str]:
    """What is wrong with the gateway's sockets for the websockets we opened.

    client_ports: name -> local port of our client connection to the gateway; unix_backends:
    name -> socket path the backend listens on; tcp_backends: name -> TCP port of a backend."""
    problems = []
    by_client_port = {}
    for entry in sockets:
        if entry["family"] in (socket.AF_INET, socket.AF_INET6) and entry.get("peer") and entry["local"][1] == gateway_port:
            by_client_port[entry["peer"][1]] = entry
    for name, port in client_ports.items():
        entry = by_client_port.get(port)
        if entry is None:
            problems.append(f"{name}: no gateway socket for our client connection (port {port})")
        elif not entry["nodelay"]:
            problems.append(f"{name}: the gateway's client-side TCP socket has TCP_NODELAY off (Nagle on)")
    for name, path in unix_backends.items():
        peers = [e for e in sockets if e["family"] == socket.AF_UNIX and e.get("peer") == path]
        if not peers:
            problems.append(f"{name}: no AF_UNIX connection from the gateway to {path} (is the backend on TCP now?)")
    for name, port in tcp_backends.items():
        upstream = [e for e in sockets if e["family"] in (socket.AF_INET, socket.AF_INET6) and e.get("peer")
                    and e["peer"][1] == port]
        if not upstream:
            problems.append(f"{name}: no TCP connection from the gateway to port {port}")
        problems += [f"{name}: the gateway's TCP socket to port {port} has TCP_NODELAY off (Nagle on)"
                     for e in upstream if not e["nodelay"]]
    # No TCP connection from the gateway to a backend we expected on a unix socket.
    allowed = set(tcp_backends.values())
    for entry in sockets:
        if entry["family"] in (socket.AF_INET, socket.AF_INET6) and entry.get("peer") and entry["local"][1] != gateway_port:
            if entry["peer"][1] not in allowed:
                problems.append(f"unexpected upstream TCP connection to {entry['peer']}"
                                + ("" if entry["nodelay"] else " with TCP_NODELAY off"))
    return problems


def config_problems(conf: str, manifest: dict) -> list[str]:
    """The rendered gateway configuration: `tcp_nodelay on` in the http block and never off;
    every websocket-capable tool with a unix socket reached through a `unix:` upstream."""
    problems = []
    http_block = conf.split("http {", 1)[1] if "http {" in conf else ""
    http_level = re.split(r"\n\s*server\s*\{", http_block, 1)[0]
    if not re.search(r"^\s*tcp_nodelay\s+on;", http_level, re.M):
        problems.append("no `tcp_nodelay on;` at the http level of the gateway configuration")
    if re.search(r"^\s*tcp_nodelay\s+off;", conf, re.M):
        problems.append("`tcp_nodelay off;` somewhere in the gateway configuration")
    for tool in manifest["tools"]:
        route = tool.get("route") or {}
        if not route.get("prefix"):
            continue
        upstream = re.search(r"upstream mlws_tool_%s \{\s*server ([^;\s]+);" % re.escape(tool["name"].replace("-", "_")), conf)
        if not upstream:
            continue  # a tool without a route in this configuration
        if (route.get("websockets", True) or tool["name"] == "jupyter") and tool.get("socket") \
                and not upstream.group(1).startswith("unix:"):
            problems.append(f"{tool['name']}: declared on a unix socket but reached over {upstream.group(1)}")
    return problems


# ---- the live workspace ------------------------------------------------------------------------

def upgrade(port: int, path: str, token: str, timeout: float = 10.0) -> socket.socket:
    """A websocket upgrade to the gateway with the token; returns the open connection after its 101."""
    return upgrade_with_head(port, path, token, timeout)[0]


def upgrade_with_head(port: int, path: str, token: str, timeout: float = 10.0,
                      extra_headers: str = "") -> tuple[socket.socket, bytes]:
    """The same, with extra request header lines; returns the connection and the 101's head."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock = socket.create_connection((h.LOOPBACK, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = (f"GET {path} HTTP/1.1\r\nHost: {h.LOOPBACK}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: token {token}\r\n"
               f"{extra_headers}\r\n")
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise AssertionError(f"websocket upgrade of {path} gave {head[:200]!r}")
    expected = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    assert expected in head, head
    return sock, head


@pytest.fixture(scope="module")
def live():
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc and uses pidfd_getfd")
    h.run_user()  # raises with a clear message when root lacks the unprivileged user
    base_dir = h.make_folder("mlws-latency-guard-")
    token = "guard" + os.urandom(12).hex()
    with h.ProcessGroup(base_dir) as group:
        port = h.free_port()
        rt = h.start_runtime(group, base_dir, port, token=token, tools="jupyter", timeout=120)
        tool_port = h.free_port()
        script = os.path.join(base_dir, "ws_hold_server.py")
        with open(script, "w") as handle:
            handle.write(WS_HOLD_SERVER)
        os.chmod(script, 0o644)
        # As the workspace user: /tools/<port>/ serves only that user's listeners.
        group.add(h.spawn("ws-hold", [sys.executable, script, str(tool_port)], base_dir, h.server_env(base_dir)))
        h.wait_until(lambda: h.port_open(tool_port), 15, 0.05, "the websocket test tool")
        yield rt, tool_port


def test_websockets_behind_the_gateway_never_meet_nagle(live):
    rt, tool_port = live
    headers = rt.auth_headers()
    kernel = h.start_kernel(rt.url, headers)
    status, _, body = h.http("POST", f"{rt.url}/api/terminals", headers)
    assert status == 200, body
    terminal = json.loads(body)["name"]
    paths = {
        "kernel websocket": f"{rt.base_url}/api/kernels/{kernel}/channels?session_id=guard",
        "terminal websocket": f"{rt.base_url}/terminals/websocket/{terminal}",
        "tool websocket (/tools/<port>/)": f"{rt.base_url}/tools/{tool_port}/ws",
    }
    conns = {name: upgrade(rt.port, path, rt.token) for name, path in paths.items()}
    try:
        time.sleep(0.2)  # the upgrade has reached the backend and nginx set its options
        client_ports = {name: conn.getsockname()[1] for name, conn in conns.items()}
        jupyter_socket = rt.tool_socket("jupyter")
        sockets = [entry for pid in gateway_workers(rt.runtime_dir) for entry in process_sockets(pid)]
        problems = websocket_transport_problems(
            sockets, client_ports, rt.port,
            unix_backends={"Jupyter (kernel and terminal websockets)": jupyter_socket},
            tcp_backends={"tool websocket (/tools/<port>/)": tool_port})
        assert not problems, "\n".join(problems) + "\n\ngateway sockets:\n" + "\n".join(map(str, sockets))
        # Both Jupyter websockets are their own unix connections (an upgraded connection is never
        # shared), so at least two to Jupyter's socket.
        to_jupyter = [e for e in sockets if e["family"] == socket.AF_UNIX and e.get("peer") == jupyter_socket]
        assert len(to_jupyter) >= 2, sockets
    finally:
        for conn in conns.values():
            conn.close()
        h.http("DELETE", f"{rt.url}/api/kernels/{kernel}", headers)
        h.http("DELETE", f"{rt.url}/api/terminals/{terminal}", headers)


def kernel_websocket_negotiation_problems(head: bytes) -> list[str]:
    """What a kernel websocket's 101 (to a browser-like offer) must say: the v1 protocol chosen,
    no permessage-deflate agreed."""
    fields = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    problems = []
    if fields.get("sec-websocket-protocol") != "v1.kernel.websocket.jupyter.org":
        problems.append("kernel websocket: offered v1.kernel.websocket.jupyter.org, got protocol "
                        f"{fields.get('sec-websocket-protocol') or '(none: legacy JSON, parsed per message)'}")
    if "permessage-deflate" in fields.get("sec-websocket-extensions", ""):
        problems.append(f"kernel websocket: compression agreed ({fields['sec-websocket-extensions']}): "
                        "every message deflated and inflated on every hop")
    return problems


def test_kernel_websocket_through_the_gateway_speaks_v1_uncompressed(live):
    """bench/latency's headline figures are the v1 kernel protocol (what JupyterLab 4 and Notebook
    7 ask for: Jupyter Server relays its frames without parsing them) without websocket compression
    (Jupyter's default `websocket_compression_options = None`). Both hold only while the gateway
    passes the negotiation through and nothing in the runtime's Jupyter configuration changes
    `kernel_ws_protocol` or turns compression on: offer both as a browser does, read the 101."""
    rt, _ = live
    headers = rt.auth_headers()
    kernel = h.start_kernel(rt.url, headers)
    try:
        conn, head = upgrade_with_head(
            rt.port, f"{rt.base_url}/api/kernels/{kernel}/channels?session_id=guard-v1", rt.token,
            extra_headers="Sec-WebSocket-Protocol: v1.kernel.websocket.jupyter.org\r\n"
                          "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
        conn.close()
        problems = kernel_websocket_negotiation_problems(head)
        assert not problems, "\n".join(problems) + f"\n\n{head.decode('latin-1')}"
    finally:
        h.http("DELETE", f"{rt.url}/api/kernels/{kernel}", headers)
    # Negative control: the check notices a legacy or compressed answer.
    assert kernel_websocket_negotiation_problems(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket")
    assert kernel_websocket_negotiation_problems(
        b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Protocol: v1.kernel.websocket.jupyter.org\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate")


def test_the_live_check_flags_nagle_and_tcp_backends():
    """The guard's own negative control: the same check on sockets as they would be with
    `tcp_nodelay off` and with Jupyter moved to TCP."""
    good_client = {"family": socket.AF_INET, "type": socket.SOCK_STREAM, "local": ("127.0.0.1", 8080),
                   "peer": ("127.0.0.1", 50000), "nodelay": True}
    jupyter_unix = {"family": socket.AF_UNIX, "type": socket.SOCK_STREAM, "local": "", "peer": "/run/j.sock"}
    ok = websocket_transport_problems([good_client, jupyter_unix], {"k": 50000}, 8080, {"j": "/run/j.sock"}, {})
    assert ok == []
    nagle = websocket_transport_problems([{**good_client, "nodelay": False}, jupyter_unix], {"k": 50000}, 8080,
                                         {"j": "/run/j.sock"}, {})
    assert any("TCP_NODELAY off" in p for p in nagle), nagle
    jupyter_tcp = {"family": socket.AF_INET, "type": socket.SOCK_STREAM, "local": ("127.0.0.1", 40000),
                   "peer": ("127.0.0.1", 8888), "nodelay": False}
    moved = websocket_transport_problems([good_client, jupyter_tcp], {"k": 50000}, 8080, {"j": "/run/j.sock"}, {})
    assert any("no AF_UNIX connection" in p for p in moved) and any("unexpected upstream TCP" in p for p in moved), moved


def rendered_minimal_config() -> tuple[str, dict]:
    """`mlws start --dry-run` of the minimal flavor (every tool, missing ones included)."""
    folder = h.make_folder("mlws-latency-conf-")  # the workspace user's, when we are root
    try:
        manifest = h.manifest_with_tools([])
        path = os.path.join(folder, "manifest.json")
        with open(path, "w") as handle:
            json.dump(manifest, handle)
        runtime_dir = os.path.join(folder, "run")
        env = h.runtime_env("dry" + "0" * 20)
        env["PYTHONPATH"] = REPO
        out = subprocess.run([sys.executable, "-m", "runtime", "start", "--manifest", path, "--port", str(h.free_port()),
                              "--bind", h.LOOPBACK, "--runtime-dir", runtime_dir, "--workspace-dir",
                              os.path.join(folder, "ws"), "--dry-run"],
                             capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
        conf_path = os.path.join(runtime_dir, "nginx", "nginx.conf")
        assert os.path.exists(conf_path), out.stdout[-2000:] + out.stderr[-2000:]
        with open(conf_path) as handle:
            return handle.read(), manifest
    finally:
        subprocess.run(["rm", "-rf", folder])


def test_rendered_gateway_config_keeps_every_websocket_off_nagle():
    conf, manifest = rendered_minimal_config()
    problems = config_problems(conf, manifest)
    assert not problems, "\n".join(problems)
    # Negative control: the same check on the configuration with Nagle turned back on.
    broken = re.sub(r"tcp_nodelay\s+on;", "tcp_nodelay off;", conf)
    assert config_problems(broken, manifest), "the check did not notice `tcp_nodelay off`"


# A real ServerApp initialised (not started) with the runtime's Jupyter configuration, as
# `mlws start` runs it: does its logger build a record for every debug call on the message path?
SERVER_LOGGING = """
import logging, sys
from jupyter_server.serverapp import ServerApp
app = ServerApp()
app.initialize(["--no-browser", "--ServerApp.port=0", "--ServerApp.root_dir=" + sys.argv[1], "--config=" + sys.argv[2],
                *sys.argv[3:]])
print("server-debug", app.log.isEnabledFor(logging.DEBUG), "kernels-debug",
      app.kernel_manager.log.isEnabledFor(logging.DEBUG), "info", app.log.isEnabledFor(logging.INFO))
"""


def server_logging(tmp_path, *argv: str) -> str:
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"gateway_header": "X-Mlws-Gateway", "gateway_secret": "a" * 64, "token": "t" * 32,
                                    "auth_kind_header": "X-Mlws-Auth", "user_name": "ann", "mode": "token"}))
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "MLWS_JUPYTER_SETTINGS": str(settings), "HOME": str(home),
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    done = subprocess.run([sys.executable, "-c", SERVER_LOGGING, str(tmp_path),
                           os.path.join(REPO, "runtime", "jupyter_config.py"), *argv],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_jupyter_builds_no_debug_records_unless_asked(tmp_path):
    """traitlets leaves an app's logger at DEBUG and filters in the handler: every debug call of
    the kernel activity watcher and the websocket relay then built a LogRecord (os.getpid
    included) per message. The runtime's configuration gives the logger the handler's level."""
    assert server_logging(tmp_path) == "server-debug False kernels-debug False info True"
    # Asked for on the command line (NOTEBOOK_ARGS), debug output still works.
    for argv in (["--debug"], ["--log-level=DEBUG"], ["--ServerApp.log_level", "10"]):
        assert server_logging(tmp_path, *argv) == "server-debug True kernels-debug True info True", argv
