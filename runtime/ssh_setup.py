"""The SSH setup service: one-line setup commands, their scripts and key enrolment, on a unix socket.

Behind the gateway (runtime/nginx.py `_ssh_locations`), the same small stdlib HTTP server shape as
the login service:

  GET  B/tooling/ssh/setup-command?origin=URL   (behind the login) one line, the original's form:
       /bin/bash <(curl -s --insecure "URL B/shared/ssh/setup?token=T&host=H&port=P")
       with `--pinnedpubkey sha256//...` as well when the workspace itself serves TLS.
  GET  B/shared/ssh/setup?token=T&host=H&port=P (token only) the setup script (bash).
  POST B/shared/ssh/enrol  token=T&key=<OpenSSH public key line> (token only): the key joins the
       workspace user's authorized_keys; the token is used up.
  GET  /publickey, B/publickey                  the workspace's public SSH host key.

Unlike the original, no private key leaves the workspace: the script makes the client's own key
pair and sends only its public key. A token is single-use and expires (`token_seconds`); tokens
live in this process's memory only, so a restart of the service ends every unused one. The host
key is delivered inside the script and written to known_hosts, never trusted on first use.

Run: `python -m runtime.ssh_setup <settings.json>` (written by runtime/steps/52_ssh.py; keys:
socket, base_url, user, host_key, authorized_keys, persisted_keys, token_seconds, pinned_key,
workdir, unavailable).
"""
from __future__ import annotations

import base64
import http.server
import json
import os
import re
import secrets
import shlex
import struct
import sys
import threading
import time
import urllib.parse

from runtime import unix_http

MAX_BODY = 16 * 1024
HOST_NAME = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
IPV6 = re.compile(r"^[0-9A-Fa-f:.]+$")
SHELL_SAFE_URL = re.compile(r"^https?://[A-Za-z0-9.:\[\]-]+[A-Za-z0-9._~/%=&?-]*$")
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa",
             "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")


class BadRequest(ValueError):
    pass


def log(message: str) -> None:
    print(f"mlws ssh-setup: {message}", file=sys.stderr, flush=True)


# ---- plain functions ---------------------------------------------------------------------------

