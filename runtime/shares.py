"""Share links: a file, a folder or a port, without a login, signed, expiring and revocable.

The original derived its share tokens as an unkeyed hash of a fixed key and the path: they never
expired, could not be revoked and travelled in URLs and loose cookies (contract sections 4 and
11). Here:

  * a link is a record in the store of live links (`<work>/.workspace/shares/links.json`, written
    whole to a temp file and renamed), and its token is `<id>.<expires>.<mac>`, where mac =
    HMAC-SHA256 over the record's id, kind, target and expiry with the deployment's key
    (`<work>/.workspace/shares/key`, 0600, made once per work folder: kept across restarts, and a
    new deployment has a new key, so its links are worthless here);
  * a token is good only while its record is in the store (revoking removes it), before its
    expiry, for exactly its target: one file, one folder (and what is inside it, resolved with
    symlinks and `..`, never outside), or one port;
  * a browser that opens a link with `?token=` is sent on to the same path without it, the token
    in an HttpOnly cookie whose Path is that link's prefix (Secure under TLS); other clients (curl,
    wget) may keep the token in the query.

Routes (behind the gateway, runtime/nginx.py `_share_locations`; B is the base URL):

  B/tooling/shares                 (behind the login) GET: {"enabled", "links"}; POST JSON
                                   {"path": P} or {"port": N}, optional "expires_hours": a link
  B/tooling/shares/<id>            DELETE (or POST B/tooling/shares/<id>/revoke): revoke it
  B/shared/link/<id>/...           a shared file (download) or folder (listing, ?download=zip);
                                   files are answered with X-Accel-Redirect, so nginx sends them
                                   (sendfile, ranges) from an internal location
  B/shared/tools/<port>/...        a shared port: nginx asks `/_check/port/<port>` of this service
                                   (auth_request) before every request; a browser's first visit
                                   with ?token= comes here to trade it for the cookie; websocket
                                   upgrades come here too (`/_relay/<port>/...`) and are carried
                                   by runtime/share_relay.py, so revoking or expiry ends them

Run: `python -m runtime.shares <settings.json>` (written by runtime/steps/51_shares.py; keys:
socket, base_url, shares_dir, workspace_dir, enabled, secure, default_hours, gateway_ports).
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import html
import http.server
import json
import mimetypes
import os
import re
import secrets
import sys
import threading
import time
import urllib.parse
import zipfile

from runtime import share_relay, unix_http

KEY_FILE = "key"
STORE_FILE = "links.json"
DEFAULT_HOURS = 72
MAX_HOURS = 90 * 24
MAX_BODY = 16 * 1024
# Where nginx serves a checked file from (an `internal` location: clients cannot ask for it).
FILES_LOCATION = "/_mlws/shared-files"
ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
OFF_MESSAGE = "Sharing is off in this workspace (SHARED_LINKS_ENABLED=false)."
TOKEN_PATTERN = re.compile(r"^(?P<id>[0-9a-f]{32})\.(?P<expires>[0-9]{1,12})\.(?P<mac>[A-Za-z0-9_-]{43})$")


class ShareError(ValueError):
    """A bad request to create a link: the message says which field and what was expected."""


def log(message: str) -> None:
    print(f"mlws shares: {message}", file=sys.stderr, flush=True)


# ---- the key and the signature ----------------------------------------------------------------

def write_private(path: str, text: str) -> None:
    """`text` into `path`, mode 0600, all or nothing (temp file, fsync, rename)."""
    temp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def load_key(shares_dir: str) -> bytes:
    """The deployment's signing key, made on first use (256 random bits, hex, 0600)."""
    os.makedirs(shares_dir, mode=0o700, exist_ok=True)
    path = os.path.join(shares_dir, KEY_FILE)
    if not os.path.exists(path):
        write_private(path, secrets.token_hex(32) + "\n")
    with open(path, encoding="ascii") as handle:
        key = handle.read().strip()
    if not re.match(r"^[0-9a-f]{64}$", key):
        raise ShareError(f"{path}: expected 64 hex digits (the share-link key); remove it to make a new one "
                         "(every existing link stops working)")
    return bytes.fromhex(key)


