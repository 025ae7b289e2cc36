"""The tool menu a user meets: B/tooling/tools (JSON, merged with ~/.workspace/tools/*.json), the
workspace home page, B/tooling/storage, and the "Open Tool" menu in JupyterLab and Notebook 7,
opened and followed in headless Chromium over DevTools."""
from __future__ import annotations

import json
import os
import time
import urllib.parse

import pytest
import requests

from tests.cdp import Chromium
from tests.runtime_helpers import Workspace, session_with_token

BASE = "/ml/ws"


@pytest.fixture(scope="module")
def ws():
    # A tiny MAX_CONTAINER_SIZE: any container exceeds it, so the home page must warn.
    workspace = Workspace(env={"WORKSPACE_BASE_URL": BASE, "MAX_CONTAINER_SIZE": "0.000001",
                               "MAX_WORKSPACE_FOLDER_SIZE": "1000"}, name="menu")
    home = os.path.expanduser("~" + (workspace.env.get("NB_USER") or ""))
    tools_dir = os.path.join(home, ".workspace", "tools")
    os.makedirs(tools_dir, exist_ok=True)
    own = os.path.join(tools_dir, "mlws-test-own.json")
    bad = os.path.join(tools_dir, "mlws-test-bad.json")
    with open(own, "w", encoding="utf-8") as handle:
        json.dump({"id": "my-dashboard", "name": "My Dashboard", "url_path": "/tools/9999/",
                   "description": "my own server"}, handle)
    with open(bad, "w", encoding="utf-8") as handle:
        handle.write("{not json")
    if os.geteuid() == 0 and workspace.env.get("NB_USER"):
        import shutil

        for path in (os.path.join(home, ".workspace"), tools_dir, own, bad):
            shutil.chown(path, workspace.env["NB_USER"])
    workspace.start()
    yield workspace
    workspace.cleanup()
    for path in (own, bad):
        os.remove(path)


@pytest.fixture(scope="module")
def session(ws):
    return session_with_token(ws, ws.token())


def test_tools_json_lists_the_flavor_in_manifest_order_then_the_users_entries(ws, session):
    answer = session.get(ws.url(f"{BASE}/tooling/tools"))
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json")
    entries = answer.json()
    with open(ws.manifest, encoding="utf-8") as handle:
        manifest = json.load(handle)
    expected = [entry["id"] for tool in manifest["tools"] for entry in tool.get("menu", [])]
    flavor = [entry for entry in entries if not entry.get("user")]
    assert [entry["id"] for entry in flavor] == expected
    for entry in entries:
        assert {"id", "name", "url_path", "description", "available"} <= set(entry)
    by_id = {entry["id"]: entry for entry in entries}
    assert by_id["files"]["url_path"] == f"{BASE}/tools/files/" and by_id["files"]["available"] is True
    # The fixture's "ghost" tool names a program that is not installed: listed, unavailable, with why.
    assert by_id["ghost"]["available"] is False and "not installed" in by_id["ghost"]["reason"]
    # The user's own entry comes last; the file that is not JSON is skipped (and named in the log).
    assert entries[-1]["id"] == "my-dashboard" and entries[-1]["url_path"] == "/tools/9999/"
    assert "mlws-test-bad.json: not readable JSON" in ws.wait_for_output("mlws-test-bad.json: not readable JSON")


def test_tooling_needs_the_login(ws):
    for path in ("tools", "storage", "home"):
        answer = requests.get(ws.url(f"{BASE}/tooling/{path}"), allow_redirects=False)
        assert answer.status_code in (302, 401), (path, answer.status_code)
        assert "my-dashboard" not in answer.text


