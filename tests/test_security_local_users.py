"""Another Unix user on the same host cannot reach the workspace's backends around the gateway.

Runs the generated minimal manifest with the real tools (the `ws` fixture of tests/test_tools_live.py,
fixed ports and display :1, so run it under `flock /tmp/mlws-live.lock`), then acts as a second
user, `mlws-intruder` (created when missing; the tests run as root):

* every TCP socket the workspace user listens on (/proc/net/tcp, tcp6: state 0A, uid column) must
  be sshd (key-only: refused without a key), a Jupyter kernel port (HMAC-signed messages) or a
  tool that refuses unauthenticated requests (Glances: 401 without the per-start secret);
* every unix socket under the runtime folder refuses the intruder's connect() with EACCES (the
  folder is 0700), while the workspace user connects (positive control);
* the X display :1 refuses the intruder and even the workspace user without the cookie, accepts the
  cookie holder; Xvnc has no abstract socket (@/tmp/.X11-unix/X1, which has no permissions);
* the gateway still reaches every backend for a logged-in user.
"""
from __future__ import annotations

import errno
import glob
import json
import os
import pwd
import socket
import stat
import subprocess

import pytest
import requests

from tests.runtime_helpers import session_with_token
from tests.test_tools_live import BASE, TOKEN, ws  # noqa: F401 (the module's workspace fixture)

INTRUDER = "mlws-intruder"
SSH_PORT = 2222  # spec/tools/ssh.toml
GLANCES_PORT = 8053  # spec/tools/glances.toml: the one tool on TCP, behind its own basic auth


