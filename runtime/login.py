"""The login service: a small HTTP server on a unix socket in the runtime folder, behind the gateway.

nginx authenticates every request itself (runtime/nginx.py); it sends here only what needs more:
- a navigation carrying `?token=<token>`: checked in constant time; if right, a new session (one
  per login) is made and its cookie set (HttpOnly, SameSite=Strict, Path=<base>/, Secure under
  TLS, expiring), and the browser goes on to the same URL without the token;
- requests without a valid session: 401 with the login form (browsers) or JSON (API clients);
- POST <base>/_mlws/login (the form; `next` must be a path under the base URL: no open redirect);
- POST <base>/_mlws/logout: revokes the session on the server, then clears the cookie; a GET
  only shows a button (a page elsewhere cannot log the user out);
- the "you followed a link from another site" page (nginx sets X-Mlws-Elsewhere);
- GET <base>/_mlws/port-owner?port=N (nginx's auth_request for /tools/<port>/): 204 when every
  listener of 127.0.0.1:N belongs to the workspace user (or none listens yet), 403 otherwise.

Sessions: each login gets a cookie of its own, `<id>.<expires>.<mac>`, signed with the start's
session secret in the form nginx's secure_link module checks, so nginx validates it (signature and
expiry) without asking anyone and a login needs no reload. Logout revokes the id: it goes into a
map nginx includes, nginx is reloaded (SIGHUP; changes coming together make one reload) and the
service answers once nginx's running configuration refuses the id (asked on nginx's private
check socket). Revoked ids are forgotten once they expire anyway. Wrong tokens are counted: after
FAILURES_ALLOWED in FAILURE_WINDOW seconds every token check is refused (429) until the window
clears, whatever the client's address (nginx limits each address too).

Run: `python -m runtime.login <settings.json>` (keys: socket, base_url, cookie_name, token,
secure, session_secret, session_seconds, revoked_map, revoked_json, nginx_pid, check_socket,
hub_jupyter).
"""
from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import html
import http.client
import http.cookies
import http.server
import json
import os
import secrets
import signal
import sys
import threading
import time
import urllib.parse

from runtime import unix_http
from runtime.unix_http import UnixHTTPConnection

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
FAILURES_ALLOWED = 20
FAILURE_WINDOW = 60.0
PRUNE_INTERVAL = 30.0
RELOAD_WAIT = 5.0


def token_matches(given: str, expected: str | None) -> bool:
    if not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def strip_token(path_and_query: str) -> str:
    """The same URL without its `token` query parameter (other parameters kept as sent)."""
    path, _, query = path_and_query.partition("?")
    kept = [part for part in query.split("&") if part and urllib.parse.unquote_plus(part.split("=", 1)[0]) != "token"]
    return path + ("?" + "&".join(kept) if kept else "")


def safe_next(candidate: str, base_url: str) -> str:
    """A redirect target under the base URL; anything else (other hosts, //x, \\x) gives the base."""
    home = base_url + "/"
    if (
        candidate.startswith(home)
        and not candidate.startswith("//")
        and "\\" not in candidate
        and not any(ord(ch) < 32 for ch in candidate)
    ):
        return candidate
    return home


