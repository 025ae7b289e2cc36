"""Helpers for the runtime tests: start the real runtime (nginx, Jupyter, supervisor) on loopback.

Run as root (CI), the runtime drops to an unprivileged user: $NB_USER, else `mlws` (created with
useradd when missing). That user must be able to run this Python (a venv outside /root, see
docs/runtime.md) and to read the checkout.
"""
from __future__ import annotations

import copy
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import requests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_MANIFEST = os.path.join(REPO, "tests", "fixtures", "runtime-manifest.json")
ARTIFACTS = os.path.join(REPO, "test-artifacts")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unprivileged_user() -> str | None:
    """The unprivileged user the runtime drops to when the tests run as root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("NB_USER") or "mlws"
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", name], check=True)
    return name


def checkout_readable_by(user: str | None) -> bool:
    if user is None:
        return True
    probe = os.path.join(REPO, "runtime", "launch.py")
    return subprocess.run(["runuser", "-u", user, "--", "test", "-r", probe]).returncode == 0


def shared_tempdir(prefix: str) -> str:
    """A temp folder the dropped user may use (mkdtemp makes 0700 folders owned by root)."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    return path


def runtime_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment: the interpreter's bin folder first, so `jupyter` is this venv's."""
    bin_dir = os.path.dirname(sys.executable)
    env = {
        "PATH": os.pathsep.join([bin_dir, "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]),
        "LANG": "C.UTF-8",
        "MAX_NUM_THREADS": "2",
        "INCLUDE_TUTORIALS": "true",
    }
    user = unprivileged_user()
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    elif checkout_readable_by(user):
        env["PYTHONPATH"] = REPO
    # else: the venv's installed copy of mlws runs (scripts/install-deps installs one).
    if user:
        env["NB_USER"] = user
    env.update(extra or {})
    return env


def write_manifest(folder: str, tools: tuple[str, ...] | None = None) -> tuple[str, dict[str, int]]:
    """The fixture manifest with free ports; returns its path and {tool: port}."""
    with open(FIXTURE_MANIFEST, encoding="utf-8") as handle:
        data = json.load(handle)
    data = copy.deepcopy(data)
    ports = {}
    kept = []
    for tool in data["tools"]:
        if tools is not None and tool["name"] not in tools and not tool.get("health"):
            continue
        if tool.get("port"):
            old = tool["port"]
            tool["port"] = ports[tool["name"]] = free_port()
            for process in tool["processes"]:
                if (process.get("ready") or {}).get("tcp") == old:
                    process["ready"]["tcp"] = tool["port"]
        kept.append(tool)
    data["tools"] = kept
    path = os.path.join(folder, "manifest.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    os.chmod(path, 0o644)
    return path, ports


class Workspace:
    """One running `mlws start` (python -m runtime start) on 127.0.0.1:<port>."""

    def __init__(self, env: dict[str, str] | None = None, args: tuple[str, ...] = (), name: str = "ws",
                 manifest_tools: tuple[str, ...] | None = None):
        self.folder = shared_tempdir(f"mlws-test-{name}-")
        self.workspace_dir = os.path.join(self.folder, "workspace")
        self.runtime_dir = os.path.join(self.folder, "run")
        self.manifest, self.tool_ports = write_manifest(self.folder, manifest_tools)
        self.port = free_port()
        self.env = runtime_env(env)
        self.args = args
        self.output: list[str] = []
        self.process: subprocess.Popen | None = None
        base = self.env.get("JUPYTERHUB_SERVICE_PREFIX") or self.env.get("WORKSPACE_BASE_URL", "")
        from runtime.settings import normalise_base_url

        self.base = normalise_base_url(base) if base else ""
        self.scheme = "https" if self.env.get("WORKSPACE_SSL_ENABLED", "").lower() in ("true", "on") else "http"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "runtime", "start",
            "--manifest", self.manifest,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--runtime-dir", self.runtime_dir,
            "--workspace-dir", self.workspace_dir,
            *self.args,
        ]

    def start(self, wait: bool = True, timeout: float = 90) -> "Workspace":
        self.process = subprocess.Popen(
            self.command(), env=self.env, cwd=self.folder,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        )
        threading.Thread(target=self._read_output, daemon=True).start()
        if wait:
            self.wait_healthy(timeout)
        return self

    def _read_output(self) -> None:
        assert self.process and self.process.stdout
        for line in self.process.stdout:
            self.output.append(line)

    def text(self) -> str:
        return "".join(self.output)

    def wait_for_output(self, fragment: str, timeout: float = 10) -> str:
        """The output once it contains `fragment` (or as it is at the deadline). A line a tool's
        service logs while it answers reaches us through supervisord's pipe a little later than
        the answer itself."""
        deadline = time.monotonic() + timeout
        while fragment not in self.text() and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.text()

    def wait_healthy(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"mlws start exited with {self.process.returncode}:\n{self.text()}")
            try:
                if requests.get(self.url("/healthy"), timeout=2, verify=False).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"workspace not healthy after {timeout}s:\n{self.text()[-5000:]}")

    def token(self) -> str:
        for line in self.text().splitlines():
            if line.strip().startswith("Token: "):
                return line.strip()[len("Token: "):].split("   (")[0]
        raise AssertionError("no token in the output:\n" + self.text())

    def stop(self, timeout: float = 20) -> float:
        """SIGTERM, wait; returns the seconds it took to exit."""
        if not self.process or self.process.poll() is not None:
            return 0.0
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise
        return time.monotonic() - began

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def session_with_token(ws: Workspace, token: str) -> requests.Session:
    """A browser-like session logged in through `?token=` (cookie kept by the session)."""
    session = requests.Session()
    session.verify = False
    # As a browser opens the token link: a navigation (the gateway trades the token for a cookie).
    answer = session.get(ws.url(f"{ws.base}/lab?token={requests.utils.quote(token, safe='')}"), allow_redirects=False,
                         headers={"Accept": "text/html", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "none"})
    assert answer.status_code == 302, answer.text
    return session


# A process that leaves a daemon behind, the way ssh-agent, gpg-agent or `nohup cmd &` do: it
# forks, the child calls setsid (a session and process group of its own) and forks the daemon,
# then exits, so the daemon is an orphan outside every supervisor program's process group.
# argv: PID_FILE MODE THEN. The daemon writes its pid to PID_FILE (the process itself writes its
# own to PID_FILE.main first); MODE "stubborn" makes the daemon ignore SIGTERM; THEN is "sleep"
# (keep running, like a supervised program) or an exit code. No braces: manifest commands treat
# them as placeholders.
DAEMONIZE = r"""
import os, signal, sys, time
pid_file, mode, then = sys.argv[1:4]
with open(pid_file + '.main.tmp', 'w') as handle:
    handle.write(str(os.getpid()))
os.replace(pid_file + '.main.tmp', pid_file + '.main')
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        if mode == 'stubborn':
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(pid_file + '.tmp', 'w') as handle:
            handle.write(str(os.getpid()))
        os.replace(pid_file + '.tmp', pid_file)
        while True:
            time.sleep(60)
    os._exit(0)
os.wait()
while not os.path.exists(pid_file):
    time.sleep(0.01)
if then == 'sleep':
    while True:
        time.sleep(60)
sys.exit(int(then))
"""


def read_pid(path: str, timeout: float = 30) -> int:
    """The pid a process wrote to `path` (waits for the file)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} was not written within {timeout}s")
        time.sleep(0.05)
    with open(path, encoding="utf-8") as handle:
        return int(handle.read())


def alive(pid: int) -> bool:
    """Does pid exist and is it not a zombie?"""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[:1] != ["Z"]
