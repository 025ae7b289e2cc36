"""SSH through the workspace port: persisted host keys, the SSH setup service and the multiplexer.

Only when the manifest's `ssh` tool runs here. Then:
  * the host key lives in the work folder (<work>/.workspace/ssh/, made once per deployment), so
    a re-created container keeps its identity; keys enrolled there are put back into
    ~/.ssh/authorized_keys (the file sshd reads) at every start;
  * the SSH setup service (runtime/ssh_setup.py) runs on a unix socket of the runtime folder;
  * with `haproxy` installed, HAProxy (TCP mode) takes the public port and splits it by the first
    bytes a client sends: "SSH-" to the manifest's sshd (its `ready.tcp` port), everything else
    (HTTP and TLS alike) to nginx, which moves to a unix socket in its 0700 folder and gets a
    PROXY protocol v2 header first, so it still sees each client's address (rate limits, logs).
    This step therefore replaces step 50's gateway configuration (and rewrites nginx.conf) with
    the internal socket and the SSH routes.

Why HAProxy and not sslh (the original's multiplexer): sslh copies every byte in user space, one
process per connection, and halved nginx's throughput on a 1 KiB page here (bench/ssh,
docs/benchmarks.md); it can only keep the client address with its transparent mode (root or
CAP_NET_ADMIN plus routing rules) or with a PROXY header from sslh >= 2.1 (Debian 12 has 1.20).
sshd cannot read a PROXY header, so sshd's own log shows 127.0.0.1 for every SSH client.
Without haproxy the workspace starts as before and the setup service says why SSH is unavailable.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import subprocess
import sys

from runtime import nginx as nginx_mod
from runtime.startup import StartContext, StartError, log
from runtime.system import find_executable, own_pythonpath, write_private

SSH_TOOL = "ssh"
SSH_FOLDER = os.path.join(".workspace", "ssh")
SYSTEM_BIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
TOKEN_SECONDS_VARIABLE = "MLWS_SSH_TOKEN_SECONDS"
DEFAULT_TOKEN_SECONDS = 600
# HAProxy waits this long for a silent client's first bytes, then hands it to nginx (browsers open
# connections before they send on them; SSH clients speak first).
INSPECT_SECONDS = 2
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
UNIX_PATH_MAX = 107


def token_seconds(env: dict[str, str]) -> int:
    raw = env.get(TOKEN_SECONDS_VARIABLE, str(DEFAULT_TOKEN_SECONDS)).strip()
    if not raw.isdigit() or not 1 <= int(raw) <= 86400:
        raise StartError(f"{TOKEN_SECONDS_VARIABLE}={raw!r}: expected whole seconds from 1 to 86400 "
                         f"(how long an SSH setup link works; default {DEFAULT_TOKEN_SECONDS})")
    return int(raw)


def sshd_port(tool) -> int:
    ports = [process.ready["tcp"] for process in tool.processes if (process.ready or {}).get("tcp")]
    if not ports:
        raise StartError(f"tool {SSH_TOOL}: its sshd process needs `ready = {{ tcp = PORT }}` (the port HAProxy forwards SSH to)")
    return ports[0]


def host_key_files(tool, values: dict[str, str]) -> list[str]:
    """The `-o HostKey=...` paths of the manifest's sshd command, placeholders filled in."""
    from runtime import manifest as manifest_mod

    return [manifest_mod.substitute(arg.split("=", 1)[1], values)
            for process in tool.processes for arg in process.command if arg.startswith("HostKey=")]


def make_host_key(path: str, keygen: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    if os.path.exists(path):
        return
    temp = f"{path}.new"
    for leftover in (temp, temp + ".pub"):
        if os.path.exists(leftover):
            os.remove(leftover)
    result = subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "mlws-workspace", "-f", temp],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        raise StartError(f"could not make the SSH host key {path}: {result.stderr.strip()}")
    os.replace(temp + ".pub", path + ".pub")
    os.replace(temp, path)
    log(f"generated the SSH host key {path} (kept in the work folder for later starts)")


