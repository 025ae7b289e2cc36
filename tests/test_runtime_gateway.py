"""The real runtime (nginx + login service + Jupyter + supervisor) in token mode, with and without a
base URL: routes, redirects, authentication probes, XSRF, websockets, restarts, shutdown."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid

import pytest
import requests
import websocket

from tests.runtime_helpers import Workspace, free_port, session_with_token

# Quotes, @, &, $, spaces and a backslash: nothing may break or inject.
NASTY_TOKEN = 'to"k en@&$x\\y;{}'


@pytest.fixture(scope="module")
def ws():
    workspace = Workspace(
        env={"HTTP_PROXY": "http://proxy.invalid:3128", "NO_PROXY": "localhost,127.0.0.1", "NB_UMASK": "0027"},
        name="token",
    ).start()
    yield workspace
    workspace.cleanup()


@pytest.fixture(scope="module")
def ws_base():
    workspace = Workspace(
        env={"AUTHENTICATE_VIA_JUPYTER": NASTY_TOKEN, "WORKSPACE_BASE_URL": " /my ws/lab-x/ ",
             "NOTEBOOK_ARGS": "--LabApp.default_url='/tree' --ServerApp.terminals_enabled=False"},
        name="base",
    ).start()
    yield workspace
    workspace.cleanup()


@pytest.fixture(params=["ws", "ws_base"])
def any_ws(request):
    return request.getfixturevalue(request.param)


def token_of(workspace: Workspace) -> str:
    return NASTY_TOKEN if workspace.env.get("AUTHENTICATE_VIA_JUPYTER") == NASTY_TOKEN else workspace.token()


def get(workspace: Workspace, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("allow_redirects", False)
    return requests.get(workspace.url(path), timeout=15, **kwargs)


# --- start-up output --------------------------------------------------------------------------

def test_generated_token_printed_once_with_url(ws):
    text = ws.text()
    token = ws.token()
    assert re.fullmatch(r"[0-9a-f]{48}", token)
    assert f"?token={token}" in text
    assert text.count(f"Token: {token}") == 1
    assert "tool ghost skipped: `mlws-no-such-program` is not on PATH" in text


def test_readiness_of_every_tool_is_reported_once(ws):
    deadline = time.monotonic() + 60
    while "mlws: workspace ready" not in ws.text() and time.monotonic() < deadline:
        time.sleep(0.3)
    line = next(line for line in ws.text().splitlines() if "mlws: workspace ready" in line)
    assert "(3 checks passed" in line  # jupyter-server, files-http (http), docs-http (tcp); ghost is skipped
    assert "not ready after" not in ws.text()


def test_base_url_is_normalised_and_quoted(ws_base):
    assert ws_base.base == "/my%20ws/lab-x"
    assert f"127.0.0.1:{ws_base.port}/my%20ws/lab-x/?token=" not in ws_base.text()  # bound to 127.0.0.1, shown as localhost
    assert f"localhost:{ws_base.port}/my%20ws/lab-x/?token=" in ws_base.text()


# --- unauthenticated routes -------------------------------------------------------------------

def test_ping_and_healthy_need_no_login(any_ws):
    for path in ["/ping", "/healthy"] + ([any_ws.base + "/ping", any_ws.base + "/healthy"] if any_ws.base else []):
        answer = get(any_ws, path)
        assert answer.status_code == 200, path
    assert get(any_ws, "/ping").text == "pong\n"


def test_login_page_assets_need_no_login(any_ws):
    answer = get(any_ws, any_ws.base + "/_mlws/static/mlws.css")
    assert answer.status_code == 200
    assert "font-family" in answer.text


@pytest.mark.parametrize("path", ["/", "/lab", "/tree", "/api/contents", "/api/kernels", "/tools/files/", "/terminals/websocket/1"])
def test_everything_else_is_refused_without_credentials(any_ws, path):
    answer = get(any_ws, any_ws.base + path)
    assert answer.status_code == 401
    assert "Set-Cookie" not in answer.headers


def test_browsers_get_the_login_form(any_ws):
    answer = get(any_ws, any_ws.base + "/lab?a=1", headers={"Accept": "text/html"})
    assert answer.status_code == 401
    assert 'name="token"' in answer.text
    assert f'action="{any_ws.base}/_mlws/login"' in answer.text
    assert f'value="{any_ws.base}/lab?a=1"' in answer.text


def test_internal_port_of_jupyter_refused_without_login(any_ws):
    jupyter_port = any_ws.tool_ports["jupyter"]
    for path in (f"/tools/{jupyter_port}/api/contents", f"/tools/{jupyter_port}/lab"):
        assert get(any_ws, any_ws.base + path).status_code == 401


def test_wrong_token_refused(any_ws):
    answer = get(any_ws, any_ws.base + "/lab?token=wrong-token")
    assert answer.status_code == 401
    assert "Set-Cookie" not in answer.headers
    answer = get(any_ws, any_ws.base + "/api/status", headers={"Authorization": "token wrong-token"})
    assert answer.status_code == 401
    # The right token in the wrong case is another token.
    answer = get(any_ws, any_ws.base + "/api/status", headers={"Authorization": "token " + token_of(any_ws).upper()})
    assert answer.status_code == 401


def test_token_and_cookie_of_another_deployment_refused(ws, ws_base):
    assert get(ws_base, ws_base.base + "/api/status", headers={"Authorization": "token " + ws.token()}).status_code == 401
    assert get(ws, "/api/status", headers={"Authorization": "token " + NASTY_TOKEN}).status_code == 401
    session = session_with_token(ws, ws.token())
    value = session.cookies.get(f"mlws_session_{ws.port}")
    assert value
    forged = {f"mlws_session_{ws_base.port}": value}
    assert get(ws_base, ws_base.base + "/api/status", cookies=forged).status_code == 401


def test_client_cannot_forge_the_gateway_header(ws):
    settings = json.load(open(os.path.join(ws.runtime_dir, "jupyter", "settings.json")))
    header = {settings["gateway_header"]: "0" * 64}
    # Through the gateway without login: refused by nginx.
    assert get(ws, "/api/contents", headers=header).status_code == 401
    # Straight to Jupyter's loopback port with a guessed secret: Jupyter refuses too.
    direct = requests.get(f"http://127.0.0.1:{ws.tool_ports['jupyter']}/api/contents", headers=header, timeout=10)
    assert direct.status_code == 403


# --- logging in -------------------------------------------------------------------------------

NAVIGATION = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "none"}


def test_token_query_is_traded_for_a_cookie(any_ws):
    token = token_of(any_ws)
    quoted = requests.utils.quote(token, safe="")
    answer = get(any_ws, f"{any_ws.base}/lab/tree/x?a=1&token={quoted}&b=2", headers=NAVIGATION)
    assert answer.status_code == 302
    assert answer.headers["Location"] == f"{any_ws.base}/lab/tree/x?a=1&b=2"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith(f"mlws_session_{any_ws.port}=")
    for attribute in ("HttpOnly", "SameSite=Strict", f"Path={any_ws.base}/"):
        assert attribute in cookie
    # Expires with the session (WORKSPACE_SESSION_HOURS, default 7 days).
    assert 7 * 24 * 3600 - 60 < int(re.search(r"Max-Age=(\d+)", cookie).group(1)) <= 7 * 24 * 3600
    assert "Secure" not in cookie  # plain HTTP here; the TLS test checks Secure


def test_login_form_post(any_ws):
    session = requests.Session()
    answer = session.post(
        any_ws.url(any_ws.base + "/_mlws/login"),
        data={"token": token_of(any_ws), "next": any_ws.base + "/tree"},
        allow_redirects=False, timeout=10,
    )
    assert answer.status_code == 302
    assert answer.headers["Location"] == any_ws.base + "/tree"
    assert session.get(any_ws.url(any_ws.base + "/api/status"), timeout=10).status_code == 200
    # An off-site `next` is not followed (no open redirect).
    answer = requests.post(any_ws.url(any_ws.base + "/_mlws/login"),
                           data={"token": token_of(any_ws), "next": "//evil.example/x"}, allow_redirects=False, timeout=10)
    assert answer.headers["Location"] == any_ws.base + "/"
    wrong = requests.post(any_ws.url(any_ws.base + "/_mlws/login"), data={"token": "nope"}, allow_redirects=False, timeout=10)
    assert wrong.status_code == 401 and "Set-Cookie" not in wrong.headers


def test_logged_in_browser_reaches_everything(any_ws):
    session = session_with_token(any_ws, token_of(any_ws))
    for path in ("/lab", "/tree", "/api/contents", "/api/kernelspecs", "/tools/files/"):
        answer = session.get(any_ws.url(any_ws.base + path), allow_redirects=False, timeout=15)
        assert answer.status_code == 200, path
    assert "JupyterLab" in session.get(any_ws.url(any_ws.base + "/lab"), timeout=15).text
    # Jupyter sees the workspace user, not an anonymous one.
    me = session.get(any_ws.url(any_ws.base + "/api/me"), timeout=10).json()
    assert me["identity"]["username"] == (any_ws.env.get("NB_USER") or os.environ.get("USER") or me["identity"]["username"])


def test_logout_revokes_the_session_on_the_server(ws):
    session = session_with_token(ws, ws.token())
    other = session_with_token(ws, ws.token())  # another browser: a session of its own
    value = session.cookies.get(f"mlws_session_{ws.port}")
    assert value != other.cookies.get(f"mlws_session_{ws.port}")
    # A GET (any page can make the browser send one) only shows the button.
    page = session.get(ws.url("/_mlws/logout"), allow_redirects=False, timeout=10)
    assert page.status_code == 200 and 'method="post"' in page.text and "Set-Cookie" not in page.headers
    assert session.get(ws.url("/api/status"), timeout=10).status_code == 200
    answer = session.post(ws.url("/_mlws/logout"), headers={"Origin": ws.origin}, allow_redirects=False, timeout=10)
    assert answer.status_code == 303
    assert "Max-Age=0" in answer.headers["Set-Cookie"]
    assert session.get(ws.url("/api/status"), allow_redirects=False, timeout=10).status_code == 401
    # Revoked on the server, not only forgotten by the browser: the old value no longer works.
    replay = requests.get(ws.url("/api/status"), cookies={f"mlws_session_{ws.port}": value}, timeout=10)
    assert replay.status_code == 401
    assert other.get(ws.url("/api/status"), timeout=10).status_code == 200


def test_api_clients_use_the_authorization_header(any_ws):
    headers = {"Authorization": "token " + token_of(any_ws)}
    assert get(any_ws, any_ws.base + "/api/status", headers=headers).status_code == 200
    # Token-authenticated API clients need no XSRF token (Jupyter's own rule).
    created = requests.post(any_ws.url(any_ws.base + "/api/contents"), headers=headers,
                            json={"type": "file", "ext": ".txt"}, timeout=10)
    assert created.status_code == 201
    assert get(any_ws, any_ws.base + "/api/status", headers={"Authorization": "Bearer " + token_of(any_ws)}).status_code == 200


def test_xsrf_stays_on_for_cookie_sessions(any_ws):
    session = session_with_token(any_ws, token_of(any_ws))
    refused = session.post(any_ws.url(any_ws.base + "/api/contents"), json={"type": "file"}, timeout=10)
    assert refused.status_code == 403
    session.get(any_ws.url(any_ws.base + "/lab"), timeout=15)
    xsrf = session.cookies.get("_xsrf")
    assert xsrf
    accepted = session.post(any_ws.url(any_ws.base + "/api/contents"), json={"type": "file"},
                            headers={"X-XSRFToken": xsrf}, timeout=10)
    assert accepted.status_code == 201
    # A cross-site page cannot use the session either: Jupyter checks the Origin.
    foreign = session.post(any_ws.url(any_ws.base + "/api/contents"), json={"type": "file"},
                           headers={"X-XSRFToken": xsrf, "Origin": "http://evil.example"}, timeout=10)
    assert foreign.status_code in (403, 404)


# --- routes and redirects ---------------------------------------------------------------------

def test_tool_path_without_slash_redirects(any_ws):
    session = session_with_token(any_ws, token_of(any_ws))
    answer = session.get(any_ws.url(any_ws.base + "/tools/files?x=1"), allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    assert answer.headers["Location"] == any_ws.base + "/tools/files/?x=1"
    port = any_ws.tool_ports["files"]
    answer = session.get(any_ws.url(f"{any_ws.base}/tools/{port}?y=2"), allow_redirects=False, timeout=10)
    assert answer.headers["Location"] == f"{any_ws.base}/tools/{port}/?y=2"


def test_notebook_args_reach_jupyter(ws_base):
    session = session_with_token(ws_base, NASTY_TOKEN)
    answer = session.get(ws_base.url(ws_base.base + "/"), allow_redirects=False, timeout=10)
    assert answer.status_code == 302 and answer.headers["Location"].rstrip("?") == ws_base.base + "/tree"
    assert session.get(ws_base.url(ws_base.base + "/api/terminals"), timeout=10).status_code == 404


def test_paths_outside_the_base_url_redirect_into_it(ws_base):
    base = ws_base.base
    answer = get(ws_base, "/lab?x=1")
    assert (answer.status_code, answer.headers["Location"]) == (302, base + "/lab?x=1")
    # Path-segment boundary: /my%20ws/lab-xyz is not under /my%20ws/lab-x.
    answer = get(ws_base, "/my%20ws/lab-xyz")
    assert answer.headers["Location"] == base + "/my%20ws/lab-xyz"
    answer = get(ws_base, base)
    assert answer.headers["Location"] == base + "/"


def test_named_tool_gets_the_path_without_prefix_and_encoded(any_ws):
    with open(os.path.join(any_ws.workspace_dir, "a b%2Fc.txt"), "w") as handle:
        handle.write("encoded path arrived intact")
    session = session_with_token(any_ws, token_of(any_ws))
    answer = session.get(any_ws.url(any_ws.base + "/tools/files/a%20b%252Fc.txt"), timeout=10)
    assert answer.status_code == 200
    assert answer.text == "encoded path arrived intact"


def test_tool_with_its_own_prefix(any_ws):
    with open(os.path.join(any_ws.workspace_dir, "doc.txt"), "w") as handle:
        handle.write("custom prefix stripped")
    session = session_with_token(any_ws, token_of(any_ws))
    answer = session.get(any_ws.url(any_ws.base + "/shared/docs/doc.txt?v=1"), timeout=10)
    assert answer.status_code == 200 and answer.text == "custom prefix stripped"
    redirect = session.get(any_ws.url(any_ws.base + "/shared/docs"), allow_redirects=False, timeout=10)
    assert redirect.headers["Location"] == any_ws.base + "/shared/docs/"
    assert get(any_ws, any_ws.base + "/shared/docs/doc.txt").status_code == 401


def test_any_internal_port_is_reachable_except_the_gateway(any_ws):
    with open(os.path.join(any_ws.workspace_dir, "port.txt"), "w") as handle:
        handle.write("via port route")
    session = session_with_token(any_ws, token_of(any_ws))
    port = any_ws.tool_ports["files"]
    answer = session.get(any_ws.url(f"{any_ws.base}/tools/{port}/port.txt?q=1"), timeout=10)
    assert answer.status_code == 200 and answer.text == "via port route"
    loop = session.get(any_ws.url(f"{any_ws.base}/tools/{any_ws.port}/"), allow_redirects=False, timeout=10)
    assert loop.status_code == 403
    leading_zero = session.get(any_ws.url(f"{any_ws.base}/tools/0{any_ws.port}/"), allow_redirects=False, timeout=10)
    assert leading_zero.status_code != 200


def test_backend_not_ready_shows_the_starting_page(any_ws):
    session = session_with_token(any_ws, token_of(any_ws))
    answer = session.get(any_ws.url(f"{any_ws.base}/tools/{free_port()}/"), timeout=10)
    assert answer.status_code == 503
    assert 'http-equiv="refresh"' in answer.text
    assert "starting" in answer.text.lower()


def test_tool_without_executable_is_marked_unavailable(ws):
    session = session_with_token(ws, ws.token())
    answer = session.get(ws.url("/tools/ghost/"), timeout=10)
    assert answer.status_code == 503 and "not available" in answer.text
    menu = json.load(open(os.path.join(ws.runtime_dir, "tools-menu.json")))
    by_id = {entry["id"]: entry for entry in menu}
    assert by_id["ghost"]["available"] is False
    assert by_id["files"]["available"] is True


def listening_sockets() -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket, from /proc/net/tcp{,6}."""
    found = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[3] != "0A":  # LISTEN
                    continue
                address_hex, port_hex = fields[1].split(":")
                found.append((address_hex, int(port_hex, 16)))
    return found