def test_storage_reports_both_sizes_and_the_exceeded_limit(ws, session):
    deadline = time.monotonic() + 240
    while True:
        report = session.get(ws.url(f"{BASE}/tooling/storage")).json()
        if not report["measuring"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    print(f"storage: work folder {report['workspace']['used_gb']} GB, container {report['container']['used_gb']} GB")
    assert report["measuring"] is False
    assert report["workspace"]["limit_gb"] == 1000 and report["workspace"]["exceeded"] is False
    assert report["container"]["limit_gb"] == 0.000001 and report["container"]["exceeded"] is True
    assert report["container"]["used_gb"] > 0
    page = session.get(ws.url(f"{BASE}/tooling/home")).text
    assert "MAX_CONTAINER_SIZE" in page and 'role="alert"' in page
    assert "MAX_WORKSPACE_FOLDER_SIZE" not in page


def test_home_page_lists_tools_and_greys_the_unavailable(ws, session):
    page = session.get(ws.url(f"{BASE}/tooling/home")).text
    assert f'href="{BASE}/tools/files/" target="_blank"' in page
    assert 'class="unavailable" data-tool="ghost" aria-disabled="true"' in page
    assert 'id="access-port"' in page and 'id="ssh"' in page
    # Access Port: a port number goes to B/tools/<port>/, anything else is refused.
    answer = session.get(ws.url(f"{BASE}/tooling/open-port?port=8765"), allow_redirects=False)
    assert answer.status_code == 302 and answer.headers["Location"] == f"{BASE}/tools/8765/"
    for bad in ("0", "70000", "x", "//evil.example"):
        answer = session.get(ws.url(f"{BASE}/tooling/open-port?port={urllib.parse.quote(bad)}"), allow_redirects=False)
        assert answer.status_code == 400, bad


def element_center(browser: Chromium, selector_js: str, timeout: float) -> dict:
    """The middle of the element the script finds, once it is drawn (waits up to `timeout`)."""
    deadline = time.monotonic() + timeout
    box = None
    while time.monotonic() < deadline and not box:
        box = browser.evaluate(f"(() => {{ const e = {selector_js}; if (!e) return null; const r = e.getBoundingClientRect();"
                               " return r.width ? {x: r.x + r.width / 2, y: r.y + r.height / 2} : null; })()")
        if not box:
            time.sleep(0.25)
    assert box, f"nothing to click: {selector_js}"
    return box


def click(browser: Chromium, selector_js: str, timeout: float = 60) -> None:
    """A real mouse click (DevTools Input events) in the middle of the element the script finds."""
    box = element_center(browser, selector_js, timeout)
    for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left", clickCount=1)


def menu_item(label: str, container: str) -> str:
    return (f"[...document.querySelectorAll('{container}')].find(e => e.textContent.trim() === {json.dumps(label)})")


def pages(browser: Chromium) -> list[str]:
    return [page["url"] for page in requests.get(f"http://127.0.0.1:{browser.debug_port}/json/list", timeout=5).json()
            if page.get("type") == "page"]


def new_tabs(browser: Chromium, before: set, part: str, timeout: float = 30) -> list[str]:
    """The pages opened since `before` whose URL contains `part` (waits until one appears)."""
    deadline = time.monotonic() + timeout
    opened = []
    while time.monotonic() < deadline and not opened:
        opened = [url for url in pages(browser) if url not in before and part in url]
        time.sleep(0.25)
    return opened


@pytest.mark.parametrize("app", ["lab", "tree"])
def test_open_tool_menu_in_jupyterlab_and_notebook7(ws, app):
    browser = Chromium()
    try:
        browser.navigate(ws.url(f"{BASE}/{app}?token={urllib.parse.quote(ws.token(), safe='')}"))
        browser.wait_location(ws.url(f"{BASE}/{app}"))
        # The menu bar is drawn before its handlers are all wired: click again until the menu opens.
        labels = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "Files" not in labels:
            click(browser, menu_item("Open Tool", ".lm-MenuBar-itemLabel"), timeout=90)
            for _ in range(8):
                labels = browser.evaluate("[...document.querySelectorAll('.lm-Menu-itemLabel')]"
                                          ".map(e => e.textContent.trim())")
                if "Files" in labels:
                    break
                time.sleep(0.25)
        print(f"{app}: Open Tool menu: {labels}")
        assert labels[:2] == ["Docs", "Files"]
        # The unavailable tool is greyed out: its item is disabled (Lumino's lm-mod-disabled, from
        # the extension's never-enabled command), says why, and clicking it opens nothing.
        ghost = browser.evaluate("[...document.querySelectorAll('.lm-Menu-item')].filter(e => e.textContent.trim()"
                                 ".startsWith('Ghost (unavailable:')).map(e => ({disabled: e.classList.contains('lm-mod-disabled'),"
                                 " aria: e.getAttribute('aria-disabled'), title: e.title || e.getAttribute('title') || '',"
                                 " label: e.textContent.trim()}))")
        print(f"{app}: ghost entry: {ghost}")
        assert len(ghost) == 1 and ghost[0]["disabled"] is True and ghost[0]["aria"] == "true", ghost
        assert "not installed" in ghost[0]["label"]
        # Available tools are enabled.
        enabled = browser.evaluate("[...document.querySelectorAll('.lm-Menu-item')].filter(e => e.textContent.trim() === 'Files')"
                                   ".map(e => e.classList.contains('lm-mod-disabled'))")
        assert enabled == [False], enabled
        before_ghost = set(pages(browser))
        click(browser, "[...document.querySelectorAll('.lm-Menu-item')].find(e => e.textContent.trim().startsWith('Ghost (unavailable:'))")
        time.sleep(1)
        assert set(pages(browser)) == before_ghost
        assert {"Access Port…", "SSH…", "Workspace Home"} <= set(labels)
        before = set(pages(browser))
        click(browser, menu_item("Files", ".lm-Menu-itemLabel"))
        opened = new_tabs(browser, before, "/tools/files/")
        # A new tab with the tool behind the gateway, under the base URL, logged in by the cookie.
        assert opened == [ws.url(f"{BASE}/tools/files/")], pages(browser)
    finally:
        browser.close()


def right_click(browser: Chromium, selector_js: str, timeout: float = 60) -> None:
    box = element_center(browser, selector_js, timeout)
    browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=box["x"], y=box["y"])
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="right", clickCount=1)


