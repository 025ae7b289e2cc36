"""The gateway's defences against other sites and other local users, on the real runtime (nginx, the
login service, Jupyter, the fixture manifest's tools): origin checks, where the token may go,
sessions, security headers, arbitrary ports, rate limits. Requests carry exactly the headers a
browser sends (Origin, Sec-Fetch-*); tests/test_security_attacks.py replays the attacks end to end
with the real tools and headless Chromium."""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests
import websocket

from runtime import login
from tests.runtime_helpers import Workspace, free_port, session_with_token, unprivileged_user

TOKEN = "gate-" + uuid.uuid4().hex
NAVIGATION = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
REFUSED = "refused: this request came from another site or origin"


@pytest.fixture(scope="module")
def ws():
    workspace = Workspace(env={"AUTHENTICATE_VIA_JUPYTER": TOKEN, "WORKSPACE_BASE_URL": "/gw"}, name="gate").start()
    yield workspace
    workspace.cleanup()


@pytest.fixture(scope="module")
def browser(ws):
    """A logged-in browser (cookie from the token link) with the XSRF cookie Jupyter sets."""
    session = session_with_token(ws, TOKEN)
    session.get(ws.url(ws.base + "/lab"), timeout=15)
    assert session.cookies.get("_xsrf")
    return session


def raw_get(ws: Workspace, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """A request with exactly this target, unencoded (requests would quote it)."""
    connection = http.client.HTTPConnection("127.0.0.1", ws.port, timeout=10)
    try:
        connection.request("GET", target, headers=headers)
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read().decode("utf-8", "replace")
    finally:
        connection.close()


# --- where the token may go ---------------------------------------------------------------------

def test_pages_carry_no_token(ws, browser):
    """Jupyter has no token of its own: JupyterLab's and Notebook 7's page config cannot hand one out."""
    for path in ("/lab", "/tree"):
        page = browser.get(ws.url(ws.base + path), timeout=15).text
        config = json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                                      page, re.S).group(1))
        assert config["token"] == "", path
        assert TOKEN not in page


def test_api_clients_may_send_the_token_in_the_query(ws):
    answer = requests.get(ws.url(ws.base + f"/api/status?token={TOKEN}"), allow_redirects=False, timeout=10)
    assert answer.status_code == 200 and "Set-Cookie" not in answer.headers
    assert requests.get(ws.url(ws.base + "/api/status?token=nope"), timeout=10).status_code == 401


def test_the_token_in_a_query_never_reaches_a_backend(ws):
    with open(os.path.join(ws.workspace_dir, "probe.txt"), "w") as handle:
        handle.write("probe")
    marker = uuid.uuid4().hex
    answer = requests.get(ws.url(ws.base + f"/tools/files/probe.txt?k={marker}&token={TOKEN}&z=1"), timeout=10)
    assert answer.status_code == 200 and answer.text == "probe"
    # The fixture tool (python -m http.server) logs each request line to the workspace's output.
    deadline = time.monotonic() + 10
    while f"/probe.txt?k={marker}&z=1" not in ws.text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"/probe.txt?k={marker}&z=1" in ws.text()
    after_banner = ws.text().split("=" * 72)[-1]  # the banner prints the token once, by design
    assert TOKEN not in after_banner


def test_a_websocket_with_the_token_in_its_query_is_authenticated_directly(ws):
    url = f"ws://127.0.0.1:{ws.port}{ws.base}/api/events/subscribe?token={TOKEN}"
    connection = websocket.create_connection(url, timeout=10)  # 101, not a redirect it cannot follow
    connection.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url.replace(TOKEN, "wrong"), timeout=10)
    assert refused.value.status_code == 401


