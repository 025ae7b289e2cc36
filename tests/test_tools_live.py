"""The minimal flavor's web tools, started for real from the generated manifest and reached through
the gateway: noVNC (with an RFB handshake to TigerVNC through its websocket), VS Code
(code-server), ungit, Netdata, Glances, TensorBoard, and sshd on loopback.

The workspace runs `flavors/minimal.manifest.json` exactly as `mlws generate` wrote it. Its internal
ports are fixed (8090, 8050-8055, 6901, 6006, 2222; VNC display :1 on 5901) and the runtime does not
remap them, so this module runs one workspace for all its tests and first checks that nothing else
holds those ports. The tools come from scripts/install-tools (Debian, PyPI, npm, plus shims for
programs whose Debian name differs from nixpkgs'), whose bin folder is put on PATH. File Browser
is nixpkgs-only: it is not installed here and the tool menu must say so.
"""
from __future__ import annotations

import base64
import getpass
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from urllib.parse import quote

import pytest
import requests
import websocket

from tests.runtime_helpers import ARTIFACTS, REPO, Workspace, runtime_env, session_with_token

MANIFEST = os.path.join(REPO, "flavors", "minimal.manifest.json")
TOKEN = "tools-live-token"
BASE = "/ml/ws"
VNC_DISPLAY_PORT = 5901  # Xvnc :1 in spec/tools/vnc.toml
READY_TIMEOUT = 180  # code-server and the Xfce session are the slow ones (seconds, polled)
# Menu ids of the tools this module starts; File Browser is absent from these machines.
LIVE_MENU_IDS = ("vnc", "vscode", "ungit", "netdata", "glances", "tensorboard", "ssh")


