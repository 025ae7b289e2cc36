"""Load: 200 concurrent clients for 60 s through the gateway, mixing REST calls and kernel
websockets: zero errors and no lost kernel replies.

One real workspace (`mlws start`, token authentication) with Jupyter and a named tool (nginx
serving a page, run by the supervisor). 170 HTTP clients loop over the contents API, /api/status,
a Jupyter static asset and the tool page; 30 websocket clients, 10 on each of 3 kernels, loop
execute_request "n*2" -> execute_reply and check the result. Every answer is checked (status,
body), every request has a reply. Bounded: MLWS_LOAD_SECONDS (default 60) on 127.0.0.1 only.
"""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import harness as h  # noqa: E402

TOKEN = "load-token-" + "5" * 24
SECONDS = float(os.environ.get("MLWS_LOAD_SECONDS", "60"))
HTTP_CLIENTS = 170
WS_CLIENTS = 30
KERNELS = 3


@pytest.fixture(scope="module")
def workspace():
    base_dir = h.make_folder("mlws-test-load-")
    tool_port = h.free_port()
    manifest = h.manifest_with_tools([h.static_tool("pagetool", tool_port, base_dir)])
    with h.ProcessGroup(base_dir) as group:
        rt = h.start_runtime(group, base_dir, h.free_port(), token=TOKEN, tools="jupyter,pagetool", manifest=manifest)
        h.wait_until(lambda: h.port_open(tool_port), 30, 0.1, "the page tool")
        yield rt


async def run_load(rt: h.Runtime, folder: str, kernels: list[str]) -> dict:
    import aiohttp

    headers = rt.auth_headers()
    requests = [
        ("contents", f"{rt.url}/api/contents/{folder}", lambda body: b'"type": "directory"' in body or b'"type":"directory"' in body),
        ("status", f"{rt.url}/api/status", lambda body: b"kernels" in body),
        ("static", f"{rt.url}/static/style/index.css", lambda body: len(body) > 100),
        ("tool page", f"{rt.url}/tools/pagetool/index.html", lambda body: b"bench tool" in body),
    ]
    latencies: dict[str, list[float]] = {name: [] for name, _, _ in requests}
    latencies["kernel"] = []
    errors: list[str] = []
    sent = replied = 0
    deadline = time.monotonic() + SECONDS

    async def http_client(session, index):
        position = index
        while time.monotonic() < deadline:
            name, url, valid = requests[position % len(requests)]
            position += 1
            start = time.perf_counter()
            try:
                async with session.get(url, headers=headers) as answer:
                    body = await answer.read()
                    if answer.status != 200 or not valid(body):
                        errors.append(f"{name}: HTTP {answer.status} {body[:120]!r}")
                        continue
            except Exception as error:
                errors.append(f"{name}: {type(error).__name__}: {error}")
                continue
            latencies[name].append(time.perf_counter() - start)

    async def ws_client(session, index):
        nonlocal sent, replied
        kernel = kernels[index % len(kernels)]
        kernel_session = uuid.uuid4().hex
        url = f"{rt.url.replace('http://', 'ws://')}/api/kernels/{kernel}/channels?session_id={kernel_session}"
        try:
            async with session.ws_connect(url, headers=headers, max_msg_size=0, heartbeat=None) as ws:
                n = 0
                while time.monotonic() < deadline:
                    n += 1
                    sent += 1
                    took, content = await h.kernel_round_trip(ws, kernel_session, code=f"{index * 100000 + n}*2", timeout=60)
                    replied += 1
                    if content.get("status") != "ok":
                        errors.append(f"kernel reply status {content.get('status')}: {str(content)[:200]}")
                    latencies["kernel"].append(took)
        except Exception as error:
            errors.append(f"kernel websocket {index}: {type(error).__name__}: {error}")

    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.monotonic()
        await asyncio.gather(*[http_client(session, i) for i in range(HTTP_CLIENTS)],
                             *[ws_client(session, i) for i in range(WS_CLIENTS)])
        elapsed = time.monotonic() - started
    return {"latencies": latencies, "errors": errors, "sent": sent, "replied": replied, "elapsed": elapsed}


def test_200_clients_rest_and_kernels_zero_errors(workspace):
    rt = workspace
    folder = h.make_contents_folder(rt.workspace, "load-folder")
    kernels = [h.start_kernel(rt.url, rt.auth_headers()) for _ in range(KERNELS)]
    result = asyncio.run(run_load(rt, folder, kernels))

    print(f"\nload: {HTTP_CLIENTS} HTTP + {WS_CLIENTS} websocket clients for {result['elapsed']:.1f} s "
          f"through the gateway ({KERNELS} kernels)")
    for name, values in result["latencies"].items():
        if values:
            values.sort()
            print(f"  {name:<10} {len(values):>7} ok  {len(values) / result['elapsed']:8.1f}/s  "
                  f"p50 {statistics.median(values) * 1000:7.1f} ms  p99 {values[int(0.99 * (len(values) - 1))] * 1000:7.1f} ms")
    print(f"  kernel requests sent {result['sent']}, replies {result['replied']}; errors {len(result['errors'])}")

    assert not result["errors"], f"{len(result['errors'])} errors, first: " + json.dumps(result["errors"][:10], indent=1)
    assert result["sent"] == result["replied"], f"lost kernel replies: sent {result['sent']}, replied {result['replied']}"
    for name, values in result["latencies"].items():
        assert values, f"no successful {name} request at all"
    # Everything is still healthy after the load.
    status, _, _ = h.http("GET", rt.url + "/healthy")
    assert status == 200