@pytest.mark.parametrize("app", ["lab", "tree"])
def test_share_from_the_file_browsers_context_menu(ws, app):
    """The hand-written extension (runtime/labextension/) adds "Share…" for the right-clicked item."""
    browser = Chromium()
    try:
        browser.navigate(ws.url(f"{BASE}/{app}?token={urllib.parse.quote(ws.token(), safe='')}"))
        browser.wait_location(ws.url(f"{BASE}/{app}"))
        item = "[...document.querySelectorAll('.jp-DirListing-itemText')].find(e => e.textContent.trim() === 'tutorials')"
        labels = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "Share…" not in labels:
            right_click(browser, item, timeout=90)
            time.sleep(0.5)
            labels = browser.evaluate("[...document.querySelectorAll('.lm-Menu-itemLabel')].map(e => e.textContent.trim())")
            if "Share…" not in labels:
                browser.call("Input.dispatchKeyEvent", type="keyDown", key="Escape", code="Escape", windowsVirtualKeyCode=27)
        assert "Share…" in labels, labels
        before = set(pages(browser))
        click(browser, menu_item("Share…", ".lm-Menu-itemLabel"))
        opened = new_tabs(browser, before, "/tooling/home")
        assert opened == [ws.url(f"{BASE}/tooling/home?share=tutorials#share")], pages(browser)
    finally:
        browser.close()


def test_access_port_offers_a_share_link_for_the_port(ws):
    """Access Port's "Share link…" puts the typed port into the Share form (which makes the link)."""
    browser = Chromium()
    try:
        browser.navigate(ws.url(f"{BASE}/lab?token={urllib.parse.quote(ws.token(), safe='')}"))
        browser.wait_location(ws.url(f"{BASE}/lab"))
        browser.navigate(ws.url(f"{BASE}/tooling/home#access-port"))
        browser.evaluate("document.getElementById('port-form').port.value = '8765'")
        click(browser, "document.getElementById('port-share')")
        deadline = time.monotonic() + 20
        value = None
        while time.monotonic() < deadline and value != "8765":
            value = browser.evaluate("document.getElementById('share-form').target.value")
            time.sleep(0.2)
        assert value == "8765" and browser.location().endswith("#share")
    finally:
        browser.close()
