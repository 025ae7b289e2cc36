"""Share links (runtime/shares.py) against the real workspace: nginx, the share service, a real
websocket backend (aiohttp) on a shared port. Positive tests for each kind (a file with ranges, a
folder's listing and zip, a port with a websocket), and the probe corpus: expired, revoked,
tampered, another path, `..` and symlink escapes, another port, replay after revoke, a link of
another deployment (another key). None of the probes may serve a byte of what they aim at."""
from __future__ import annotations

import http.client
import io
import json
import os
import pwd
import subprocess
import sys
import time
import urllib.parse
import zipfile

import pytest
import requests
import websocket

from runtime import shares
from runtime.settings import SettingsError, parse_settings
from tests.runtime_helpers import Workspace, free_port, session_with_token
from tests.test_runtime_gateway import supervisorctl

BASE = "/ml/ws"
SECRET = b"TOP-SECRET-BYTES-outside-the-share"
NAVIGATION = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "cross-site", "Accept": "text/html"}

# A websocket echo server and a page that shows what reached it (cookies, query): the shared port.
BACKEND = r"""
import sys
from aiohttp import web

async def page(request):
    return web.json_response({"path": request.path, "query": request.query_string,
                              "cookie": request.headers.get("Cookie", ""),
                              "authorization": request.headers.get("Authorization", "")})

async def echo(request):
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    async for message in socket:
        await socket.send_str("echo:" + message.data)
    return socket

app = web.Application()
app.router.add_get("/ws", echo)
app.router.add_get("/{tail:.*}", page)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def as_workspace_user(ws: Workspace, argv: list[str]) -> list[str]:
    """The gateway serves (shared) ports only of the workspace user: run the backend as that user."""
    user = ws.env.get("NB_USER")
    return ["runuser", "-u", user, "--", *argv] if os.geteuid() == 0 and user else argv


def chown_to_user(ws: Workspace, *paths: str) -> None:
    user = ws.env.get("NB_USER")
    if os.geteuid() == 0 and user:
        entry = pwd.getpwnam(user)
        for path in paths:
            os.lchown(path, entry.pw_uid, entry.pw_gid)


@pytest.fixture(scope="module")
def ws():
    workspace = Workspace(env={"WORKSPACE_BASE_URL": BASE}, name="shares")
    workspace.start()
    work = workspace.workspace_dir
    data = os.path.join(work, "data")
    os.makedirs(os.path.join(data, "sub"), exist_ok=True)
    files = {
        os.path.join(work, "secret.txt"): SECRET,
        os.path.join(work, "report é 1.csv"): b"a,b\n" + b"1,2\n" * 5000,
        os.path.join(data, "notes.txt"): b"notes in the shared folder\n",
        os.path.join(data, "sub", "deep.bin"): bytes(range(256)) * 40,
        os.path.join(data, "page.html"): b"<script>alert(1)</script>",
    }
    for path, content in files.items():
        with open(path, "wb") as handle:
            handle.write(content)
    os.symlink(os.path.join(work, "secret.txt"), os.path.join(data, "link-out.txt"))
    os.symlink(work, os.path.join(data, "dir-out"))
    os.symlink("notes.txt", os.path.join(data, "link-in.txt"))
    chown_to_user(workspace, *files, data, os.path.join(data, "sub"), os.path.join(data, "link-out.txt"),
                  os.path.join(data, "dir-out"), os.path.join(data, "link-in.txt"))
    port = free_port()
    backend = subprocess.Popen(as_workspace_user(workspace, [sys.executable, "-c", BACKEND, str(port)]),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/", timeout=2).ok:
                break
        except requests.RequestException:
            time.sleep(0.2)
    workspace.backend_port = port
    yield workspace
    backend.terminate()
    backend.wait(10)
    workspace.cleanup()


@pytest.fixture(scope="module")
def owner(ws):
    """The workspace user's browser, logged in."""
    return session_with_token(ws, ws.token())


def create(ws: Workspace, owner: requests.Session, **request) -> dict:
    answer = owner.post(ws.url(f"{BASE}/tooling/shares"), json=request, headers={"Origin": ws.origin})
    assert answer.status_code == 201, answer.text
    return answer.json()


