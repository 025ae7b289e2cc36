"""TensorBoard inside notebooks behind the gateway and a base URL: `%load_ext tensorboard`,
`%tensorboard --logdir DIR` and `tensorboard.notebook.display(port=...)` run in a real kernel of
JupyterLab and of Notebook 7, opened in headless Chromium (tests/cdp.py). Their output iframe must
point at the gateway's B/tools/<port>/ (the runtime sets TENSORBOARD_PROXY_URL for every tool,
runtime/steps/40_environment.py), not at localhost:<port>, and show TensorBoard with the run the
test logged (TensorBoard's own summary writer, no TensorFlow). The fixture manifest runs Jupyter
only: the kernel starts TensorBoard itself, as the workspace user, on a port TensorBoard picks.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse

import nbformat
import pytest
import requests
from tensorboard.summary import DirectoryOutput, Writer

from runtime.unix_http import UnixHTTPConnection
from tests.cdp import CDPError, Chromium
from tests.runtime_helpers import REPO, Workspace, alive, session_with_token
from tests.test_workspace_menu import click, menu_item

BASE = "/some/base"
TAG = "mlws_loss"  # no "/": TensorBoard would show the part before it as a group name
# Where each app opens a notebook (JupyterLab, Notebook 7).
NOTEBOOK_URL = {"lab": "/lab/tree/{name}", "notebook7": "/notebooks/{name}"}


def run_name(app: str) -> str:
    return f"mlws-run-{app}"


@pytest.fixture(scope="module")
def ws():
    workspace = Workspace(env={"WORKSPACE_BASE_URL": BASE}, manifest_tools=(), name="tensorboard")
    for app in NOTEBOOK_URL:
        log_scalars(os.path.join(logdir(workspace, app), run_name(app)))
    workspace.start()
    started: list[int] = []
    workspace.tensorboard_pids = started  # filled by the notebook tests
    workspace.tensorboard_ports = {}
    yield workspace
    try:
        workspace.cleanup()
    finally:
        for pid in started:  # only if a test failed before the workspace stopped them
            if alive(pid):
                os.kill(pid, 9)


def logdir(ws: Workspace, app: str) -> str:
    return os.path.join(ws.folder, "logs", app)


def log_scalars(run_dir: str) -> None:
    """A run of five scalar steps, written by TensorBoard's own writer, readable by the workspace user."""
    writer = Writer(DirectoryOutput(run_dir))
    for step in range(5):
        writer.add_scalar(TAG, 1.0 / (step + 1), step=step)
    writer.close()
    for folder, _, files in os.walk(os.path.dirname(run_dir)):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)


def notebook_cells(log_folder: str) -> list[str]:
    return [
        "%load_ext tensorboard",
        f"%tensorboard --logdir {log_folder}",
        "import os\n"
        "from tensorboard import manager, notebook\n"
        f"info = next(i for i in manager.get_all() if i.logdir == {log_folder!r})\n"
        "print('MLWS-TB', info.port, info.pid, os.environ.get('TENSORBOARD_PROXY_URL'))\n"
        "notebook.display(port=info.port, height=500)",
    ]


def put_notebook(ws: Workspace, name: str, cells: list[str]) -> None:
    session = session_with_token(ws, ws.token())
    session.get(ws.url(f"{BASE}/lab"), timeout=15)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code) for code in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    answer = session.put(ws.url(f"{BASE}/api/contents/{name}"), json={"type": "notebook", "content": notebook},
                         headers={"X-XSRFToken": session.cookies.get("_xsrf")}, timeout=30)
    assert answer.status_code in (200, 201), answer.text


