"""Unauthenticated-access corpus: hundreds of probes generated from the route table, none may
reach a backend.

One real workspace (`mlws start`, token authentication, base URL /base) runs the minimal flavor's
route table; every named tool's port is served by a recording HTTP server of this test, and
/tools/<port>/ points at another one. Jupyter runs with DEBUG logging, so every request it
handles is in its log. Each probe carries a unique `mlws_probe=<id>` marker in its query. The
probes: every route and tool x methods (GET, POST, PUT, DELETE, OPTIONS, PATCH, HEAD, websocket
upgrade) x path encodings (`%2e%2e`, `//`, `%2F`, mixed case, trailing dots, backslashes, `;`) x
base-URL tricks (`/baseX`, `/base/../tools/`, `/base%2F..`) x forged credentials (cookies,
tokens, the gateway's own header). Positive controls prove both markers work: the same requests
with the real token do reach the recording servers and Jupyter's log.
"""
from __future__ import annotations

import collections
import glob
import json
import os
import secrets
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import harness as h  # noqa: E402

BASE = "/base"
TOKEN = "probe-" + secrets.token_hex(20)
JUPYTER_PATHS = [
    "/", "/lab", "/tree", "/files/secret.txt", "/nbconvert/html/x.ipynb", "/api/status",
    "/api/contents/secret.txt", "/api/kernels", "/api/sessions", "/api/terminals", "/terminals/websocket/1",
    "/tooling/tools",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "HEAD", "WEBSOCKET"]
WS_HEADERS = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def encodings(path: str) -> list[str]:
    """Spellings of one path under /base that a lax gateway might route differently."""
    rest = path[len(BASE):]  # e.g. /tools/4242/x
    parts = rest.strip("/").split("/")
    first = parts[0] if parts and parts[0] else ""
    out = [
        path,
        BASE + "/" + rest.lstrip("/").replace("/", "//"),                 # doubled slashes
        "/" + BASE.lstrip("/") + "//" + rest.lstrip("/"),                 # // after the base
        BASE + "/" + rest.lstrip("/").replace("/", "%2F"),                # encoded slashes
        BASE + "/" + "".join(f"%{ord(c):02x}" for c in first) + rest[len(first) + 1:],  # percent-encoded segment
        BASE + "/" + first.upper() + rest[len(first) + 1:],               # mixed case segment
        BASE.upper() + rest,                                              # mixed case base
        BASE + "/" + first + "." + rest[len(first) + 1:] if first else BASE + "/.",  # trailing dot
        BASE + "/_mlws/static/%2e%2e/%2e%2e" + rest,                      # traversal out of an ungated folder
        BASE + "/_mlws/static/..%2f..%2f" + rest.lstrip("/"),
        BASE + "/_mlws/static/..\\..\\" + rest.lstrip("/"),              # backslashes
        BASE + "/ping/.." + rest,                                         # through an ungated exact location
        BASE + "/healthy/%2e%2e" + rest,
        BASE + "/_mlws/login/../.." + rest,
        BASE + "/./" + rest.lstrip("/"),
        BASE + ";" + rest,                                                # path parameters
        BASE + "X" + rest,                                                # base-URL tricks
        BASE + "/.." + rest,
        BASE + "%2F.." + rest,
        BASE + "/..%2F" + rest.lstrip("/"),
        "/" + rest.lstrip("/"),                                           # outside the base URL
        "/../" + BASE.lstrip("/") + rest,
    ]
    return list(dict.fromkeys(out))