def test_the_access_log_holds_no_token(ws, browser):
    requests.get(ws.url(ws.base + f"/api/status?token={TOKEN}"), headers={"Referer": ws.url(f"/x?token={TOKEN}")},
                 timeout=10)
    requests.get(ws.url(ws.base + "/api/status"), headers={"Authorization": f"token {TOKEN}"}, timeout=10)
    session_with_token(ws, TOKEN)
    time.sleep(1.5)  # the access log is flushed every second
    log_text = open(os.path.join(ws.runtime_dir, "nginx", "access.log"), encoding="utf-8").read()
    assert f"GET {ws.base}/api/status HTTP/1.1" in log_text
    assert TOKEN not in log_text


# --- other sites and origins --------------------------------------------------------------------

def test_foreign_origins_are_refused(ws, browser):
    xsrf = browser.cookies.get("_xsrf")
    for origin in ("http://evil.example", f"http://127.0.0.1:{ws.port + 1}", f"http://localhost:{ws.port}", "null"):
        answer = browser.post(ws.url(ws.base + "/api/contents"), json={"type": "file"},
                              headers={"X-XSRFToken": xsrf, "Origin": origin}, timeout=10)
        assert (answer.status_code, answer.text.strip()) == (403, REFUSED), origin
    # The workspace's own origin passes, also behind a TLS proxy (X-Forwarded-Proto).
    own = browser.post(ws.url(ws.base + "/api/contents"), json={"type": "file"},
                       headers={"X-XSRFToken": xsrf, "Origin": ws.origin}, timeout=10)
    assert own.status_code == 201
    proxied = browser.get(ws.url(ws.base + "/api/status"), timeout=10,
                          headers={"Origin": f"https://127.0.0.1:{ws.port}", "X-Forwarded-Proto": "https"})
    assert proxied.status_code == 200


def test_websockets_from_other_origins_are_refused(ws, browser):
    url = f"ws://127.0.0.1:{ws.port}{ws.base}/api/events/subscribe"
    cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
    for origin in ("http://evil.example", f"http://127.0.0.1:{ws.port + 1}", "null"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, cookie=cookie, origin=origin, timeout=10)
        assert refused.value.status_code == 403, origin
    websocket.create_connection(url, cookie=cookie, origin=ws.origin, timeout=10).close()


