"""SSH through the workspace port, set up with the one-line command, end to end.

The generated minimal manifest's jupyter and ssh tools run for real (`mlws start --tools
jupyter,ssh`): HAProxy on the workspace port, nginx behind it on a unix socket, sshd as the workspace user
on 127.0.0.1:2222. A real client user (`mlws-sshclient`, made here, its home wiped before each
run) gets the setup command from B/tooling/ssh/setup-command, runs it with bash under pexpect,
answers the original's prompts, and then `ssh <name> 'echo <name>'` must print the name with empty
stderr, through the workspace port, with the host key the script wrote (never trust on first
use). Once over plain HTTP and once with WORKSPACE_SSL_ENABLED=true under a base URL (the command then pins the
server's key; the client has remote_ikernel on PATH and registers a kernel). Also: a used token
and an expired token are refused, HTTP(S) keeps working on the same port, nginx still sees the
client's address (a request from 127.0.0.2 is logged as such), and a re-created
container (new runtime folder, the home's authorized_keys gone, same work folder) keeps its host
key and the enrolled client key.

sshd's port is fixed by the manifest: run under `flock /tmp/mlws-live.lock`.
"""
from __future__ import annotations

import io
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time

import pexpect
import pytest
import requests

from tests.runtime_helpers import REPO, Workspace, unprivileged_user

# The TLS workspace has its self-signed certificate: the client pins its key instead.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

MANIFEST = os.path.join(REPO, "flavors", "minimal.manifest.json")
TOKEN = "ssh-test-token"
TOKEN_SECONDS = 12  # MLWS_SSH_TOKEN_SECONDS: short, so the expiry test waits little
SSHD_PORT = 2222
CLIENT_USER = "mlws-sshclient"
# The TLS workspace also runs under a base URL (the setup page sends its origin with it).
TLS_UNDER_A_BASE_URL = {"WORKSPACE_SSL_ENABLED": "true", "WORKSPACE_BASE_URL": "/ml/ws"}
COMMAND = re.compile(r'^/bin/bash <\(curl -s --insecure(?P<pin> --pinnedpubkey "sha256//[A-Za-z0-9+/=]+")? '
                     r'"(?P<origin>https?://127\.0\.0\.1:(?P<port>[0-9]+))(?P<base>(?:/[a-z]+)*)/shared/ssh/setup\?token=(?P<token>[0-9a-f]+)'
                     r'&host=127\.0\.0\.1&port=(?P=port)"\)$')


