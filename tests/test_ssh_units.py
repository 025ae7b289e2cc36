"""The SSH pieces one by one: the setup service's plain functions, its one-time tokens, and step
52_ssh's HAProxy configuration, checked by the real haproxy (`haproxy -c`). No workspace runs here;
tests/test_ssh_setup.py runs the whole flow."""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import time

import pytest

from runtime import ssh_setup
from runtime.startup import StartError

ssh_step = importlib.import_module("runtime.steps.52_ssh")


def test_origin_is_taken_apart_and_checked():
    assert ssh_setup.parse_origin("http://127.0.0.1:8080/") == ("http://127.0.0.1:8080", "127.0.0.1", 8080)
    assert ssh_setup.parse_origin("https://ws.example.org") == ("https://ws.example.org:443", "ws.example.org", 443)
    assert ssh_setup.parse_origin("http://[::1]:9000") == ("http://[::1]:9000", "::1", 9000)
    # A page under the base URL may send its origin with the base URL: the command adds it once.
    assert ssh_setup.parse_origin("http://h:8080/ml/ws/", "/ml/ws") == ("http://h:8080", "h", 8080)
    with pytest.raises(ssh_setup.BadRequest, match="origin"):
        ssh_setup.parse_origin("http://h:8080/other", "/ml/ws")
    for bad in ("ftp://x", "http://a b", "http://x/lab", "http://x?y=1", "http://u@x", 'http://x"', "http://x$(id)",
                "http://x:99999", ""):
        with pytest.raises(ssh_setup.BadRequest, match="origin"):
            ssh_setup.parse_origin(bad)


def test_setup_command_has_the_original_form_under_a_base_url():
    command = ssh_setup.setup_command("http://h:8080", "/ml/ws", "0a1b", "h", 8080, "")
    assert command == '/bin/bash <(curl -s --insecure "http://h:8080/ml/ws/shared/ssh/setup?token=0a1b&host=h&port=8080")'
    pinned = ssh_setup.setup_command("https://h:8443", "", "0a1b", "h", 8443, "QUJD")
    assert pinned.startswith('/bin/bash <(curl -s --insecure --pinnedpubkey "sha256//QUJD" "https://h:8443/shared/')
    # A pin is for the workspace's own TLS only: an http origin (a proxy in front) gets none.
    assert "--pinnedpubkey" not in ssh_setup.setup_command("http://h:80", "", "0a1b", "h", 80, "QUJD")
    with pytest.raises(ssh_setup.BadRequest, match="shell"):
        ssh_setup.setup_command("http://h:80", "/a$HOME", "0a1b", "h", 80, "")


def keygen(folder, kind="ed25519") -> str:
    path = os.path.join(folder, f"key-{kind}-{os.urandom(4).hex()}")
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", path], check=True)
    with open(path + ".pub", encoding="utf-8") as handle:
        return handle.read().strip()


def test_public_keys_are_checked_and_their_comment_dropped(tmp_path):
    for kind in ("ed25519", "ecdsa", "rsa"):
        key = keygen(str(tmp_path), kind)
        assert ssh_setup.parse_public_key(key + "\n") == " ".join(key.split()[:2])
    key = keygen(str(tmp_path))
    kind, data = key.split()[:2]
    for bad, why in ((f"ssh-rsa {data}", "holds a 'ssh-ed25519' key"), (f"ssh-dss {data}", "is not one of"),
                     (f"{kind} @@@", "not an SSH public key"), (f"{key}\n{key}", "one OpenSSH public key line"),
                     ("", "one OpenSSH public key line"), (f'command="id" {key}', "is not one of")):
        with pytest.raises(ssh_setup.BadRequest, match=why):
            ssh_setup.parse_public_key(bad)


def test_authorized_keys_gain_a_key_once(tmp_path):
    path = str(tmp_path / "ssh" / "authorized_keys")
    key = ssh_setup.parse_public_key(keygen(str(tmp_path)))
    assert ssh_setup.add_authorized_key(path, key, "first") is True
    assert ssh_setup.add_authorized_key(path, key, "again") is False
    assert open(path, encoding="utf-8").read() == f"{key} first\n"
    assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700


def test_tokens_are_single_use_and_expire():
    tokens = ssh_setup.Tokens(seconds=1)
    token = tokens.make()
    assert len(token) == 32 and int(token, 16) >= 0
    assert tokens.problem(token, use=False) == "" and tokens.problem(token, use=False) == ""
    assert tokens.problem(token, use=True) == ""
    assert "already used" in tokens.problem(token, use=True)
    late = tokens.make()
    time.sleep(1.1)
    assert "expired" in tokens.problem(late, use=True)
    assert "unknown" in tokens.problem("0" * 32, use=False)