def raw_get(ws: Workspace, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET with the path exactly as given (no client normalising `..` or percent-encoding)."""
    connection = http.client.HTTPConnection("127.0.0.1", ws.port, timeout=10)
    try:
        connection.request("GET", target, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def assert_refused(status: int, body: bytes, *forbidden: bytes) -> None:
    assert status not in (200, 206), (status, body[:200])
    for content in forbidden:
        assert content not in body


# ---- plain functions ---------------------------------------------------------------------------

def test_tokens_are_signed_scoped_and_expire():
    key, other_key = os.urandom(32), os.urandom(32)
    link = shares.Link("a" * 32, "file", "/w/f.txt", 2_000_000_000, 1_000_000_000)
    links = {link.id: link}
    token = shares.token_for(key, link)
    assert shares.verify(key, links, token, now=1_500_000_000) == link
    assert shares.verify(key, links, token, now=2_000_000_000) is None  # expired
    assert shares.verify(other_key, links, token, now=1_500_000_000) is None  # another deployment's key
    assert shares.verify(key, {}, token, now=1_500_000_000) is None  # revoked
    link_id, expires, mac = token.split(".")
    assert shares.verify(key, links, f"{link_id}.{int(expires) + 1}.{mac}", now=1) is None  # extended
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    assert shares.verify(key, links, f"{link_id}.{expires}.{flipped}", now=1) is None
    # The same id signed for another target is another token.
    moved = shares.Link(link.id, "file", "/w/other.txt", link.expires, link.created)
    assert shares.token_for(key, moved) != token
    assert shares.verify(key, {link.id: moved}, token, now=1) is None
    for junk in ("", "x", token + "x", token.replace(".", "..", 1)):
        assert shares.verify(key, links, junk, now=1) is None


def test_paths_resolve_inside_the_share_only(tmp_path):
    root = tmp_path / "share"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside.txt").write_text("x")
    (root / "out").symlink_to(tmp_path / "outside.txt")
    real_root = os.path.realpath(root)
    assert shares.inside(real_root, "sub") == os.path.join(real_root, "sub")
    for escape in ("../outside.txt", "sub/../../outside.txt", "out", "/../outside.txt", "a\0b"):
        assert shares.inside(real_root, escape) is None, escape


def test_creating_a_link_says_what_is_wrong(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    work = str(tmp_path)
    link = shares.new_link({"path": "f.txt"}, work, [8080], 72, now=1000)
    assert (link.kind, link.target, link.expires) == ("file", os.path.realpath(tmp_path / "f.txt"), 1000 + 72 * 3600)
    assert shares.new_link({"port": 8765, "expires_hours": 0.5}, work, [8080], 72, now=0).expires == 1800
    for request, message in (
        ({"path": "/etc/passwd"}, "outside the work folder"),
        ({"path": "../x"}, "outside the work folder"),
        ({"path": "missing.txt"}, "no such file or folder"),
        ({"port": 0}, "expected a port number"),
        ({"port": "8080"}, "gateway's own port"),
        ({"port": 1, "path": "f.txt"}, "exactly one of"),
        ({"path": "f.txt", "expires_hours": 0}, "expires_hours"),
        ({"path": "f.txt", "expires_hours": "soon"}, "expires_hours"),
        ({"path": "f.txt", "mode": "rw"}, "unknown field(s) mode"),
        ([], "expected a JSON object"),
    ):
        with pytest.raises(shares.ShareError, match=message.replace("(", r"\(").replace(")", r"\)")):
            shares.new_link(request, work, [8080], 72)


def test_store_writes_whole_files_and_drops_expired_links(tmp_path):
    store = shares.LinkStore(str(tmp_path / "links.json"))
    now = int(time.time())
    store.add(shares.Link("b" * 32, "port", "8000", now + 100, now))
    store.add(shares.Link("c" * 32, "port", "8001", now - 1, now - 10))
    again = shares.LinkStore(str(tmp_path / "links.json"))
    assert set(again.links) == {"b" * 32}
    assert (os.stat(tmp_path / "links.json").st_mode & 0o777) == 0o600
    assert os.listdir(tmp_path) == ["links.json"]  # no temp file left behind
    key = shares.load_key(str(tmp_path / "keys"))
    assert shares.load_key(str(tmp_path / "keys")) == key and len(key) == 32
    assert (os.stat(tmp_path / "keys" / "key").st_mode & 0o777) == 0o600


def test_shared_links_enabled_is_a_checked_boolean():
    assert parse_settings({}).shared_links_enabled is True
    assert parse_settings({"SHARED_LINKS_ENABLED": "false"}).shared_links_enabled is False
    with pytest.raises(SettingsError, match="SHARED_LINKS_ENABLED='maybe': expected true/false"):
        parse_settings({"SHARED_LINKS_ENABLED": "maybe"})


@pytest.mark.parametrize("mode, enabled", [("token", True), ("off", True), ("hub", True), ("token", False)])
def test_the_share_routes_are_valid_nginx_configuration(tmp_path, mode, enabled):
    from runtime import nginx
    from tests.test_runtime_units import NGINX, gateway_config

    (tmp_path / "nginx" / "tmp").mkdir(parents=True)
    (tmp_path / "nginx" / "revoked.map").write_text("")
    config = gateway_config(tmp_path, auth_mode=mode, shares_socket=str(tmp_path / "shares.sock"),
                            shares_enabled=enabled)
    conf = nginx.render_nginx_conf(config)
    (tmp_path / "nginx" / "nginx.conf").write_text(conf)
    result = subprocess.run([NGINX, "-t", "-p", str(tmp_path / "nginx"), "-c", str(tmp_path / "nginx" / "nginx.conf"),
                             "-e", "stderr"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert ("/_mlws/share-check" in conf) is enabled
    assert "location ^~ \"/a b/c/shared/link/\"" in conf and "disable_symlinks on;" in conf


# ---- the API -----------------------------------------------------------------------------------

def test_the_api_needs_the_login_and_the_workspaces_own_origin(ws, owner):
    answer = requests.get(ws.url(f"{BASE}/tooling/shares"), allow_redirects=False)
    assert answer.status_code in (302, 401) and "links" not in answer.text
    answer = requests.post(ws.url(f"{BASE}/tooling/shares"), json={"path": "secret.txt"}, allow_redirects=False)
    assert answer.status_code in (302, 401)
    # A page of another site, with the owner's cookie: refused by the gateway before the service.
    answer = owner.post(ws.url(f"{BASE}/tooling/shares"), json={"path": "secret.txt"},
                        headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert answer.status_code == 403
    # A form post (not JSON) is refused by the service as well.
    answer = owner.post(ws.url(f"{BASE}/tooling/shares"), data={"path": "secret.txt"}, headers={"Origin": ws.origin})
    assert answer.status_code == 415
    assert not [link for link in owner.get(ws.url(f"{BASE}/tooling/shares")).json()["links"]
                if link["target"].endswith("secret.txt")]


def test_the_api_says_which_field_is_wrong(ws, owner):
    answer = owner.post(ws.url(f"{BASE}/tooling/shares"), json={"path": "/etc/passwd"}, headers={"Origin": ws.origin})
    assert answer.status_code == 400 and "outside the work folder" in answer.json()["error"]
    answer = owner.post(ws.url(f"{BASE}/tooling/shares"), json={"port": ws.port}, headers={"Origin": ws.origin})
    assert answer.status_code == 400 and "gateway's own port" in answer.json()["error"]
    answer = owner.post(ws.url(f"{BASE}/tooling/shares"), data=b"{not json",
                        headers={"Origin": ws.origin, "Content-Type": "application/json"})
    assert answer.status_code == 400


# ---- each kind ---------------------------------------------------------------------------------

def test_a_shared_file_downloads_with_ranges_type_and_name(ws, owner):
    link = create(ws, owner, path="report é 1.csv", expires_hours=5)
    assert link["kind"] == "file" and link["expires"] - link["created"] == 5 * 3600
    with open(os.path.join(ws.workspace_dir, "report é 1.csv"), "rb") as handle:
        content = handle.read()
    visitor = requests.Session()
    whole = visitor.get(ws.url(link["url_path"]))
    assert whole.status_code == 200 and whole.content == content
    assert whole.headers["Content-Type"].startswith("text/csv")
    assert whole.headers["Content-Disposition"].startswith("attachment;")
    assert "filename*=UTF-8''report%20%C3%A9%201.csv" in whole.headers["Content-Disposition"]
    assert "sandbox" in whole.headers["Content-Security-Policy"]
    part = visitor.get(ws.url(link["url_path"]), headers={"Range": "bytes=4-11"})
    assert part.status_code == 206 and part.content == content[4:12]
    assert part.headers["Content-Range"] == f"bytes 4-11/{len(content)}"


def test_a_browser_trades_the_token_for_a_cookie_scoped_to_the_link(ws, owner):
    link = create(ws, owner, path="report é 1.csv")
    browser = requests.Session()
    first = browser.get(ws.url(link["url_path"]), headers=NAVIGATION, allow_redirects=False)
    assert first.status_code == 302 and "token" not in first.headers["Location"]
    assert first.headers["Location"] == link["url_path"].split("?")[0]
    cookie = first.headers["Set-Cookie"]
    prefix = f"{BASE}/shared/link/{link['id']}/"
    assert f"Path={prefix};" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain HTTP here; TLS adds it (settings "secure")
    follow = browser.get(ws.url(first.headers["Location"]), headers=NAVIGATION)
    assert follow.status_code == 200 and follow.content.startswith(b"a,b\n")
    # The cookie is the credential now; without it the bare path is refused.
    assert requests.get(ws.url(first.headers["Location"])).status_code == 401
    # The way back never repeats what the client wrote before the base URL (no `//host` redirect).
    connection = http.client.HTTPConnection("127.0.0.1", ws.port, timeout=10)
    connection.request("GET", f"//evil.example%2F..%2Fml%2Fws/shared/link/{link['id']}/?token={link['token']}",
                       headers=NAVIGATION)
    answer = connection.getresponse()
    answer.read()
    connection.close()
    assert answer.status != 302 or answer.getheader("Location").startswith(f"{BASE}/shared/link/{link['id']}/")


def test_a_shared_folder_lists_downloads_and_zips(ws, owner):
    link = create(ws, owner, path="data")
    assert link["kind"] == "folder"
    visitor = requests.Session()
    first = visitor.get(ws.url(link["url_path"]), headers=NAVIGATION, allow_redirects=False)
    assert first.status_code == 302
    root = ws.url(first.headers["Location"])
    listing = visitor.get(root, headers=NAVIGATION)
    assert listing.status_code == 200 and listing.headers["Content-Type"].startswith("text/html")
    assert 'href="notes.txt"' in listing.text and 'href="sub/"' in listing.text and 'href="link-in.txt"' in listing.text
    # Symlinks out of the folder are not listed.
    assert "link-out" not in listing.text and "dir-out" not in listing.text
    assert visitor.get(root + "sub/deep.bin").content == bytes(range(256)) * 40
    assert visitor.get(root + "link-in.txt").content == b"notes in the shared folder\n"
    # An HTML file of the user's is a download in an opaque origin, never a page of the workspace.
    page = visitor.get(root + "page.html")
    assert page.headers["Content-Disposition"].startswith("attachment;") and "sandbox" in page.headers["Content-Security-Policy"]
    archive = visitor.get(root + "?download=zip")
    assert archive.status_code == 200 and archive.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as opened:
        names = set(opened.namelist())
        assert {"notes.txt", "sub/deep.bin", "page.html", "link-in.txt"} <= names
        assert opened.read("sub/deep.bin") == bytes(range(256)) * 40
    assert not [name for name in names if "link-out" in name or "dir-out" in name]
    assert SECRET not in archive.content
    sub = visitor.get(root + "sub/?download=zip")
    with zipfile.ZipFile(io.BytesIO(sub.content)) as opened:
        assert opened.namelist() == ["deep.bin"]


WORKSPACE_COOKIE_NAMES = ["mlws_share_a1", "mlws_share_b2", "jupyterhub-session-id", "__Host-jupyterhub-user-ann",
                          "mlws_session_9", "mlws_share_c3", "jupyterhub-user-ann-oauth-state"]


@pytest.mark.parametrize("route", ["tools", "shared/tools"])
def test_a_port_never_gets_the_workspaces_cookies_however_many(ws, owner, route):
    """nginx removes the workspace's cookies one map at a time: with the owner's session plus seven
    more it still passes only the port's own cookie; with more than it can remove it refuses the
    request instead of forwarding the rest."""
    path = f"{BASE}/{route}/{ws.backend_port}/seen"
    if route == "shared/tools":
        link = create(ws, owner, port=ws.backend_port)
        token = link["url_path"].split("token=", 1)[1]
        path += f"?token={token}"
    session = "; ".join(f"{c.name}={c.value}" for c in owner.cookies)
    some = "; ".join([session, "app=1", *(f"{name}=x{index}" for index, name in enumerate(WORKSPACE_COOKIE_NAMES))])
    answer = requests.get(ws.url(path), headers={"Cookie": some}, allow_redirects=False, timeout=20)
    assert answer.status_code == 200, (answer.status_code, answer.text[:200])
    seen = answer.json()
    assert seen["path"] == "/seen" and seen["cookie"] == "app=1", seen
    too_many = "; ".join([some, *(f"mlws_share_more{index}=y" for index in range(4))])
    answer = requests.get(ws.url(path), headers={"Cookie": too_many}, allow_redirects=False, timeout=20)
    assert answer.status_code == 400 and "too many of the workspace's own cookies" in answer.text, (
        answer.status_code, answer.text[:200])


def test_a_shared_port_passes_http_and_websockets(ws, owner):
    link = create(ws, owner, port=ws.backend_port)
    assert link["url_path"].startswith(f"{BASE}/shared/tools/{ws.backend_port}/?token=")
    browser = requests.Session()
    first = browser.get(ws.url(link["url_path"].replace("/?", "/page?a=1&")), headers=NAVIGATION,
                        allow_redirects=False)
    assert first.status_code == 302 and first.headers["Location"] == f"{BASE}/shared/tools/{ws.backend_port}/page?a=1"
    assert f"Path={BASE}/shared/tools/{ws.backend_port}/;" in first.headers["Set-Cookie"]
    # The owner's session cookie is in the jar as well: the backend sees neither it nor the token.
    browser.cookies.update(owner.cookies)
    seen = browser.get(ws.url(first.headers["Location"]), headers=NAVIGATION).json()
    assert seen["path"] == "/page" and seen["query"] == "a=1"
    assert "mlws_share" not in seen["cookie"] and "mlws_session" not in seen["cookie"] and seen["authorization"] == ""
    # An API client keeps the token in the query; the backend never sees it.
    direct = requests.get(ws.url(link["url_path"] + "&b=2")).json()
    assert direct["query"] == "b=2"
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies if c.name.startswith("mlws_share"))
    url = ws.url(f"{BASE}/shared/tools/{ws.backend_port}/ws").replace("http", "ws", 1)
    connection = websocket.create_connection(url, header=[f"Cookie: {cookie}"], origin=ws.origin, timeout=10)
    try:
        connection.send("hello")
        assert connection.recv() == "echo:hello"
    finally:
        connection.close()
    # Without the link: refused before the backend.
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(url, origin=ws.origin, timeout=10)


def test_the_home_page_and_the_menu_offer_sharing(ws, owner):
    page = owner.get(ws.url(f"{BASE}/tooling/home")).text
    assert 'id="share"' in page and 'id="share-form"' in page and f"{BASE}/tooling/shares" in page
    items = []
    for folder, _, names in os.walk(ws.runtime_dir):
        if "default_setting_overrides.json" in names:
            with open(os.path.join(folder, "default_setting_overrides.json"), encoding="utf-8") as handle:
                overrides = json.load(handle)
            for menu in overrides["@jupyterlab/mainmenu-extension:plugin"]["menus"]:
                items += [item.get("args", {}) for item in menu["items"]]
    # The Open Tool menu's "Share…" opens the home page's Share section.
    assert {"url": f"{BASE}/tooling/home#share", "text": "Share\u2026", "newBrowserTab": True} in items


# ---- the probe corpus: none may serve a byte ---------------------------------------------------

def test_expired_links_serve_nothing(ws, owner):
    link = create(ws, owner, path="data/notes.txt", expires_hours=3 / 3600)
    assert requests.get(ws.url(link["url_path"])).status_code == 200
    time.sleep(3.5)
    answer = requests.get(ws.url(link["url_path"]))
    assert_refused(answer.status_code, answer.content, b"notes in the shared folder")
    assert answer.status_code == 401


def test_revoked_links_and_their_cookies_serve_nothing(ws, owner):
    link = create(ws, owner, path="data")
    port_link = create(ws, owner, port=ws.backend_port)
    browser = requests.Session()
    first = browser.get(ws.url(link["url_path"]), headers=NAVIGATION, allow_redirects=False)
    root = ws.url(first.headers["Location"])
    assert browser.get(root + "notes.txt").status_code == 200
    listed = [item["id"] for item in owner.get(ws.url(f"{BASE}/tooling/shares")).json()["links"]]
    assert link["id"] in listed and port_link["id"] in listed
    assert owner.delete(ws.url(f"{BASE}/tooling/shares/{link['id']}"), headers={"Origin": ws.origin}).status_code == 200
    revoke = owner.post(ws.url(f"{BASE}/tooling/shares/{port_link['id']}/revoke"), headers={"Origin": ws.origin})
    assert revoke.status_code == 200
    listed = [item["id"] for item in owner.get(ws.url(f"{BASE}/tooling/shares")).json()["links"]]
    assert link["id"] not in listed and port_link["id"] not in listed
    # Replays: the cookie, the token in the query, the zip, the port with its token.
    for answer in (browser.get(root + "notes.txt"), browser.get(root), browser.get(root + "?download=zip"),
                   requests.get(ws.url(link["url_path"])), requests.get(ws.url(port_link["url_path"]))):
        assert_refused(answer.status_code, answer.content, b"notes in the shared folder", b'"path"')
        assert answer.status_code == 401
    assert owner.delete(ws.url(f"{BASE}/tooling/shares/{link['id']}"), headers={"Origin": ws.origin}).status_code == 404


def open_shared_socket(ws: Workspace, link: dict) -> websocket.WebSocket:
    """A visitor's websocket to the shared port, with the link's token in the query (an API client)."""
    token = link["url_path"].split("token=", 1)[1]
    url = ws.url(f"{BASE}/shared/tools/{ws.backend_port}/ws?token={token}").replace("http", "ws", 1)
    connection = websocket.create_connection(url, origin=ws.origin, timeout=10)
    connection.send("before")
    assert connection.recv() == "echo:before"
    return connection


def ended_within(connection: websocket.WebSocket, seconds: float) -> float | None:
    """Seconds until the gateway closes this websocket (None: still open after `seconds`)."""
    began = time.monotonic()
    connection.settimeout(seconds)
    try:
        while True:
            frame = connection.recv()
            if frame in ("", None):
                return time.monotonic() - began
    except websocket.WebSocketTimeoutException:
        return None
    except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
        return time.monotonic() - began


def test_revoking_or_expiry_ends_the_websockets_open_through_a_link(ws, owner):
    """A websocket is one request: nginx alone would keep relaying it after its link is revoked.
    The share service carries the shared ports' websockets (runtime/share_relay.py) and ends them."""
    revoked, kept = create(ws, owner, port=ws.backend_port), create(ws, owner, port=ws.backend_port)
    short = create(ws, owner, port=ws.backend_port, expires_hours=4 / 3600)
    through_revoked, through_kept, through_short = (open_shared_socket(ws, link) for link in (revoked, kept, short))
    own_url = ws.url(f"{BASE}/tools/{ws.backend_port}/ws").replace("http", "ws", 1)
    own = websocket.create_connection(own_url, origin=ws.origin, timeout=10,
                                      header=["Cookie: " + "; ".join(f"{c.name}={c.value}" for c in owner.cookies)])
    try:
        answer = owner.delete(ws.url(f"{BASE}/tooling/shares/{revoked['id']}"), headers={"Origin": ws.origin})
        assert answer.status_code == 200 and answer.json()["connections_ended"] == 1, answer.text
        took = ended_within(through_revoked, 5)
        assert took is not None and took < 2, took
        # The other link's websocket and the owner's own (not through a link) go on.
        for connection in (through_kept, own):
            connection.send("after")
            assert connection.recv() == "echo:after"
        # The short link expires after 4 s; the sweeper ends its websocket within about a second.
        took = ended_within(through_short, 15)
        assert took is not None, "the websocket of an expired link stayed open"
        through_kept.send("still")
        assert through_kept.recv() == "echo:still"
    finally:
        for connection in (through_revoked, through_kept, through_short, own):
            connection.close()


def test_tampered_tokens_and_links_of_another_deployment_serve_nothing(ws, owner):
    link = create(ws, owner, path="data/notes.txt")
    link_id, expires, mac = link["token"].split(".")
    record = shares.Link(link["id"], link["kind"], link["target"], link["expires"], link["created"])
    path = link["url_path"].split("?")[0]
    forged = [
        f"{link_id}.{expires}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}",  # mac changed
        f"{link_id}.{int(expires) + 86400}.{mac}",  # expiry extended
        shares.token_for(os.urandom(32), record),  # the same link signed by another deployment
        shares.token_for(os.urandom(32), shares.Link("d" * 32, "file", link["target"], link["expires"], 0)),
        "", "null", link["token"] + "A",
    ]
    for token in forged:
        answer = requests.get(ws.url(f"{path}?token={urllib.parse.quote(token)}"))
        assert_refused(answer.status_code, answer.content, b"notes in the shared folder")
        answer = requests.get(ws.url(path), cookies={f"mlws_share_{link['id']}": token})
        assert_refused(answer.status_code, answer.content, b"notes in the shared folder")


def test_a_link_opens_only_its_own_path(ws, owner):
    file_link = create(ws, owner, path="data/notes.txt")
    folder_link = create(ws, owner, path="data/sub")
    token = file_link["token"]
    file_prefix = f"{BASE}/shared/link/{file_link['id']}/"
    # Another file under the same link id; the file link's token on the folder link's id.
    for target in (f"{file_prefix}deep.bin?token={token}", f"{file_prefix}../secret.txt?token={token}",
                   f"{BASE}/shared/link/{folder_link['id']}/deep.bin?token={token}",
                   f"{BASE}/shared/link/{folder_link['id']}/?token={token}",
                   f"{BASE}/shared/tools/{ws.backend_port}/?token={token}"):
        status, body = raw_get(ws, target)
        assert_refused(status, body, bytes(range(256)), SECRET, b'"path"')
    # A cookie of one link is not sent to another (Path) and not accepted there (its name).
    status, body = raw_get(ws, f"{BASE}/shared/link/{folder_link['id']}/deep.bin",
                           {"Cookie": f"mlws_share_{folder_link['id']}={token}"})
    assert_refused(status, body, bytes(range(256)))


@pytest.mark.parametrize("escape", [
    "../secret.txt", "..%2fsecret.txt", "%2e%2e/secret.txt", "%2E%2E%2Fsecret.txt", "sub/../../secret.txt",
    "link-out.txt", "dir-out/secret.txt", "dir-out/", "dir-out/?download=zip", "sub/..%2f..%2fsecret.txt",
    "%2fetc%2fpasswd", "..%5csecret.txt", "notes.txt%00.png",
])
def test_escapes_out_of_a_shared_folder_serve_nothing(ws, owner, escape):
    if not hasattr(ws, "folder_link"):
        ws.folder_link = create(ws, owner, path="data")
    link = ws.folder_link
    prefix = f"{BASE}/shared/link/{link['id']}/"
    joiner = "&" if "?" in escape else "?"
    status, body = raw_get(ws, f"{prefix}{escape}{joiner}token={urllib.parse.quote(link['token'])}")
    assert_refused(status, body, SECRET, b"root:")


def test_a_port_link_opens_only_its_port(ws, owner):
    link = create(ws, owner, port=ws.backend_port)
    other = ws.tool_ports["files"]  # a port the workspace user serves too
    for target in (f"{BASE}/shared/tools/{other}/?token={link['token']}",
                   f"{BASE}/shared/tools/{ws.port}/?token={link['token']}",
                   f"{BASE}/shared/tools/0{ws.backend_port}/?token={link['token']}",
                   f"{BASE}/tools/{ws.backend_port}/?token={link['token']}",
                   f"{BASE}/shared/link/{link['id']}/?token={link['token']}"):
        status, body = raw_get(ws, target)
        assert_refused(status, body, b'"path"')
    status, body = raw_get(ws, f"{BASE}/shared/tools/{other}/", {"Cookie": f"mlws_share_port_{other}={link['token']}"})
    assert_refused(status, body, b'"path"')


def test_links_outlive_a_restart_and_the_key_stays(ws, owner):
    key_file = os.path.join(ws.workspace_dir, ".workspace", "shares", "key")
    assert (os.stat(key_file).st_mode & 0o777) == 0o600
    link = create(ws, owner, path="data/notes.txt")
    assert "shares: started" in supervisorctl(ws, "restart", "shares")
    deadline = time.monotonic() + 20
    while True:
        answer = requests.get(ws.url(link["url_path"]))
        if answer.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert answer.status_code == 200 and answer.content == b"notes in the shared folder\n"


def test_sharing_off_refuses_every_shared_route():
    workspace = Workspace(env={"SHARED_LINKS_ENABLED": "false"}, name="shares-off")
    try:
        workspace.start()
        owner = session_with_token(workspace, workspace.token())
        listing = owner.get(workspace.url("/tooling/shares")).json()
        assert listing["enabled"] is False and listing["links"] == []
        assert "SHARED_LINKS_ENABLED=false" in listing["message"]  # what the home page shows
        answer = owner.post(workspace.url("/tooling/shares"), json={"path": "."}, headers={"Origin": workspace.origin})
        assert answer.status_code == 409 and "SHARED_LINKS_ENABLED=false" in answer.json()["error"]
        for path in ("/shared/link/" + "a" * 32 + "/", "/shared/link/x", f"/shared/tools/{workspace.tool_ports['files']}/"):
            answer = requests.get(workspace.url(path + "?token=x"), allow_redirects=False)
            assert answer.status_code == 401 and "SHARED_LINKS_ENABLED=false" in answer.text
    finally:
        workspace.cleanup()


def test_the_home_page_shares_and_revokes_in_a_browser(ws):
    """The home page's Share section, as the file browser's "Share…" opens it (?share=PATH), in
    headless Chromium: create a link, see it listed, open it without a login, revoke it."""
    from tests.cdp import Chromium
    from tests.test_workspace_menu import click

    browser = Chromium()
    try:
        browser.navigate(ws.url(f"{BASE}/lab?token={urllib.parse.quote(ws.token(), safe='')}"))
        browser.wait_location(ws.url(f"{BASE}/lab"))
        browser.navigate(ws.url(f"{BASE}/tooling/home?share={urllib.parse.quote('data/notes.txt')}#share"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and browser.evaluate("document.querySelector('#share-form').target.value") != "data/notes.txt":
            time.sleep(0.2)
        assert browser.evaluate("document.querySelector('#share-form').target.value") == "data/notes.txt"
        browser.evaluate("document.querySelector('#share-form').scrollIntoView()")
        click(browser, "document.querySelector('#share-form button')")
        made = ""
        while time.monotonic() < deadline and "?token=" not in made:
            made = browser.evaluate("document.getElementById('share-result').textContent")
            time.sleep(0.2)
        assert made.startswith(ws.url(f"{BASE}/shared/link/")), made
        link_id = made.split("/shared/link/")[1].split("/")[0]
        row = f"document.querySelector('#share-links li[data-link=\"{link_id}\"]')"
        while time.monotonic() < deadline and not browser.evaluate(f"!!{row}"):
            time.sleep(0.2)
        assert browser.evaluate(f"{row}.textContent").startswith("file " + os.path.join(ws.workspace_dir, "data", "notes.txt"))
        assert requests.get(made).content == b"notes in the shared folder\n"
        browser.evaluate(f"{row}.scrollIntoView()")
        click(browser, f"{row}.querySelector('button.revoke')")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and browser.evaluate(f"!!{row}"):
            time.sleep(0.2)
        assert not browser.evaluate(f"!!{row}")
        assert requests.get(made).status_code == 401
    finally:
        browser.close()


def test_under_tls_the_link_cookie_is_secure():
    workspace = Workspace(env={"WORKSPACE_SSL_ENABLED": "true"}, name="shares-tls")
    try:
        workspace.start()
        with open(os.path.join(workspace.workspace_dir, "tls.txt"), "w") as handle:
            handle.write("over tls")
        chown_to_user(workspace, os.path.join(workspace.workspace_dir, "tls.txt"))
        # An API client (the token in the header); verify=False per request: requests lets
        # REQUESTS_CA_BUNDLE override a session's verify=False.
        answer = requests.post(workspace.url("/tooling/shares"), json={"path": "tls.txt"}, verify=False,
                               headers={"Authorization": f"token {workspace.token()}"})
        assert answer.status_code == 201, answer.text
        link = answer.json()
        first = requests.get(workspace.url(link["url_path"]), headers=NAVIGATION, allow_redirects=False, verify=False)
        assert first.status_code == 302
        assert "; Secure" in first.headers["Set-Cookie"] and "HttpOnly" in first.headers["Set-Cookie"]
        assert requests.get(workspace.url(link["url_path"]), verify=False).content == b"over tls"
    finally:
        workspace.cleanup()