def parse_origin(origin: str, base_url: str = "") -> tuple[str, str, int]:
    """(origin without a trailing /, host for ssh, port) of `scheme://host[:port]`; BadRequest otherwise.
    The workspace's own base URL may follow (`scheme://host[:port]B`, what a page under B may
    send): it is dropped, as the command adds it. The result goes into a shell command inside
    double quotes: only a strict host spelling passes."""
    try:
        parts = urllib.parse.urlsplit(origin.strip())
        port = parts.port
    except ValueError as error:
        raise BadRequest(f"origin {origin!r}: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"origin {origin!r}: expected http(s)://HOST[:PORT]")
    if parts.path.rstrip("/") not in ("", base_url) or parts.query or parts.fragment or parts.username or parts.password:
        raise BadRequest(f"origin {origin!r}: expected http(s)://HOST[:PORT] only (no path but the base URL, "
                         "no query or user)")
    host = parts.hostname
    bracketed = parts.netloc.rsplit("@", 1)[-1].startswith("[")
    if not (HOST_NAME.match(host) or (bracketed and IPV6.match(host))):
        raise BadRequest(f"origin {origin!r}: host {host!r} is not a plain host name or IP address")
    port = port or (443 if parts.scheme == "https" else 80)
    netloc = (f"[{host}]" if bracketed else host) + f":{port}"
    return f"{parts.scheme}://{netloc}", host, port


def setup_command(origin: str, base_url: str, token: str, host: str, port: int, pinned_key: str) -> str:
    """The one line the user runs: the original's form, plus the server's key pinned over TLS."""
    query = urllib.parse.urlencode({"token": token, "host": host, "port": str(port)})
    url = f"{origin}{base_url}/shared/ssh/setup?{query}"
    # The URL stands inside double quotes of a shell command: nothing bash would expand there.
    if not SHELL_SAFE_URL.match(url):
        raise BadRequest(f"setup URL {url!r}: holds characters a shell would expand")
    pin = f' --pinnedpubkey "sha256//{pinned_key}"' if pinned_key and origin.startswith("https:") else ""
    return f'/bin/bash <(curl -s --insecure{pin} "{url}")'


def parse_public_key(text: str) -> str:
    """`type base64` of one OpenSSH public key line (its comment dropped); BadRequest otherwise."""
    fields = text.strip().split()
    if "\n" in text.strip() or len(fields) < 2:
        raise BadRequest("key: expected one OpenSSH public key line (`ssh-ed25519 AAAA... comment`)")
    kind, data = fields[0], fields[1]
    if kind not in KEY_TYPES:
        raise BadRequest(f"key: type {kind!r} is not one of {', '.join(KEY_TYPES)}")
    try:
        blob = base64.b64decode(data, validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        inner = blob[4:4 + length].decode("ascii")
    except (ValueError, struct.error, UnicodeDecodeError):
        raise BadRequest("key: its base64 part is not an SSH public key") from None
    if inner != kind:
        raise BadRequest(f"key: says {kind!r} but holds a {inner!r} key")
    return f"{kind} {data}"


def add_authorized_key(path: str, key: str, comment: str) -> bool:
    """Append `key` to an authorized_keys file unless it is there; temp file + rename. True if added."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        lines = []
    if any(" ".join(line.split()[:2]) == key for line in lines):
        return False
    temp = f"{path}.tmp{os.getpid()}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in [*lines, f"{key} {comment}"]))
    os.replace(temp, path)
    return True


class Tokens:
    """One-time tokens: made by a setup command, checked by the script, used up by the enrolment."""

    def __init__(self, seconds: int):
        self.seconds = seconds
        self.expiry: dict[str, float] = {}
        self.lock = threading.Lock()

    def make(self) -> str:
        token = secrets.token_hex(16)
        with self.lock:
            now = time.monotonic()
            self.expiry = {t: e for t, e in self.expiry.items() if e > now - 3600}
            self.expiry[token] = now + self.seconds
        return token

    def problem(self, token: str, use: bool) -> str:
        """"" when the token is valid (and, with use=True, now used up); else why not."""
        with self.lock:
            expiry = self.expiry.get(token)
            if expiry is None:
                return "unknown or already used token: run a new setup command"
            if expiry < time.monotonic():
                return "expired token: run a new setup command"
            if use:
                del self.expiry[token]
        return ""


def setup_script(settings: dict, token: str, host: str, port: int, enrol_url: str, curl_options: list[str]) -> str:
    with open(settings["host_key"], encoding="utf-8") as handle:
        host_key = " ".join(handle.read().split()[:2])
    values = {
        "WS_HOST": host, "WS_PORT": str(port), "WS_USER": settings["user"], "WS_HOST_KEY": host_key,
        "WS_ENROL_URL": enrol_url, "WS_TOKEN": token, "WS_WORKDIR": settings["workdir"],
        "WS_DEFAULT_NAME": default_connection_name(host, port),
    }
    assignments = "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())
    options = "CURL_OPTIONS=(" + " ".join(shlex.quote(option) for option in curl_options) + ")\n"
    return SCRIPT_HEAD + assignments + options + SCRIPT_BODY


def default_connection_name(host: str, port: int) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "-", host).strip("-.") or "workspace"
    return f"{name}-{port}"


# The setup script. Plain POSIX tools and bash 3.2 (macOS) only: no `sed -i`, no associative arrays.
SCRIPT_HEAD = """#!/usr/bin/env bash
# SSH setup for an mlws workspace: makes this machine's own key pair, enrols its public key with the
# workspace (one-time token), and writes a Host block to ~/.ssh/config and the workspace's host key
# to ~/.ssh/known_hosts. No private key is ever sent or received.
set -u
"""
SCRIPT_BODY = r"""
fail() { echo "SSH setup failed: $*" >&2; exit 1; }
for program in ssh ssh-keygen curl awk; do
  command -v "$program" >/dev/null 2>&1 || fail "\`$program\` is not installed on this machine"
done

read -r -p "Provide a name for this connection [$WS_DEFAULT_NAME]: " NAME || fail "no connection name given"
NAME=${NAME:-$WS_DEFAULT_NAME}
case "$NAME" in
  ""|-*|*[!A-Za-z0-9._-]*) fail "connection name '$NAME': use letters, digits, '.', '_' and '-' only" ;;
esac

SSH_DIR="$HOME/.ssh"
KEY="$SSH_DIR/mlws_$NAME"
ALIAS="mlws-$NAME"
mkdir -p "$SSH_DIR" && chmod 700 "$SSH_DIR" || fail "cannot use $SSH_DIR"
if [ ! -f "$KEY" ]; then
  ssh-keygen -q -t ed25519 -N "" -C "$NAME (mlws workspace)" -f "$KEY" </dev/null || fail "could not make a key pair in $KEY"
fi

RESPONSE=$(mktemp) || fail "mktemp failed"
trap 'rm -f "$RESPONSE"' EXIT
STATUS=$(curl -s "${CURL_OPTIONS[@]}" -o "$RESPONSE" -w '%{http_code}' --data-urlencode "token=$WS_TOKEN" \
  --data-urlencode "key@$KEY.pub" "$WS_ENROL_URL") || fail "could not reach the workspace at $WS_ENROL_URL"
[ "$STATUS" = 200 ] || fail "the workspace refused the key (HTTP $STATUS): $(cat "$RESPONSE")"

# known_hosts: the host key this script brought, under the connection's own alias.
KNOWN="$SSH_DIR/known_hosts"
touch "$KNOWN" && chmod 600 "$KNOWN"
ssh-keygen -R "$ALIAS" -f "$KNOWN" >/dev/null 2>&1
rm -f "$KNOWN.old"
echo "$ALIAS $WS_HOST_KEY" >> "$KNOWN"

# ~/.ssh/config: this connection's block first (ssh uses the first value it finds), an older block
# of the same name removed.
CONFIG="$SSH_DIR/config"
touch "$CONFIG" && chmod 600 "$CONFIG"
{
  printf 'Host %s\n' "$NAME"
  printf '    HostName %s\n    Port %s\n    User %s\n' "$WS_HOST" "$WS_PORT" "$WS_USER"
  printf '    IdentityFile %s\n    IdentitiesOnly yes\n' "$KEY"
  printf '    HostKeyAlias %s\n    StrictHostKeyChecking yes\n    ServerAliveInterval 30\n\n' "$ALIAS"
  awk -v name="$NAME" '
    /^[ \t]*(Host|Match)[ \t]/ { skip = ($1 == "Host" && $2 == name && NF == 2) }
    !skip { print }' "$CONFIG"
} > "$CONFIG.mlws-new" && mv "$CONFIG.mlws-new" "$CONFIG" || fail "could not write $CONFIG"

ssh -o BatchMode=yes "$NAME" true </dev/null || fail "the connection '$NAME' does not work (see above)"
echo "SSH connection '$NAME' works: ssh $NAME"

ask() {
  read -r -p "$1 [y/N]: " ANSWER || ANSWER=""
  case "$ANSWER" in [yY]|[yY][eE][sS]) return 0 ;; *) return 1 ;; esac
}