def run_all_cells(browser: Chromium, cells: int) -> None:
    """Run > Run All Cells, as a user does, once the notebook shows its cells (the menu bar is
    wired a moment after it is drawn; the item is disabled until the notebook is the current
    widget)."""
    deadline = time.monotonic() + 90
    # Cells run before the kernel is connected are dropped: wait for its name and "idle".
    ready = ("document.querySelectorAll('.jp-Notebook .jp-CodeCell').length >= %d"
             " && [...document.querySelectorAll('.jp-KernelName')].some(e => /\\S/.test(e.innerText) && e.innerText.trim() !== 'No Kernel')"
             " && [...document.querySelectorAll('.jp-Notebook-ExecutionIndicator')].some(e => e.dataset.status === 'idle')") % cells
    while not browser.evaluate(ready):
        assert time.monotonic() < deadline, "the notebook did not show its cells with a connected kernel"
        time.sleep(0.25)
    item = menu_item("Run All Cells", ".lm-Menu-itemLabel")
    while time.monotonic() < deadline:
        click(browser, menu_item("Run", ".lm-MenuBar-itemLabel"), timeout=90)
        for _ in range(8):
            if browser.evaluate(f"(e => !!e && !e.closest('.lm-Menu-item').classList.contains('lm-mod-disabled'))({item})"):
                click(browser, item)
                return
            time.sleep(0.25)
        browser.call("Input.dispatchKeyEvent", type="keyDown", key="Escape", code="Escape", windowsVirtualKeyCode=27)
        browser.call("Input.dispatchKeyEvent", type="keyUp", key="Escape", code="Escape", windowsVirtualKeyCode=27)
    raise AssertionError("Run > Run All Cells did not become available")


def tensorboard_frames(browser: Chromium, count: int, timeout: float = 150) -> list[str]:
    """The src of the notebook's TensorBoard output iframes, once `count` of them have one."""
    deadline = time.monotonic() + timeout
    sources: list[str] = []
    while time.monotonic() < deadline:
        sources = browser.evaluate("[...document.querySelectorAll('iframe[id^=\"tensorboard-frame-\"]')]"
                                   ".map(f => f.src).filter(Boolean)")
        if len(sources) >= count:
            return sources
        time.sleep(0.5)
    outputs = browser.evaluate("[...document.querySelectorAll('.jp-OutputArea-output')].map(e => e.innerText)")
    raise AssertionError(f"{len(sources)} TensorBoard frames after {timeout}s; cell outputs: {outputs}")


def frame_world(browser: Chromium, url: str) -> int:
    """An execution context inside the (first) child frame showing `url`."""
    for frame in browser.frames():
        if frame["url"] == url:
            world = browser.call("Page.createIsolatedWorld", frameId=frame["id"], worldName="mlws-tensorboard")
            return world["executionContextId"]
    raise AssertionError(f"no frame shows {url}: {browser.frames()}")


