"""Crash recovery: every supervised process, killed with SIGKILL, serves again through the gateway
within seconds; while it is down the gateway answers at once (no hang).

One real workspace (`mlws start`, token authentication) with Jupyter, the login service, the
gateway and a tool (an nginx serving a page, as a named tool run by the supervisor). Each program
the supervisor reports RUNNING is killed in turn (its pid, SIGKILL, as a crash would), then:
a request made at once must be answered (or refused) within ANSWER_LIMIT seconds, and the program's
own check through the gateway must pass again within RECOVERY_LIMIT seconds, with a new pid
RUNNING that stays the same for STABLE seconds (a program that keeps failing to start, e.g. on
a port still held by its killed predecessor's children, is not recovered), and none of the
killed process's children may be left running. The figures are printed.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import harness as h  # noqa: E402

TOKEN = "recovery-token-" + "7" * 24
ANSWER_LIMIT = 3.0     # seconds for the gateway's answer while a program is down
RECOVERY_LIMIT = 30.0  # seconds until the program serves again (Jupyter's own start-up is most of it)
STABLE = 4.0           # seconds the new process must keep its pid to count as recovered


@pytest.fixture(scope="module")
def workspace():
    base_dir = h.make_folder("mlws-test-recovery-")
    tool_port = h.free_port()
    manifest = h.manifest_with_tools([h.static_tool("pagetool", tool_port, base_dir)])
    with h.ProcessGroup(base_dir) as group:
        rt = h.start_runtime(group, base_dir, h.free_port(), token=TOKEN, tools="jupyter,pagetool", manifest=manifest)
        h.wait_until(lambda: h.port_open(tool_port), 30, 0.1, "the page tool")
        yield rt


def checks(rt: h.Runtime) -> dict[str, tuple[str, dict[str, str], callable]]:
    """program -> (path, headers, is_serving(status, body)) through the gateway."""
    auth = rt.auth_headers()
    return {
        "gateway": ("/ping", {}, lambda s, b: s == 200 and b"pong" in b),
        "login": ("/lab", {"Accept": "text/html"}, lambda s, b: s == 401 and b'name="token"' in b),
        "jupyter-server": ("/api/status", auth, lambda s, b: s == 200 and b"kernels" in b),
        "pagetool-server": ("/tools/pagetool/index.html", auth, lambda s, b: s == 200 and b"bench tool" in b),
    }


def children_of(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return children


def command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        return "?"


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def request(rt: h.Runtime, path: str, headers: dict[str, str], timeout: float) -> tuple[int, bytes, float]:
    """(status, body, seconds); status 0 when the connection is refused or reset (also an answer)."""
    start = time.monotonic()
    try:
        status, _, body = h.http("GET", rt.url + path, headers, timeout=timeout)
    except (ConnectionError, OSError) as error:
        if isinstance(error, socket.timeout) or "timed out" in str(error):
            raise
        return 0, b"", time.monotonic() - start
    return status, body, time.monotonic() - start


PROGRAMS = ["login", "jupyter-server", "pagetool-server", "gateway"]  # the gateway last: a failed restart leaves it broken


@pytest.mark.parametrize("program", PROGRAMS)
def test_supervised_program_recovers_after_sigkill(workspace, program):
    rt = workspace
    path, headers, serving = checks(rt)[program]
    status = rt.supervisor_status()
    assert status.get(program, ("?",))[0] == "RUNNING", f"expected {program} RUNNING; supervisor says {status}"

    code, body, _ = request(rt, path, headers, 10)
    assert serving(code, body), f"{program}: not serving before the kill: {code} {body[:200]!r}"
    old_pid = status[program][1]
    old_children = children_of(old_pid)
    os.kill(old_pid, signal.SIGKILL)
    killed_at = time.monotonic()

    down_code, _, answer_seconds = request(rt, path, headers, ANSWER_LIMIT + 5)
    recovered = None
    while time.monotonic() - killed_at < RECOVERY_LIMIT:
        code, body, _ = request(rt, path, headers, 5)
        state, new_pid = rt.supervisor_status().get(program, ("?", None))
        if serving(code, body) and state == "RUNNING" and new_pid != old_pid:
            recovered = time.monotonic() - killed_at
            time.sleep(STABLE)
            state, later_pid = rt.supervisor_status().get(program, ("?", None))
            if state == "RUNNING" and later_pid == new_pid:
                break
            recovered = None  # it died again: keep waiting
        time.sleep(0.1)
    left_over = [pid for pid in old_children if alive(pid)]
    left_over = [f"{pid} ({command_of(pid)})" for pid in left_over]
    print(f"\n{program}: killed pid {old_pid}; answer while down: "
          f"{'refused' if down_code == 0 else down_code} in {answer_seconds * 1000:.0f} ms; " +
          (f"serving again after {recovered:.1f} s" if recovered is not None else
           f"NOT serving again within {RECOVERY_LIMIT} s (supervisor: {rt.supervisor_status().get(program)})") +
          (f"; children left running: {left_over}" if left_over else ""))

    assert answer_seconds < ANSWER_LIMIT, f"{program} down: the gateway took {answer_seconds:.1f} s to answer"
    if program != "gateway":
        assert down_code != 0, f"{program} down: the gateway itself stopped answering"
        # A backend that is down is answered with the self-refreshing starting page, never a raw 502.
        assert down_code in (200, 503), f"{program} down: the gateway answered {down_code}, expected the starting page (503)"
    assert not left_over, (f"{program}: children of the killed process are still running: {left_over} "
                           f"(supervisor: {rt.supervisor_status().get(program)})")
    assert recovered is not None, (f"{program} did not serve again, stably, within {RECOVERY_LIMIT} s after "
                                   f"SIGKILL (supervisor: {rt.supervisor_status().get(program)})")
    # The whole workspace still works end to end: a kernel starts.
    assert h.start_kernel(rt.url, rt.auth_headers())