def tool_bin() -> str:
    """The folder scripts/install-tools fills with the tools and shims."""
    result = subprocess.run([os.path.join(REPO, "scripts", "install-tools"), "--print-bin"],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def fixed_ports(manifest: dict) -> list[int]:
    ports = {VNC_DISPLAY_PORT}
    for tool in manifest["tools"]:
        if tool["port"]:
            ports.add(tool["port"])
        for process in tool["processes"]:
            if (process.get("ready") or {}).get("tcp"):
                ports.add(process["ready"]["tcp"])
    return sorted(ports)


def busy(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class MinimalWorkspace(Workspace):
    """A Workspace running the generated minimal manifest unchanged (a copy the dropped user can read)."""

    def __init__(self, env: dict[str, str]):
        super().__init__(env=env, name="tools")
        self.manifest = os.path.join(self.folder, "minimal.manifest.json")
        shutil.copyfile(MANIFEST, self.manifest)
        os.chmod(self.manifest, 0o644)
        with open(MANIFEST, encoding="utf-8") as handle:
            self.tool_ports = {tool["name"]: tool["port"] for tool in json.load(handle)["tools"] if tool["port"]}

    def wait_ready(self, timeout: float) -> str:
        """The runtime's readiness watcher prints one line once every manifest ready check passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.text().splitlines():
                if "mlws: workspace ready" in line or "mlws: WARNING: not ready" in line:
                    return line
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"mlws start exited with {self.process.returncode}:\n{self.text()[-5000:]}")
            time.sleep(0.5)
        raise AssertionError(f"no readiness line after {timeout}s:\n{self.text()[-5000:]}")


def processes_of(names: set[str]) -> set[str]:
    """Which of these program names run (the workspace's desktop is the only one on the machine)."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8") as handle:
                comm = handle.read().strip()
        except OSError:
            continue
        if comm in names:
            found.add(comm)
    return found


@pytest.fixture(scope="module")
def ws():
    with open(MANIFEST, encoding="utf-8") as handle:
        manifest = json.load(handle)
    taken = [port for port in fixed_ports(manifest) if busy(port)]
    assert not taken, (
        f"ports {taken} on 127.0.0.1 are in use; the minimal manifest's tools need them (another "
        "workspace or benchmark running?)")
    assert not os.path.exists("/tmp/.X11-unix/X1"), "an X server already serves display :1 (the VNC tool's display)"
    bin_dir = tool_bin()
    assert os.path.isdir(bin_dir), f"{bin_dir} is missing: run scripts/install-tools"
    path = os.pathsep.join([bin_dir, runtime_env()["PATH"]])
    workspace = MinimalWorkspace(env={
        "AUTHENTICATE_VIA_JUPYTER": TOKEN, "WORKSPACE_BASE_URL": BASE, "PATH": path,
        "INCLUDE_TUTORIALS": "false",
    })
    workspace.path = path
    try:
        workspace.start(timeout=120)
        workspace.ready_line = workspace.wait_ready(READY_TIMEOUT)
        yield workspace
    finally:
        workspace.cleanup()


@pytest.fixture(scope="module")
def session(ws):
    return session_with_token(ws, TOKEN)


def menu(ws) -> dict[str, dict]:
    with open(os.path.join(ws.runtime_dir, "tools-menu.json"), encoding="utf-8") as handle:
        return {entry["id"]: entry for entry in json.load(handle)}


def test_every_ready_check_of_the_manifest_passes(ws):
    assert "mlws: workspace ready" in ws.ready_line, ws.ready_line
    skipped = re.findall(r"WARNING: tool (\S+) skipped", ws.text())
    expected = [] if shutil.which("filebrowser", path=ws.path) else ["filebrowser"]
    assert skipped == expected, ws.text()[-3000:]


def test_tool_menu_marks_the_running_tools_available(ws):
    entries = menu(ws)
    for menu_id in LIVE_MENU_IDS:
        assert entries[menu_id]["available"] is True, entries[menu_id]
    assert entries["vscode"]["url_path"] == f"{BASE}/tools/vscode/"
    assert entries["filebrowser"]["available"] is bool(shutil.which("filebrowser", path=ws.path))


def test_novnc_page_from_the_menu_link(ws, session):
    answer = session.get(ws.url(menu(ws)["vnc"]["url_path"]), timeout=10)
    assert answer.status_code == 200
    assert re.search(r"<title>[^<]*noVNC", answer.text), answer.text[:500]
    # The page's own assets come through the prefix-stripping route as well.
    assert session.get(ws.url(f"{BASE}/tools/vnc/app/ui.js"), timeout=10).status_code == 200


def rfb_over_websocket(ws, cookie_header: str | None) -> tuple[bytes, bytes]:
    """Open noVNC's websocket through the gateway and do the start of an RFB handshake: the
    server's version, our version, then the server's list of security types."""
    headers = [f"Cookie: {cookie_header}"] if cookie_header else []
    conn = websocket.create_connection(
        f"ws://127.0.0.1:{ws.port}{BASE}/tools/vnc/websockify", subprotocols=["binary"],
        header=headers, timeout=10)
    try:
        version = conn.recv()
        conn.send_binary(b"RFB 003.008\n")
        security = conn.recv()
        return version, security
    finally:
        conn.close()


def test_novnc_websocket_reaches_the_vnc_server(ws, session):
    cookies = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    version, security = rfb_over_websocket(ws, cookies)
    assert re.fullmatch(rb"RFB 003\.00\d\n", version), version
    count = security[0]
    assert count >= 1 and 1 in security[1:1 + count], security  # type 1 = None: the gateway authenticates


def test_vscode_workbench(ws, session):
    answer = session.get(ws.url(f"{BASE}/tools/vscode/"), timeout=20)
    assert answer.status_code == 200
    assert "Microsoft Corporation" in answer.text
    assert "workbench" in answer.text


def test_ungit_page(ws, session):
    answer = session.get(ws.url(f"{BASE}/tools/ungit/"), timeout=10)
    assert answer.status_code == 200
    assert "<title>ungit</title>" in answer.text


def test_netdata_api(ws, session):
    answer = session.get(ws.url(f"{BASE}/tools/netdata/api/v1/info"), timeout=10)
    assert answer.status_code == 200
    info = answer.json()
    assert info["version"].startswith("v")
    assert info["mirrored_hosts"]


def test_glances_api(ws, session):
    answer = session.get(ws.url(f"{BASE}/tools/glances/api/4/status"), timeout=10)
    assert answer.status_code == 200
    assert answer.json()["version"].startswith("4.")
    cpu = session.get(ws.url(f"{BASE}/tools/glances/api/4/cpu"), timeout=10).json()
    assert "total" in cpu


def test_tensorboard_page(ws, session):
    answer = session.get(ws.url(f"{BASE}/tools/tensorboard/"), timeout=10)
    assert answer.status_code == 200
    assert "<title>TensorBoard" in answer.text
    runs = session.get(ws.url(f"{BASE}/tools/tensorboard/data/runs"), timeout=10)
    assert runs.status_code == 200 and runs.json() == []  # the workspace has no event files yet


def test_sshd_answers_on_loopback_with_its_generated_host_key(ws):
    with socket.create_connection(("127.0.0.1", 2222), timeout=5) as sock:
        banner = sock.recv(256)
    assert banner.startswith(b"SSH-2.0-OpenSSH"), banner
    key = os.path.join(ws.workspace_dir, ".workspace", "ssh", "ssh_host_ed25519_key.pub")
    with open(key, encoding="utf-8") as handle:
        assert handle.read().startswith("ssh-ed25519 ")


def test_ssh_key_login_and_sftp_checked_against_the_generated_host_key(ws, tmp_path):
    """A real client logs in with a key (the only way in) and verifies the host key the runtime made."""
    user = pwd.getpwnam(ws.env.get("NB_USER") or getpass.getuser())
    ssh_dir = os.path.join(user.pw_dir, ".ssh")
    authorized = os.path.join(ssh_dir, "authorized_keys")
    had_dir, had_file = os.path.isdir(ssh_dir), os.path.exists(authorized)
    before = open(authorized, encoding="utf-8").read() if had_file else None
    client_key = str(tmp_path / "client_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", client_key], check=True)
    with open(os.path.join(ws.workspace_dir, ".workspace", "ssh", "ssh_host_ed25519_key.pub"), encoding="utf-8") as handle:
        host_key = " ".join(handle.read().split()[:2])
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:2222 {host_key}\n", encoding="utf-8")
    options = ["-i", client_key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
               "-o", f"UserKnownHostsFile={known_hosts}", "-o", "IdentitiesOnly=yes"]
    try:
        os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
        with open(authorized, "a", encoding="utf-8") as handle:
            handle.write((tmp_path / "client_key.pub").read_text(encoding="utf-8"))
        if os.geteuid() == 0:
            for path in (ssh_dir, authorized):
                os.chown(path, user.pw_uid, user.pw_gid)
        os.chmod(authorized, 0o600)
        login = subprocess.run(["ssh", "-p", "2222", *options, f"{user.pw_name}@127.0.0.1", "echo ok-$(id -un)"],
                               capture_output=True, text=True, timeout=30)
        assert login.returncode == 0, login.stderr
        assert login.stdout == f"ok-{user.pw_name}\n"
        sftp = subprocess.run(["sftp", "-P", "2222", *options, "-b", "-", f"{user.pw_name}@127.0.0.1"],
                              input=f"cd {ws.workspace_dir}\nls\n", capture_output=True, text=True, timeout=30)
        assert sftp.returncode == 0, sftp.stderr
        # Without the key: refused (no passwords, no keyboard-interactive).
        refused = subprocess.run(["ssh", "-p", "2222", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                                  "-o", f"UserKnownHostsFile={known_hosts}", "-o", "IdentitiesOnly=yes",
                                  "-o", "IdentityFile=/dev/null", f"{user.pw_name}@127.0.0.1", "true"],
                                 capture_output=True, text=True, timeout=30)
        assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr, refused.stderr
    finally:
        if had_file:
            with open(authorized, "w", encoding="utf-8") as handle:
                handle.write(before)
        elif had_dir:
            os.remove(authorized)
        else:
            shutil.rmtree(ssh_dir, ignore_errors=True)


@pytest.mark.parametrize("path", [
    "/tools/vnc/vnc.html", "/tools/vscode/", "/tools/ungit/", "/tools/netdata/api/v1/info",
    "/tools/glances/api/4/status", "/tools/tensorboard/",
])
def test_tools_refuse_requests_without_login(ws, path):
    answer = requests.get(ws.url(BASE + path), allow_redirects=False, timeout=10)
    assert answer.status_code in (302, 401), (answer.status_code, answer.text[:300])
    if answer.status_code == 302:
        assert "_mlws/login" in answer.headers["Location"]
    wrong = requests.get(ws.url(BASE + path), headers={"Authorization": "token wrong"}, allow_redirects=False,
                         timeout=10)
    assert wrong.status_code in (302, 401)


def test_vnc_websocket_refuses_without_login(ws):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        rfb_over_websocket(ws, None)
    assert refused.value.status_code in (302, 401)


# --- screenshots (headless Chromium through the gateway, token link login) -------------------------
# Driven over the DevTools protocol rather than `chromium --screenshot`: VS Code draws its workbench
# only after its websocket handshake with the server, which a virtual-time budget does not wait for.
# So each page is loaded, a readiness condition of the page itself is polled, then it is captured.

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"


class Browser:
    """One headless Chromium with a fresh profile and a DevTools connection to its page."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="mlws-chromium-")
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={self.profile}", "--window-size=1280,800",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.conn = websocket.create_connection(self._page_socket(), suppress_origin=True, timeout=30)
        self.next_id = 0

    def _page_socket(self) -> str:
        # With port 0 Chromium picks a free port and writes it to DevToolsActivePort in the profile.
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if os.path.exists(port_file):
                with open(port_file, encoding="utf-8") as handle:
                    content = handle.read()
                if "\n" in content:
                    port = int(content.split()[0])
                    pages = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                    return next(page["webSocketDebuggerUrl"] for page in pages if page["type"] == "page")
            time.sleep(0.1)
        raise AssertionError("Chromium did not open its DevTools port")

    def call(self, method: str, **params):
        self.next_id += 1
        self.conn.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.conn.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        self.conn.close()
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


def screenshot_when(ws, path: str, ready_js: str, name: str, timeout: float = 60) -> str:
    """Open B+path with the token link, wait until ready_js is true in the page, save a PNG."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    target = os.path.join(ARTIFACTS, name)
    if os.path.exists(target):
        os.remove(target)
    separator = "&" if "?" in path else "?"
    browser = Browser()
    try:
        browser.call("Page.navigate", url=ws.url(f"{BASE}{path}{separator}token={quote(TOKEN, safe='')}"))
        deadline = time.monotonic() + timeout
        while browser.evaluate(ready_js) is not True:
            assert time.monotonic() < deadline, f"{path}: not rendered after {timeout}s ({ready_js})"
            time.sleep(0.5)
        png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    finally:
        browser.close()
    with open(target, "wb") as handle:
        handle.write(png)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return target


def test_screenshot_of_the_novnc_desktop(ws):
    # The Xfce session has no ready check of its own: wait until its panel and desktop run.
    deadline = time.monotonic() + 60
    wanted = {"xfce4-panel", "xfdesktop"}
    while processes_of(wanted) != wanted and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_of(wanted) == wanted, "the Xfce session did not start:\n" + ws.text()[-3000:]
    # Debian's noVNC 1.3 client builds the websocket URL as /<path> from the server root, so the
    # path under the gateway is given explicitly; nixpkgs' noVNC resolves it relative to the page.
    path = menu(ws)["vnc"]["url_path"][len(BASE):] + "&path=" + quote(f"{BASE.lstrip('/')}/tools/vnc/websockify")
    # Connected, and the remote screen drawn: the top panel's pixels differ from the desktop's middle.
    drawn = """(() => {
        if (!document.documentElement.classList.contains('noVNC_connected')) return false;
        const canvas = document.querySelector('#noVNC_container canvas');
        if (!canvas || canvas.width < 800) return false;
        const context = canvas.getContext('2d');
        const top = context.getImageData(canvas.width - 20, 10, 1, 1).data.join();
        const middle = context.getImageData(canvas.width / 2 - 200, canvas.height / 2, 1, 1).data.join();
        return top !== middle && middle !== '0,0,0,0';
    })()"""
    screenshot_when(ws, path, drawn, "novnc-desktop.png")


def test_screenshot_of_vscode_listing_the_workspace(ws):
    # A file in the work folder: VS Code's explorer lists it only if its server really reads the folder.
    probe = os.path.join(ws.workspace_dir, "hello_from_mlws.py")
    with open(probe, "w", encoding="utf-8") as handle:
        handle.write("print('hello')\n")
    os.chmod(probe, 0o644)
    listed = """(() => !!document.querySelector('.monaco-workbench .part.statusbar')
        && [...document.querySelectorAll('.explorer-folders-view .monaco-list-row')]
            .some(row => row.textContent.includes('hello_from_mlws.py'))
        && document.fonts.status === 'loaded')()"""
    screenshot_when(ws, "/tools/vscode/", listed, "vscode.png")


# --- last: the stop (this test stops the module's workspace; keep it at the end of the file) ----

DESKTOP_PROGRAMS = ("ssh-agent", "gpg-agent", "Xvnc", "Xtigervnc", "dbus-daemon", "dbus-launch",
                    "xfconfd", "xfwm4", "xfdesktop", "Thunar")


def process_info(pid: int) -> tuple[str, int, int, int, int] | None:
    """(comm, ppid, session id, uid, start time in clock ticks after boot) of a live process, None
    if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            stat = handle.read()
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return stat[stat.find("(") + 1:stat.rfind(")")], int(fields[1]), int(fields[3]), uid, int(fields[19])


def desktop_processes(uid: int, since: int) -> list[tuple[int, str]]:
    """The user's desktop-session processes started since `since` (clock ticks after boot): this
    module's workspace's (only this module starts a desktop; older leftovers are not its own)."""
    found = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        info = process_info(pid)
        if (info and info[3] == uid and info[4] >= since
                and (info[0] in DESKTOP_PROGRAMS or info[0].startswith("xfce4-"))):
            found.append((pid, info[0]))
    return found


def test_stop_leaves_no_process_of_the_workspace_behind(ws):
    from runtime.reaper import descendants_of

    deadline = time.monotonic() + 60
    wanted = {"xfce4-panel", "xfdesktop"}
    while processes_of(wanted) != wanted and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_of(wanted) == wanted, "the Xfce session did not start:\n" + ws.text()[-3000:]
    uid = pwd.getpwnam(ws.env.get("NB_USER") or getpass.getuser()).pw_uid
    since = process_info(ws.process.pid)[4]
    # Everything the workspace runs is below `mlws start` (its subreaper), daemons included.
    workspace = {pid: process_info(pid) for pid in descendants_of(ws.process.pid)}
    workspace = {pid: info for pid, info in workspace.items() if info}
    with open(os.path.join(ws.runtime_dir, "supervisord.pid"), encoding="utf-8") as handle:
        supervisord_sid = os.getsid(int(handle.read()))
    escaped = sorted(info[0] for info in workspace.values() if info[2] != supervisord_sid)
    desktop_before = desktop_processes(uid, since)
    # Positive control: the desktop runs, and some of its processes (ssh-agent, gpg-agent,
    # dbus-daemon: daemonized) left supervisord's session, out of reach of stopasgroup/killasgroup,
    # yet are still below `mlws start`.
    assert desktop_before and escaped, (desktop_before, escaped)
    assert {pid for pid, _ in desktop_before} <= set(workspace), (desktop_before, workspace)

    ws.stop(timeout=20)  # supervisord alone takes most of it: it stops its programs by priority
    assert ws.process.returncode == 0, ws.text()[-3000:]
    # The same processes (pid, name and start time), should any still run.
    now = {pid: process_info(pid) for pid in workspace}
    left = {pid: info[0] for pid, info in workspace.items() if now[pid] and now[pid][::4] == info[::4]}
    assert not left, f"still running after the stop: {left}"
    assert desktop_processes(uid, since) == [], "desktop processes of the workspace user outlived the stop"
