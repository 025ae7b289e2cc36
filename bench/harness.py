"""Shared machinery for bench/ and the reliability/security tests: processes, servers, clients.

Plain functions over plain data. Everything listens on 127.0.0.1 only. When run as root, the
servers started here (nginx, Jupyter, the runtime) run as the unprivileged user `mlws`
(MLWS_BENCH_USER), like the runtime's own tools: nothing of ours serves HTTP as root.

Backends of the workspace listen on unix sockets in its runtime folder (Jupyter on
`<runtime-dir>/sockets/jupyter.sock`), not on TCP ports: Python clients reach them with
`http(..., unix=PATH)` (http.client over AF_UNIX) and aiohttp's UnixConnector; wrk, which speaks
TCP only, through `start_unix_relay` (a byte relay, nginx's stream module, TCP port -> socket).
Jupyter behind the gateway has no token: it accepts the gateway's secret header, which
`Runtime.backend_headers()` reads from the runtime folder (as root, or as the workspace user).

Used by bench/gateway, bench/startup, bench/generate and tests/test_reliability*.py /
tests/test_security*.py (which put this folder on sys.path).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # the runtime package of this checkout
    sys.path.insert(0, ROOT)
from runtime.unix_http import UnixHTTPConnection  # noqa: E402
LOOPBACK = "127.0.0.1"
BIN_DIR = os.path.dirname(sys.executable)  # the venv's bin: jupyter, mlws, supervisord
RUN_USER = os.environ.get("MLWS_BENCH_USER", "mlws")


# ---- users, folders, ports -------------------------------------------------------------------

def is_root() -> bool:
    return os.geteuid() == 0


def run_user() -> pwd.struct_passwd | None:
    """The user our servers run as when we are root (None: run as ourselves)."""
    if not is_root():
        return None
    try:
        return pwd.getpwnam(RUN_USER)
    except KeyError:
        raise RuntimeError(f"running as root needs the unprivileged user {RUN_USER!r} (scripts/install-deps creates it)")


def make_folder(prefix: str) -> str:
    """A fresh temporary folder the server user owns (mkdtemp's 0700 would lock nginx workers out)."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    user = run_user()
    if user:
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


def chown_tree(path: str) -> None:
    user = run_user()
    if not user:
        return
    for folder, dirs, files in os.walk(path):
        for name in [folder] + [os.path.join(folder, n) for n in dirs + files]:
            os.lchown(name, user.pw_uid, user.pw_gid)


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so `with ProcessGroup(...)` blocks stop what they started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def unix_listening(path: str) -> bool:
    """Does something accept connections on the unix socket `path`?"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            return sock.connect_ex(path) == 0
        except OSError:
            return False


# ---- processes -------------------------------------------------------------------------------

@dataclasses.dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: str

    def log(self) -> str:
        with open(self.log_path, errors="replace") as handle:
            return handle.read()


def tool_bin() -> str | None:
    """The folder of tool programs scripts/install-tools made (code-server, ungit, noVNC, ...), if any."""
    out = subprocess.run([os.path.join(ROOT, "scripts", "install-tools"), "--print-bin"], capture_output=True,
                         text=True, check=False)
    folder = out.stdout.strip()
    return folder if out.returncode == 0 and os.path.isdir(folder) else None


def runtime_path_with_tools() -> dict[str, str] | None:
    """extra_env for start_runtime with the installed tool programs on PATH (None: none installed)."""
    folder = tool_bin()
    return {"PATH": os.pathsep.join([folder, runtime_env(None)["PATH"]])} if folder else None


def server_env(home: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": os.pathsep.join([BIN_DIR, os.environ.get("PATH", "/usr/bin:/bin"), "/usr/sbin", "/sbin"]),
        "HOME": home,
        "LANG": "C.UTF-8",
    }
    user = run_user()
    if user:
        env["USER"] = env["LOGNAME"] = user.pw_name
    env.update(extra or {})
    return env


def spawn(name: str, argv: list[str], log_dir: str, env: dict[str, str], as_server_user: bool = True,
          cwd: str | None = None) -> Proc:
    """Start a process in its own process group, output to <log_dir>/<name>.log."""
    log_path = os.path.join(log_dir, f"{name}.log")
    log = open(log_path, "ab")
    kwargs = {}
    user = run_user() if as_server_user else None
    if user:
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                             cwd=cwd or log_dir, start_new_session=True, **kwargs)
    log.close()
    return Proc(name, popen, log_path)


def stop(proc: Proc, timeout: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after `timeout`."""
    if proc.popen.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)  # stray children of a finished leader
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.popen.pid, signal.SIGTERM)
    try:
        proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.popen.wait(5)