@dataclasses.dataclass(frozen=True)
class Link:
    id: str
    kind: str  # "file", "folder" or "port"
    target: str  # the real path (file, folder) or the port number
    expires: int  # Unix time
    created: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def sign(key: bytes, link: Link) -> str:
    message = f"mlws-share-v1\n{link.id}\n{link.kind}\n{link.target}\n{link.expires}".encode("utf-8")
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def token_for(key: bytes, link: Link) -> str:
    return f"{link.id}.{link.expires}.{sign(key, link)}"


def verify(key: bytes, links: dict[str, Link], token: str, now: float | None = None) -> Link | None:
    """The live link a token stands for, or None: unknown (revoked, another deployment's),
    tampered with (mac or expiry changed), or expired."""
    match = TOKEN_PATTERN.match(token or "")
    if not match:
        return None
    link = links.get(match["id"])
    if link is None or str(link.expires) != match["expires"]:
        return None
    if not hmac.compare_digest(sign(key, link), match["mac"]):
        return None
    if (time.time() if now is None else now) >= link.expires:
        return None
    return link


# ---- the store of live links -------------------------------------------------------------------

class LinkStore:
    """The live links, in memory and in one JSON file rewritten whole on every change."""

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()
        self.links: dict[str, Link] = {}
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            self.links = {item["id"]: Link(**item) for item in data.get("links", [])}
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            # A damaged store: start empty (every link is revoked), keep the damaged file to look at.
            log(f"{path}: not a valid store of links ({error}); starting with none, the file is kept as {path}.damaged")
            os.replace(path, path + ".damaged")

    def _write(self) -> None:
        now = time.time()
        self.links = {key: link for key, link in self.links.items() if link.expires > now}
        items = sorted((link.as_dict() for link in self.links.values()), key=lambda item: item["created"])
        write_private(self.path, json.dumps({"links": items}, indent=2) + "\n")

    def add(self, link: Link) -> None:
        with self.lock:
            self.links[link.id] = link
            self._write()

    def revoke(self, link_id: str) -> bool:
        with self.lock:
            if self.links.pop(link_id, None) is None:
                return False
            self._write()
            return True

    def snapshot(self) -> dict[str, Link]:
        with self.lock:
            return dict(self.links)


# ---- what may be shared ------------------------------------------------------------------------

def parse_hours(raw, default_seconds: int) -> int:
    """Seconds a link lives: `expires_hours` (fractions allowed, one second to MAX_HOURS), else the default."""
    if raw is None or raw == "":
        return default_seconds
    expected = f"expected a number of hours greater than 0 and at most {MAX_HOURS} (fractions allowed)"
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ShareError(f"expires_hours: {expected}")
    try:
        hours = float(raw)
    except ValueError:
        raise ShareError(f"expires_hours={raw!r}: {expected}") from None
    if not 0 < hours <= MAX_HOURS:
        raise ShareError(f"expires_hours={raw!r}: {expected}")
    return max(1, round(hours * 3600))


def resolve_share_path(raw, workspace_dir: str) -> tuple[str, str]:
    """(kind, real path) of a path to share: relative to the work folder or absolute inside it."""
    if not isinstance(raw, str) or not raw.strip() or "\0" in raw:
        raise ShareError("path: expected a file or folder inside the work folder")
    root = os.path.realpath(workspace_dir)
    real = os.path.realpath(os.path.join(root, raw.strip()))
    if real != root and not real.startswith(root + os.sep):
        raise ShareError(f"path {raw!r}: outside the work folder {root} (only its files and folders may be shared)")
    if os.path.isdir(real):
        return "folder", real
    if os.path.isfile(real):
        return "file", real
    raise ShareError(f"path {raw!r}: no such file or folder in the work folder")


def parse_port(raw, gateway_ports: list[int]) -> str:
    text = str(raw).strip() if isinstance(raw, (int, str)) and not isinstance(raw, bool) else ""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ShareError(f"port {raw!r}: expected a port number 1-65535")
    if int(text) in gateway_ports:
        raise ShareError(f"port {text}: the gateway's own port cannot be shared")
    return str(int(text))


