"""The workspace's own pages and JSON under B/tooling/, behind the gateway's login.

- `B/tooling/tools`: the tool menu as JSON in the original's entry format (`id`, `name`,
  `url_path`, `description`, plus `available` and, when not, `reason`), the flavor's tools in
  the manifest's order followed by the user's own entries from `~/.workspace/tools/*.json` (each
  file one entry or a list of entries, as the original read them; an invalid file is skipped and
  named in the service's log).
- `B/tooling/storage`: disk use of the work folder and of the container against
  MAX_WORKSPACE_FOLDER_SIZE / MAX_CONTAINER_SIZE (GB). Sizes are measured in a background thread
  (walking a large folder takes seconds) and at most every MEASURE_EVERY seconds; until the first
  measurement is done the answer says `"measuring": true`.
- `B/tooling/home`: the workspace home page: every tool (unavailable ones greyed with the
  reason), Access Port, SSH, Share (through the share service's `B/tooling/shares`,
  runtime/shares.py) and a storage warning.

The gateway authenticates every request before it reaches this service (it is a routed
upstream like any tool, on a unix socket in the 0700 runtime folder), so the service itself
trusts its callers. It runs as the workspace user.
"""
from __future__ import annotations

import glob
import html
import http.server
import json
import os
import sys
import threading
import time

from runtime import unix_http

MEASURE_EVERY = 300.0
GB = 1000 ** 3
# Mount points of a container that are not its own disk use.
NOT_CONTAINER = ("/proc", "/sys", "/dev", "/run", "/tmp")


def folder_bytes(root: str, skip: tuple[str, ...] = ()) -> int:
    """Bytes used by the files under `root` on its own file system (like `du -sx`), minus `skip`."""
    total = 0
    try:
        device = os.lstat(root).st_dev
    except OSError:
        return 0
    stack = [root]
    seen: set[tuple[int, int]] = set()
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.is_dir(follow_symlinks=False):
                if info.st_dev == device and entry.path not in skip:
                    stack.append(entry.path)
                continue
            if info.st_nlink > 1:
                key = (info.st_dev, info.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += info.st_blocks * 512
    return total


class Storage:
    """The last measurement of the work folder and the container, refreshed in the background."""

    def __init__(self, workspace_dir: str, container_root: str, limits: dict[str, float | None]):
        self.workspace_dir = workspace_dir
        self.container_root = container_root
        self.limits = limits
        self.sizes: dict[str, int] | None = None
        self.measured_at = 0.0
        self.lock = threading.Lock()
        self.running = False

    def _measure(self) -> None:
        workspace = folder_bytes(self.workspace_dir)
        skip = (self.workspace_dir, *NOT_CONTAINER)
        container = folder_bytes(self.container_root, skip)
        with self.lock:
            self.sizes = {"workspace": workspace, "container": container}
            self.measured_at = time.time()
            self.running = False

    def refresh(self) -> None:
        with self.lock:
            if self.running or (self.sizes is not None and time.time() - self.measured_at < MEASURE_EVERY):
                return
            self.running = True
        threading.Thread(target=self._measure, daemon=True).start()

    def report(self) -> dict:
        self.refresh()
        with self.lock:
            sizes, measured_at = self.sizes, self.measured_at
        result: dict = {"measuring": sizes is None,
                        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(measured_at)) if sizes else None}
        for name, path in (("workspace", self.workspace_dir), ("container", self.container_root)):
            used = sizes[name] if sizes else None
            limit = self.limits.get(name)
            result[name] = {
                "path": path,
                "used_gb": round(used / GB, 3) if used is not None else None,
                "limit_gb": limit,
                "exceeded": bool(limit is not None and used is not None and used > limit * GB),
            }
        return result