def processes_using(folder: str) -> list[int]:
    """Pids (not ours) whose command line, working folder or open files are inside `folder`."""
    found = []
    folder = folder.rstrip("/") + "/"
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
            paths = [cmdline, os.readlink(f"/proc/{entry}/cwd") + "/"]
            paths += [os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")]
        except OSError:
            continue
        if any(folder in path or path.startswith(folder) for path in paths):
            found.append(int(entry))
    return found


def kill_strays(folder: str) -> list[int]:
    """SIGKILL processes left behind in `folder` (e.g. orphaned workers); returns their pids."""
    pids = processes_using(folder)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids


class ProcessGroup(contextlib.AbstractContextManager):
    """Processes stopped in reverse start order on exit; then strays in `folder` are killed and the
    folder removed (kept when MLWS_KEEP_FILES is set, for looking at logs)."""

    def __init__(self, folder: str | None = None):
        self.procs: list[Proc] = []
        self.folder = folder
        self.strays: list[int] = []

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def __exit__(self, *exc):
        for proc in reversed(self.procs):
            stop(proc)
        if self.folder:
            self.strays = kill_strays(self.folder)
            if not os.environ.get("MLWS_KEEP_FILES"):
                shutil.rmtree(self.folder, ignore_errors=True)
        return False


# ---- HTTP helpers (stdlib, no redirects followed) --------------------------------------------

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def http(method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None,
         timeout: float = 10.0, unix: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request, no redirects followed. With `unix`, sent over that unix socket: the URL gives
    the path, query and Host header only (e.g. http://localhost/api/status)."""
    if unix:
        parts = urllib.parse.urlsplit(url)
        connection = UnixHTTPConnection(unix, parts.netloc or "localhost", timeout)
        try:
            connection.request(method, (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                               body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.headers), response.read()
        finally:
            connection.close()
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers or {}), error.read()


def wait_until(check, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll `check()` until it returns something truthy; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError) as error:
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


def wait_http_ok(url: str, headers: dict[str, str] | None = None, timeout: float = 60.0, proc: Proc | None = None,
                 unix: str | None = None) -> float:
    """Wait for a 200 answer (over the unix socket `unix`, if given); returns the time it took.
    Fails early if `proc` exits."""
    start = time.monotonic()

    def check():
        if proc and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} while starting:\n{proc.log()[-3000:]}")
        status, _, _ = http("GET", url, headers, timeout=2, unix=unix)
        return status == 200

    wait_until(check, timeout, 0.05, f"200 from {url}" + (f" on {unix}" if unix else ""))
    return time.monotonic() - start


# ---- backends --------------------------------------------------------------------------------

NGINX_COMMON = """
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type application/octet-stream;
    types {{ text/html html; text/css css; }}
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    sendfile on;
    tcp_nodelay on;
    server_tokens off;
{body}
}}
"""


def start_nginx(group: ProcessGroup, name: str, base_dir: str, body: str, check_url: str) -> Proc:
    folder = os.path.join(base_dir, name)
    os.makedirs(os.path.join(folder, "tmp"), exist_ok=True)
    conf = os.path.join(folder, "nginx.conf")
    with open(conf, "w") as handle:
        handle.write(NGINX_COMMON.format(dir=folder, body=body))
    chown_tree(folder)
    proc = group.add(spawn(name, ["nginx", "-p", folder, "-c", conf, "-e", os.path.join(folder, "error.log"),
                                  "-g", "daemon off;"], folder, server_env(folder)))
    wait_until(lambda: proc.popen.poll() is None and port_open(int(re.search(r":(\d+)", check_url).group(1))),
               15, 0.05, f"{name} to listen")
    if proc.popen.poll() is not None:
        raise RuntimeError(f"{name} failed:\n{proc.log()}")
    return proc


# A TCP port in front of a unix socket, for load generators that speak TCP only (wrk). nginx's
# stream module relays bytes (no HTTP parsing, no header changes), one unix connection per TCP
# connection, so a client's keep-alive connections stay the backend's; Debian ships the module as
# libnginx-mod-stream (scripts/install-deps). Without it, an HTTP proxy with keep-alive stands in.
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"

STREAM_RELAY = """
load_module {module};
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
stream {{
    server {{
        listen {listen};
        proxy_pass unix:{socket};
        proxy_connect_timeout 5s;
        proxy_timeout 1h;
        proxy_buffer_size 64k;
    }}
}}
"""


def start_unix_relay(group: ProcessGroup, name: str, base_dir: str, socket_path: str, port: int) -> str:
    """127.0.0.1:<port> -> the unix socket `socket_path`, run as the server user (who may open the
    workspace's sockets). Returns the kind: "stream" (byte relay) or "http" (the fallback)."""
    folder = os.path.join(base_dir, name)
    os.makedirs(os.path.join(folder, "tmp"), exist_ok=True)
    conf = os.path.join(folder, "nginx.conf")
    if os.path.exists(STREAM_MODULE):
        kind = "stream"
        text = STREAM_RELAY.format(module=STREAM_MODULE, dir=folder, listen=f"{LOOPBACK}:{port}", socket=socket_path)
    else:
        kind = "http"
        text = NGINX_COMMON.format(dir=folder, body=f"""
    map $http_upgrade $connection_upgrade {{ default upgrade; "" ""; }}
    upstream relayed {{ server unix:{socket_path}; keepalive 64; }}
    server {{
        listen {LOOPBACK}:{port};
        keepalive_requests 100000;
        location / {{
            proxy_pass http://relayed;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffering off;
            proxy_read_timeout 1h;
        }}
    }}""")
    with open(conf, "w") as handle:
        handle.write(text)
    spawn_listening(group, name, ["nginx", "-p", folder, "-c", conf, "-e", os.path.join(folder, "error.log"),
                                  "-g", "daemon off;"], folder, port)
    return kind


def spawn_listening(group: ProcessGroup, name: str, argv: list[str], folder: str, port: int) -> Proc:
    """Start a relay as the server user (its folder handed over first) and wait until it listens
    on `port`; its log in the error if it exits instead."""
    chown_tree(folder)
    proc = group.add(spawn(name, argv, folder, server_env(folder)))
    wait_until(lambda: proc.popen.poll() is not None or port_open(port), 15, 0.05, f"{name} to listen")
    if proc.popen.poll() is not None:
        raise RuntimeError(f"{name} failed:\n{proc.log()}")
    return proc


HAPROXY_RELAY = """global
    maxconn 256
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
listen relay
    bind {listen}
    server backend unix@{socket}
"""


def start_haproxy_relay(group: ProcessGroup, name: str, base_dir: str, socket_path: str, port: int) -> bool:
    """127.0.0.1:<port> -> the unix socket `socket_path` through HAProxy in TCP mode (a byte relay,
    no HTTP), run as the server user. False when HAProxy is not installed."""
    haproxy = shutil.which("haproxy", path="/usr/sbin:/usr/bin:/sbin")
    if not haproxy:
        return False
    folder = os.path.join(base_dir, name)
    os.makedirs(folder, exist_ok=True)
    conf = os.path.join(folder, "haproxy.cfg")
    with open(conf, "w") as handle:
        handle.write(HAPROXY_RELAY.format(listen=f"{LOOPBACK}:{port}", socket=socket_path))
    spawn_listening(group, name, [haproxy, "-db", "-f", conf], folder, port)
    return True


TOOL_PAGE = "<!doctype html><title>bench tool</title>" + "<p>" + "x" * 960 + "</p>\n"  # 1 KiB


def start_static_tool(group: ProcessGroup, base_dir: str, port: int, name: str = "tool-nginx") -> str:
    """nginx serving a 1 KiB page at /index.html: the tool behind /tools/<port>/. Returns its page path."""
    root = os.path.join(base_dir, f"{name}-root")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "index.html"), "w") as handle:
        handle.write(TOOL_PAGE[:1024])
    body = f"""
    server {{
        listen {LOOPBACK}:{port};
        keepalive_requests 100000;
        root {root};
    }}"""
    start_nginx(group, name, base_dir, body, f"http://{LOOPBACK}:{port}/")
    return "/index.html"