def test_token_lifetime_variable_is_checked():
    assert ssh_step.token_seconds({}) == 600
    assert ssh_step.token_seconds({"MLWS_SSH_TOKEN_SECONDS": " 30 "}) == 30
    for bad in ("0", "-5", "ten", "86401", ""):
        with pytest.raises(StartError, match="MLWS_SSH_TOKEN_SECONDS"):
            ssh_step.token_seconds({"MLWS_SSH_TOKEN_SECONDS": bad})


@pytest.mark.parametrize("bind", ["0.0.0.0", "127.0.0.1", "::"])
def test_haproxy_accepts_the_multiplexer_configuration(tmp_path, bind):
    haproxy = shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    assert haproxy, "haproxy is not installed: scripts/install-tools installs it"
    config = tmp_path / "ssh-mux.cfg"
    config.write_text(ssh_step.haproxy_config(bind, 8080, 2222, str(tmp_path / "public.sock")), encoding="utf-8")
    checked = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = config.read_text(encoding="utf-8")
    assert "req.payload(0,4) -m str SSH-" in text and "server sshd 127.0.0.1:2222" in text
    assert f"unix@{tmp_path}/public.sock send-proxy-v2" in text


def test_setup_script_is_valid_bash_with_every_value_quoted(tmp_path):
    host_key = tmp_path / "host.pub"
    host_key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0 mlws-workspace\n", encoding="utf-8")
    settings = {"host_key": str(host_key), "user": "it's me", "workdir": "/work space/$x"}
    script = ssh_setup.setup_script(settings, "0a1b", "h", 22, "http://h:22/shared/ssh/enrol", ["--insecure"])
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    # The values come back exactly, with no expansion.
    probe = script.split("\nfail() {")[0] + '\nprintf "%s|%s|%s\\n" "$WS_USER" "$WS_WORKDIR" "${CURL_OPTIONS[0]}"\n'
    done = subprocess.run(["bash"], input=probe, capture_output=True, text=True)
    assert done.stdout == "it's me|/work space/$x|--insecure\n", done.stderr


def gateway_with_ssh(tmp_path, **changes):
    from runtime import nginx

    fields = dict(
        runtime_dir=str(tmp_path), static_dir=os.path.join(os.path.dirname(nginx.__file__), "static"),
        listen_address="0.0.0.0", port=8080, base_url="/ml/ws", auth_mode="token", cookie_name="mlws_session_8080",
        session_secret="ef" * 32, revoked_file=str(tmp_path / "nginx" / "revoked.map"), gateway_secret="cd" * 32,
        token="tok", htpasswd_file=None, ssl_cert=None, ssl_key=None, login_socket=str(tmp_path / "login.sock"),
        health_tool="jupyter", upstreams=(nginx.Upstream("jupyter", None, "/", False, True, True,
                                                          address=f"unix:{tmp_path}/jupyter.sock"),),
        internal_socket=str(tmp_path / "nginx" / "public.sock"), ssh_setup_socket=str(tmp_path / "ssh-setup.sock"),
    )
    fields.update(changes)
    return nginx.render_nginx_conf(nginx.GatewayConfig(**fields))


@pytest.mark.parametrize("shares_enabled", [True, False])
def test_gateway_behind_the_multiplexer_is_valid_for_nginx(tmp_path, shares_enabled):
    nginx_bin = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    (tmp_path / "nginx" / "tmp").mkdir(parents=True)
    (tmp_path / "nginx" / "revoked.map").write_text("")
    conf = gateway_with_ssh(tmp_path, shares_enabled=shares_enabled)
    (tmp_path / "nginx" / "nginx.conf").write_text(conf)
    checked = subprocess.run([nginx_bin, "-t", "-p", str(tmp_path / "nginx"), "-c", str(tmp_path / "nginx" / "nginx.conf"),
                              "-e", "stderr"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert f"listen unix:{tmp_path}/nginx/public.sock proxy_protocol;" in conf and "listen 0.0.0.0:8080" not in conf
    assert "real_ip_header proxy_protocol;" in conf
    setup = conf.split('location = "/ml/ws/shared/ssh/setup" {')[1].split("location ")[0]
    assert ("return 401" in setup) == (not shares_enabled) and ("proxy_pass" in setup) == shares_enabled
    command = conf.split('location = "/ml/ws/tooling/ssh/setup-command" {')[1].split("proxy_pass")[0]
    assert "return 418" in command  # behind the login, like every tool