def test_internal_services_listen_on_loopback_only(ws):
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    checked = 0
    for address, port in listening_sockets():
        if port in (ws.port, ws.tool_ports["jupyter"], ws.tool_ports["files"]):
            assert address in loopback, (address, port)
            checked += 1
    assert checked >= 3


def test_tutorials_copied_into_the_empty_workspace(ws):
    names = sorted(os.listdir(os.path.join(ws.workspace_dir, "tutorials")))
    assert names == ["01-welcome.ipynb", "02-numbers-and-plots.ipynb"]
    for name in names:
        json.load(open(os.path.join(ws.workspace_dir, "tutorials", name)))


# --- a kernel through the gateway -------------------------------------------------------------

def run_code(workspace: Workspace, code: str) -> str:
    """Start a kernel as a browser would (cookie + XSRF), execute `code` over the websocket."""
    session = session_with_token(workspace, token_of(workspace))
    session.get(workspace.url(workspace.base + "/lab"), timeout=15)
    xsrf = session.cookies.get("_xsrf")
    kernel = session.post(workspace.url(workspace.base + "/api/kernels"), json={"name": "python3"},
                          headers={"X-XSRFToken": xsrf}, timeout=30)
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    ws_url = workspace.url(f"{workspace.base}/api/kernels/{kernel_id}/channels").replace("http", "ws", 1)
    connection = websocket.create_connection(ws_url, header=[f"Cookie: {cookie}"], origin=workspace.origin, timeout=60)
    try:
        msg_id = uuid.uuid4().hex
        connection.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False},
        }))
        output = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = json.loads(connection.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                output.append(message["content"]["text"])
            if message["msg_type"] == "error":
                raise AssertionError(message["content"])
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                break
        return "".join(output)
    finally:
        connection.close()
        session.delete(workspace.url(f"{workspace.base}/api/kernels/{kernel_id}"), headers={"X-XSRFToken": xsrf}, timeout=10)


def test_kernel_executes_code_over_the_websocket(any_ws):
    assert run_code(any_ws, "print(6 * 7)").strip() == "42"


def test_tools_get_threads_proxy_umask_and_no_secrets(ws):
    out = run_code(ws, "import os, json\n"
                        "m = os.umask(0); os.umask(m)\n"
                        "print(json.dumps({k: os.environ.get(k) for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'HTTP_PROXY', 'NO_PROXY', 'AUTHENTICATE_VIA_JUPYTER', 'MLWS_FIXTURE')} | {'uid': os.getuid(), 'umask': m}))")
    seen = json.loads(out)
    assert seen["OMP_NUM_THREADS"] == "2" and seen["MKL_NUM_THREADS"] == "2"
    assert seen["HTTP_PROXY"] == "http://proxy.invalid:3128"
    assert seen["NO_PROXY"] == "localhost,127.0.0.1"
    assert seen["AUTHENTICATE_VIA_JUPYTER"] is None
    assert seen["MLWS_FIXTURE"] == "yes"  # manifest env
    assert seen["umask"] == 0o027
    if os.geteuid() == 0:
        assert seen["uid"] != 0


# --- supervision ------------------------------------------------------------------------------

def supervisorctl(workspace: Workspace, *args: str) -> str:
    """supervisorctl with plain program names: each is translated to `<group>:<program>` (the
    runtime puts the programs of one start priority into one group, runtime/supervisor.py)."""
    conf = os.path.join(workspace.runtime_dir, "supervisord.conf")
    groups = {}
    group = None
    for line in open(conf, encoding="utf-8"):
        if line.startswith("[group:"):
            group = line.strip()[len("[group:"):-1]
        elif line.startswith("programs=") and group:
            groups.update({name: f"{group}:{name}" for name in line.strip()[len("programs="):].split(",")})
    return subprocess.run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", conf, *[groups.get(arg, arg) for arg in args]],
        capture_output=True, text=True, timeout=30,
    ).stdout


def test_killed_jupyter_comes_back(ws):
    pid = int(supervisorctl(ws, "pid", "jupyter-server").strip())
    os.kill(pid, 9)
    went_down = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = get(ws, "/healthy").status_code
        if status == 503:
            went_down = True
        if status == 200 and went_down:
            break
        time.sleep(0.2)
    assert went_down, "the health check never noticed Jupyter was gone"
    assert get(ws, "/healthy").status_code == 200
    new_pid = int(supervisorctl(ws, "pid", "jupyter-server").strip())
    assert new_pid != pid
    assert get(ws, "/api/status", headers={"Authorization": "token " + ws.token()}).status_code == 200


def test_sigterm_stops_everything_quickly(ws):
    ports = [ws.port, ws.tool_ports["jupyter"], ws.tool_ports["files"]]
    ws.stop(timeout=15)  # raises if the runtime has not exited by then
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening after shutdown"
    assert "waiting for" in ws.text() or "stopped:" in ws.text()