def nginx_server(address: int | str) -> str:
    """An nginx `server` address: a port on 127.0.0.1, or a unix socket path (given as "/..." or "unix:/...")."""
    if isinstance(address, int):
        return f"{LOOPBACK}:{address}"
    return address if address.startswith("unix:") else f"unix:{address}"


def plain_proxy_body(port: int, jupyter: int | str, auth_url: str | None = None,
                     named_tools: dict[str, int] | None = None) -> str:
    """A stock nginx reverse proxy: /tools/<port>/ to that port, /tools/<name>/ to a named tool's
    port (an upstream with keep-alive), everything else to Jupyter (`jupyter`: its port, or the
    path of its unix socket).

    With `auth_url`, every request first makes an auth_request sub-request to Jupyter (the original
    design's per-request check, rebuilt with stock nginx). Upstream keep-alive is on for Jupyter and
    the check, so the anchor is the fast version of that design.
    """
    auth = "auth_request /_auth;" if auth_url else ""
    auth_location = f"""
        location = /_auth {{
            internal;
            proxy_pass {auth_url};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
        }}""" if auth_url else ""
    named = ""
    for name, tool_port in (named_tools or {}).items():
        named += f"""
    upstream tool_{name} {{ server {LOOPBACK}:{tool_port}; keepalive 16; }}"""
    named_locations = "".join(f"""
        location /tools/{name}/ {{
            {auth}
            proxy_pass http://tool_{name}/;
        }}""" for name in (named_tools or {}))
    return f"""
    map $http_upgrade $connection_upgrade {{ default upgrade; "" ""; }}
    upstream jupyter {{ server {nginx_server(jupyter)}; keepalive 16; }}{named}
    server {{
        listen {LOOPBACK}:{port};
        keepalive_requests 100000;
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_buffering off;
        proxy_read_timeout 1h;
        {auth_location}{named_locations}
        location ~ ^/tools/(?<tool_port>[0-9]+)(?<rest>/.*)$ {{
            {auth}
            proxy_pass http://{LOOPBACK}:$tool_port$rest$is_args$args;
        }}
        location / {{
            {auth}
            proxy_pass http://jupyter;
        }}
    }}"""


