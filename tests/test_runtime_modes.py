"""The runtime's other modes, for real: basic auth, no auth, TLS, JupyterHub, invalid variables."""
from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest
import requests
import urllib3

from tests.runtime_helpers import Workspace, free_port, runtime_env, shared_tempdir, unprivileged_user

# The TLS tests talk to a self-signed certificate on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

BASIC_USER = "ad@m"
BASIC_PASSWORD = 'p"a ss&@:$\\'


@pytest.fixture(scope="module")
def ws_basic():
    workspace = Workspace(env={"WORKSPACE_AUTH_USER": BASIC_USER, "WORKSPACE_AUTH_PASSWORD": BASIC_PASSWORD,
                               "SHUTDOWN_INACTIVE_KERNELS": "2"},
                          name="basic", manifest_tools=("files",)).start()
    yield workspace
    workspace.cleanup()


def test_basic_auth_guards_everything(ws_basic):
    good = (BASIC_USER, BASIC_PASSWORD)
    for path in ("/lab", "/api/contents", "/tools/files/", f"/tools/{ws_basic.tool_ports['jupyter']}/api/status"):
        missing = requests.get(ws_basic.url(path), allow_redirects=False, timeout=10)
        assert missing.status_code == 401, path
        assert missing.headers["WWW-Authenticate"].startswith("Basic")
        wrong = requests.get(ws_basic.url(path), auth=(BASIC_USER, "wrong"), allow_redirects=False, timeout=10)
        assert wrong.status_code == 401, path
    assert requests.get(ws_basic.url("/lab"), auth=good, timeout=10).status_code == 200
    assert requests.get(ws_basic.url("/tools/files/"), auth=good, timeout=10).status_code == 200
    assert requests.get(ws_basic.url("/ping"), timeout=10).status_code == 200
    assert requests.get(ws_basic.url("/healthy"), timeout=10).status_code == 200
    # Basic auth is the login: no token was generated.
    assert "Token:" not in ws_basic.text()
    assert "Basic authentication as user ad@m" in ws_basic.text()
    # The password is stored hashed, never in clear.
    htpasswd = open(os.path.join(ws_basic.runtime_dir, "nginx", "htpasswd")).read()
    assert BASIC_PASSWORD not in htpasswd and htpasswd.startswith("ad@m:{SSHA}")


def test_basic_auth_session_keeps_xsrf(ws_basic):
    session = requests.Session()
    session.auth = (BASIC_USER, BASIC_PASSWORD)
    assert session.post(ws_basic.url("/api/contents"), json={"type": "file"}, timeout=10).status_code == 403
    session.get(ws_basic.url("/lab"), timeout=10)
    xsrf = session.cookies.get("_xsrf")
    ok = session.post(ws_basic.url("/api/contents"), json={"type": "file"}, headers={"X-XSRFToken": xsrf}, timeout=10)
    assert ok.status_code == 201


def test_idle_kernels_are_shut_down(ws_basic):
    session = requests.Session()
    session.auth = (BASIC_USER, BASIC_PASSWORD)
    session.get(ws_basic.url("/lab"), timeout=10)
    headers = {"X-XSRFToken": session.cookies.get("_xsrf")}
    kernel = session.post(ws_basic.url("/api/kernels"), json={"name": "python3"}, headers=headers, timeout=30).json()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ids = [k["id"] for k in session.get(ws_basic.url("/api/kernels"), timeout=10).json()]
        if kernel["id"] not in ids:
            break
        time.sleep(0.5)
    assert kernel["id"] not in ids, "the idle kernel was never culled"


def test_no_auth_is_allowed_with_a_loud_warning():
    workspace = Workspace(env={"AUTHENTICATE_VIA_JUPYTER": "FALSE"}, name="open", manifest_tools=()).start()
    try:
        assert "WARNING: AUTHENTICATE_VIA_JUPYTER=false and no basic authentication: the workspace is OPEN" in workspace.text()
        assert requests.get(workspace.url("/api/status"), timeout=10).status_code == 200
        assert requests.get(workspace.url("/lab"), timeout=10).status_code == 200
        # Still no cross-site writes: XSRF stays on.
        assert requests.post(workspace.url("/api/contents"), json={"type": "file"}, timeout=10).status_code == 403
    finally:
        workspace.cleanup()


# --- TLS --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ws_tls():
    workspace = Workspace(env={"WORKSPACE_SSL_ENABLED": "On", "AUTHENTICATE_VIA_JUPYTER": "tls-token-123"},
                          name="tls", manifest_tools=()).start()
    yield workspace
    workspace.cleanup()