class SshWorkspace(Workspace):
    """The generated minimal manifest (a copy the dropped user can read), jupyter and ssh only."""

    def __init__(self, env: dict[str, str]):
        super().__init__(env={"AUTHENTICATE_VIA_JUPYTER": TOKEN, "INCLUDE_TUTORIALS": "false",
                              "MLWS_SSH_TOKEN_SECONDS": str(TOKEN_SECONDS), **env},
                         args=("--tools", "jupyter,ssh"), name="ssh")
        self.manifest = os.path.join(self.folder, "minimal.manifest.json")
        shutil.copyfile(MANIFEST, self.manifest)
        os.chmod(self.manifest, 0o644)

    def start_all(self) -> "SshWorkspace":
        self.start(timeout=120)
        deadline = time.monotonic() + 30
        while not sshd_banner().startswith(b"SSH-2.0-"):
            assert time.monotonic() < deadline, f"sshd does not answer on {SSHD_PORT}:\n{self.text()[-3000:]}"
            time.sleep(0.3)
        return self

    def setup_command(self) -> str:
        answer = requests.get(self.url(self.base + "/tooling/ssh/setup-command"), params={"origin": self.origin + self.base},
                              headers={"Authorization": f"token {TOKEN}"}, verify=False, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.text


def sshd_banner() -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", SSHD_PORT), timeout=2) as sock:
            return sock.recv(64)
    except OSError:
        return b""


def workspace_user() -> pwd.struct_passwd:
    return pwd.getpwnam(unprivileged_user() or pwd.getpwuid(os.getuid()).pw_name)


def client_user() -> pwd.struct_passwd:
    """The SSH client's own user: ssh reads ~/.ssh from its passwd entry, not from $HOME."""
    assert os.geteuid() == 0, "tests/test_ssh_setup.py runs as root: it makes a client user with a home of its own"
    try:
        return pwd.getpwnam(CLIENT_USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", CLIENT_USER], check=True)
        return pwd.getpwnam(CLIENT_USER)


def fresh_client_home() -> pwd.struct_passwd:
    user = client_user()
    for sub in (".ssh", ".config", ".local"):
        shutil.rmtree(os.path.join(user.pw_dir, sub), ignore_errors=True)
    return user


def as_client(argv: list[str], path: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", CLIENT_USER, "--", "env", f"PATH={path}", *argv],
                          capture_output=True, text=True, timeout=60, **kwargs)


CLIENT_PATH = "/usr/local/bin:/usr/bin:/bin"
# With remote_ikernel (PyPI, in the test venv) on PATH the script offers to register a kernel.
CLIENT_PATH_WITH_IKERNEL = os.path.dirname(sys.executable) + ":" + CLIENT_PATH


def run_setup(command: str, name: str, path: str, ikernel: bool) -> pexpect.spawn:
    """Runs the setup command as the client user and answers its prompts; returns the ended child
    (its whole terminal output in `.transcript`)."""
    child = pexpect.spawn("runuser", ["-u", CLIENT_USER, "--", "env", f"PATH={path}", "/bin/bash", "-c", command],
                          encoding="utf-8", timeout=60)
    child.logfile_read = io.StringIO()
    child.expect("Provide a name")
    child.sendline(name)
    if ikernel:
        child.expect("remote_ikernel was detected")
        child.sendline("y")
    child.expect("Do you want to add this connection as mountable SFTP storage")
    child.sendline("y")
    child.expect(pexpect.EOF)
    child.close()
    child.transcript = child.logfile_read.getvalue()
    return child


@pytest.fixture(scope="module", params=["http", "https"])
def ws(request):
    assert sshd_banner() == b"", f"port {SSHD_PORT} is in use: another workspace or test running?"
    authorized = os.path.join(workspace_user().pw_dir, ".ssh", "authorized_keys")
    before = open(authorized, encoding="utf-8").read() if os.path.exists(authorized) else None
    workspace = SshWorkspace(TLS_UNDER_A_BASE_URL if request.param == "https" else {})
    workspace.restarted = None
    try:
        yield workspace.start_all()
    finally:
        if workspace.restarted:  # it runs in this workspace's work folder: stop it first
            workspace.restarted.cleanup()
        workspace.cleanup()
        if before is None:
            if os.path.exists(authorized):
                os.remove(authorized)
        else:
            with open(authorized, "w", encoding="utf-8") as handle:
                handle.write(before)


def test_setup_command_is_one_line_of_the_original_form(ws):
    command = ws.setup_command()
    assert len(command.splitlines()) == 1
    match = COMMAND.match(command)
    assert match, command
    assert match["origin"] == ws.origin and int(match["port"]) == ws.port and match["base"] == ws.base
    # Over TLS the server's key is pinned; over plain HTTP there is nothing to pin.
    assert bool(match["pin"]) == (ws.scheme == "https"), command


def test_setup_command_needs_the_login(ws):
    answer = requests.get(ws.url(ws.base + "/tooling/ssh/setup-command"), params={"origin": ws.origin}, verify=False,
                          timeout=10, allow_redirects=False)
    assert answer.status_code == 401 and "/shared/ssh/setup" not in answer.text


def test_setup_command_refuses_a_bad_origin(ws):
    answer = requests.get(ws.url(ws.base + "/tooling/ssh/setup-command"), params={"origin": 'http://x"$(id)'},
                          headers={"Authorization": f"token {TOKEN}"}, verify=False, timeout=10)
    assert answer.status_code == 400 and "origin" in answer.text


def test_one_command_sets_up_ssh_through_the_workspace_port(ws):
    user = fresh_client_home()
    name = f"ws-{ws.scheme}"
    ikernel = ws.scheme == "https"
    child = run_setup(ws.setup_command(), name, CLIENT_PATH_WITH_IKERNEL if ikernel else CLIENT_PATH, ikernel)
    assert child.exitstatus == 0, child.transcript
    assert f"SSH connection '{name}' works" in child.transcript

    # The host key came with the script: known_hosts holds exactly the workspace's key.
    host_key = " ".join(requests.get(ws.url("/publickey"), verify=False, timeout=10).text.split()[:2])
    with open(os.path.join(ws.workspace_dir, ".workspace", "ssh", "ssh_host_ed25519_key.pub"), encoding="utf-8") as handle:
        assert " ".join(handle.read().split()[:2]) == host_key
    with open(os.path.join(user.pw_dir, ".ssh", "known_hosts"), encoding="utf-8") as handle:
        assert handle.read() == f"mlws-{name} {host_key}\n"
    with open(os.path.join(user.pw_dir, ".ssh", "config"), encoding="utf-8") as handle:
        config = handle.read()
    assert f"Host {name}\n" in config and f"Port {ws.port}\n" in config and "StrictHostKeyChecking yes" in config
    # Only the client's public key went to the workspace.
    with open(os.path.join(user.pw_dir, ".ssh", f"mlws_{name}.pub"), encoding="utf-8") as handle:
        client_key = " ".join(handle.read().split()[:2])
    with open(os.path.join(workspace_user().pw_dir, ".ssh", "authorized_keys"), encoding="utf-8") as handle:
        assert client_key in handle.read()

    login = as_client(["ssh", name, f"echo {name}"], CLIENT_PATH)
    assert (login.returncode, login.stdout, login.stderr) == (0, f"{name}\n", "")
    whoami = as_client(["ssh", name, "id -un; pwd"], CLIENT_PATH)
    assert whoami.stdout.split()[0] == workspace_user().pw_name, whoami

    with open(os.path.join(user.pw_dir, ".config", "gtk-3.0", "bookmarks"), encoding="utf-8") as handle:
        assert handle.read() == f"sftp://{name}{ws.workspace_dir} {name}\n"
    sftp = as_client(["sftp", "-b", "-", name], CLIENT_PATH, input=f"cd {ws.workspace_dir}\nls -a\n")
    assert sftp.returncode == 0 and ".workspace" in sftp.stdout, sftp
    if ikernel:
        kernels = os.path.join(user.pw_dir, ".local", "share", "jupyter", "kernels")
        specs = [open(os.path.join(kernels, k, "kernel.json"), encoding="utf-8").read() for k in os.listdir(kernels)]
        assert any(f"--host={name}" in spec or f'"{name}"' in spec for spec in specs), specs


def test_a_used_token_is_refused(ws):
    fresh_client_home()
    command = ws.setup_command()
    token = COMMAND.match(command)["token"]
    first = run_setup(command, "first", CLIENT_PATH, ikernel=False)
    assert first.exitstatus == 0, first.transcript
    again = pexpect.spawn("runuser", ["-u", CLIENT_USER, "--", "env", f"PATH={CLIENT_PATH}", "/bin/bash", "-c", command],
                          encoding="utf-8", timeout=30)
    again.expect(pexpect.EOF)
    again.close()
    assert again.exitstatus == 1 and "unknown or already used token" in again.before, again.before
    assert "Provide a name" not in again.before
    enrol = requests.post(ws.url(ws.base + "/shared/ssh/enrol"), data={"token": token, "key": ed25519_public_key()},
                          verify=False, timeout=10)
    assert enrol.status_code == 403 and "already used" in enrol.text


def test_an_expired_token_is_refused(ws):
    command = ws.setup_command()
    match = COMMAND.match(command)
    setup_url = command.split('"')[-2]
    assert requests.get(setup_url, verify=False, timeout=10).status_code == 200  # valid before it expires
    time.sleep(TOKEN_SECONDS + 1)
    script = requests.get(setup_url, verify=False, timeout=10)
    assert script.status_code == 403 and "expired token" in script.text
    enrol = requests.post(ws.url(ws.base + "/shared/ssh/enrol"), data={"token": match["token"], "key": ed25519_public_key()},
                          verify=False, timeout=10)
    assert enrol.status_code == 403 and "expired token" in enrol.text


def test_enrolment_refuses_what_is_not_one_public_key(ws):
    token = COMMAND.match(ws.setup_command())["token"]
    for key in ("", "ssh-ed25519 not-base64!", "ssh-rsa " + ed25519_public_key().split()[1],
                ed25519_public_key() + "\n" + ed25519_public_key()):
        answer = requests.post(ws.url(ws.base + "/shared/ssh/enrol"), data={"token": token, "key": key}, verify=False, timeout=10)
        assert answer.status_code == 400 and answer.text.startswith("key:"), (key, answer.text)
    # A refused key does not use the token up.
    assert requests.post(ws.url(ws.base + "/shared/ssh/enrol"), data={"token": token, "key": ed25519_public_key()},
                         verify=False, timeout=10).status_code == 200


def test_http_keeps_working_on_the_same_port(ws):
    assert requests.get(ws.url("/healthy"), verify=False, timeout=10).status_code == 200
    status = requests.get(ws.url(ws.base + "/api/status"), headers={"Authorization": f"token {TOKEN}"}, verify=False, timeout=10)
    assert status.status_code == 200 and "started" in status.json()
    assert requests.get(ws.url(ws.base + "/api/status"), verify=False, timeout=10).status_code in (401, 403)
    if ws.scheme == "https":
        # Plain HTTP on the TLS port is still sent to https (HAProxy passes it to nginx too).
        plain = requests.get(f"http://127.0.0.1:{ws.port}{ws.base}/api/status", allow_redirects=False, timeout=10)
        assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")


def test_the_gateway_still_sees_the_client_address(ws):
    """HAProxy passes the client's address on (PROXY protocol): nginx logs it and limits by it."""
    with socket.create_connection(("127.0.0.1", ws.port), timeout=10, source_address=("127.0.0.2", 0)) as raw:
        sock = raw
        if ws.scheme == "https":
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            sock = context.wrap_socket(raw)
        sock.sendall(b"GET /ping?from=second-address HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
    log = os.path.join(ws.runtime_dir, "nginx", "access.log")
    deadline = time.monotonic() + 5  # the access log is flushed every second
    while time.monotonic() < deadline:
        lines = [line for line in open(log, encoding="utf-8") if '"GET /ping ' in line]
        if lines and lines[-1].startswith("127.0.0.2 "):
            return
        time.sleep(0.3)
    raise AssertionError(f"no request from 127.0.0.2 in {log}: {lines[-3:]}")


def test_the_pinned_key_is_checked(ws):
    if ws.scheme != "https":
        assert "--pinnedpubkey" not in ws.setup_command()
        return
    pin = COMMAND.match(ws.setup_command())["pin"].split('"')[1]
    url = ws.url("/publickey")
    right = subprocess.run(["curl", "-s", "--insecure", "--pinnedpubkey", pin, url], capture_output=True, text=True)
    assert right.returncode == 0 and right.stdout.startswith("ssh-ed25519 ")
    wrong = subprocess.run(["curl", "-s", "--insecure", "--pinnedpubkey", "sha256//" + "A" * 43 + "=", url],
                           capture_output=True, text=True)
    assert wrong.returncode == 90 and wrong.stdout == ""  # CURLE_SSL_PINNEDPUBKEYNOTMATCH


def test_a_recreated_container_keeps_its_host_key_and_enrolled_keys(ws):
    user = fresh_client_home()
    name = "kept"
    assert run_setup(ws.setup_command(), name, CLIENT_PATH, ikernel=False).exitstatus == 0
    host_key = requests.get(ws.url("/publickey"), verify=False, timeout=10).text
    ws.stop()
    # A new container: a new runtime folder and a home without authorized_keys; the same work folder.
    os.remove(os.path.join(workspace_user().pw_dir, ".ssh", "authorized_keys"))
    again = SshWorkspace(TLS_UNDER_A_BASE_URL if ws.scheme == "https" else {})
    again.workspace_dir, again.port = ws.workspace_dir, ws.port
    ws.restarted = again
    again.start_all()
    assert requests.get(again.url("/publickey"), verify=False, timeout=10).text == host_key
    login = as_client(["ssh", name, f"echo {name}"], CLIENT_PATH)
    assert (login.returncode, login.stdout, login.stderr) == (0, f"{name}\n", "")
    assert os.path.isdir(user.pw_dir)


def ed25519_public_key() -> str:
    folder = os.path.join(client_user().pw_dir, "throwaway")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(folder, "key")], check=True)
    with open(os.path.join(folder, "key.pub"), encoding="utf-8") as handle:
        key = handle.read().strip()
    shutil.rmtree(folder)
    return key