def jupyter_argv(port: int | None, token: str, root_dir: str, extra: list[str] | None = None,
                 sock: str | None = None) -> list[str]:
    """Jupyter started the way the runtime's manifest starts it, with a plain token; on `sock` (a
    unix socket path, as the workspace's Jupyter) instead of a TCP port when given."""
    listen = [f"--ServerApp.sock={sock}"] if sock else [f"--ip={LOOPBACK}", f"--port={port}"]
    argv = ["jupyter", "lab", "--no-browser", *listen, "--ServerApp.base_url=/",
            f"--ServerApp.root_dir={root_dir}", f"--IdentityProvider.token={token}",
            "--ServerApp.open_browser=False"]
    if is_root() and not run_user():
        argv.append("--allow-root")
    return argv + list(extra or [])


def start_jupyter(group: ProcessGroup, name: str, base_dir: str, port: int | None, token: str, root_dir: str,
                  extra: list[str] | None = None, env: dict[str, str] | None = None, sock: str | None = None) -> Proc:
    home = os.path.join(base_dir, f"{name}-home")
    os.makedirs(home, exist_ok=True)
    chown_tree(home)
    full_env = server_env(home, {"JUPYTER_RUNTIME_DIR": os.path.join(home, "runtime"), **(env or {})})
    return group.add(spawn(name, jupyter_argv(port, token, root_dir, extra, sock), base_dir, full_env))


def make_contents_folder(workspace: str, name: str = "bench-folder", files: int = 5) -> str:
    folder = os.path.join(workspace, name)
    os.makedirs(folder, exist_ok=True)
    for index in range(files):
        with open(os.path.join(folder, f"file-{index}.txt"), "w") as handle:
            handle.write(f"small file {index}\n")
    chown_tree(folder)
    return name


# ---- the mlws runtime ------------------------------------------------------------------------