def user_menu_entries(home: str) -> tuple[list[dict], list[str]]:
    """The user's own entries from ~/.workspace/tools/*.json, and the problems of invalid files."""
    entries, problems = [], []
    for path in sorted(glob.glob(os.path.join(home, ".workspace", "tools", "*.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError) as error:
            problems.append(f"{path}: not readable JSON ({error})")
            continue
        for index, item in enumerate(data if isinstance(data, list) else [data]):
            where = f"{path}" + (f"[{index}]" if isinstance(data, list) else "")
            if not isinstance(item, dict):
                problems.append(f"{where}: expected an object with id, name, url_path, description")
                continue
            missing = [key for key in ("id", "name", "url_path") if not isinstance(item.get(key), str) or not item[key]]
            if missing:
                problems.append(f"{where}: missing or empty {', '.join(missing)} (expected strings)")
                continue
            entries.append({"id": item["id"], "name": item["name"], "url_path": item["url_path"],
                            "description": str(item.get("description", "")), "available": True, "user": True})
    return entries, problems


def menu(settings: dict) -> list[dict]:
    with open(settings["menu_file"], encoding="utf-8") as handle:
        flavor = json.load(handle)
    entries = []
    for item in flavor:
        entry = {key: item.get(key, "") for key in ("id", "name", "url_path", "description")}
        entry["available"] = bool(item.get("available", True))
        if not entry["available"]:
            entry["reason"] = item.get("reason") or "not installed in this image"
        entries.append(entry)
    own, problems = user_menu_entries(settings["home"])
    for problem in problems:
        print(f"mlws tooling: skipped a menu entry: {problem}", file=sys.stderr, flush=True)
    return entries + own


def home_page(settings: dict, storage: dict) -> bytes:
    base = settings["base_url"]
    esc = html.escape
    items = []
    for entry in menu(settings):
        description = esc(entry.get("description") or "")
        if entry["available"]:
            items.append(f'<li><a href="{esc(entry["url_path"])}" target="_blank" rel="noopener" '
                         f'data-tool="{esc(entry["id"])}">{esc(entry["name"])}</a> <small>{description}</small></li>')
        else:
            items.append(f'<li class="unavailable" data-tool="{esc(entry["id"])}" aria-disabled="true">'
                         f'{esc(entry["name"])} <small>unavailable: {esc(entry["reason"])}</small></li>')
    warnings = []
    for name, label in (("workspace", "The work folder"), ("container", "The container")):
        info = storage[name]
        if info["exceeded"]:
            warnings.append(f'<p class="warning" role="alert">{label} uses {info["used_gb"]} GB, more than its '
                            f'limit of {info["limit_gb"]} GB ({"MAX_WORKSPACE_FOLDER_SIZE" if name == "workspace" else "MAX_CONTAINER_SIZE"}).</p>')
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Workspace</title>
<link rel="icon" href="data:,">
<style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}}
li{{margin:.3rem 0}}.unavailable{{color:#888}}.warning{{background:#fde8e8;padding:.5rem;border-radius:4px}}
section{{margin-top:1.5rem}}</style></head><body>
<h1>Workspace</h1>
{''.join(warnings)}
<section id="tools"><h2>Open Tool</h2><ul>{''.join(items)}</ul></section>
<section id="access-port"><h2>Access Port</h2>
<form id="port-form" action="{esc(base)}/tooling/open-port" method="get" target="_blank">
<label>Port inside the workspace <input name="port" type="number" min="1" max="65535" required></label>
<button type="submit">Open</button>
<button type="button" id="port-share">Share link…</button></form>
<p><small>Opens <code>{esc(base)}/tools/&lt;port&gt;/</code>: a server you started listens there, behind the
workspace's login.</small></p></section>
<section id="ssh"><h2>SSH</h2><p>Run this on your computer to connect with <code>ssh</code>:</p>
<pre id="ssh-command">(not available in this workspace)</pre></section>
<section id="share"><h2>Share</h2>
<p id="share-state">Share a file, a folder or a port with a link that needs no login, until it expires or you revoke it.</p>
<form id="share-form"><label>File or folder in the work folder, or a port number
<input name="target" required placeholder="data/results.csv or 8765"></label>
<label>Expires after <input name="expires_hours" type="number" min="0.1" step="any" value="72"> hours</label>
<button type="submit">Create link</button></form>
<p id="share-result" role="status"></p>
<h3>Live links</h3><ul id="share-links"></ul></section>
<script>
fetch("{esc(base)}/tooling/ssh/setup-command?origin=" + encodeURIComponent(location.origin + "{esc(base)}"))
  .then(r => r.ok ? r.text() : Promise.reject(r.status))
  .then(t => document.getElementById("ssh-command").textContent = t.trim())
  .catch(() => {{}});
const shares = "{esc(base)}/tooling/shares";
function showShares() {{
  fetch(shares).then(r => r.json()).then(data => {{
    const list = document.getElementById("share-links");
    list.replaceChildren();
    if (!data.enabled) {{
      document.getElementById("share-state").textContent = data.message;
      document.getElementById("share-form").hidden = true;
    }}
    for (const link of data.links) {{
      const item = document.createElement("li");
      item.dataset.link = link.id;
      const anchor = document.createElement("a");
      anchor.href = location.origin + link.url_path;
      anchor.textContent = link.kind + " " + link.target;
      const button = document.createElement("button");
      button.textContent = "Revoke";
      button.className = "revoke";
      button.onclick = () => fetch(shares + "/" + link.id, {{method: "DELETE"}}).then(showShares);
      item.append(anchor, " until " + link.expires_at + " ", button);
      list.append(item);
    }}
  }});
}}
document.getElementById("share-form").onsubmit = event => {{
  event.preventDefault();
  const form = event.target, target = form.target.value.trim();
  const body = /^[0-9]+$/.test(target) ? {{port: Number(target)}} : {{path: target}};
  if (form.expires_hours.value) body.expires_hours = Number(form.expires_hours.value);
  fetch(shares, {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: JSON.stringify(body)}})
    .then(r => r.json().then(data => [r.ok, data]))
    .then(([ok, data]) => {{
      document.getElementById("share-result").textContent = ok ? location.origin + data.url_path : data.error;
      showShares();
    }});
}};
// The file browser's "Share…" (runtime/labextension/mlws-workspace) opens this page with ?share=PATH.
const wanted = new URLSearchParams(location.search).get("share");
if (wanted) document.getElementById("share-form").target.value = wanted;
// Access Port's "Share link…": the same form, for the port typed above.
document.getElementById("port-share").onclick = () => {{
  const port = document.getElementById("port-form").port;
  if (!port.reportValidity()) return;
  document.getElementById("share-form").target.value = port.value;
  location.hash = "share";
  document.getElementById("share-form").target.focus();
}};
showShares();
</script>
</body></html>
"""
    return page.encode("utf-8")


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "mlws-tooling"
    settings: dict = {}
    storage: Storage

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        pass

    def address_string(self) -> str:  # a unix socket has no client address
        return "gateway"

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data) -> None:
        self._send(200, (json.dumps(data, indent=2) + "\n").encode("utf-8"), "application/json")

    def do_GET(self):  # noqa: N802 (http.server's naming)
        path, _, query = self.path.partition("?")
        if path in ("/tools", "/tools/"):
            return self._json(menu(self.settings))
        if path in ("/storage", "/storage/"):
            return self._json(self.storage.report())
        if path in ("/home", "/home/", "/"):
            return self._send(200, home_page(self.settings, self.storage.report()), "text/html; charset=utf-8")
        if path == "/open-port":
            import urllib.parse

            port = (urllib.parse.parse_qs(query).get("port") or [""])[0]
            if port.isdigit() and 1 <= int(port) <= 65535:
                return self._send(302, b"", "text/plain", {"Location": f"{self.settings['base_url']}/tools/{int(port)}/"})
            return self._send(400, b"expected a port number 1-65535\n", "text/plain; charset=utf-8")
        return self._send(404, b"not found\n", "text/plain; charset=utf-8")

    do_HEAD = do_GET


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as handle:
        settings = json.load(handle)
    Handler.settings = settings
    Handler.storage = Storage(settings["workspace_dir"], settings.get("container_root", "/"),
                              {"workspace": settings.get("max_workspace_gb"), "container": settings.get("max_container_gb")})
    Handler.storage.refresh()
    unix_http.serve_forever(settings["socket"], Handler)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