def restore_enrolled_keys(persisted: str, authorized: str) -> None:
    from runtime.ssh_setup import add_authorized_key

    if not os.path.exists(persisted):
        return
    with open(persisted, encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) >= 2:
                add_authorized_key(authorized, " ".join(fields[:2]), " ".join(fields[2:]) or "mlws-enrolled")


def tls_pin(cert: str, openssl: str | None) -> str:
    """base64(sha256(DER of the certificate's public key)): what curl's --pinnedpubkey compares."""
    if not openssl:
        raise StartError("WORKSPACE_SSL_ENABLED with SSH: `openssl` is not on PATH to read the certificate's key")
    pem = subprocess.run([openssl, "x509", "-in", cert, "-pubkey", "-noout"], capture_output=True, check=False)
    der = subprocess.run([openssl, "pkey", "-pubin", "-outform", "DER"], input=pem.stdout, capture_output=True,
                         check=False)
    if pem.returncode != 0 or der.returncode != 0 or not der.stdout:
        raise StartError(f"could not read the public key of the TLS certificate {cert}: "
                         f"{(pem.stderr or der.stderr).decode('utf-8', 'replace').strip()}")
    return base64.b64encode(hashlib.sha256(der.stdout).digest()).decode("ascii")


def haproxy_config(bind: str, port: int, ssh_port: int, gateway_socket: str) -> str:
    """HAProxy in TCP mode: SSH by its banner, the rest to nginx. Only runtime-made values: a
    checked IP address, ports, and a path checked by nginx_mod.safe_path.

    The tcp-request content rules run once per connection (TCP mode re-evaluates them only for
    HTTP keep-alive), so a browser's later requests on a connection are pure forwarding. Measured
    against this configuration in the same bench/ssh rounds (docs/benchmarks.md) and not taken:
    nginx on loopback TCP instead of the unix socket (slower on a small page; splicing does not
    help one), `nbthread 1`, `tune.bufsize 65536`, `tune.fd.edge-triggered on` (slower), nginx
    with one worker. What remains is the hop itself: HAProxy's own CPU per request."""
    listen = f"[{bind}]" if ":" in bind else bind
    nginx_mod.safe_path(gateway_socket, "gateway socket")
    return "\n".join([
        "# Generated by mlws start (runtime/steps/52_ssh.py). Rewritten at every start.",
        "global",
        "    maxconn 4096",
        "defaults",
        "    mode tcp",
        "    timeout connect 3s",
        # Long-lived connections (websockets, SSH sessions) end only when a side closes them.
        "    timeout client 1d",
        "    timeout server 1d",
        # Bulk transfers between TCP sockets (scp, sftp, port forwarding to sshd) move through
        # kernel pipes (splice) instead of HAProxy's buffers.
        "    option splice-auto",
        "frontend workspace",
        f"    bind {listen}:{int(port)}",
        f"    tcp-request inspect-delay {INSPECT_SECONDS}s",
        "    acl is_ssh req.payload(0,4) -m str SSH-",
        "    tcp-request content accept if is_ssh",
        "    tcp-request content accept if { req.len ge 4 }",
        "    use_backend sshd if is_ssh",
        "    default_backend gateway",
        "backend sshd",
        f"    server sshd 127.0.0.1:{int(ssh_port)}",
        "backend gateway",
        f"    server nginx unix@{gateway_socket} send-proxy-v2",
        "",
    ])


def remove_before_start(ctx: StartContext, program: str, socket_path: str) -> None:
    """nginx does not remove its unix sockets when it is killed and refuses to bind them again:
    the gateway program (step 50) clears this one too before it starts."""
    spec_file = ctx.path("programs", f"{program}.json")
    with open(spec_file, encoding="utf-8") as handle:
        spec = json.load(handle)
    spec["stale_sockets"] = [*spec.get("stale_sockets", []), socket_path]
    write_private(spec_file, json.dumps(spec, indent=2, sort_keys=True) + "\n")