@dataclasses.dataclass
class Runtime:
    proc: Proc
    port: int
    base_url: str
    token: str | None
    runtime_dir: str
    workspace: str
    manifest: dict

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{self.base_url}"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}

    def _tool(self, name: str) -> dict:
        for tool in self.manifest["tools"]:
            if tool["name"] == name:
                return tool
        raise KeyError(f"no tool {name!r} in this workspace's manifest")

    def tool_port(self, name: str) -> int:
        """The TCP port of a tool that has one (a tool with "socket": true has none: tool_socket)."""
        port = self._tool(name).get("port")
        if not port:
            raise ValueError(f"tool {name!r} listens on a unix socket, not a port: use tool_socket({name!r})")
        return port

    def tool_socket(self, name: str) -> str:
        """The unix socket a tool with "socket": true listens on: the address of the gateway's
        upstream for it (runtime/start.py decides the path), else <runtime-dir>/sockets/<name>.sock."""
        if not self._tool(name).get("socket"):
            raise ValueError(f"tool {name!r} listens on TCP port {self._tool(name).get('port')}, not a unix socket")
        with contextlib.suppress(OSError):
            with open(os.path.join(self.runtime_dir, "nginx", "nginx.conf")) as handle:
                conf = handle.read()
            match = re.search(r"upstream mlws_tool_%s \{\s*server unix:([^;\s]+);" % re.escape(name.replace("-", "_")), conf)
            if match:
                return match.group(1)
        return os.path.join(self.runtime_dir, "sockets", f"{name}.sock")

    def backend_headers(self) -> dict[str, str]:
        """What the gateway adds to an authenticated API request to Jupyter: its secret header
        (Jupyter behind the gateway has no token of its own and trusts only that) and the auth
        kind "token" (an API client: no XSRF). For clients talking to Jupyter's socket directly."""
        with open(os.path.join(self.runtime_dir, "jupyter", "settings.json")) as handle:
            settings = json.load(handle)
        return {settings["gateway_header"]: settings["gateway_secret"],
                settings.get("auth_kind_header") or "X-Mlws-Auth": "token"}

    def supervisor_status(self) -> dict[str, tuple[str, int | None]]:
        """program name -> (state, pid) from supervisorctl (its `<group>:` prefix cut off)."""
        out = subprocess.run([os.path.join(BIN_DIR, "supervisorctl"), "-c",
                              os.path.join(self.runtime_dir, "supervisord.conf"), "status"],
                             capture_output=True, text=True, timeout=20).stdout
        status = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                match = re.search(r"pid (\d+)", line)
                status[parts[0].rpartition(":")[2]] = (parts[1], int(match.group(1)) if match else None)
        return status


def manifest_with_tools(tools: list[dict], flavor: str = "minimal") -> dict:
    """The flavor's manifest with `tools` added (or replacing tools of the same name). The flavor's
    own tools get free ports instead of their fixed ones (8090, ...), so a leftover process or a
    second workspace on this machine cannot collide with this one."""
    with open(manifest_path(flavor)) as handle:
        manifest = json.load(handle)
    for tool in manifest["tools"]:
        if tool.get("port"):
            tool["port"] = free_port()
    names = {tool["name"] for tool in tools}
    manifest["tools"] = sorted([t for t in manifest["tools"] if t["name"] not in names] + tools,
                               key=lambda tool: tool["name"])
    return manifest


def manifest_path(flavor: str = "minimal") -> str:
    return os.path.join(ROOT, "flavors", f"{flavor}.manifest.json")


def mlws_command() -> list[str]:
    exe = os.path.join(BIN_DIR, "mlws")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "generator"]


def runtime_env(token: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": os.pathsep.join([BIN_DIR, "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "AUTHENTICATE_VIA_JUPYTER": token if token else "false",
        "INCLUDE_TUTORIALS": "false",
    }
    if is_root():
        env["NB_USER"] = RUN_USER
    env.update(extra or {})
    return env