def wait_frame_text(browser: Chromium, url: str, wanted: tuple[str, ...], timeout: float = 90) -> str:
    """The frame's visible text, once it holds every string in `wanted` (TensorBoard's web app
    draws the runs and the scalar cards after its own XHRs answer)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = browser.evaluate("document.body ? document.body.innerText : ''",
                                    context_id=frame_world(browser, url), timeout=10) or ""
        except CDPError:
            text = ""  # the frame is between documents
        if all(word in text for word in wanted):
            return text
        time.sleep(1)
    raise AssertionError(f"the frame {url} does not show {wanted} after {timeout}s:\n{text[:2000]}")


def responses_under(browser: Chromium, prefix: str) -> list[tuple[str, int]]:
    browser.wait_response(prefix, timeout=5)  # reads the DevTools events that arrived meanwhile
    return [(event["params"]["response"]["url"], event["params"]["response"]["status"])
            for event in browser.network if event["method"] == "Network.responseReceived"
            and event["params"]["response"]["url"].startswith(prefix)]


@pytest.mark.parametrize("app", list(NOTEBOOK_URL))
def test_tensorboard_magic_and_display_frame_the_gateway_route(ws, app):
    name = f"tensorboard-{app}.ipynb"
    cells = notebook_cells(logdir(ws, app))
    put_notebook(ws, name, cells)
    path = BASE + NOTEBOOK_URL[app].format(name=name)
    browser = Chromium()
    try:
        browser.navigate(ws.url(f"{path}?token={urllib.parse.quote(ws.token(), safe='')}"))
        browser.wait_location(ws.url(path))
        run_all_cells(browser, len(cells))
        # The magic's frame and the display(port=...) frame.
        sources = tensorboard_frames(browser, 2)
        page_text = browser.evaluate("document.body.innerText")
        seen = re.search(r"MLWS-TB (\d+) (\d+) (\S+)", page_text)
        assert seen, page_text[-3000:]
        port, pid, proxy_url = int(seen.group(1)), int(seen.group(2)), seen.group(3)
        ws.tensorboard_pids.append(pid)
        ws.tensorboard_ports[app] = port
        print(f"{app}: TensorBoard on port {port} (pid {pid}); frames {sources}")
        # Every kernel sees the proxy URL; TensorBoard turns it into the frame's src.
        assert proxy_url == f"{BASE}/tools/%PORT%/"
        frame_url = ws.url(f"{BASE}/tools/{port}/")
        assert sources == [frame_url, frame_url]
        # The frame shows TensorBoard (framed by the workspace's own page: same origin) with the
        # logged run and its scalar tag, drawn from XHRs through the gateway under the prefix.
        text = wait_frame_text(browser, frame_url, (run_name(app), TAG))
        assert "TensorBoard" in text, text[:1000]  # its header
        runs = browser.evaluate("fetch('data/runs').then(r => r.json())", await_promise=True,
                                context_id=frame_world(browser, frame_url))
        assert runs == [run_name(app)]
        answered = responses_under(browser, ws.url(f"{BASE}/tools/{port}/"))
        assert any(url.endswith("/data/plugins_listing") and status == 200 for url, status in answered), answered
        assert [entry for entry in answered if entry[1] >= 400] == []
        # Nothing of the notebook's page or frames went to the port directly.
        direct = [event["params"]["request"]["url"] for event in browser.network
                  if event["method"] == "Network.requestWillBeSent"
                  and re.match(rf"https?://(localhost|127\.0\.0\.1|\[::1\]):{port}/", event["params"]["request"]["url"])]
        assert direct == []
    finally:
        browser.close()


def test_the_gateway_serves_tensorboard_framed_by_the_workspace_only(ws):
    """The frame works because it is same-origin: the gateway's framing headers allow the
    workspace's own pages, and no other site."""
    assert ws.tensorboard_ports, "the notebook tests started no TensorBoard"
    session = session_with_token(ws, ws.token())
    for app, port in ws.tensorboard_ports.items():
        answer = session.get(ws.url(f"{BASE}/tools/{port}/data/runs"), timeout=15)
        assert answer.status_code == 200 and answer.json() == [run_name(app)]
        assert answer.headers["X-Frame-Options"] == "SAMEORIGIN"
        assert answer.headers["Content-Security-Policy"] == "frame-ancestors 'self'"
        # Without the login, nothing of it.
        assert requests.get(ws.url(f"{BASE}/tools/{port}/data/runs"), allow_redirects=False, timeout=15).status_code in (302, 401)


def test_tensorboards_started_by_kernels_stop_with_the_workspace(ws):
    pids = list(ws.tensorboard_pids)
    assert pids and all(alive(pid) for pid in pids)
    ws.stop()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.2)
    assert [pid for pid in pids if alive(pid)] == []


def test_the_workspace_tensorboard_on_a_unix_socket_is_not_offered_to_notebooks():
    """The menu's TensorBoard (runtime/toolkit/tensorboard_unix.py) has no TCP port: it writes no
    info file, so tensorboard.notebook.display() and .list() never pick it (they would frame
    B/tools/0/)."""
    with tempfile.TemporaryDirectory(prefix="mlws-tb-unix-") as folder:
        log_scalars(os.path.join(folder, "logs", "run"))
        sock = os.path.join(folder, "tb.sock")
        tool = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "runtime", "toolkit", "tensorboard_unix.py"),
             f"--logdir={folder}/logs", f"--host=unix://{sock}", "--port=0", "--load_fast=false"],
            env={**os.environ, "TMPDIR": folder}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            runs = None
            deadline = time.monotonic() + 60
            while runs is None and time.monotonic() < deadline:
                assert tool.poll() is None, tool.communicate()[1]
                try:
                    connection = UnixHTTPConnection(sock)
                    connection.request("GET", "/data/runs")
                    runs = json.loads(connection.getresponse().read())
                except (OSError, ValueError):
                    time.sleep(0.2)
            # It serves (so it is past the point where TensorBoard registers itself) ...
            assert runs == ["run"]
            # ... and TensorBoard's own listing, in the same temp folder, does not know it.
            info_dir = os.path.join(folder, ".tensorboard-info")
            listed = subprocess.run(
                [sys.executable, "-c", "from tensorboard import manager; print([i.pid for i in manager.get_all()])"],
                env={**os.environ, "TMPDIR": folder}, capture_output=True, text=True, check=True).stdout
            assert listed.strip() == "[]"
            assert not os.path.isdir(info_dir) or os.listdir(info_dir) == []
        finally:
            tool.terminate()
            tool.wait(10)