def test_requests_from_other_sites_carry_no_session(ws, browser):
    """What a browser sends for a page of another site (or another port) that fetches or posts."""
    cookies = dict(browser.cookies.items())
    for site in ("cross-site", "same-site"):
        fetched = requests.get(ws.url(ws.base + "/api/contents"), cookies=cookies, timeout=10,
                               headers={"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"})
        assert (fetched.status_code, fetched.text.strip()) == (403, REFUSED), site
        posted = requests.post(ws.url(ws.base + "/tools/files/"), cookies=cookies, data={"a": "1"}, timeout=10,
                               headers={"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "navigate"})
        assert posted.status_code == 403, site
    # From the workspace's own pages, or typed into the address bar: served.
    for site in ("same-origin", "none"):
        answer = requests.get(ws.url(ws.base + "/api/contents"), cookies=cookies, timeout=10,
                              headers={"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "cors"})
        assert answer.status_code == 200, site


def test_a_link_from_another_site_asks_before_opening(ws, browser):
    cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
    target = ws.base + '/tools/files/?x="><script>alert(1)</script>'
    status, headers, page = raw_get(ws, target, {**NAVIGATION, "Sec-Fetch-Site": "cross-site", "Cookie": cookie})
    assert status == 403
    assert "Link from another site" in page and "<script>alert" not in page
    assert f'href="{ws.base}/tools/files/?x=&quot;&gt;&lt;script&gt;' in page  # Continue: the same path, escaped
    assert "Set-Cookie" not in headers
    # Clicking Continue is a same-origin navigation: served.
    status, _, _ = raw_get(ws, ws.base + "/tools/files/", {**NAVIGATION, "Sec-Fetch-Site": "same-origin", "Cookie": cookie})
    assert status == 200


def test_a_token_link_followed_from_another_site_logs_in(ws):
    """The token link in a chat or a portal: cross-site, so the login answers with a page of its own
    that moves on, and the next request (same-origin) carries the SameSite=Strict cookie."""
    status, headers, page = raw_get(ws, ws.base + f"/lab?token={TOKEN}", {**NAVIGATION, "Sec-Fetch-Site": "cross-site"})
    assert status == 200 and "Set-Cookie" in headers
    assert f'http-equiv="refresh" content="0;url={ws.base}/lab"' in page
    assert TOKEN not in page


def test_every_response_carries_the_security_headers(ws, browser):
    port = ws.tool_ports["files"]
    for path in ("/lab", "/api/status", "/tools/files/", f"/tools/{port}/", "/_mlws/static/mlws.css"):
        answer = browser.get(ws.url(ws.base + path), timeout=10)
        assert answer.status_code == 200, path
        assert "frame-ancestors 'self'" in answer.headers.get("Content-Security-Policy", ""), path
        assert answer.headers.get("X-Frame-Options") == "SAMEORIGIN", path
        assert answer.headers.get("X-Content-Type-Options") == "nosniff", path
    login_page = requests.get(ws.url(ws.base + "/lab"), headers=NAVIGATION, timeout=10)
    assert login_page.status_code == 401 and login_page.headers.get("X-Frame-Options") == "SAMEORIGIN"


# --- arbitrary ports ----------------------------------------------------------------------------

class Recorder:
    """An HTTP server recording the headers it receives, run by `user` (None: this process's)."""

    SCRIPT = r"""
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(dict(self.headers.items())).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

    def __init__(self, user: str | None):
        self.port = free_port()
        prefix = ["runuser", "-u", user, "--"] if user else []
        self.process = subprocess.Popen([*prefix, sys.executable, "-c", self.SCRIPT, str(self.port)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("recorder did not start")

    def stop(self):
        self.process.terminate()
        self.process.wait(5)


def test_an_arbitrary_port_of_the_workspace_user_gets_no_workspace_credentials(ws, browser):
    recorder = Recorder(unprivileged_user())  # the workspace's own user
    try:
        answer = browser.get(ws.url(f"{ws.base}/tools/{recorder.port}/x"), timeout=10,
                             headers={"Authorization": f"token {TOKEN}", "Cookie": "app=1; " + "; ".join(
                                 f"{k}={v}" for k, v in browser.cookies.items()) + "; jupyterhub-session-id=s; other=2"})
        assert answer.status_code == 200
        seen = {name.lower(): value for name, value in answer.json().items()}
        assert "authorization" not in seen
        assert f"mlws_session_{ws.port}" not in seen.get("cookie", "") and "jupyterhub-" not in seen.get("cookie", "")
        assert "app=1" in seen["cookie"] and "other=2" in seen["cookie"]  # the port's own cookies stay
    finally:
        recorder.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a listener of another Unix user: CI runs as root")
def test_an_arbitrary_port_of_another_user_is_refused(ws, browser):
    recorder = Recorder(None)  # root's: not the workspace user (mlws)
    try:
        answer = browser.get(ws.url(f"{ws.base}/tools/{recorder.port}/"), timeout=10)
        assert answer.status_code == 403
        assert "belongs to another user" in answer.text
    finally:
        recorder.stop()
    # Nobody listens now: the gateway may ask again (not cached as refused) and shows "starting".
    assert browser.get(ws.url(f"{ws.base}/tools/{recorder.port}/"), timeout=10).status_code == 503


def test_listener_uids_reads_the_kernel_tables(tmp_path):
    (tmp_path / "tcp").write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1\n"
        "   1: 0200007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 2\n"
        "   2: 00000000:1F92 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3\n"
        "   3: 0100007F:1F93 0100007F:8000 01 00000000:00000000 00:00000000 00000000  1002        0 4\n")
    (tmp_path / "tcp6").write_text(
        "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1003        0 5\n")
    assert login.listener_uids(8080, str(tmp_path)) == {1000, 1003}
    assert login.listener_uids(8081, str(tmp_path)) == set()  # 127.0.0.2 is not where nginx connects
    assert login.listener_uids(8082, str(tmp_path)) == {0}
    assert login.listener_uids(8083, str(tmp_path)) == set()  # an established connection, not a listener


# --- sessions and guesses -------------------------------------------------------------------------

def test_session_cookies_are_signed_expire_and_can_be_revoked(tmp_path):
    settings = {"revoked_json": str(tmp_path / "r.json"), "revoked_map": str(tmp_path / "r.map"),
                "nginx_pid": str(tmp_path / "none.pid"), "check_socket": str(tmp_path / "none.sock"),
                "cookie_name": "mlws_session_1", "session_seconds": 60, "session_secret": "ab" * 32}
    sessions = login.Sessions(settings)
    first, expires = sessions.create()
    second, _ = sessions.create()
    assert first != second and sessions.valid(first) == expires and abs(expires - time.time() - 60) < 2
    session_id, _, mac = first.split(".")
    assert mac == login.session_mac(session_id, expires, "ab" * 32) and len(mac) == 22
    assert sessions.valid(f"{session_id}.{expires + 3600}.{mac}") is None  # a longer life is not signed
    assert sessions.valid(first[:-1] + ("A" if first[-1] != "A" else "B")) is None
    past = int(time.time()) - 1
    assert sessions.valid(f"{session_id}.{past}.{login.session_mac(session_id, past, 'ab' * 32)}") is None
    login.RELOAD_WAIT = 0.2  # no nginx here to confirm the revocation
    assert sessions.revoke(first) and sessions.valid(first) is None and sessions.valid(second)
    deadline = time.monotonic() + 5  # written by the service's publishing thread
    while session_id not in (tmp_path / "r.map").read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (tmp_path / "r.map").read_text() == f'"{session_id}" 1;\n'
    # Revoked ids are kept until they expire anyway, then forgotten.
    sessions.revoked[session_id] = time.time() - 1
    assert sessions.prune() == 1 and sessions.revoked == {}


def test_wrong_tokens_are_rate_limited():
    workspace = Workspace(env={"AUTHENTICATE_VIA_JUPYTER": TOKEN}, name="limit", manifest_tools=()).start()
    try:
        statuses = []
        lock = threading.Lock()

        def guess(number: int) -> None:
            answer = requests.get(workspace.url(f"/api/status?token=guess{number}"), timeout=20)
            with lock:
                statuses.append(answer.status_code)

        threads = [threading.Thread(target=guess, args=(n,)) for n in range(200)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses.count(200) == 0
        assert statuses.count(429) >= 150, sorted(set(statuses))
        # Even the right token waits now (the login service counts the failures of every client):
        # 429 with Retry-After, then it works again.
        refused = requests.get(workspace.url("/lab?token=" + TOKEN), headers=NAVIGATION, allow_redirects=False, timeout=10)
        assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= login.FAILURE_WINDOW
        waited = 0.0
        while True:
            answer = requests.get(workspace.url("/lab?token=" + TOKEN), headers=NAVIGATION, allow_redirects=False, timeout=10)
            if answer.status_code != 429 or waited > login.FAILURE_WINDOW + 5:
                break
            time.sleep(int(answer.headers["Retry-After"]))
            waited += int(answer.headers["Retry-After"])
        assert answer.status_code == 302 and "Set-Cookie" in answer.headers
    finally:
        workspace.cleanup()


def test_the_port_owner_answer_is_cached(ws, browser):
    """nginx asks the login service about a port once per 2 s, not per request (it caches only
    buffered answers: a regression here costs a Python round trip on every /tools/<port>/ request)."""
    port = ws.tool_ports["files"]
    time.sleep(2.5)  # whatever an earlier test left in the cache has expired
    before = ws.text().count("GET /_mlws/port-owner")
    for _ in range(50):
        assert browser.get(ws.url(f"{ws.base}/tools/{port}/"), timeout=10).status_code == 200
    time.sleep(0.5)
    asked = ws.text().count("GET /_mlws/port-owner") - before
    assert 1 <= asked <= 2, asked