def start_runtime(group: ProcessGroup, base_dir: str, port: int, token: str | None = None,
                  tools: str = "jupyter", extra_env: dict[str, str] | None = None, flavor: str = "minimal",
                  wait: str | None = "healthy", timeout: float = 120.0, manifest: dict | None = None) -> Runtime:
    """`mlws start` on 127.0.0.1:<port>; waits for /healthy (or /ping) unless wait=None.

    The flavor's manifest is run with free internal ports (manifest_with_tools); `manifest`: run
    this one instead (written to the base folder either way)."""
    runtime_dir = os.path.join(base_dir, f"run-{port}")
    workspace = os.path.join(base_dir, f"workspace-{port}")
    for folder in (workspace,):
        os.makedirs(folder, exist_ok=True)
        chown_tree(folder)
    env = runtime_env(token, extra_env)
    manifest = manifest or manifest_with_tools([], flavor)
    path = os.path.join(base_dir, f"manifest-{port}.json")
    with open(path, "w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
    os.chmod(path, 0o644)
    argv = mlws_command() + ["start", "--manifest", path, "--port", str(port), "--bind", LOOPBACK,
                             "--tools", tools, "--runtime-dir", runtime_dir, "--workspace-dir", workspace]
    # `mlws start` drops privileges itself: start it as root (as CI and the image do).
    proc = group.add(spawn(f"mlws-start-{port}", argv, base_dir, env, as_server_user=False))
    base_url = "/".join(part for part in env.get("WORKSPACE_BASE_URL", "/").split("/") if part)
    rt = Runtime(proc, port, "/" + base_url if base_url else "", token, runtime_dir, workspace, manifest)
    if wait:
        wait_http_ok(f"http://{LOOPBACK}:{port}{rt.base_url}/{wait}", timeout=timeout, proc=proc)
    return rt


# ---- Jupyter kernels and websocket round trips -----------------------------------------------

def start_kernel(base: str, headers: dict[str, str], unix: str | None = None) -> str:
    """POST <base>/api/kernels (over the unix socket `unix` when given; base then e.g. http://localhost)."""
    status, _, body = http("POST", f"{base}/api/kernels", {**headers, "Content-Type": "application/json"}, b"{}",
                           unix=unix)
    if status not in (200, 201):
        raise RuntimeError(f"starting a kernel at {base} gave HTTP {status}: {body[:300]!r}")
    return json.loads(body)["id"]


def execute_message(code: str, session: str) -> tuple[str, dict]:
    msg_id = uuid.uuid4().hex
    return msg_id, {
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "bench", "session": session,
                   "date": "", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }


async def kernel_round_trip(ws, session: str, code: str = "1+1", timeout: float = 30.0) -> tuple[float, dict]:
    """Send one execute_request; return (seconds to its execute_reply, the reply's content)."""
    msg_id, message = execute_message(code, session)
    start = time.perf_counter()
    await ws.send_str(json.dumps(message))
    deadline = start + timeout
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise TimeoutError(f"no execute_reply for {msg_id} within {timeout}s")
        msg = await asyncio.wait_for(ws.receive(), remaining)
        if msg.type.name != "TEXT":
            raise ConnectionError(f"websocket closed or failed while waiting for a reply: {msg.type.name}")
        data = json.loads(msg.data)
        if data.get("msg_type") == "execute_reply" and data.get("parent_header", {}).get("msg_id") == msg_id:
            return time.perf_counter() - start, data["content"]


# ---- wrk ---------------------------------------------------------------------------------------

WRK_REPORT = """
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
                 + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "errors": %d, "status_errors": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f}\\n',
    summary.requests, summary.duration, errors, summary.errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


def run_wrk(url: str, headers: dict[str, str], connections: int, seconds: float, threads: int | None = None) -> dict:
    """wrk in its own process; returns requests/s, p50/p99 in ms, error counts. `rps` counts good
    answers only (2xx/3xx: wrk's "Non-2xx or 3xx" are left out, so a fast error page cannot pass for
    throughput); `rps_all` counts every answer. Latencies are wrk's, over every answer."""
    script = os.path.join(tempfile.gettempdir(), "mlws-wrk-report.lua")
    if not os.path.exists(script):
        with open(script, "w") as handle:
            handle.write(WRK_REPORT)
    threads = threads or min(connections, 2)
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--latency", "-s", script,
            "--timeout", "10s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^WRKJSON (.*)$", out.stdout, re.M)
    if not match:
        raise RuntimeError(f"wrk gave no report for {url}: {out.stdout[-500:]} {out.stderr[-500:]}")
    raw = json.loads(match.group(1))
    return {
        "rps": (raw["requests"] - raw["status_errors"]) / (raw["duration_us"] / 1e6),
        "rps_all": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "requests": raw["requests"],
        "errors": raw["errors"],
        "status_errors": raw["status_errors"],
    }


# ---- a recording backend (the marker the security tests check) --------------------------------

