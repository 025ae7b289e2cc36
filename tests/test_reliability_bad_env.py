"""Bad environment values stop `mlws start` with a clear message and start nothing.

Each case is a different variable or a different mistake. For each: exit code 2, the message names
the variable, no process was left running, the gateway port does not answer, and no supervisor
configuration was written. (The spec-file corpus is tests/bad-specs/, run by the generator tests.)
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import harness as h  # noqa: E402

# (case id, environment, the variable the message must name)
CASES = [
    ("port-not-a-number", {"WORKSPACE_PORT": "eighty"}, "WORKSPACE_PORT"),
    ("port-too-large", {"WORKSPACE_PORT": "70000"}, "WORKSPACE_PORT"),
    ("port-zero", {"WORKSPACE_PORT": "0"}, "WORKSPACE_PORT"),
    ("port-negative", {"WORKSPACE_PORT": "-8080"}, "WORKSPACE_PORT"),
    ("base-url-control-character", {"WORKSPACE_BASE_URL": "/work\x01space"}, "WORKSPACE_BASE_URL"),
    ("base-url-query", {"WORKSPACE_BASE_URL": "/ws?x=1"}, "WORKSPACE_BASE_URL"),
    ("base-url-dotdot", {"WORKSPACE_BASE_URL": "/a/../b"}, "WORKSPACE_BASE_URL"),
    ("hub-prefix-fragment", {"JUPYTERHUB_SERVICE_PREFIX": "/user/x#top"}, "JUPYTERHUB_SERVICE_PREFIX"),
    ("basic-user-without-password", {"WORKSPACE_AUTH_USER": "alice"}, "WORKSPACE_AUTH_PASSWORD"),
    ("basic-password-without-user", {"WORKSPACE_AUTH_PASSWORD": "s3cret-pass"}, "WORKSPACE_AUTH_USER"),
    ("basic-user-with-colon", {"WORKSPACE_AUTH_USER": "al:ice", "WORKSPACE_AUTH_PASSWORD": "s3cret-pass"}, "WORKSPACE_AUTH_USER"),
    ("basic-password-newline", {"WORKSPACE_AUTH_USER": "alice", "WORKSPACE_AUTH_PASSWORD": "s3cret\npass"}, "WORKSPACE_AUTH_PASSWORD"),
    ("hub-auth-without-hub-token", {"AUTHENTICATE_VIA_JUPYTER": "true"}, "JUPYTERHUB_API_TOKEN"),
    ("token-with-newline", {"AUTHENTICATE_VIA_JUPYTER": "abcdefgh\nijkl"}, "AUTHENTICATE_VIA_JUPYTER"),
    ("ssl-enabled-not-a-boolean", {"WORKSPACE_SSL_ENABLED": "maybe"}, "WORKSPACE_SSL_ENABLED"),
    ("ssl-cert-without-key", {"WORKSPACE_SSL_CERT": "/etc/hostname"}, "WORKSPACE_SSL_KEY"),
    ("ssl-files-missing", {"WORKSPACE_SSL_CERT": "/nonexistent/cert.crt", "WORKSPACE_SSL_KEY": "/nonexistent/cert.key"}, "WORKSPACE_SSL_CERT"),
    ("threads-negative", {"MAX_NUM_THREADS": "-3"}, "MAX_NUM_THREADS"),
    ("threads-word", {"MAX_NUM_THREADS": "lots"}, "MAX_NUM_THREADS"),
    ("notebook-args-unclosed-quote", {"NOTEBOOK_ARGS": '--ServerApp.x="unclosed'}, "NOTEBOOK_ARGS"),
    ("cull-not-a-number", {"SHUTDOWN_INACTIVE_KERNELS": "sometimes"}, "SHUTDOWN_INACTIVE_KERNELS"),
    ("tutorials-not-a-boolean", {"INCLUDE_TUTORIALS": "perhaps"}, "INCLUDE_TUTORIALS"),
    ("umask-not-octal", {"NB_UMASK": "999"}, "NB_UMASK"),
    ("session-hours-word", {"WORKSPACE_SESSION_HOURS": "a week"}, "WORKSPACE_SESSION_HOURS"),
    ("session-hours-zero", {"WORKSPACE_SESSION_HOURS": "0"}, "WORKSPACE_SESSION_HOURS"),
    ("manifest-missing", {"MLWS_MANIFEST": "/nonexistent/manifest.json"}, "MLWS_MANIFEST"),
    ("tools-unknown", {"MLWS_TOOLS": "jupyter,no-such-tool"}, "MLWS_TOOLS"),
]
if h.is_root():
    CASES += [
        ("user-unknown", {"NB_USER": "no-such-user-mlws"}, "NB_USER"),
        ("user-root", {"NB_USER": "root"}, "NB_USER"),
    ]


def processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


@pytest.mark.parametrize("case,env,variable", CASES, ids=[case[0] for case in CASES])
def test_bad_environment_value_stops_start_up(case, env, variable):
    folder = h.make_folder(f"mlws-test-bad-env-{case}-")
    try:
        check_refused(folder, env, variable, case)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_refused(folder: str, env: dict[str, str], variable: str, case: str) -> None:
    runtime_dir = os.path.join(folder, "run")
    port = h.free_port()
    environment = h.runtime_env("tok-" + "a" * 20, {"WORKSPACE_PORT": str(port)})
    environment.update(env)
    # No --port: WORKSPACE_PORT is under test. --flavor only when MLWS_MANIFEST is not.
    argv = h.mlws_command() + ["start", "--bind", h.LOOPBACK, "--runtime-dir", runtime_dir,
                               "--workspace-dir", os.path.join(folder, "workspace")]
    if "MLWS_MANIFEST" not in env:
        argv += ["--manifest", h.manifest_path("minimal")]
    result = subprocess.run(argv, env=environment, capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    print(f"\n{case}: exit {result.returncode}: " + " | ".join(line for line in output.splitlines() if line.strip())[:400])

    assert result.returncode == 2, output
    assert variable in output, f"the message does not name {variable}:\n{output}"
    assert "Traceback" not in output, output
    assert not processes_mentioning(runtime_dir), processes_mentioning(runtime_dir)
    assert not os.path.exists(os.path.join(runtime_dir, "supervisord.conf"))
    with socket.socket() as sock:
        sock.settimeout(1)
        assert sock.connect_ex((h.LOOPBACK, port)) != 0, f"something listens on the gateway port {port}"


def test_port_in_use_stops_start_up():
    """WORKSPACE_PORT naming a port that is taken: refused up front, the other listener untouched."""
    folder = h.make_folder("mlws-test-bad-env-port-in-use-")
    runtime_dir = os.path.join(folder, "run")
    with socket.socket() as taken, contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, folder, True)
        taken.bind((h.LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        environment = h.runtime_env("tok-" + "a" * 20, {"WORKSPACE_PORT": str(port)})
        result = subprocess.run(h.mlws_command() + ["start", "--manifest", h.manifest_path("minimal"), "--bind",
                                                    h.LOOPBACK, "--runtime-dir", runtime_dir, "--workspace-dir",
                                                    os.path.join(folder, "workspace")],
                                env=environment, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        output = result.stdout + result.stderr
        assert result.returncode == 2, output
        assert "WORKSPACE_PORT" in output and str(port) in output, output
        assert not processes_mentioning(runtime_dir)
        assert not os.path.exists(os.path.join(runtime_dir, "supervisord.conf"))