def authorization_token(header: str) -> str | None:
    """The token of `Authorization: token T` / `Bearer T`, else None."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip()
    return None


# --- who listens on a port ----------------------------------------------------------------------

# Local addresses whose listener accepts a connection to 127.0.0.1 (as /proc/net/tcp* spell them).
LOOPBACK_REACHING = {
    "0100007F", "00000000",  # 127.0.0.1, 0.0.0.0
    "00000000000000000000000000000000",  # :: (dual-stack)
    "0000000000000000FFFF00000100007F",  # ::ffff:127.0.0.1
}


def listener_uids(port: int, proc_net: str = "/proc/net") -> set[int]:
    """The uids of the sockets listening on `port` that a connection to 127.0.0.1:port may reach."""
    uids: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            with open(os.path.join(proc_net, name), encoding="ascii") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 8 or fields[3] != "0A":  # 0A: LISTEN
                continue
            address, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port and address.upper() in LOOPBACK_REACHING:
                uids.add(int(fields[7]))
    return uids


def hub_session_ok(jupyter: str, base: str, cookie: str, authorization: str) -> bool:
    """Under JupyterHub: does Jupyter (the hub's single-user server) accept these credentials?
    `jupyter` is its address as nginx spells it: "unix:/path" or "127.0.0.1:PORT"."""
    if jupyter.startswith("unix:"):
        connection: http.client.HTTPConnection = UnixHTTPConnection(jupyter[len("unix:"):], timeout=5)
    else:
        host, _, port = jupyter.rpartition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
    headers = {name: value for name, value in (("Cookie", cookie), ("Authorization", authorization)) if value}
    try:
        connection.request("GET", base + "/api/me", headers=headers)
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


# --- sessions -------------------------------------------------------------------------------------

def session_mac(session_id: str, expires: int, secret: str) -> str:
    """What nginx's secure_link computes: base64url(md5("<expires>:<id>:<secret>")), unpadded."""
    digest = hashlib.md5(f"{expires}:{session_id}:{secret}".encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def parse_session(value: str) -> tuple[str, int] | None:
    """(id, expires) of a well-formed session cookie value, else None (the mac is nginx's to check)."""
    parts = value.split(".")
    if len(parts) == 3 and len(parts[0]) == 32 and all(ch in "0123456789abcdef" for ch in parts[0]) and parts[1].isdigit():
        return parts[0], int(parts[1])
    return None


class Sessions:
    """One signed cookie per login; nginx checks signature and expiry by itself, so a login needs
    no reload. Revoked ids (logout) are kept until they expire in a JSON file and in nginx's map."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.lock = threading.Lock()
        self.changed = threading.Event()
        try:
            with open(settings["revoked_json"], encoding="utf-8") as handle:
                self.revoked = {k: float(v) for k, v in json.load(handle).items()}
        except (OSError, ValueError):
            self.revoked = {}
        self.prune()
        with self.lock:
            self._write()
        threading.Thread(target=self._publish_forever, daemon=True).start()

    def create(self) -> tuple[str, int]:
        """A new session cookie value and its expiry (epoch seconds)."""
        session_id = secrets.token_hex(16)
        expires = int(time.time()) + int(self.settings["session_seconds"])
        return f"{session_id}.{expires}.{session_mac(session_id, expires, self.settings['session_secret'])}", expires

    def valid(self, value: str) -> int | None:
        """The expiry of a live session (signed by us, not expired, not revoked), else None."""
        parsed = parse_session(value)
        if parsed is None:
            return None
        session_id, expires = parsed
        right = session_mac(session_id, expires, self.settings["session_secret"])
        if not hmac.compare_digest(value.rsplit(".", 1)[1], right) or expires <= time.time():
            return None
        with self.lock:
            return None if session_id in self.revoked else expires

    def revoke(self, value: str) -> bool:
        """End the session everywhere; True once nginx refuses it (False if it was not live)."""
        expires = self.valid(value)
        if expires is None:
            return False
        with self.lock:
            self.revoked[value.split(".")[0]] = expires
            self.changed.set()
        self._wait_until_refused(value)
        return True

    def prune(self) -> int:
        """Forget revoked ids that have expired anyway (nginx refuses them by their expiry)."""
        now = time.time()
        with self.lock:
            gone = [session_id for session_id, expires in self.revoked.items() if expires <= now]
            for session_id in gone:
                del self.revoked[session_id]
            if gone:
                self.changed.set()
        return len(gone)

    def _publish_forever(self) -> None:
        """One writer: changes that come together make one reload of nginx, not one each."""
        while True:
            self.changed.wait()
            time.sleep(0.02)
            self.changed.clear()
            with self.lock:
                self._write()
            self._reload_nginx()

    def _write(self) -> None:
        """The JSON and nginx's map, each written atomically (lock held)."""
        write_private(self.settings["revoked_json"], json.dumps(self.revoked))
        write_private(self.settings["revoked_map"], "".join(f'"{session_id}" 1;\n' for session_id in sorted(self.revoked)))

    def _reload_nginx(self) -> None:
        try:
            with open(self.settings["nginx_pid"], encoding="ascii") as handle:
                os.kill(int(handle.read().strip()), signal.SIGHUP)
        except (OSError, ValueError):
            pass  # nginx not started yet: it reads the current map when it starts

    def _wait_until_refused(self, value: str) -> None:
        """Return once nginx's running configuration refuses the session three times in a row (new
        connections each time: a worker of the old configuration may still accept one)."""
        refused = 0
        deadline = time.monotonic() + RELOAD_WAIT
        while time.monotonic() < deadline and refused < 3:
            refused = refused + 1 if self._check(value) == 404 else 0
            if refused < 3:
                time.sleep(0.01)
        if refused < 3:
            log(f"WARNING: nginx did not take the revocation within {RELOAD_WAIT:.0f} s")

    def _check(self, value: str) -> int | None:
        connection = UnixHTTPConnection(self.settings["check_socket"], timeout=1)
        try:
            connection.request("GET", "/session", headers={"Cookie": f"{self.settings['cookie_name']}={value}"})
            return connection.getresponse().status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            connection.close()


class FailureWindow:
    """Wrong tokens in the last `window` seconds, for every client together."""

    def __init__(self, allowed: int = FAILURES_ALLOWED, window: float = FAILURE_WINDOW):
        self.allowed, self.window = allowed, window
        self.times: collections.deque[float] = collections.deque()
        self.lock = threading.Lock()

    def _trim(self, now: float) -> None:
        while self.times and self.times[0] <= now - self.window:
            self.times.popleft()

    def wait_seconds(self) -> int:
        """0 while token checks are allowed; else how long until the oldest failure leaves the window."""
        now = time.monotonic()
        with self.lock:
            self._trim(now)
            if len(self.times) < self.allowed:
                return 0
            return max(1, int(self.times[0] + self.window - now + 0.999))

    def record(self) -> None:
        with self.lock:
            self.times.append(time.monotonic())


def write_private(path: str, text: str) -> None:
    temp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temp, path)


def log(message: str) -> None:
    sys.stderr.write(f"mlws-login: {message}\n")
    sys.stderr.flush()


# --- pages ------------------------------------------------------------------------------------------

def render_page(base: str, title: str, body: str, head: str = "") -> bytes:
    """page.html with an already-escaped body."""
    with open(os.path.join(STATIC_DIR, "page.html"), encoding="utf-8") as handle:
        page = handle.read()
    return (page.replace("{{static}}", html.escape(base + "/_mlws/static")).replace("{{title}}", html.escape(title))
            .replace("{{head}}", head).replace("{{body}}", body)).encode("utf-8")


class LoginHandler(http.server.BaseHTTPRequestHandler):
    server_version = "mlws-login"
    protocol_version = "HTTP/1.1"
    settings: dict = {}
    sessions: Sessions | None = None
    failures = FailureWindow()

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        # Never log query strings: they may carry the token.
        sys.stderr.write("mlws-login: %s %s\n" % (self.command, self.path.partition("?")[0]))

    def address_string(self) -> str:  # a unix socket has no client address
        return "gateway"

    @property
    def base(self) -> str:
        return self.settings["base_url"]

    # --- responses -------------------------------------------------------------------------
    def _cookie(self, value: str, max_age: int) -> str:
        s = self.settings
        parts = [f"{s['cookie_name']}={value}", f"Path={s['base_url']}/", "HttpOnly", "SameSite=Strict",
                 f"Max-Age={max_age}"]
        if s.get("secure"):
            parts.append("Secure")
        return "; ".join(parts)

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
              content_type: str = "text/html; charset=utf-8"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if "X-Accel-Expires" not in (headers or {}):
            # Pages and logins are never cached; the port-owner answers are (by nginx, briefly).
            self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _wants_html(self) -> bool:
        return "text/html" in self.headers.get("Accept", "") or self.headers.get("Sec-Fetch-Mode") == "navigate"

    def _from_elsewhere(self) -> bool:
        return self.headers.get("Sec-Fetch-Site", "") in ("cross-site", "same-site")

    def _session_cookie(self) -> str:
        jar = http.cookies.SimpleCookie()
        try:
            jar.load(self.headers.get("Cookie", ""))
        except http.cookies.CookieError:
            return ""
        morsel = jar.get(self.settings["cookie_name"])
        return morsel.value if morsel else ""

    def _logged_in(self, target: str):
        """A session for this browser (a new one unless it has a live one), then on to `target`."""
        assert self.sessions is not None
        current = self._session_cookie()
        expiry = self.sessions.valid(current) if current else None
        headers = {}
        if expiry is None:
            value, expiry = self.sessions.create()
            headers["Set-Cookie"] = self._cookie(value, int(expiry - time.time()))
        if self._from_elsewhere():
            # After a navigation from another site the browser would not send a SameSite=Strict
            # cookie on a redirect; a page of ours that moves on makes the next one same-origin.
            link = html.escape(target)
            body = render_page(self.base, "Logged in", f'<p>Opening <a href="{link}">{link}</a> …</p>',
                               head=f'<meta http-equiv="refresh" content="0;url={link}">')
            self._send(200, body, headers)
        else:
            headers["Location"] = target
            self._send(302, b"", headers)

    def _login_page(self, next_path: str, error: str = "", status: int = 401, retry_after: int = 0):
        with open(os.path.join(STATIC_DIR, "login.html"), encoding="utf-8") as handle:
            page = handle.read()
        page = (
            page.replace("{{static}}", html.escape(self.base + "/_mlws/static"))
            .replace("{{action}}", html.escape(self.base + "/_mlws/login"))
            .replace("{{next}}", html.escape(next_path))
            .replace("{{error}}", html.escape(error))
        )
        headers = {"WWW-Authenticate": 'Token realm="mlws"'} if status == 401 else {}
        if retry_after:
            headers["Retry-After"] = str(retry_after)
        if self._wants_html():
            self._send(status, page.encode("utf-8"), headers)
        else:
            body = json.dumps({"message": error or "authentication required: log in or send Authorization: token <token>"})
            self._send(status, body.encode() + b"\n", headers, "application/json")

    def _too_many(self, next_path: str) -> bool:
        wait = self.failures.wait_seconds()
        if wait:
            self._login_page(next_path, f"Too many wrong tokens: try again in {wait} s.", 429, wait)
        return bool(wait)

    def _check_token(self, given: str, next_path: str) -> bool:
        """True if right; otherwise the refusal is sent."""
        if self._too_many(next_path):
            return False
        if token_matches(given, self.settings.get("token")):
            return True
        self.failures.record()
        self._login_page(next_path, "Wrong token.")
        return False

    # --- pages of their own ------------------------------------------------------------------
    def _elsewhere_page(self):
        target = safe_next(self.path, self.base)
        link = html.escape(target)
        body = render_page(self.base, "Link from another site", (
            "<p>You followed a link from another site (or another port of this host) to this workspace:</p>"
            f'<p class="path">{link}</p>'
            "<p>Pages of other sites cannot use the workspace in your name, so this link was not opened. "
            "Continue only if you meant to open it.</p>"
            f'<p><a class="button" href="{link}">Continue</a> &nbsp; <a href="{html.escape(self.base)}/">Workspace home</a></p>'))
        self._send(403, body)

    def _logout_page(self):
        action = html.escape(self.base + "/_mlws/logout")
        body = render_page(self.base, "Log out", (
            "<p>Log out of this workspace in this browser? The session is ended on the workspace too.</p>"
            f'<form method="post" action="{action}"><button type="submit">Log out</button></form>'))
        self._send(200, body)

    def _port_owner(self, query: str):
        raw = urllib.parse.parse_qs(query).get("port", [""])[0]
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            self._send(400, b"port: expected 1-65535\n", {}, "text/plain")
            return
        if self.settings.get("hub_jupyter") and not hub_session_ok(
                self.settings["hub_jupyter"], self.base, self.headers.get("Cookie", ""),
                self.headers.get("Authorization", "")):
            self._send(401, b"", {"X-Accel-Expires": "0"})
            return
        uids = listener_uids(int(raw))
        if not uids:
            # Nobody listens yet: the gateway's connection fails (starting page); not cached,
            # so whoever binds the port next is asked about again.
            self._send(204, b"", {"X-Accel-Expires": "0"})
        elif uids == {os.getuid()}:
            self._send(204, b"", {"X-Accel-Expires": "2"})
        else:
            self._send(403, b"", {"X-Accel-Expires": "0"})

    # --- methods ---------------------------------------------------------------------------
    def do_GET(self):  # noqa: N802 (http.server's naming)
        base = self.base
        path, _, query = self.path.partition("?")
        if path == "/_mlws/port-owner":
            self._port_owner(query)
            return
        if self.headers.get("X-Mlws-Elsewhere") == "1":
            self._elsewhere_page()
            return
        if path in (base + "/_mlws/logout", base + "/logout"):
            self._logout_page()
            return
        if path == base + "/_mlws/login":
            self._login_page(safe_next(urllib.parse.parse_qs(query).get("next", [""])[0], base))
            return
        next_path = safe_next(strip_token(self.path), base)
        given = urllib.parse.parse_qs(query, keep_blank_values=True).get("token")
        if given and given[0]:
            if self._check_token(given[0], next_path):
                self._logged_in(next_path)
            return
        header_token = authorization_token(self.headers.get("Authorization", ""))
        if header_token is not None:
            # nginx accepted neither this header nor a session: a wrong token, counted.
            if self._check_token(header_token, next_path):
                self._login_page(next_path, "Send the token as `Authorization: token <token>`.")
            return
        self._login_page(safe_next(self.path, base))

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802
        base = self.base
        path = self.path.partition("?")[0]
        length = int(self.headers.get("Content-Length") or 0)
        if length > 65536:
            self._send(413, b"too large\n", {}, "text/plain")
            return
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        if self.headers.get("X-Mlws-Elsewhere") == "1":
            self._elsewhere_page()
            return
        if path == base + "/_mlws/logout":
            current = self._session_cookie()
            if current and self.sessions is not None:
                self.sessions.revoke(current)
            self._send(303, b"", {"Location": base + "/", "Set-Cookie": self._cookie("", 0)})
            return
        if path != base + "/_mlws/login":
            self.do_GET()
            return
        form = urllib.parse.parse_qs(raw, keep_blank_values=True)
        next_path = safe_next(form.get("next", [""])[0], base)
        if self._check_token(form.get("token", [""])[0], next_path):
            self._logged_in(next_path)

    def _other(self):
        self._login_page(safe_next(self.path, self.base))

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other


def prune_forever(sessions: Sessions) -> None:
    while True:
        time.sleep(PRUNE_INTERVAL)
        removed = sessions.prune()
        if removed:
            log(f"{removed} expired session(s) removed")


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as handle:
        settings = json.load(handle)
    LoginHandler.settings = settings
    LoginHandler.sessions = Sessions(settings)
    threading.Thread(target=prune_forever, args=(LoginHandler.sessions,), daemon=True).start()
    unix_http.serve_forever(settings["socket"], LoginHandler)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
