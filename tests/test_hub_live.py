"""The workspace under a real JupyterHub: two users, each with `mlws start` as the single-user server.

A real JupyterHub (PyPI) with its real proxy (configurable-http-proxy, npm, from
scripts/install-tools), a dict of two test users (tests/fixtures/hub/jupyterhub_config.py) and
LocalProcessSpawner, which starts `python -m runtime start` with the generated minimal manifest as
each user's Unix account (the hub runs as root, as in CI). Everything goes through the hub's
public port with browser-like sessions (cookies, Origin, Sec-Fetch headers): log in, spawn,
JupyterLab, a kernel over websockets, tools behind our gateway (VS Code, ungit, TensorBoard), and
`/tools/<port>/` for a server the user's own kernel starts.

Security figures, printed at the end of the run (and written to test-artifacts/hub-security.txt):
user B's cookies and API token against a probe corpus over every route and tool of user A
(0 of N reached; user A's own credentials reach them: the positive control); an unauthenticated
visitor against both users' and the hub's routes (nothing but the hub login and the public
readiness endpoints); no process of A's is left once the hub stopped A's server; the idle culler
(jupyterhub-idle-culler) stops B's server once B is idle.

The tools run as two users at once; the module uses free ports, but ungit and the kernels share
the machine with tests/test_tools_live.py: run it under `flock /tmp/mlws-live.lock`.
"""
from __future__ import annotations

import datetime
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

import jupyterhub
import pytest
import requests
import websocket

from tests.runtime_helpers import ARTIFACTS, REPO, alive, free_port, runtime_env, shared_tempdir

USERS = ("mlws-hub-a", "mlws-hub-b")
TOOLS = ("vscode", "ungit", "tensorboard")  # tools on unix sockets: two users can run them at once
HUB_CONFIG = os.path.join(REPO, "tests", "fixtures", "hub", "jupyterhub_config.py")
MANIFEST = os.path.join(REPO, "flavors", "minimal.manifest.json")
SPAWN_TIMEOUT = 180  # seconds, polled: code-server and JupyterLab starting for two users on 2 cores
ACTIVITY_INTERVAL = 5  # JUPYTERHUB_ACTIVITY_INTERVAL: how often Jupyter reports activity to the hub


# --- the figures, printed in the terminal summary -------------------------------------------------