def new_link(request: dict, workspace_dir: str, gateway_ports: list[int], default_hours: int,
             now: float | None = None) -> Link:
    """A link for the request {"path": P} or {"port": N}, with "expires_hours" (default a few days)."""
    if not isinstance(request, dict):
        raise ShareError('expected a JSON object: {"path": "..."} or {"port": N}, optional "expires_hours"')
    unknown = sorted(set(request) - {"path", "port", "expires_hours"})
    if unknown:
        raise ShareError(f"unknown field(s) {', '.join(unknown)}: expected path or port, and expires_hours")
    if ("path" in request) == ("port" in request):
        raise ShareError('expected exactly one of "path" (a file or folder) and "port"')
    if "path" in request:
        kind, target = resolve_share_path(request["path"], workspace_dir)
    else:
        kind, target = "port", parse_port(request["port"], gateway_ports)
    seconds = parse_hours(request.get("expires_hours"), default_hours * 3600)
    created = int(time.time() if now is None else now)
    return Link(secrets.token_hex(16), kind, target, created + seconds, created)


def link_path(base_url: str, link: Link) -> str:
    """The path of a link without its token."""
    if link.kind == "port":
        return f"{base_url}/shared/tools/{link.target}/"
    if link.kind == "file":
        return f"{base_url}/shared/link/{link.id}/{urllib.parse.quote(os.path.basename(link.target))}"
    return f"{base_url}/shared/link/{link.id}/"


def link_prefix(base_url: str, link: Link) -> str:
    """The path prefix a link's cookie is scoped to."""
    if link.kind == "port":
        return f"{base_url}/shared/tools/{link.target}/"
    return f"{base_url}/shared/link/{link.id}/"


def cookie_name(link_id: str = "", port: str = "") -> str:
    return f"mlws_share_port_{port}" if port else f"mlws_share_{link_id}"


def describe(key: bytes, base_url: str, link: Link) -> dict:
    token = token_for(key, link)
    return {**link.as_dict(), "url_path": f"{link_path(base_url, link)}?token={token}", "token": token,
            "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(link.expires))}


def inside(root: str, rest: str) -> str | None:
    """The real path of `rest` under the folder `root` (a real path), or None when it resolves
    (through `..` or symlinks) outside it."""
    if "\0" in rest:
        return None
    real = os.path.realpath(os.path.join(root, rest.lstrip("/")))
    if real == root or real.startswith(root + os.sep):
        return real
    return None


def content_disposition(name: str) -> str:
    ascii_name = re.sub(r'[^A-Za-z0-9._ -]', "_", name) or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


def content_type(path: str) -> str:
    kind, encoding = mimetypes.guess_type(path, strict=False)
    if encoding or not kind:
        return "application/octet-stream"
    return kind + ("; charset=utf-8" if kind.startswith("text/") else "")


def folder_entries(folder: str, root: str) -> list[tuple[str, bool, int]]:
    """(name, is folder, size) of what a listing shows: entries that resolve inside the share."""
    result = []
    try:
        names = sorted(os.listdir(folder), key=str.lower)
    except OSError:
        return result
    for name in names:
        real = inside(root, os.path.relpath(os.path.join(folder, name), root))
        if real is None:
            continue
        try:
            info = os.stat(real)
        except OSError:
            continue
        result.append((name, os.path.isdir(real), info.st_size))
    return result


def listing_page(title: str, entries: list[tuple[str, bool, int]], at_root: bool) -> bytes:
    esc = html.escape
    rows = [] if at_root else ['<li><a href="../">../</a></li>']
    for name, is_folder, size in entries:
        href = urllib.parse.quote(name) + ("/" if is_folder else "")
        label = esc(name) + ("/" if is_folder else "")
        rows.append(f'<li><a href="{esc(href)}"{"" if is_folder else " download"}>{label}</a>'
                    f'{"" if is_folder else f" <small>{size} bytes</small>"}</li>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title><link rel="icon" href="data:,">
<style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}}</style></head>
<body><h1>{esc(title)}</h1><p><a id="zip" href="?download=zip">Download this folder as a zip</a></p>
<ul id="entries">{''.join(rows)}</ul></body></html>
""".encode("utf-8")


class _Unseekable:
    """The response body as a write-only stream for zipfile (which then writes data descriptors)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, data) -> int:
        self.stream.write(data)
        return len(data)

    def flush(self) -> None:
        self.stream.flush()