@pytest.fixture(scope="module")
def intruder() -> pwd.struct_passwd:
    assert os.geteuid() == 0, "these tests act as two users: run them as root"
    try:
        return pwd.getpwnam(INTRUDER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", INTRUDER], check=True)
        return pwd.getpwnam(INTRUDER)


@pytest.fixture(scope="module")
def owner(ws) -> pwd.struct_passwd:  # noqa: F811
    return pwd.getpwuid(os.stat(ws.runtime_dir).st_uid)


def as_user(user: pwd.struct_passwd, argv: list[str], env: dict[str, str] | None = None, **kwargs):
    def drop():
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": user.pw_dir, **(env or {})}
    return subprocess.run(argv, preexec_fn=drop, env=environment, capture_output=True, text=True,
                          timeout=60, cwd="/", **kwargs)


CONNECT = """
import json, socket, sys
result = {}
for path in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(path)
        result[path] = "connected"
    except OSError as error:
        result[path] = error.errno
    finally:
        s.close()
print(json.dumps(result))
"""


def connect_unix_as(user, paths: list[str]) -> dict:
    done = as_user(user, ["/usr/bin/python3", "-c", CONNECT, json.dumps(paths)])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def tree_socket_inodes(root: int) -> set[str]:
    """Inodes of the sockets held by `root` and every process below it (the workspace's own: other
    processes of the same user on this machine, a benchmark say, are not the workspace's)."""
    parents: dict[int, int] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    tree, grown = {root}, True
    while grown:
        below = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= below
        grown = bool(below)
    inodes = set()
    for pid in tree:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:["):-1])
        except OSError:
            pass
    return inodes


def tcp_listeners(uid: int, inodes: set[str] | None = None) -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[7]) == uid and (inodes is None or fields[9] in inodes):
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def kernel_ports(runtime_dir: str) -> set[int]:
    """Ports named in the Jupyter kernels' connection files of the workspace (if any run)."""
    ports = set()
    for path in glob.glob("/home/*/.local/share/jupyter/runtime/kernel-*.json") + glob.glob(
            os.path.join(runtime_dir, "**", "kernel-*.json"), recursive=True):
        with open(path, encoding="utf-8") as handle:
            info = json.load(handle)
        ports |= {info[k] for k in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port") if k in info}
    return ports


def runtime_sockets(runtime_dir: str) -> list[str]:
    found = []
    for folder, _, files in os.walk(runtime_dir):
        for name in files:
            path = os.path.join(folder, name)
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                found.append(path)
    return sorted(found)


def test_every_tcp_listener_of_the_workspace_is_authenticated(ws, owner, intruder):  # noqa: F811
    listeners = tcp_listeners(owner.pw_uid, tree_socket_inodes(ws.process.pid))
    # The gateway's own public port is the one way in, and authenticates (checked elsewhere).
    listeners.discard(ws.port)
    kernels = kernel_ports(ws.runtime_dir)
    assert SSH_PORT in listeners and GLANCES_PORT in listeners, listeners  # positive control
    unexplained = sorted(listeners - {SSH_PORT, GLANCES_PORT} - kernels)
    assert unexplained == [], f"the workspace user listens on TCP ports {unexplained} nobody accounts for"

    # sshd: key-only; the intruder without a key of the workspace user is refused.
    refused = as_user(intruder, ["ssh", "-p", str(SSH_PORT), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                                 "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
                                 "-o", "IdentityFile=/dev/null", f"{owner.pw_name}@127.0.0.1", "true"])
    assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr, refused.stderr

    # Glances: everything but its status probe needs the per-start secret.
    probe = ("import sys, urllib.request, urllib.error\n"
             "try:\n    print(urllib.request.urlopen(sys.argv[1], timeout=10).status)\n"
             "except urllib.error.HTTPError as e:\n    print(e.code)\n")
    for path in ("/api/4/cpu", "/api/4/processlist", "/"):
        answer = as_user(intruder, ["/usr/bin/python3", "-c", probe, f"http://127.0.0.1:{GLANCES_PORT}{path}"])
        assert answer.stdout.strip() == "401", (path, answer.stdout, answer.stderr)
    wrong = requests.get(f"http://127.0.0.1:{GLANCES_PORT}/api/4/cpu", auth=("glances", "guess"), timeout=10)
    assert wrong.status_code == 401


def test_glances_secret_is_what_the_gateway_presents(ws):  # noqa: F811
    # Positive control: through the gateway (which adds the secret) the same API answers.
    session = session_with_token(ws, TOKEN)
    answer = session.get(ws.url(f"{BASE}/tools/glances/api/4/cpu"), timeout=10)
    assert answer.status_code == 200 and "total" in answer.json()


def test_unix_sockets_refuse_another_user_and_serve_the_workspace_user(ws, owner, intruder):  # noqa: F811
    sockets = runtime_sockets(ws.runtime_dir)
    names = {os.path.relpath(path, ws.runtime_dir) for path in sockets}
    for tool in ("jupyter", "vscode", "vnc", "netdata", "ungit", "tensorboard"):
        assert f"sockets/{tool}.sock" in names, names
    assert "tools/vnc/rfb.sock" in names, names
    assert stat.S_IMODE(os.stat(ws.runtime_dir).st_mode) == 0o700
    intruder_result = connect_unix_as(intruder, sockets)
    assert all(result == errno.EACCES for result in intruder_result.values()), intruder_result
    owner_result = connect_unix_as(owner, sockets)
    # Positive control: the same sockets accept their user (the login socket included).
    assert all(result == "connected" for result in owner_result.values()), owner_result


def test_tcp_ports_the_tools_used_to_open_are_closed(ws):  # noqa: F811
    # 8090 Jupyter, 8050 Netdata, 8051 ungit, 8054 code-server, 6901 noVNC, 6006 TensorBoard,
    # 5901 VNC, 8125 statsd, 6000+1 X11 over TCP.
    for port in (8090, 8050, 8051, 8054, 6901, 6006, 5901, 8125, 6001):
        with socket.socket() as sock:
            sock.settimeout(1)
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"something listens on 127.0.0.1:{port}"


def test_x_display_needs_the_per_start_cookie(ws, owner, intruder):  # noqa: F811
    xauthority = os.path.join(ws.runtime_dir, "tools", "vnc", "Xauthority")
    assert stat.S_IMODE(os.stat(xauthority).st_mode) == 0o600
    assert os.path.exists("/tmp/.X11-unix/X1")
    refused = as_user(intruder, ["xdpyinfo", "-display", ":1"])
    assert refused.returncode != 0 and "unable to open display" in refused.stderr, refused.stdout[:200]
    # Being the workspace user is not enough: the cookie is what opens the display.
    no_cookie = as_user(owner, ["xdpyinfo", "-display", ":1"], env={"XAUTHORITY": "/nonexistent"})
    assert no_cookie.returncode != 0 and "Authorization required" in no_cookie.stderr, no_cookie.stderr
    allowed = as_user(owner, ["xdpyinfo", "-display", ":1"], env={"XAUTHORITY": xauthority})
    assert allowed.returncode == 0 and "name of display:    :1" in allowed.stdout, allowed.stderr
    # No abstract-namespace X socket (no file permissions there); no X11 over TCP.
    with open("/proc/net/unix", encoding="ascii") as handle:
        assert "@/tmp/.X11-unix/X1" not in handle.read()


def test_gateway_reaches_every_backend(ws):  # noqa: F811
    session = session_with_token(ws, TOKEN)
    for path in ("/api/status", "/tools/vscode/healthz", "/tools/vnc/vnc.html", "/tools/netdata/api/v1/info",
                 "/tools/ungit/", "/tools/tensorboard/data/runs", "/tools/glances/api/4/status"):
        answer = session.get(ws.url(BASE + path), timeout=20)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:200])
