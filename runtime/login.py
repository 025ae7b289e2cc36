"""The login service: a tiny HTTP server on 127.0.0.1 behind the gateway.

nginx sends it only requests that carry no valid session (plus the login form's POST and logout):
- `?token=<token>` on any URL: checked in constant time; if right, the session cookie is set
  (HttpOnly, SameSite=Lax, Path=<base>/, Secure under TLS) and the browser is redirected to the same
  URL without the token, so the token leaves the address bar and the history.
- anything else: 401 with the login page (a form asking for the token).
- POST <base>/_mlws/login: the form; `next` must be a path under the base URL (no open redirect).
- <base>/_mlws/logout: clears the cookie.

Run: `python -m runtime.login <settings.json>`; the JSON holds port, base_url, cookie_name,
session_value, token and secure.
"""
from __future__ import annotations

import html
import hmac
import http.server
import json
import os
import socketserver
import sys
import urllib.parse

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


def token_matches(given: str, expected: str) -> bool:
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


class LoginHandler(http.server.BaseHTTPRequestHandler):
    server_version = "mlws-login"
    protocol_version = "HTTP/1.1"
    settings: dict = {}

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        # Never log query strings: they may carry the token.
        sys.stderr.write("mlws-login: %s %s\n" % (self.command, self.path.partition("?")[0]))

    # --- responses -------------------------------------------------------------------------
    def _cookie(self, value: str, max_age: int | None) -> str:
        s = self.settings
        parts = [f"{s['cookie_name']}={value}", f"Path={s['base_url']}/", "HttpOnly", "SameSite=Lax"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if s.get("secure"):
            parts.append("Secure")
        return "; ".join(parts)

    def _send(self, status: int, body: bytes, headers: dict[str, str], content_type: str = "text/html; charset=utf-8"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Frame-Options", "DENY")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _redirect_logged_in(self, target: str):
        self._send(302, b"", {"Location": target, "Set-Cookie": self._cookie(self.settings["session_value"], 30 * 24 * 3600)})

    def _login_page(self, next_path: str, error: str = ""):
        base = self.settings["base_url"]
        with open(os.path.join(STATIC_DIR, "login.html"), encoding="utf-8") as handle:
            page = handle.read()
        page = (
            page.replace("{{static}}", html.escape(base + "/_mlws/static"))
            .replace("{{action}}", html.escape(base + "/_mlws/login"))
            .replace("{{next}}", html.escape(next_path))
            .replace("{{error}}", html.escape(error))
        )
        headers = {"WWW-Authenticate": 'Token realm="mlws"'}
        wants_html = "text/html" in self.headers.get("Accept", "")
        if wants_html:
            self._send(401, page.encode("utf-8"), headers)
        else:
            body = json.dumps({"message": error or "authentication required: log in or send Authorization: token <token>"})
            self._send(401, body.encode() + b"\n", headers, "application/json")

    # --- methods ---------------------------------------------------------------------------
    def do_GET(self):  # noqa: N802 (http.server's naming)
        base = self.settings["base_url"]
        path, _, query = self.path.partition("?")
        if path == base + "/_mlws/logout":
            self._send(302, b"", {"Location": base + "/", "Set-Cookie": self._cookie("", 0)})
            return
        if path == base + "/_mlws/login":
            self._login_page(safe_next(urllib.parse.parse_qs(query).get("next", [""])[0], base))
            return
        given = urllib.parse.parse_qs(query, keep_blank_values=True).get("token")
        if given:
            if token_matches(given[0], self.settings["token"]):
                self._redirect_logged_in(safe_next(strip_token(self.path), base))
                return
            self._login_page(safe_next(strip_token(self.path), base), "Wrong token.")
            return
        self._login_page(safe_next(self.path, base))

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802
        base = self.settings["base_url"]
        path = self.path.partition("?")[0]
        length = int(self.headers.get("Content-Length") or 0)
        if length > 65536:
            self._send(413, b"too large\n", {}, "text/plain")
            return
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        if path != base + "/_mlws/login":
            self._login_page(safe_next(self.path, base))
            return
        form = urllib.parse.parse_qs(raw, keep_blank_values=True)
        next_path = safe_next(form.get("next", [""])[0], base)
        if token_matches(form.get("token", [""])[0], self.settings["token"]):
            self._redirect_logged_in(next_path)
        else:
            self._login_page(next_path, "Wrong token.")

    def _other(self):
        self._login_page(safe_next(self.path, self.settings["base_url"]))

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as handle:
        settings = json.load(handle)
    LoginHandler.settings = settings
    server = Server(("127.0.0.1", int(settings["port"])), LoginHandler)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