class RecordingServer:
    """A tiny HTTP server on 127.0.0.1 that answers every request (any method, websocket
    upgrades included) with 200 "BACKEND REACHED" and records it: the marker a request leaves
    when it got past the gateway."""

    def __init__(self, name: str, port: int = 0, record_file: str | None = None):
        import http.server
        import threading

        self.name = name
        self.requests: list[dict] = []
        self.record_file = record_file
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                record = {"method": self.command, "path": self.path, "headers": dict(self.headers)}
                recorder.requests.append(record)
                if recorder.record_file:
                    with open(recorder.record_file, "a") as handle:
                        handle.write(json.dumps(record) + "\n")
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                body = b"BACKEND REACHED: " + recorder.name.encode() + b"\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = do_HEAD = do_PROPFIND = _any

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def recording_tool(name: str, port: int, folder: str) -> tuple[dict, str]:
    """A manifest tool whose one process is a RecordingServer (this file, copied into `folder` so the
    runtime's unprivileged user can run it). Returns (tool, the file its requests are recorded in)."""
    script = os.path.join(folder, "recording_server.py")
    if not os.path.exists(script):
        shutil.copyfile(os.path.abspath(__file__), script)
        os.chmod(script, 0o644)
    record_file = os.path.join(folder, f"recorded-{name}.jsonl")
    open(record_file, "a").close()
    chown_tree(folder)
    tool = {
        "name": name, "description": f"recording server standing in for {name}", "port": port, "health": False,
        "route": {"prefix": f"/tools/{name}/", "strip_prefix": True, "websockets": True}, "env": {}, "menu": [],
        "processes": [{"name": "server", "command": [sys.executable, script, "record-server", "{port}", name, record_file],
                       "env": {}, "ready": {"tcp": port}}],
    }
    return tool, record_file


def recorded(record_file: str) -> list[dict]:
    with open(record_file) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def static_tool(name: str, port: int, base_dir: str) -> dict:
    """A manifest tool whose process is nginx serving the 1 KiB page (the benchmark's named tool)."""
    folder = os.path.join(base_dir, f"{name}-nginx")
    root = os.path.join(folder, "root")
    os.makedirs(os.path.join(folder, "tmp"), exist_ok=True)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "index.html"), "w") as handle:
        handle.write(TOOL_PAGE[:1024])
    conf = os.path.join(folder, "nginx.conf")
    with open(conf, "w") as handle:
        handle.write(NGINX_COMMON.format(dir=folder, body=f"""
    server {{
        listen {LOOPBACK}:{port};
        keepalive_requests 100000;
        root {root};
    }}"""))
    chown_tree(folder)
    return {
        "name": name, "description": "1 KiB static page served by nginx", "port": port, "health": False,
        "route": {"prefix": f"/tools/{name}/", "strip_prefix": True, "websockets": True}, "env": {}, "menu": [],
        "processes": [{"name": "server", "command": ["nginx", "-p", folder, "-c", conf, "-e",
                                                     os.path.join(folder, "error.log"), "-g", "daemon off;"],
                       "env": {}, "ready": {"tcp": port}}],
    }


# ---- a raw HTTP client: the exact request line and headers, nothing normalised -----------------

def raw_request(port: int, method: str, target: str, headers: dict[str, str] | None = None,
                body: bytes = b"", timeout: float = 10.0) -> tuple[int, bytes, float]:
    """Send one request as written (no client-side path normalisation); return (status, head+body
    start, seconds). Status 0: the connection closed without a status line."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {LOOPBACK}:{port}", "Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    start = time.monotonic()
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while len(received) < 65536:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                raise TimeoutError(f"{method} {target}: no complete answer within {timeout}s")
            if not chunk:
                break
            received += chunk
            if b"\r\n\r\n" in received and (method == "HEAD" or received.startswith(b"HTTP/1.1 101")):
                break
    took = time.monotonic() - start
    match = re.match(rb"HTTP/1\.[01] (\d{3})", received)
    return (int(match.group(1)) if match else 0), received[:2000], took


def _record_server_main(argv: list[str]) -> int:
    port, name, record_file = int(argv[0]), argv[1], argv[2]
    server = RecordingServer(name, port, record_file)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "record-server":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        sys.exit(_record_server_main(sys.argv[2:]))
    print("usage: harness.py record-server PORT NAME RECORD_FILE", file=sys.stderr)
    sys.exit(2)