class FiguresPlugin:
    """Collects the security figures and prints them after the test run (with or without -s)."""

    name = "mlws-hub-figures"

    def __init__(self):
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter):
        if self.lines:
            terminalreporter.section("JupyterHub security figures (tests/test_hub_live.py)")
            for line in self.lines:
                terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def figures(request):
    plugin = request.config.pluginmanager.get_plugin(FiguresPlugin.name)
    if plugin is None:
        plugin = FiguresPlugin()
        request.config.pluginmanager.register(plugin, FiguresPlugin.name)
    yield plugin
    os.makedirs(ARTIFACTS, exist_ok=True)
    with open(os.path.join(ARTIFACTS, "hub-security.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(plugin.lines) + "\n")


def record(figures: FiguresPlugin, line: str) -> None:
    figures.lines.append(line)
    print(line)


# --- the hub --------------------------------------------------------------------------------------

def tool_bin() -> str:
    result = subprocess.run([os.path.join(REPO, "scripts", "install-tools"), "--print-bin"],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", name], check=True)
        return pwd.getpwnam(name)


def processes_of(uid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose real uid is `uid`."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/status", encoding="utf-8") as handle:
                status = handle.read()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        uids = re.search(r"^Uid:\s+(\d+)", status, re.M)
        if uids and int(uids.group(1)) == uid and alive(int(entry)):
            found.append((int(entry), cmdline))
    return found


class Hub:
    def __init__(self):
        assert os.geteuid() == 0, "the hub spawns each user's server as that Unix user: run as root"
        self.folder = shared_tempdir("mlws-hub-")
        self.users = {name: ensure_user(name) for name in USERS}
        for user in self.users.values():  # the test users' state of an earlier run
            for folder in (".mlws", "workspace"):
                shutil.rmtree(os.path.join(user.pw_dir, folder), ignore_errors=True)
        self.passwords = {name: secrets.token_urlsafe(12) for name in USERS}
        self.admin_token = secrets.token_hex(24)
        self.public_port, self.hub_port, self.proxy_api_port = free_port(), free_port(), free_port()
        self.output: list[str] = []
        bin_dir = tool_bin()
        chp = os.path.join(bin_dir, "configurable-http-proxy")
        assert os.access(chp, os.X_OK), f"{chp} is missing: run scripts/install-tools"
        manifest = os.path.join(self.folder, "minimal.manifest.json")
        shutil.copyfile(MANIFEST, manifest)  # a copy every user can read
        os.chmod(manifest, 0o644)
        env = runtime_env()
        env.pop("NB_USER", None)
        self.path = os.pathsep.join([bin_dir, env["PATH"]])
        spawner_env = {
            "PATH": self.path,
            "LANG": "C.UTF-8",
            "AUTHENTICATE_VIA_JUPYTER": "true",
            "MLWS_TOOLS": ",".join(TOOLS),
            "INCLUDE_TUTORIALS": "false",
            "MAX_NUM_THREADS": "2",
            "JUPYTERHUB_ACTIVITY_INTERVAL": str(ACTIVITY_INTERVAL),
        }
        if env.get("PYTHONPATH"):
            spawner_env["PYTHONPATH"] = env["PYTHONPATH"]
        self.settings_file = os.path.join(self.folder, "hub-settings.json")
        with open(self.settings_file, "w", encoding="utf-8") as handle:
            json.dump({
                "folder": self.folder,
                "public_port": self.public_port,
                "hub_port": self.hub_port,
                "proxy_api_port": self.proxy_api_port,
                "chp": chp,
                "passwords": self.passwords,
                "admin_token": self.admin_token,
                "cmd": [sys.executable, "-m", "runtime", "start", "--manifest", manifest],
                "environment": spawner_env,
            }, handle)
        os.chmod(self.settings_file, 0o600)
        self.process: subprocess.Popen | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def start(self) -> None:
        env = {"PATH": self.path, "LANG": "C.UTF-8", "MLWS_HUB_SETTINGS": self.settings_file,
               "HOME": "/root", "PYTHONPATH": os.environ.get("PYTHONPATH", REPO)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", HUB_CONFIG], cwd=self.folder, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"jupyterhub exited:\n{self.text()[-5000:]}"
            try:
                if requests.get(self.url("/hub/api/"), timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the hub did not answer within 60 s:\n{self.text()[-5000:]}")

    def _read(self) -> None:
        assert self.process and self.process.stdout
        for line in self.process.stdout:
            self.output.append(line)

    def text(self) -> str:
        return "".join(self.output)

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, self.url("/hub/api" + path), timeout=30,
                                headers={"Authorization": f"token {self.admin_token}"}, **kwargs)

    def user_token(self, name: str) -> str:
        answer = self.api("POST", f"/users/{name}/tokens", json={"note": "mlws hub test"})
        assert answer.status_code in (200, 201), answer.text
        return answer.json()["token"]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            # Whatever the hub failed to stop (a failed test may leave a server): the proxy by its
            # pid file, then each test user's processes. The leak checks ran before this.
            for pid_file in ("proxy.pid",):
                try:
                    with open(os.path.join(self.folder, pid_file), encoding="utf-8") as handle:
                        os.kill(int(handle.read().strip()), signal.SIGTERM)
                except (OSError, ValueError):
                    pass
            for user in self.users.values():
                for pid, _ in processes_of(user.pw_uid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def hub():
    instance = Hub()
    try:
        instance.start()
        yield instance
    finally:
        instance.cleanup()


# --- a browser-like user --------------------------------------------------------------------------

class Browser:
    """A requests session that sends what a browser sends: cookies by path, Origin on websockets
    and form posts, Sec-Fetch headers, the hub's XSRF token on API calls."""

    def __init__(self, hub: Hub, name: str):
        self.hub, self.name = hub, name
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "Mozilla/5.0 (mlws hub test)"
        self.prefix = f"/user/{name}"

    def navigate(self, path: str, **kwargs) -> requests.Response:
        headers = {"Accept": "text/html,*/*", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "same-origin",
                   "Sec-Fetch-Dest": "document", **kwargs.pop("headers", {})}
        return self.session.get(self.hub.url(path), headers=headers, timeout=60, **kwargs)

    def fetch(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Accept": "application/json", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin",
                   "Origin": self.hub.origin, **kwargs.pop("headers", {})}
        xsrf = self.session.cookies.get("_xsrf", path=self.cookie_path(path)) or self.any_xsrf(path)
        if xsrf:
            headers.setdefault("X-XSRFToken", xsrf)
        return self.session.request(method, self.hub.url(path), headers=headers, timeout=60, **kwargs)

    @staticmethod
    def cookie_path(path: str) -> str:
        return "/hub/" if path.startswith("/hub/") else path

    def any_xsrf(self, path: str) -> str | None:
        best = None
        for cookie in self.session.cookies:
            if cookie.name == "_xsrf" and path.startswith(cookie.path.rstrip("/") or "/"):
                if best is None or len(cookie.path) > len(best.path):
                    best = cookie
        return best.value if best else None

    def cookie_header(self, path: str) -> str:
        """The Cookie header a browser sends to `path` (the cookies whose Path covers it)."""
        request = requests.Request("GET", self.hub.url(path))
        prepared = self.session.prepare_request(request)
        return prepared.headers.get("Cookie", "")

    def login(self) -> None:
        page = self.navigate("/hub/login")
        assert page.status_code == 200, page.text[:500]
        xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text)
        form = {"username": self.name, "password": self.hub.passwords[self.name]}
        if xsrf:
            form["_xsrf"] = xsrf.group(1)
        answer = self.session.post(self.hub.url("/hub/login?next="), data=form, allow_redirects=False, timeout=60,
                                   headers={"Origin": self.hub.origin, "Sec-Fetch-Mode": "navigate",
                                            "Sec-Fetch-Site": "same-origin", "Referer": self.hub.url("/hub/login")})
        assert answer.status_code == 302, f"login of {self.name}: {answer.status_code} {answer.text[:500]}"

    def spawn_and_open_lab(self) -> requests.Response:
        """What the hub's "Start My Server" does, then JupyterLab through the hub's OAuth hand-over."""
        self.navigate("/hub/spawn")
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while time.monotonic() < deadline:
            model = self.hub.api("GET", f"/users/{self.name}").json()
            server = (model.get("servers") or {}).get("")
            if server and server.get("ready"):
                break
            if not model.get("pending") and not server:
                raise AssertionError(f"the spawn of {self.name} failed:\n{self.hub.text()[-8000:]}")
            time.sleep(1)
        else:
            raise AssertionError(f"{self.name}'s server not ready after {SPAWN_TIMEOUT}s:\n{self.hub.text()[-8000:]}")
        return self.navigate(f"{self.prefix}/lab")

    def websocket(self, path: str, cookie: str | None = None, headers: list[str] | None = None):
        return websocket.create_connection(
            f"ws://127.0.0.1:{self.hub.public_port}{path}", timeout=30,
            origin=self.hub.origin,
            cookie=self.cookie_header(path) if cookie is None else cookie,
            header=headers or [])


@pytest.fixture(scope="module")
def users(hub):
    browsers = {name: Browser(hub, name) for name in USERS}
    for browser in browsers.values():
        browser.login()
    labs = {name: browser.spawn_and_open_lab() for name, browser in browsers.items()}
    for name, lab in labs.items():
        assert lab.status_code == 200, f"{name}: {lab.status_code} {lab.url}\n{lab.text[:500]}\n{hub.text()[-5000:]}"
    return browsers


def kernel_execute(browser: Browser, kernel_id: str, code: str, timeout: float = 60) -> str:
    """Run `code` in the kernel over its websocket; returns the text of its result and output."""
    ws = browser.websocket(f"{browser.prefix}/api/kernels/{kernel_id}/channels")
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": browser.name,
                       "session": uuid.uuid4().hex, "version": "5.3", "date": datetime.datetime.now().isoformat()},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        output = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(ws.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["msg_type"]
            if kind == "stream":
                output.append(message["content"]["text"])
            elif kind == "execute_result":
                output.append(message["content"]["data"]["text/plain"])
            elif kind == "error":
                raise AssertionError(f"kernel error: {message['content']}")
            elif kind == "status" and message["content"]["execution_state"] == "idle" and output:
                return "".join(output)
        raise AssertionError(f"no result from the kernel within {timeout}s: {output}")
    finally:
        ws.close()


# A server the user's own kernel starts on a free loopback port: what /tools/<port>/ is for.
PORT_SERVER = """
import http.server, threading
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("port server of " + __import__("getpass").getuser()).encode()
        if self.path.startswith("/cookies"):
            body = (self.headers.get("Cookie") or "").encode()
        self.send_response(200); self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(server.server_address[1])
"""


@pytest.fixture(scope="module")
def kernels(users):
    """One kernel per user (started through the hub), and the port of the server it runs."""
    result = {}
    for name, browser in users.items():
        answer = browser.fetch("POST", f"{browser.prefix}/api/kernels", json={"name": "python3"})
        assert answer.status_code == 201, f"{name}: {answer.status_code} {answer.text[:500]}"
        kernel_id = answer.json()["id"]
        port = int(kernel_execute(browser, kernel_id, PORT_SERVER).strip())
        result[name] = {"id": kernel_id, "port": port}
    return result


def wait_for_tool(browser: Browser, path: str, expect: str, timeout: float = 120) -> requests.Response:
    """The tools start beside Jupyter: until one answers, the gateway serves its 503 starting page."""
    deadline = time.monotonic() + timeout
    while True:
        answer = browser.navigate(path)
        if answer.status_code == 200 and expect in answer.text:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: {answer.status_code} {answer.text[:300]}")
        time.sleep(1)


# --- what each user gets ----------------------------------------------------------------------------

def test_each_user_gets_jupyterlab_through_the_hub(hub, users):
    for name, browser in users.items():
        lab = browser.navigate(f"{browser.prefix}/lab")
        assert lab.status_code == 200 and "JupyterLab" in lab.text
        # Jupyter knows the hub's user: the identity came from the hub's OAuth hand-over.
        me = browser.fetch("GET", f"{browser.prefix}/api/me").json()
        assert me["identity"]["username"] == name
        # The work folder is the user's own (WORKSPACE_DIR in the user's home), written as that user.
        saved = browser.fetch("PUT", f"{browser.prefix}/api/contents/note.txt",
                              json={"type": "file", "format": "text", "content": f"{name}'s note"})
        assert saved.status_code in (200, 201), saved.text
        note = os.path.join(hub.users[name].pw_dir, "workspace", "note.txt")
        assert os.stat(note).st_uid == hub.users[name].pw_uid


def listeners(uid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket `uid` listens on (IPv4 table)."""
    found = set()
    with open("/proc/net/tcp", encoding="ascii") as handle:
        for row in handle.read().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and int(fields[7]) == uid:
                address, port = fields[1].split(":")
                found.add((".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)), int(port, 16)))
    return found


def server_address(hub: Hub, name: str) -> tuple[str, int]:
    """Where the hub's spawner told the user's server to listen (the hub logs the proxy route)."""
    routes = re.findall(rf"Adding user {name} to proxy /user/{name}/ => http://([0-9.]+):([0-9]+)", hub.text())
    assert routes, hub.text()[-3000:]
    return routes[-1][0], int(routes[-1][1])


def runtime_folder(hub: Hub, name: str) -> str:
    """The user's runtime folder: ~/.mlws/run-<port>, the default for the spawner's port."""
    return os.path.join(hub.users[name].pw_dir, ".mlws", f"run-{server_address(hub, name)[1]}")


def test_the_gateway_checks_the_hub_login_and_keeps_the_hub_token_out_of_its_configuration(hub, users):
    for name in USERS:
        conf = open(os.path.join(runtime_folder(hub, name), "nginx", "nginx.conf"), encoding="utf-8").read()
        assert "auth_request /_mlws/hub-auth;" in conf
        assert "proxy_cache_key $http_cookie$http_authorization;" in conf
        programs = os.path.join(runtime_folder(hub, name), "programs")
        jupyter = json.load(open(os.path.join(programs, "jupyter-server.json"), encoding="utf-8"))
        token = jupyter["env"]["JUPYTERHUB_API_TOKEN"]
        assert len(token) >= 32 and token not in conf
        # Only Jupyter gets the hub token; it gets its own socket as its service URL.
        assert jupyter["env"]["JUPYTERHUB_SERVICE_URL"].startswith("http+unix://")
        for other in os.listdir(programs):
            if other != "jupyter-server.json":
                assert token not in open(os.path.join(programs, other), encoding="utf-8").read(), other
        # Without the hub's login a tool sends the browser to the server's root, where Jupyter
        # starts the hub's OAuth login; /healthy answers for container health checks.
        answer = requests.get(hub.url(f"/user/{name}/tools/ungit/"), allow_redirects=False, timeout=30)
        assert answer.status_code == 302 and answer.headers["Location"] == f"/user/{name}/"
        assert requests.get(hub.url(f"/user/{name}/healthy"), timeout=30).status_code == 200


def test_the_server_binds_where_the_spawner_said(hub, users):
    for name in USERS:
        address, port = server_address(hub, name)
        mine = listeners(hub.users[name].pw_uid)
        assert (address, port) in mine, mine
        # Nothing of the workspace listens on every interface (the gateway took the spawner's address).
        assert not any(listen == ("0.0.0.0", port) for listen in mine)
        # The hub's readiness check, as the hub makes it: <server>/user/<name>/api, answered by
        # Jupyter through the gateway with the version header the hub compares with its own.
        ready = requests.get(f"http://{address}:{port}/user/{name}/api", timeout=10, allow_redirects=False)
        assert ready.status_code == 200 and ready.headers["X-JupyterHub-Version"] == jupyterhub.__version__


def test_a_kernel_over_websockets_computes(users, kernels):
    for name, browser in users.items():
        assert kernel_execute(browser, kernels[name]["id"], "1+1").strip() == "2"
        who = kernel_execute(browser, kernels[name]["id"], "import getpass; print(getpass.getuser())").strip()
        assert who == name


def test_tools_behind_the_gateway(users):
    for name, browser in users.items():
        wait_for_tool(browser, f"{browser.prefix}/tools/vscode/", "Microsoft Corporation", timeout=180)
        wait_for_tool(browser, f"{browser.prefix}/tools/ungit/", "ungit")
        runs = wait_for_tool(browser, f"{browser.prefix}/tools/tensorboard/data/runs", "[")
        assert runs.headers["Content-Type"].startswith("application/json")


def test_a_port_the_user_listens_on(hub, users, kernels):
    for name, browser in users.items():
        answer = browser.navigate(f"{browser.prefix}/tools/{kernels[name]['port']}/")
        assert answer.status_code == 200 and answer.text == f"port server of {name}", answer.text[:300]
    # The hub's cookies (and a __Host- spelling of them) never reach a port; the port's own do.
    a, b = USERS
    browser = users[a]
    path = f"/user/{a}/tools/{kernels[a]['port']}/cookies"
    sent = browser.cookie_header(path) + "; __Host-jupyterhub-user-x=1; port_own=kept"
    assert "jupyterhub-" in sent
    seen = requests.get(hub.url(path), headers={"Cookie": sent, "Origin": hub.origin}, timeout=30)
    assert seen.status_code == 200 and "port_own=kept" in seen.text and "jupyterhub-" not in seen.text, seen.text
    # A's gateway does not serve B's port (another user's listener), even to A.
    answer = users[a].navigate(f"/user/{a}/tools/{kernels[b]['port']}/")
    assert answer.status_code == 403 and "belongs to another user" in answer.text


# --- security figures -------------------------------------------------------------------------------

SECRET_NOTE = "secret of the victim: 7f3c"


def corpus(victim: str, kernel_id: str, port: int, terminal: str) -> list[tuple[str, str, dict | None]]:
    """Every route and tool of one user's server: (method or "WS", path, JSON body)."""
    base = f"/user/{victim}"
    http = [
        ("GET", base + "/"), ("GET", base + "/lab"), ("GET", base + "/tree"), ("GET", base + "/lab/tree/secret.txt"),
        ("GET", base + "/api/contents"), ("GET", base + "/api/contents/secret.txt"), ("GET", base + "/files/secret.txt"),
        ("GET", base + "/api/kernels"), ("GET", base + f"/api/kernels/{kernel_id}"), ("GET", base + "/api/sessions"),
        ("GET", base + "/api/terminals"), ("GET", base + "/api/me"), ("GET", base + "/api/status"),
        ("GET", base + "/api/kernelspecs"), ("GET", base + "/lab/api/settings"), ("GET", base + "/lab/api/workspaces"),
        ("GET", base + "/api/config/notebook"), ("GET", base + "/nbconvert/html/secret.txt"),
        ("GET", base + "/tools/vscode/"), ("GET", base + "/tools/vscode/healthz"), ("GET", base + "/tools/vscode/manifest.json"),
        ("GET", base + "/tools/ungit/"), ("GET", base + "/tools/ungit/api/gitversion"),
        ("GET", base + "/tools/tensorboard/"), ("GET", base + "/tools/tensorboard/data/runs"),
        ("GET", base + f"/tools/{port}/"), ("GET", base + f"/tools/{port}/anything?x=1"),
        ("GET", base + "/tooling/home"), ("GET", base + "/tooling/tools"), ("GET", base + "/tooling/storage"),
        ("GET", base + "/tooling/shares"),
    ]
    writes = [
        ("POST", base + "/api/kernels", {"name": "python3"}),
        ("POST", base + "/api/sessions", {"path": "probe.ipynb", "type": "notebook", "kernel": {"name": "python3"}}),
        ("POST", base + "/api/terminals", {}),
        ("PUT", base + "/api/contents/probe.txt", {"type": "file", "format": "text", "content": "written by a probe"}),
        # A share link for the victim's file would serve it to anyone holding the link.
        ("POST", base + "/tooling/shares", {"path": "secret.txt", "expires_hours": 1}),
    ]
    sockets = [
        ("WS", base + f"/api/kernels/{kernel_id}/channels"), ("WS", base + f"/terminals/websocket/{terminal}"),
        ("WS", base + "/api/events/subscribe"), ("WS", base + "/tools/ungit/socket.io/?EIO=4&transport=websocket"),
        ("WS", base + "/tools/vscode/"),
    ]
    return [(m, p, None) for m, p in http] + writes + [(m, p, None) for m, p in sockets]


def attempt(hub: Hub, method: str, path: str, body: dict | None, cookie: str, token: str | None,
            token_in_query: bool = False, xsrf: str | None = None) -> tuple[bool, str]:
    """One probe with exactly these credentials, as a browser on the hub's page would send it.
    Returns (reached, what came back): reached means the victim's server answered with success
    (2xx on a page under /user/, after following redirects as a browser does; 101 on a websocket)."""
    if token and token_in_query:
        path += ("&" if "?" in path else "?") + f"token={token}"
    headers = {"Origin": hub.origin, "Sec-Fetch-Site": "same-origin", "User-Agent": "Mozilla/5.0 (mlws hub test)"}
    if cookie:
        headers["Cookie"] = cookie
    if token and not token_in_query:
        headers["Authorization"] = f"token {token}"
    if xsrf:
        headers["X-XSRFToken"] = xsrf
    if method == "WS":
        try:
            ws = websocket.create_connection(f"ws://127.0.0.1:{hub.public_port}{path}", timeout=20,
                                             header=[f"{k}: {v}" for k, v in headers.items() if k != "Origin"],
                                             origin=hub.origin)
        except websocket.WebSocketBadStatusException as refused:
            return False, str(refused.status_code)
        except (OSError, websocket.WebSocketException) as error:
            return False, type(error).__name__
        ws.close()
        return True, "101"
    headers.update({"Accept": "text/html,application/json", "Sec-Fetch-Mode": "navigate" if method == "GET" else "cors"})
    location, answer = path, None
    for _ in range(10):  # follow redirects as a browser does, with the same credentials
        answer = requests.request(method, hub.url(location), headers=headers, json=body, timeout=60,
                                  allow_redirects=False)
        if answer.status_code in (301, 302, 303, 307, 308) and answer.headers.get("Location"):
            target = urllib.parse.urljoin(hub.url(location), answer.headers["Location"])
            if not target.startswith(hub.origin + "/"):
                return False, f"{answer.status_code} to {target[:80]}"  # another site: not the victim's
            location = target[len(hub.origin):]
            if answer.status_code == 303:
                method, body = "GET", None
            continue
        break
    final = location.split("?")[0]
    reached = 200 <= answer.status_code < 300 and final.startswith("/user/")
    return reached, f"{answer.status_code} at {final}"


@pytest.fixture(scope="module")
def tokens(hub, users):
    return {name: hub.user_token(name) for name in USERS}


@pytest.fixture(scope="module")
def terminals(users):
    result = {}
    for name, browser in users.items():
        answer = browser.fetch("POST", f"{browser.prefix}/api/terminals", json={})
        assert answer.status_code == 200, answer.text
        result[name] = answer.json()["name"]
        secret = browser.fetch("PUT", f"{browser.prefix}/api/contents/secret.txt",
                               json={"type": "file", "format": "text", "content": SECRET_NOTE})
        assert secret.status_code in (200, 201), secret.text
    return result


def credential_sets(owner: Browser, token: str) -> dict[str, tuple[str, str | None, bool]]:
    """The ways a user can present who they are: name -> (Cookie header, token, token in query)."""
    every_cookie = "; ".join(f"{cookie.name}={cookie.value}" for cookie in owner.session.cookies)
    own_server_cookie = next((c.value for c in owner.session.cookies if c.name == f"jupyterhub-user-{owner.name}"), "")
    return {
        "browser session (cookies by path)": ("", None, False),  # filled per path below
        "every cookie, whatever its path": (every_cookie, None, False),
        "own server's cookie under the victim's name": ("", None, False),
        "API token in Authorization": ("", token, False),
        "API token in ?token=": ("", token, True),
    }, own_server_cookie


def probe_as(hub: Hub, owner: Browser, token: str, victim: str, probes) -> tuple[dict[str, int], list[str]]:
    """Run every probe against `victim`'s server with each of `owner`'s credentials: how many
    probes each way of presenting them reached, and which."""
    sets, own_server_cookie = credential_sets(owner, token)
    reached, details = {}, []
    for label, (cookie, token_value, in_query) in sets.items():
        for method, path, body in probes:
            if label.startswith("browser session"):
                cookie = owner.cookie_header(path)
            elif label.startswith("own server's cookie"):
                cookie = f"jupyterhub-user-{victim}={own_server_cookie}"
            xsrf = owner.any_xsrf(path) if label.startswith("browser session") else None
            ok, what = attempt(hub, method, path, body, cookie, token_value, in_query, xsrf)
            reached[label] = reached.get(label, 0) + ok
            if ok:
                details.append(f"{label}: {method} {path} -> {what}")
    return reached, details


def test_another_users_cookies_and_tokens_reach_none_of_their_routes(hub, users, kernels, tokens, terminals, figures):
    a, b = USERS
    probes = corpus(a, kernels[a]["id"], kernels[a]["port"], terminals[a])
    # Positive control: A's own credentials reach A's routes through the same probes.
    own, _ = probe_as(hub, users[a], tokens[a], a, probes)
    foreign, details = probe_as(hub, users[b], tokens[b], a, probes)
    total = len(probes) * len(foreign)
    record(figures, f"user B's cookies and API token against user A's server: reached {sum(foreign.values())} "
                    f"of {total} probes ({len(probes)} routes and tools x {len(foreign)} ways to present them)")
    record(figures, "positive control, user A's own credentials on the same probes: "
                    + ", ".join(f"{label} {count}/{len(probes)}" for label, count in own.items()))
    assert sum(foreign.values()) == 0, "\n".join(details)
    # A's browser session and A's token (header) reach every one of the probes: the corpus can
    # succeed. (The hub refuses tokens in URLs, JupyterHub >= 5; the cookie sets with every path's
    # _xsrf cookie fail Jupyter's XSRF check on writes: both are attacks, not a user's way in.)
    assert own["browser session (cookies by path)"] == len(probes), own
    assert own["API token in Authorization"] == len(probes), own
    # And the victim's data stayed the victim's: the probe did not write.
    assert users[a].fetch("GET", f"/user/{a}/api/contents/probe.txt").status_code == 200  # A's own probe wrote it
    listing = [entry["name"] for entry in users[a].fetch("GET", f"/user/{a}/api/contents").json()["content"]]
    assert "secret.txt" in listing


PUBLIC_BY_DESIGN = ("/api", "/ping", "/healthy")  # per server: readiness (the hub's check), liveness


def test_unauthenticated_reaches_nothing_but_the_hub_login(hub, users, kernels, terminals, figures):
    probes = []
    for name in USERS:
        probes += corpus(name, kernels[name]["id"], kernels[name]["port"], terminals[name])
        probes += [("GET", f"/user/{name}{path}", None) for path in PUBLIC_BY_DESIGN]
    probes += [("GET", path, None) for path in (
        "/hub/home", "/hub/token", "/hub/admin", "/hub/spawn", "/hub/api/users", f"/hub/api/users/{USERS[0]}",
        "/hub/api/user", "/hub/api/proxy", "/hub/api/services", "/user/nobody/lab", "/")]
    probes += [("POST", f"/hub/api/users/{USERS[0]}/server", {}), ("POST", f"/hub/api/users/{USERS[0]}/tokens", {})]
    reached = {}
    for method, path, body in probes:
        ok, what = attempt(hub, method, path, body, "", None)
        if ok:
            reached[path] = what
    public = {f"/user/{name}{path}" for name in USERS for path in PUBLIC_BY_DESIGN}
    record(figures, f"unauthenticated: {len(probes)} probes over both users' servers and the hub; reached "
                    f"{len(set(reached) - public)} beyond the hub login; the {len(public)} readiness/liveness "
                    f"endpoints answer (version and status only)")
    assert set(reached) == public, reached
    for name in USERS:
        version = requests.get(hub.url(f"/user/{name}/api"), timeout=10).json()
        assert set(version) == {"version"}
        assert requests.get(hub.url(f"/user/{name}/ping"), timeout=10).text == "pong\n"
    # Everything else ends at the hub's login page.
    login = requests.get(hub.url(f"/user/{USERS[0]}/lab"), timeout=30)
    assert login.url.split("?")[0] == hub.url("/hub/login") and login.status_code == 200


def test_jupyter_reports_activity_to_the_hub(hub, users, kernels):
    a = USERS[0]
    before = hub.api("GET", f"/users/{a}").json()["servers"][""]["last_activity"]
    time.sleep(1)
    assert kernel_execute(users[a], kernels[a]["id"], "2+3").strip() == "5"
    deadline = time.monotonic() + 4 * ACTIVITY_INTERVAL + 15
    while time.monotonic() < deadline:
        after = hub.api("GET", f"/users/{a}").json()["servers"][""]["last_activity"]
        if after > before:
            break
        time.sleep(1)
    assert after > before, (before, after)
    # The posts come from the server itself (its own hub token), to $JUPYTERHUB_ACTIVITY_URL.
    assert f"POST /hub/api/users/{a}/activity ({a}@127.0.0.1)" in hub.text()


def test_stopping_a_server_from_the_hub_leaves_no_process_behind(hub, users, kernels, figures):
    a = USERS[0]
    uid = hub.users[a].pw_uid
    before = processes_of(uid)
    assert any("runtime start" in cmd for _, cmd in before) and any("code-server" in cmd or "node" in cmd for _, cmd in before)
    began = time.monotonic()
    # The hub page's "Stop My Server": the REST call with the hub's cookie and XSRF token.
    answer = users[a].fetch("DELETE", f"/hub/api/users/{a}/server", headers={"Referer": hub.url("/hub/home")})
    assert answer.status_code in (202, 204), answer.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        model = hub.api("GET", f"/users/{a}").json()
        if not model["servers"] and not model.get("pending"):
            break
        time.sleep(0.5)
    stopped = time.monotonic() - began
    left = processes_of(uid)
    record(figures, f"stopping user A's server from the hub: {len(before)} processes of A before, "
                    f"{len(left)} left after {stopped:.1f} s")
    assert not left, left
    # Its port server (in the kernel) went with it; the route is gone from the proxy.
    assert not listeners(uid)
    assert requests.get(hub.url(f"/user/{a}/lab"), allow_redirects=False, timeout=30).status_code in (302, 303, 424, 503)


def test_the_idle_culler_stops_an_idle_server(hub, users, figures):
    b = USERS[1]
    uid = hub.users[b].pw_uid
    assert processes_of(uid)
    culler = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub_idle_culler", f"--url=http://127.0.0.1:{hub.hub_port}/hub/api",
         "--timeout=20", "--cull-every=5"],
        env={"PATH": hub.path, "JUPYTERHUB_API_TOKEN": hub.admin_token, "LANG": "C.UTF-8"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        began = time.monotonic()
        while time.monotonic() < deadline:
            if not hub.api("GET", f"/users/{b}").json()["servers"]:
                break
            time.sleep(1)
        else:
            raise AssertionError(f"the culler did not stop {b}'s idle server")
    finally:
        culler.terminate()
        output = culler.communicate(timeout=20)[0]
    assert f"Culling server {b}" in output or "Culling" in output, output
    deadline = time.monotonic() + 20
    while processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.5)
    record(figures, f"idle culler (timeout 20 s): stopped user B's idle server after {time.monotonic() - began:.0f} s; "
                    f"{len(processes_of(uid))} processes of B left")
    assert not processes_of(uid)