def server_certificate(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


def test_tls_serves_https_with_a_generated_certificate(ws_tls):
    answer = requests.get(ws_tls.url("/api/status"), headers={"Authorization": "token tls-token-123"}, verify=False, timeout=10)
    assert answer.status_code == 200
    assert server_certificate(ws_tls.port)
    login = requests.get(ws_tls.url("/lab?token=tls-token-123"), verify=False, allow_redirects=False, timeout=10,
                         headers={"Accept": "text/html", "Sec-Fetch-Mode": "navigate"})  # a browser's token link
    assert "Secure" in login.headers["Set-Cookie"]


def test_plain_http_on_the_tls_port_redirects_to_https(ws_tls):
    answer = requests.get(f"http://127.0.0.1:{ws_tls.port}/lab?x=1", allow_redirects=False, timeout=10)
    assert answer.status_code == 301
    assert answer.headers["Location"] == f"https://127.0.0.1:{ws_tls.port}/lab?x=1"


def test_generated_certificate_is_kept_for_the_next_start(ws_tls):
    first = server_certificate(ws_tls.port)
    again = Workspace(env={"WORKSPACE_SSL_ENABLED": "true", "AUTHENTICATE_VIA_JUPYTER": "tls-token-123"},
                      name="tls2", manifest_tools=())
    try:
        again.start()
        assert server_certificate(again.port) == first
        assert "generated a self-signed TLS certificate" not in again.text()
    finally:
        again.cleanup()


def test_named_certificate_files_are_used(tmp_path):
    folder = shared_tempdir("mlws-cert-")
    cert, key = os.path.join(folder, "my.crt"), os.path.join(folder, "my.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=named-cert-test",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    os.chmod(key, 0o644)
    workspace = Workspace(env={"WORKSPACE_SSL_ENABLED": "TRUE", "WORKSPACE_SSL_CERT": cert, "WORKSPACE_SSL_KEY": key},
                          name="tlsnamed", manifest_tools=())
    try:
        workspace.start()
        der = server_certificate(workspace.port)
        pem = open(cert).read()
        assert ssl.DER_cert_to_PEM_cert(der).split("-----")[2].split() == pem.split("-----")[2].split()
    finally:
        workspace.cleanup()


# --- JupyterHub -------------------------------------------------------------------------------
# Hub mode runs under a real JupyterHub in tests/test_hub_live.py (JupyterHub's extension, now
# installed for it, needs the hub's API, so the workspace cannot run in hub mode without a hub):
# the gateway's configuration, tools refused without the hub's login, /healthy, and more.


# --- refusing to start ------------------------------------------------------------------------

def run_start(env_extra: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, str, int]:
    folder = shared_tempdir("mlws-refuse-")
    runtime_dir = os.path.join(folder, "run")
    port = free_port()
    env = runtime_env(env_extra)
    command = [sys.executable, "-m", "runtime", "start", "--manifest",
               os.path.join(os.path.dirname(__file__), "fixtures", "runtime-manifest.json"),
               "--bind", "127.0.0.1", "--runtime-dir", runtime_dir, "--workspace-dir", os.path.join(folder, "ws"), *args]
    if "WORKSPACE_PORT" not in env_extra:
        command += ["--port", str(port)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    return result, runtime_dir, port


def test_invalid_variables_are_all_reported_and_nothing_starts(tmp_path):
    result, runtime_dir, port = run_start({
        "WORKSPACE_PORT": "80a",
        "WORKSPACE_SSL_ENABLED": "maybe",
        "MAX_NUM_THREADS": "-3",
        "NB_UMASK": "999",
        "SHUTDOWN_INACTIVE_KERNELS": "soon",
        "INCLUDE_TUTORIALS": "perhaps",
        "WORKSPACE_SSL_CERT": "/nonexistent/cert.crt",
        "WORKSPACE_SSL_KEY": "/nonexistent/cert.key",
        "WORKSPACE_AUTH_USER": "someone",
        "NOTEBOOK_ARGS": "--foo='unterminated",
    })
    assert result.returncode == 2
    err = result.stderr
    for expected in (
        "WORKSPACE_PORT='80a': expected a port number 1-65535",
        "WORKSPACE_SSL_ENABLED='maybe': expected true/false",
        "MAX_NUM_THREADS='-3': expected \"auto\" or a positive integer",
        "NB_UMASK='999': expected an octal umask",
        "SHUTDOWN_INACTIVE_KERNELS='soon'",
        "INCLUDE_TUTORIALS='perhaps'",
        "WORKSPACE_SSL_CERT='/nonexistent/cert.crt': expected an existing file",
        "WORKSPACE_AUTH_PASSWORD is not set",
        "NOTEBOOK_ARGS=",
        "nothing was started",
    ):
        assert expected in err, expected
    assert not os.path.exists(runtime_dir)


def test_hub_mode_without_hub_token_is_refused():
    result, runtime_dir, _ = run_start({"AUTHENTICATE_VIA_JUPYTER": "true"})
    assert result.returncode == 2
    assert "AUTHENTICATE_VIA_JUPYTER=true: expected JUPYTERHUB_API_TOKEN to be set" in result.stderr
    assert not os.path.exists(runtime_dir)


def test_newline_in_token_or_base_url_is_refused():
    result, _, _ = run_start({"AUTHENTICATE_VIA_JUPYTER": "abc\ndef", "WORKSPACE_BASE_URL": "/a\nb"})
    assert result.returncode == 2
    assert "AUTHENTICATE_VIA_JUPYTER: expected a token without control characters" in result.stderr
    assert "WORKSPACE_BASE_URL='/a\\nb': expected a URL path without control characters" in result.stderr
    assert "abc\ndef" not in result.stderr  # the token is never echoed


def test_unknown_tool_is_refused():
    result, _, _ = run_start({}, "--tools", "files,nope")
    assert result.returncode == 2
    assert "unknown tool(s) nope" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the refusal a root start gives without a target user")
def test_root_without_a_user_is_refused():
    env = runtime_env()
    env.pop("NB_USER", None)
    folder = shared_tempdir("mlws-root-")
    result = subprocess.run(
        [sys.executable, "-m", "runtime", "start", "--manifest", os.path.join(os.path.dirname(__file__), "fixtures", "runtime-manifest.json"),
         "--port", str(free_port()), "--bind", "127.0.0.1", "--runtime-dir", os.path.join(folder, "run")],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "running as root: name the user to run the workspace as with --user NAME or NB_USER=NAME" in result.stderr
    assert not os.path.exists(os.path.join(folder, "run"))


def test_tools_option_restricts_the_workspace():
    workspace = Workspace(env={"AUTHENTICATE_VIA_JUPYTER": "restrict-token"}, name="restrict", args=("--tools", "jupyter"))
    try:
        workspace.start()
        conf = open(os.path.join(workspace.runtime_dir, "supervisord.conf")).read()
        assert "[program:jupyter-server]" in conf and "[program:files-http]" not in conf
        menu = json.load(open(os.path.join(workspace.runtime_dir, "tools-menu.json")))
        assert [entry["id"] for entry in menu] == ["jupyterlab"]
    finally:
        workspace.cleanup()


class WrappedEntrypointWorkspace(Workspace):
    """`mlws start` run the way the image runs it: a nixpkgs-wrapped application is a bare
    interpreter whose entry script adds each dependency's site-packages with site.addsitedir,
    so nothing is importable from sys.executable alone, nor from PYTHONPATH."""

    def command(self) -> list[str]:
        import site

        import runtime

        site_dirs = [os.path.dirname(os.path.dirname(os.path.abspath(runtime.__file__)))] + site.getsitepackages()
        script = os.path.join(self.folder, "mlws-wrapped")
        with open(script, "w", encoding="utf-8") as handle:
            handle.write(
                "import site, sys\n"
                f"for path in {site_dirs!r}:\n"
                "    site.addsitedir(path)\n"
                "sys.argv[0] = 'mlws'\n"
                "from generator.cli import main\n"
                "sys.exit(main())\n"
            )
        os.chmod(script, 0o644)
        base_python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
        return [base_python, "-I", script, "start", *super().command()[4:]]


def test_runtime_runs_from_a_wrapped_entrypoint_without_a_venv():
    base_python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    probe = subprocess.run([base_python, "-I", "-c", "import supervisor"], capture_output=True)
    assert probe.returncode != 0, "the base interpreter must not see supervisor, or this test proves nothing"
    workspace = WrappedEntrypointWorkspace(env={"AUTHENTICATE_VIA_JUPYTER": "wrapped-token"}, name="wrapped",
                                           args=("--tools", "jupyter"))
    workspace.env.pop("PYTHONPATH", None)
    try:
        workspace.start()
        # supervisord, the login service and Jupyter all came up from the wrapped interpreter.
        session = requests.Session()
        response = session.get(workspace.url("/lab?token=wrapped-token"), timeout=10,
                               headers={"Accept": "text/html", "Sec-Fetch-Mode": "navigate"})
        assert response.status_code == 200 and "JupyterLab" in response.text
        assert f"mlws_session_{workspace.port}" in session.cookies
        deadline = time.monotonic() + 30
        while "workspace ready" not in workspace.text() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "workspace ready" in workspace.text()
    finally:
        workspace.cleanup()