if command -v remote_ikernel >/dev/null 2>&1; then
  if ask "remote_ikernel was detected on your machine. Do you want to register the workspace as a remote Jupyter kernel?"; then
    remote_ikernel manage --add --kernel_cmd="ipython kernel -f {connection_file}" --name="$NAME" \
      --interface=ssh --host="$NAME" --workdir="$WS_WORKDIR" || echo "remote_ikernel could not register the kernel" >&2
  fi
fi

if ask "Do you want to add this connection as mountable SFTP storage to your file manager?"; then
  BOOKMARKS="${XDG_CONFIG_HOME:-$HOME/.config}/gtk-3.0/bookmarks"
  mkdir -p "$(dirname "$BOOKMARKS")" && touch "$BOOKMARKS"
  grep -qxF "sftp://$NAME$WS_WORKDIR $NAME" "$BOOKMARKS" || echo "sftp://$NAME$WS_WORKDIR $NAME" >> "$BOOKMARKS"
  echo "Added sftp://$NAME$WS_WORKDIR to $BOOKMARKS"
fi
echo "Done. Connect with: ssh $NAME"
"""


# ---- the HTTP service --------------------------------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    settings: dict = {}
    tokens: Tokens
    keys_lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature); nginx logs requests
        pass

    def _send(self, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> None:
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> tuple[str, dict[str, str]]:
        path, _, query = self.path.partition("?")
        base = self.settings["base_url"]  # URL-quoted, as the path arrives (nginx passes it raw)
        if base and path.startswith(base + "/"):
            path = path[len(base):]
        return urllib.parse.unquote(path), {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}

    def do_GET(self):  # noqa: N802 (http.server's naming)
        path, query = self._route()
        try:
            if path == "/publickey":
                with open(self.settings["host_key"], encoding="utf-8") as handle:
                    return self._send(200, handle.read())
            if self.settings.get("unavailable"):
                return self._send(503, f"SSH is not available in this workspace: {self.settings['unavailable']}\n")
            if path == "/tooling/ssh/setup-command":
                return self._setup_command(query)
            if path == "/shared/ssh/setup":
                return self._setup_script(query)
        except BadRequest as error:
            return self._send(400, f"{error}\n")
        self._send(404, "not found\n")

    def do_POST(self):  # noqa: N802
        path, _ = self._route()
        if path != "/shared/ssh/enrol":
            return self._send(404, "not found\n")
        if self.settings.get("unavailable"):
            return self._send(503, f"SSH is not available in this workspace: {self.settings['unavailable']}\n")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._send(413, f"request body over {MAX_BODY} bytes\n")
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace")).items()}
        try:
            key = parse_public_key(form.get("key", ""))
        except BadRequest as error:
            return self._send(400, f"{error}\n")
        problem = self.tokens.problem(form.get("token", ""), use=True)
        if problem:
            return self._send(403, problem + "\n")
        comment = "mlws-enrolled-" + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.keys_lock:
            for path in (self.settings["authorized_keys"], self.settings["persisted_keys"]):
                add_authorized_key(path, key, comment)
        log(f"enrolled a {key.split()[0]} key")
        self._send(200, f"enrolled for user {self.settings['user']}\n")

    def _setup_command(self, query: dict[str, str]) -> None:
        if "origin" not in query:
            raise BadRequest("origin: missing; expected ?origin=http(s)://HOST[:PORT] (the address in the browser)")
        origin, host, port = parse_origin(query["origin"], self.settings["base_url"])
        token = self.tokens.make()
        self._send(200, setup_command(origin, self.settings["base_url"], token, host, port, self.settings["pinned_key"]))

    def _setup_script(self, query: dict[str, str]) -> None:
        problem = self.tokens.problem(query.get("token", ""), use=False)
        if problem:
            return self._send(403, f"echo {shlex.quote('SSH setup: ' + problem)} >&2; exit 1\n")
        scheme = "https" if self.headers.get("X-Forwarded-Proto") == "https" else "http"
        origin, host, _ = parse_origin(f"{scheme}://{self.headers.get('Host', '')}")
        ssh_host = query.get("host") or host
        if not (HOST_NAME.match(ssh_host) or IPV6.match(ssh_host)):
            raise BadRequest(f"host {ssh_host!r}: expected a plain host name or IP address")
        try:
            ssh_port = int(query.get("port") or origin.rsplit(":", 1)[1])
        except ValueError:
            raise BadRequest(f"port {query.get('port')!r}: expected a number") from None
        curl_options = ["--insecure"]
        if scheme == "https" and self.settings["pinned_key"]:
            curl_options += ["--pinnedpubkey", f"sha256//{self.settings['pinned_key']}"]
        enrol_url = f"{origin}{self.settings['base_url']}/shared/ssh/enrol"
        self._send(200, setup_script(self.settings, query["token"], ssh_host, ssh_port, enrol_url, curl_options),
                   "text/x-shellscript; charset=utf-8")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m runtime.ssh_setup SETTINGS.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        settings = json.load(handle)
    Handler.settings = settings
    Handler.tokens = Tokens(int(settings["token_seconds"]))
    unix_http.serve_forever(settings["socket"], Handler)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