def write_zip(stream, folder: str, root: str) -> None:
    """Every file under `folder` that resolves inside the share, streamed as a zip."""
    with zipfile.ZipFile(_Unseekable(stream), "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for current, dirs, files in os.walk(folder):
            dirs[:] = sorted(name for name in dirs if not os.path.islink(os.path.join(current, name)))
            for name in sorted(files):
                path = os.path.join(current, name)
                real = inside(root, os.path.relpath(path, root))
                if real is None or not os.path.isfile(real):
                    continue
                try:
                    archive.write(real, os.path.relpath(path, folder))
                except ConnectionError:
                    raise  # the client went away: stop
                except OSError as error:
                    log(f"zip of {folder}: skipped {path} ({error})")


# ---- the service -------------------------------------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "mlws-shares"
    # Keep-alive with nginx (upstream keepalive): every answer has a Content-Length, but a zip.
    protocol_version = "HTTP/1.1"
    settings: dict = {}
    key: bytes = b""
    store: LinkStore
    relays: share_relay.Relays

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        pass

    def address_string(self) -> str:  # a unix socket has no client address
        return "gateway"

    @property
    def base(self) -> str:
        return self.settings["base_url"]

    def _send(self, status: int, body: bytes = b"", content_type_: str = "text/plain; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type_)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data) -> None:
        self._send(status, (json.dumps(data, indent=2) + "\n").encode("utf-8"), "application/json")

    def _refused(self) -> None:
        # The same answer for every bad token: nothing says whether a link ever existed.
        self._send(401, b"this share link is not valid: it was revoked, has expired, or is not a link of this workspace\n")

    def _split(self) -> tuple[list[str], dict[str, list[str]]]:
        """The path's segments after the base URL (still percent-encoded), and the query. The raw
        path may spell the base URL's characters differently: its segments are counted instead."""
        raw_path, _, query = self.path.partition("?")
        segments = raw_path.split("/")[1:]
        return segments[self.base.count("/"):], urllib.parse.parse_qs(query, keep_blank_values=True)

    def _is_navigation(self) -> bool:
        return (self.headers.get("Sec-Fetch-Mode") == "navigate"
                or (not self.headers.get("Sec-Fetch-Mode") and "text/html" in self.headers.get("Accept", "")))

    def _token(self, query: dict, name: str) -> tuple[str, bool]:
        """(token, came in the query): the query's ?token= wins over the cookie."""
        given = (query.get("token") or [""])[0]
        if given:
            return given, True
        from http.cookies import CookieError, SimpleCookie

        try:
            jar = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            return "", False
        return (jar[name].value if name in jar else ""), False

    def _here(self, segments: list[str]) -> str:
        """This request's path rebuilt from the base URL and its (raw) segments after it: a
        redirect never repeats whatever the client wrote before them (`//host...`)."""
        return self.base + "/" + "/".join(segments)

    def _cookie_redirect(self, link: Link, token: str, query: dict, segments: list[str]) -> None:
        """Move the token from the URL into a cookie scoped to the link, and go on without it."""
        rest = {name: values for name, values in query.items() if name != "token"}
        location = self._here(segments) + ("?" + urllib.parse.urlencode(rest, doseq=True) if rest else "")
        prefix = link_prefix(self.base, link)
        name = cookie_name(port=link.target) if link.kind == "port" else cookie_name(link.id)
        parts = [f"{name}={token}", f"Path={prefix}", f"Max-Age={max(1, link.expires - int(time.time()))}",
                 "HttpOnly", "SameSite=Lax"]
        if self.settings.get("secure"):
            parts.append("Secure")
        self._send(302, b"", headers={"Location": location, "Set-Cookie": "; ".join(parts)})

    # --- B/tooling/shares ------------------------------------------------------------------
    def _list(self) -> None:
        links = sorted(self.store.snapshot().values(), key=lambda link: link.created)
        now = time.time()
        enabled = bool(self.settings.get("enabled"))
        self._json(200, {"enabled": enabled, "message": "" if enabled else OFF_MESSAGE,
                         "links": [describe(self.key, self.base, link) for link in links if link.expires > now]})

    def _create(self) -> None:
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_BODY:
            self.close_connection = True  # the body, if any, is left unread
            return self._json(400, {"error": f"expected a JSON body of at most {MAX_BODY} bytes with Content-Length"})
        body = self.rfile.read(int(length))
        if not self.settings.get("enabled"):
            return self._json(409, {"error": OFF_MESSAGE})
        # A page of another site cannot send this type without the browser asking first (CORS).
        if "application/json" not in self.headers.get("Content-Type", ""):
            return self._json(415, {"error": "expected Content-Type: application/json"})
        try:
            request = json.loads(body or b"null")
            link = new_link(request, self.settings["workspace_dir"], self.settings.get("gateway_ports", []),
                            int(self.settings.get("default_hours", DEFAULT_HOURS)))
        except ValueError as error:  # ShareError, and JSON that does not parse
            return self._json(400, {"error": str(error)})
        self.store.add(link)
        log(f"new link {link.id}: {link.kind} {link.target}, until "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(link.expires))}")
        self._json(201, describe(self.key, self.base, link))

    def _revoke(self, link_id: str) -> None:
        if not ID_PATTERN.match(link_id) or not self.store.revoke(link_id):
            return self._json(404, {"error": f"no live link {link_id!r}"})
        ended = self.relays.close_link(link_id)
        log(f"revoked link {link_id}" + (f", {ended} open connection(s) through it ended" if ended else ""))
        self._json(200, {"revoked": link_id, "connections_ended": ended})

    # --- B/shared/link/<id>/... ------------------------------------------------------------
    def _shared_link(self, segments: list[str], query: dict) -> None:
        link_id = segments[0] if segments else ""
        token, in_query = self._token(query, cookie_name(link_id))
        link = verify(self.key, self.store.snapshot(), token)
        if link is None or link.id != link_id or link.kind == "port":
            return self._refused()
        if in_query and self._is_navigation():
            return self._cookie_redirect(link, token, query, ["shared", "link", *segments])
        if len(segments) == 1:  # B/shared/link/<id> without "/"
            query_string = self.path.partition("?")[2]
            return self._send(302, b"", headers={"Location": self._here(["shared", "link", link_id, ""]) + (
                "?" + query_string if query_string else "")})
        rest = urllib.parse.unquote("/".join(segments[1:]), errors="strict")
        if link.kind == "file":
            # The file itself, at B/shared/link/<id>/ or B/shared/link/<id>/<its name>.
            if rest not in ("", os.path.basename(link.target)):
                return self._send(404, b"not part of this share\n")
            if os.path.realpath(link.target) != link.target or not os.path.isfile(link.target):
                return self._send(404, b"the shared file is gone\n")
            return self._accel(link.target)
        root = link.target
        if os.path.realpath(root) != root or not os.path.isdir(root):
            return self._send(404, b"the shared folder is gone\n")
        real = inside(root, rest)
        if real is None or not os.path.exists(real):
            return self._send(404, b"not part of this share\n")
        if os.path.isdir(real):
            if rest and not rest.endswith("/"):
                return self._send(302, b"", headers={"Location": self._here(["shared", "link", *segments, ""])})
            if (query.get("download") or [""])[0] == "zip":
                return self._zip(real, root)
            title = os.path.basename(root) + ("/" + rest.rstrip("/") if rest.strip("/") else "")
            page = listing_page(title, folder_entries(real, root), real == root)
            return self._send(200, page, "text/html; charset=utf-8",
                              {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})
        return self._accel(real)

    def _accel(self, real: str) -> None:
        """nginx sends the file (sendfile, ranges) from its internal location."""
        self.send_response(200)
        self.send_header("X-Accel-Redirect", FILES_LOCATION + urllib.parse.quote(real))
        self.send_header("Content-Type", content_type(real))
        self.send_header("Content-Disposition", content_disposition(os.path.basename(real)))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _zip(self, folder: str, root: str) -> None:
        name = (os.path.basename(folder) or "share") + ".zip"
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Disposition", content_disposition(name))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD":
            try:
                write_zip(self.wfile, folder, root)
            except ConnectionError:
                pass  # the download was cancelled

    # --- B/shared/tools/<port>/... ---------------------------------------------------------
    def _port_link(self, port: str, query: dict, token_header: str) -> Link | None:
        token = token_header or self._token(query, cookie_name(port=port))[0]
        link = verify(self.key, self.store.snapshot(), token)
        return link if link is not None and link.kind == "port" and link.target == port else None

    def _check_port(self, port: str) -> None:
        """nginx's auth_request before every request to a shared port: 204 go, 401 no link, 403
        the port is another user's."""
        link = self._port_link(port, {}, self.headers.get("X-Mlws-Share-Token", "")) if port.isdigit() else None
        if link is None:
            return self._send(401)
        from runtime.login import listener_uids

        uids = listener_uids(int(port))
        if uids and uids != {os.getuid()}:
            return self._send(403)
        # Which link let the request in: a websocket is relayed under it (_relay).
        self._send(204, headers={"X-Mlws-Share-Link": link.id})

    def _port_login(self, segments: list[str], query: dict) -> None:
        port = segments[2] if len(segments) > 2 else ""
        token = (query.get("token") or [""])[0]
        link = self._port_link(port, query, "")
        if link is None or not token:
            return self._refused()
        self._cookie_redirect(link, token, query, segments)

    def _relay(self, target: str) -> None:
        """A websocket upgrade to a shared port, after nginx's check: carried here, under its link,
        until either end closes it, the link is revoked or it expires (runtime/share_relay.py).
        `target` is `<port>/<path and query>`; the link's id comes from the check, set by nginx."""
        port, _, rest = target.partition("/")
        link = self.store.snapshot().get(self.headers.get("X-Mlws-Share-Link", ""))
        if link is None or link.kind != "port" or link.target != port or link.expires <= time.time():
            return self._refused()
        try:
            backend = share_relay.connect(int(port))
        except OSError:
            return self._send(502, b"the shared port does not answer\n")
        self.close_connection = True  # the connection is the websocket's from here on
        pair = (self.connection, backend)
        self.relays.add(link.id, link.expires, pair)
        try:
            backend.sendall(share_relay.request_head(self.command, "/" + rest, list(self.headers.items())))
            share_relay.carry(self.rfile.read1, self.connection, backend)
        except OSError:
            pass
        finally:
            self.relays.remove(link.id, pair)
            backend.close()

    # --- methods ---------------------------------------------------------------------------
    def do_GET(self):  # noqa: N802 (http.server's naming)
        raw_path = self.path.partition("?")[0]
        if raw_path.startswith("/_check/port/"):
            return self._check_port(raw_path[len("/_check/port/"):])
        if raw_path.startswith("/_relay/"):
            return self._relay(self.path[len("/_relay/"):])
        segments, query = self._split()
        try:
            if segments[:2] == ["tooling", "shares"] and len(segments) == 2:
                return self._list()
            if segments[:2] == ["shared", "link"]:
                return self._shared_link(segments[2:], query)
            if segments[:2] == ["shared", "tools"]:
                return self._port_login(segments, query)
        except UnicodeDecodeError:
            return self._send(400, b"the path is not UTF-8\n")
        self._send(404, b"not found\n")

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802
        segments, _ = self._split()
        if segments == ["tooling", "shares"]:
            return self._create()
        if len(segments) == 4 and segments[:2] == ["tooling", "shares"] and segments[3] == "revoke":
            return self._revoke(segments[2])
        self._send(404, b"not found\n")

    def do_DELETE(self):  # noqa: N802
        segments, _ = self._split()
        if len(segments) == 3 and segments[:2] == ["tooling", "shares"]:
            return self._revoke(segments[2])
        self._send(404, b"not found\n")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m runtime.shares <settings.json>", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as handle:
        settings = json.load(handle)
    Handler.settings = settings
    Handler.key = load_key(settings["shares_dir"])
    Handler.store = LinkStore(os.path.join(settings["shares_dir"], STORE_FILE))
    Handler.relays = share_relay.Relays()
    threading.Thread(target=Handler.relays.sweep_forever, daemon=True).start()
    unix_http.serve_forever(settings["socket"], Handler)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