def socket_path(ctx: StartContext, *parts: str) -> str:
    path = ctx.path(*parts)
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise StartError(f"--runtime-dir {ctx.runtime_dir}: too long for the unix socket {path} "
                         f"({len(os.fsencode(path))} bytes, at most {UNIX_PATH_MAX}); choose a shorter runtime folder")
    return path


def prepare_keys(ctx: StartContext, tool) -> tuple[list[str], str, str]:
    """The host keys (made when missing) and the enrolled keys put back; returns (host key files,
    the home's authorized_keys, the work folder's copy)."""
    values = {"workspace": ctx.workspace_dir, "tool_dir": ctx.path("tools", SSH_TOOL), "home": ctx.user.pw_dir,
              "runtime_dir": ctx.runtime_dir}
    keys = host_key_files(tool, values)
    if not keys:
        raise StartError(f"tool {SSH_TOOL}: its sshd command names no `-o HostKey=PATH`")
    authorized = os.path.join(ctx.user.pw_dir, ".ssh", "authorized_keys")
    persisted = os.path.join(ctx.workspace_dir, SSH_FOLDER, "authorized_keys")
    if not ctx.options.dry_run:
        keygen = find_executable("ssh-keygen", ctx.path_env)
        if not keygen:
            raise StartError("the ssh tool needs `ssh-keygen` on PATH to make its host key")
        for key in keys:
            make_host_key(key, keygen)
        restore_enrolled_keys(persisted, authorized)
    return keys, authorized, persisted


def add_setup_service(ctx: StartContext, host_key: str, authorized: str, persisted: str, unavailable: str) -> str:
    """The SSH setup service's settings and program; returns its socket."""
    service_socket = socket_path(ctx, "ssh-setup.sock")
    settings_file = ctx.path("ssh-setup.json")
    write_private(settings_file, json.dumps({
        "socket": service_socket, "base_url": ctx.settings.base_url, "user": ctx.user.pw_name,
        "host_key": host_key + ".pub", "authorized_keys": authorized, "persisted_keys": persisted,
        "token_seconds": token_seconds(ctx.env), "workdir": ctx.workspace_dir, "unavailable": unavailable,
        "pinned_key": tls_pin(ctx.ssl_cert, find_executable("openssl", ctx.path_env)) if ctx.ssl_cert else "",
    }, indent=2))
    service_env = {"PATH": ctx.path_env, "HOME": ctx.user.pw_dir, "PYTHONPATH": own_pythonpath()}
    ctx.add_program("ssh-setup", [sys.executable, "-m", "runtime.ssh_setup", settings_file], service_env, 100,
                    ctx.runtime_dir)
    return service_socket


def run(ctx: StartContext) -> None:
    tool = next((t for t in ctx.tools if t.name == SSH_TOOL), None)
    if tool is None or not ctx.available.get(SSH_TOOL):
        return
    keys, authorized, persisted = prepare_keys(ctx, tool)
    haproxy = find_executable("haproxy", ctx.path_env, SYSTEM_BIN_DIRS)
    unavailable = "" if haproxy else "`haproxy` (the protocol multiplexer on the workspace port) is not installed"
    if not haproxy:
        log("WARNING: SSH through the workspace port is off: `haproxy` is not on PATH (sshd runs on loopback only)")
    service_socket = add_setup_service(ctx, keys[0], authorized, persisted, unavailable)

    gateway_socket = socket_path(ctx, "nginx", "public.sock") if haproxy else ""
    ctx.gateway = dataclasses.replace(ctx.gateway, internal_socket=gateway_socket, ssh_setup_socket=service_socket)
    write_private(ctx.path("nginx", "nginx.conf"), nginx_mod.render_nginx_conf(ctx.gateway))
    if haproxy:
        remove_before_start(ctx, "gateway", gateway_socket)
        config = ctx.path("ssh-mux.cfg")
        write_private(config, haproxy_config(ctx.options.bind, ctx.settings.port, sshd_port(tool), gateway_socket))
        ctx.add_program("ssh-mux", [haproxy, "-db", "-f", config], {"PATH": ctx.path_env, "HOME": ctx.user.pw_dir},
                        100, ctx.runtime_dir)