def credential_variants(cookie_name: str) -> list[tuple[str, dict[str, str], str]]:
    """(name, headers, extra query) of forged or missing credentials."""
    forged = secrets.token_hex(32)
    return [
        ("none", {}, ""),
        ("forged session cookie", {"Cookie": f"{cookie_name}={forged}"}, ""),
        ("token as cookie value", {"Cookie": f"{cookie_name}={TOKEN}"}, ""),
        ("cookie of another port", {"Cookie": f"mlws_session_1={forged}"}, ""),
        ("wrong token header", {"Authorization": "token wrong-token"}, ""),
        ("bearer forged", {"Authorization": f"Bearer {forged}"}, ""),
        ("token prefix", {"Authorization": f"token {TOKEN[:-1]}"}, ""),
        ("token plus a char", {"Authorization": f"token {TOKEN}x"}, ""),
        ("token upper case", {"Authorization": f"token {TOKEN.upper()}"}, ""),
        ("basic with token", {"Authorization": "Basic " + __import__("base64").b64encode(f"user:{TOKEN}".encode()).decode()}, ""),
        ("wrong token query", {}, "token=wrong-token"),
        ("forged gateway header", {"X-Mlws-Gateway": forged}, ""),
        ("forwarded from loopback", {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"}, ""),
        ("xsrf cookie and header", {"Cookie": "_xsrf=abc", "X-XSRFToken": "abc"}, ""),
    ]


class FileMarker:
    """The record of a recording server that the workspace's supervisor runs."""

    def __init__(self, name: str, port: int, record_file: str):
        self.name, self.port, self.record_file = name, port, record_file

    @property
    def requests(self) -> list[dict]:
        return h.recorded(self.record_file)

    def clear(self) -> None:
        open(self.record_file, "w").close()


@pytest.fixture(scope="module")
def workspace():
    base_dir = h.make_folder("mlws-test-probes-")
    with open(h.manifest_path("minimal")) as handle:
        flavor_tools = json.load(handle)["tools"]
    # Every routed tool of the flavor, its port served by a recording server (same name, prefix, route).
    markers: dict = {}
    replacements = []
    for tool in flavor_tools:
        if tool["port"] and tool["route"] and not tool["health"]:
            port = h.free_port()
            stand_in, record_file = h.recording_tool(tool["name"], port, base_dir)
            stand_in["route"] = tool["route"]
            replacements.append(stand_in)
            markers[tool["name"]] = FileMarker(tool["name"], port, record_file)
    # /tools/<port>/ serves only ports the workspace user listens on: a recording server the
    # workspace's supervisor runs (no route of its own).
    port = h.free_port()
    any_port, record_file = h.recording_tool("any-port", port, base_dir)
    any_port["route"] = None
    replacements.append(any_port)
    markers["port"] = FileMarker("any-port", port, record_file)
    group = h.ProcessGroup(base_dir)
    try:
        rt = h.start_runtime(group, base_dir, h.free_port(), token=TOKEN,
                             tools=",".join(["jupyter", *(t["name"] for t in replacements)]),
                             manifest=h.manifest_with_tools(replacements),
                             extra_env={"WORKSPACE_BASE_URL": BASE, "NOTEBOOK_ARGS": "--ServerApp.log_level=DEBUG"})
        for marker in markers.values():
            h.wait_until(lambda: h.port_open(marker.port), 30, 0.1, f"the {marker.name} recording server")
        yield rt, markers
    finally:
        group.__exit__(None, None, None)


def jupyter_log(rt: h.Runtime) -> str:
    text = rt.proc.log()
    for path in glob.glob(os.path.join(rt.runtime_dir, "logs", "*jupyter*")):
        with open(path, errors="replace") as handle:
            text += handle.read()
    return text


def build_corpus(rt: h.Runtime, markers: dict, kernel_id: str) -> list[dict]:
    """Probes from the route table: (path, method, credentials), each with a unique id."""
    targets: list[tuple[str, str]] = []  # (which backend, path)
    for tool in rt.manifest["tools"]:
        route = tool.get("route")
        # Tools on a runtime-made unix socket ("socket": true) have no port but are routed too.
        if not route or not (tool["port"] or tool.get("socket")):
            continue
        if tool["health"]:
            paths = JUPYTER_PATHS + [f"/api/kernels/{kernel_id}/channels"]
            targets += [("jupyter", BASE + p) for p in paths]
        else:
            prefix = BASE + route["prefix"]
            targets += [(tool["name"], prefix), (tool["name"], prefix + "index.html"),
                        (tool["name"], prefix.rstrip("/")), (tool["name"], prefix + "api/x?y=1")]
    port = markers["port"].port
    targets += [("port", f"{BASE}/tools/{port}/"), ("port", f"{BASE}/tools/{port}/secret"),
                ("port", f"{BASE}/tools/{port}"),
                ("port", f"{BASE}/tools/0{port}/"), ("port", f"{BASE}/tools/{port}/%2e%2e/%2e%2e/")]
    # Jupyter listens on a unix socket now: there is no Jupyter port for /tools/<port>/ to reach.

    cookie_name = json.load(open(os.path.join(rt.runtime_dir, "login.json")))["cookie_name"]
    creds = credential_variants(cookie_name)
    probes = []

    def add(backend, path, method, cred):
        probe_id = f"p{len(probes):05d}"
        name, headers, query = cred
        marker = f"mlws_probe={probe_id}" + (f"&{query}" if query else "")
        target = path + ("&" if "?" in path else "?") + marker
        headers = dict(headers)
        real_method = method
        if method == "WEBSOCKET":
            real_method = "GET"
            headers.update(WS_HEADERS)
        probes.append({"id": probe_id, "backend": backend, "method": method, "real_method": real_method,
                       "target": target, "headers": headers, "credentials": name})

    for index, (backend, path) in enumerate(targets):
        # Every target with every method (credentials rotate), every target with every credential (GET)...
        for m_index, method in enumerate(METHODS):
            add(backend, path, method, creds[(index + m_index) % len(creds)])
        for cred in creds[1:]:
            add(backend, path, "GET", cred)
        # ...and every spelling of the path, with methods and credentials rotating.
        for e_index, spelled in enumerate(encodings(path)[1:]):
            add(backend, spelled, METHODS[(index + e_index) % len(METHODS)], creds[(index * 3 + e_index) % len(creds)])
    return probes


def test_unauthenticated_probes_never_reach_a_backend(workspace):
    rt, markers = workspace
    headers = rt.auth_headers()
    port = rt.port

    # Positive controls: with the real token the same kinds of request do reach every marker.
    kernel_id = h.start_kernel(rt.url, headers)
    status, _, _ = h.raw_request(port, "GET", f"{BASE}/api/status?mlws_probe=control-jupyter", headers)
    assert status == 200
    for name, marker in markers.items():
        path = f"{BASE}/tools/{marker.port}/control" if name == "port" else \
            BASE + next(t["route"]["prefix"] for t in rt.manifest["tools"] if t["name"] == name) + "control"
        status, answer, _ = h.raw_request(port, "GET", path + "?mlws_probe=control", headers)
        assert status == 200 and b"BACKEND REACHED" in answer, (name, path, answer[:300])
        assert marker.requests, f"control request did not reach the {name} recording server"
        marker.clear()
    assert "mlws_probe=control-jupyter" in h.wait_until(
        lambda: (lambda text: text if "mlws_probe=control-jupyter" in text else None)(jupyter_log(rt)),
        10, 0.2, "the control request in Jupyter's DEBUG log")

    probes = build_corpus(rt, markers, kernel_id)
    assert len(probes) >= 300, len(probes)
    statuses = collections.Counter()
    slow, upgraded, server_errors = [], [], []
    for probe in probes:
        status, answer, took = h.raw_request(port, probe["real_method"], probe["target"], probe["headers"], timeout=10)
        probe["status"] = status
        statuses[status] += 1
        if took > 5:
            slow.append((probe["target"], took))
        if status == 101:
            upgraded.append(probe)
        if status >= 500 or status == 0:
            server_errors.append((probe["method"], probe["target"], status, answer[:200]))

    reached = {name: marker.requests for name, marker in markers.items() if marker.requests}
    log_text = jupyter_log(rt)
    in_jupyter = [p for p in probes if f"mlws_probe={p['id']}" in log_text]
    print(f"\n{len(probes)} unauthenticated probes over {len({p['target'].split('?')[0] for p in probes})} "
          f"distinct paths, {len(METHODS)} methods, {len(credential_variants('x'))} credential variants")
    print("answers by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    print(f"reached a recording backend: {sum(len(r) for r in reached.values())}; in Jupyter's log: {len(in_jupyter)}")

    assert not reached, "probes reached a backend:\n" + "\n".join(
        f"  {name}: {r['method']} {r['path']}" for name, rs in reached.items() for r in rs[:20])
    assert not in_jupyter, "probes reached Jupyter:\n" + "\n".join(
        f"  {p['method']} {p['target']} ({p['credentials']})" for p in in_jupyter[:20])
    assert not upgraded, [p["target"] for p in upgraded[:10]]
    assert not slow, slow[:10]
    assert not server_errors, server_errors[:10]
