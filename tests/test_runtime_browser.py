"""Headless Chromium opens JupyterLab and Notebook 7 through the gateway (token link, base URL)
and sees the launcher and the file browser. Screenshots go to test-artifacts/."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import pytest

from tests.runtime_helpers import ARTIFACTS, Workspace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
TOKEN = "browser-token-&@ 1"


@pytest.fixture(scope="module")
def ws():
    workspace = Workspace(env={"AUTHENTICATE_VIA_JUPYTER": TOKEN, "WORKSPACE_BASE_URL": "/ml/ws"},
                          name="browser", manifest_tools=()).start()
    yield workspace
    workspace.cleanup()


def chromium(*args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="mlws-chromium-")
    try:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1280,800", "--virtual-time-budget=20000", *args],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def token_link(workspace: Workspace, path: str) -> str:
    from urllib.parse import quote

    return workspace.url(f"{workspace.base}{path}?token={quote(TOKEN, safe='')}")


def dom_of(workspace: Workspace, path: str) -> str:
    """The page's DOM after its scripts ran, opened with the token link (cookie login)."""
    result = chromium("--dump-dom", token_link(workspace, path))
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def screenshot(workspace: Workspace, path: str, name: str) -> str:
    os.makedirs(ARTIFACTS, exist_ok=True)
    target = os.path.join(ARTIFACTS, name)
    if os.path.exists(target):
        os.remove(target)
    result = chromium(f"--screenshot={target}", token_link(workspace, path))
    assert result.returncode == 0, result.stderr[-2000:]
    with open(target, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    return target


def test_jupyterlab_shows_launcher_and_file_browser(ws):
    dom = dom_of(ws, "/lab")
    assert "<title>JupyterLab</title>" in dom
    assert len(re.findall(r'class="jp-LauncherCard"', dom)) >= 2  # launcher cards rendered
    assert 'title="Name: tutorials' in dom  # the file browser lists the workspace
    assert os.path.getsize(screenshot(ws, "/lab", "jupyterlab.png")) > 10_000


def test_notebook7_shows_the_file_browser(ws):
    dom = dom_of(ws, "/tree")
    assert "<title>Home</title>" in dom
    assert "jp-DirListing-content" in dom
    assert 'title="Name: tutorials' in dom
    assert os.path.getsize(screenshot(ws, "/tree", "notebook7-tree.png")) > 10_000


def test_without_the_token_the_browser_gets_the_login_page(ws):
    result = chromium("--dump-dom", ws.url(ws.base + "/lab"))
    assert 'name="token"' in result.stdout
    assert "jp-LauncherCard" not in result.stdout
