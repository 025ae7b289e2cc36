"""A small Chrome DevTools Protocol client for the tests: one headless Chromium with a fresh
profile, driven over its page target's websocket (websocket-client, no other dependency).

    browser = Chromium()
    browser.navigate("http://127.0.0.1:8888/ml/ws/?token=...")     # waits for the load event
    browser.evaluate("fetch('/ml/ws/api/contents').then(r => r.status)", await_promise=True)
    browser.frames()                                                # every frame, with what it shows
    browser.close()

Chromium is started with --remote-debugging-port on a free port. Site isolation is switched off so
that cross-origin iframes live in the page's own process and can be inspected from this one
connection (Page.createIsolatedWorld): the web platform's rules the tests rely on (SameSite
cookies, CORS, CSP including sandbox and frame-ancestors, X-Frame-Options, websocket Origin) are
enforced the same way with or without it.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

import requests
import websocket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,800", "--disable-site-isolation-trials",
    "--disable-features=IsolateOrigins,site-per-process",
]


class CDPError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Chromium:
    """One headless Chromium (fresh --user-data-dir) and a DevTools connection to its page."""

    def __init__(self, extra_flags: tuple[str, ...] = ()):
        self.profile = tempfile.mkdtemp(prefix="mlws-cdp-")
        self.debug_port = _free_port()
        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, *extra_flags, f"--user-data-dir={self.profile}",
             "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={self.debug_port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.next_id = 0
        self.events: list[dict] = []  # Page, Runtime, ... events not yet consumed
        self.network: list[dict] = []  # Network.* events since the last navigate()
        try:
            self.conn = websocket.create_connection(self._page_socket(), suppress_origin=True, timeout=30)
            self.call("Page.enable")
            self.call("Network.enable")
        except Exception:
            self.close()
            raise

    def _page_socket(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CDPError(f"Chromium exited with {self.process.returncode}")
            try:
                pages = requests.get(f"http://127.0.0.1:{self.debug_port}/json/list", timeout=2).json()
                for page in pages:
                    if page.get("type") == "page":
                        return page["webSocketDebuggerUrl"]
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.1)
        raise CDPError("Chromium did not open its DevTools port")

    # --- protocol ------------------------------------------------------------------------------
    def _receive(self, timeout: float) -> dict:
        self.conn.settimeout(max(timeout, 0.05))
        return json.loads(self.conn.recv())

    def call(self, method: str, timeout: float = 60, **params):
        self.next_id += 1
        wanted = self.next_id
        self.conn.send(json.dumps({"id": wanted, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CDPError(f"{method}: no answer after {timeout}s")
            try:
                message = self._receive(remaining)
            except websocket.WebSocketTimeoutException:
                continue
            if message.get("id") == wanted:
                if "error" in message:
                    raise CDPError(f"{method}: {message['error']}")
                return message["result"]
            self._keep(message)

    def _keep(self, message: dict) -> None:
        if "method" not in message:
            return
        (self.network if message["method"].startswith("Network.") else self.events).append(message)

    def wait_event(self, method: str, timeout: float, predicate=lambda params: True) -> dict | None:
        """The first event `method` (already received or arriving within timeout) matching predicate."""
        found = self.wait_any(lambda event: event["method"] == method and predicate(event.get("params", {})), timeout)
        return found["params"] if found else None

    def wait_any(self, predicate, timeout: float) -> dict | None:
        """The first event message (already received or arriving within timeout) matching predicate;
        it and the events before it are consumed."""
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self.events):
                if predicate(event):
                    del self.events[: index + 1]
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                message = self._receive(remaining)
            except websocket.WebSocketTimeoutException:
                continue
            self._keep(message)

    # --- conveniences --------------------------------------------------------------------------
    def navigate(self, url: str, timeout: float = 60) -> dict:
        """Open url in the page (like typing it: no referrer, Sec-Fetch-Site: none); wait for load."""
        self.events.clear()
        self.network.clear()
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            return result
        loader = result.get("loaderId")
        # This navigation's document (not a late event of an earlier one), then its load event.
        if loader and self.wait_event("Page.frameNavigated", timeout, lambda p: "parentId" not in p["frame"]
                                      and p["frame"].get("loaderId") == loader) is None:
            raise CDPError(f"{url}: not committed after {timeout}s")
        if self.wait_event("Page.loadEventFired", timeout) is None:
            raise CDPError(f"{url}: no load event after {timeout}s")
        return result

    def evaluate(self, expression: str, await_promise: bool = False, context_id: int | None = None,
                 timeout: float = 60):
        params = {"expression": expression, "returnByValue": True, "awaitPromise": await_promise}
        if context_id is not None:
            params["contextId"] = context_id
        result = self.call("Runtime.evaluate", timeout=timeout, **params)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(f"script failed: {details.get('exception', {}).get('description') or details.get('text')}")
        return result["result"].get("value")

    def wait_response(self, url_prefix: str, contains: str = "", timeout: float = 60) -> dict:
        """Wait until the page received a response (a document's, a fetch's, or a redirect) for a
        URL starting with url_prefix (and containing `contains`) since the last navigate();
        returns {"url", "status"}. This
        sees requests the page's own scripts made (form submissions, location changes)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.network[seen:]:
                params = event.get("params", {})
                if event["method"] == "Network.responseReceived":
                    response = params["response"]
                elif event["method"] == "Network.requestWillBeSent":
                    response = params.get("redirectResponse") or {}
                else:
                    continue
                url = response.get("url", "")
                if url.startswith(url_prefix) and contains in url:
                    return {"url": response["url"], "status": response["status"]}
            seen = len(self.network)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CDPError(f"no response for {url_prefix}... within {timeout}s")
            try:
                self._keep(self._receive(remaining))
            except websocket.WebSocketTimeoutException:
                continue

    def location(self) -> str:
        try:
            return self.evaluate("location.href", timeout=10) or ""
        except CDPError:
            return ""  # between documents

    def wait_location(self, prefix: str, timeout: float = 30) -> str:
        """Wait until the page shows a document under prefix that finished loading (page-initiated
        navigations: the page's own script changed location or submitted a form)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.location().startswith(prefix):
                try:
                    if self.evaluate("document.readyState", timeout=10) == "complete":
                        return self.location()
                except CDPError:
                    pass
            time.sleep(0.2)
        raise CDPError(f"the page did not arrive under {prefix} within {timeout}s (at {self.location()!r})")

    def frames(self) -> list[dict]:
        """Every child frame of the page: its URL as Chromium committed it and, read from inside the
        frame (an isolated world, so even cross-origin frames answer), its origin, title and text."""
        tree = self.call("Page.getFrameTree")["frameTree"]
        found: list[dict] = []

        def walk(node: dict, depth: int) -> None:
            frame = node["frame"]
            if depth:
                entry = {"id": frame["id"], "url": frame.get("url", ""), "unreachable": frame.get("unreachableUrl", ""),
                         "name": frame.get("name", ""), "origin": "", "title": "", "text": ""}
                try:
                    context = self.call("Page.createIsolatedWorld", frameId=frame["id"], worldName="mlws-probe")
                    seen = self.evaluate(
                        "({origin: location.origin, href: location.href, title: document.title,"
                        " text: document.body ? document.body.innerText.slice(0, 300) : ''})",
                        context_id=context["executionContextId"], timeout=10)
                    entry.update({"origin": seen["origin"], "href": seen["href"], "title": seen["title"],
                                  "text": seen["text"]})
                except CDPError as error:
                    entry["error"] = str(error)
                found.append(entry)
            for child in node.get("childFrames", []):
                walk(child, depth + 1)

        walk(tree, 0)
        return found

    def close(self) -> None:
        try:
            if getattr(self, "conn", None):
                self.conn.close()
        finally:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(5)
            # Chromium's helper processes may still write to the profile for a moment.
            for _ in range(20):
                shutil.rmtree(self.profile, ignore_errors=True)
                if not os.path.exists(self.profile):
                    break
                time.sleep(0.1)
