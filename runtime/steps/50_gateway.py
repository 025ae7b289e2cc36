"""The gateway (nginx): one upstream per routed tool, its configuration, its program.

Backends are reachable by the workspace user only: a tool with "socket": true listens on
<runtime-dir>/sockets/<tool>.sock (the folder is 0700, so other users get EACCES); a tool that
can only listen on TCP gets a per-start secret it requires and the gateway presents.
"""
from __future__ import annotations

import os

from runtime import nginx as nginx_mod
from runtime import secret_files
from runtime.startup import StartContext, StartError
from runtime.system import write_private

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
UNIX_PATH_MAX = 107


def tool_socket_path(runtime_dir: str, tool_name: str) -> str:
    """<runtime-dir>/sockets/<tool>.sock, refused when longer than a unix socket address allows."""
    path = os.path.join(runtime_dir, "sockets", f"{tool_name}.sock")
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise StartError(
            f"--runtime-dir {runtime_dir}: too long for the tools' unix sockets ({path} is "
            f"{len(os.fsencode(path))} bytes, at most {UNIX_PATH_MAX}); choose a shorter runtime folder"
        )
    if any(ch.isspace() or ch == "," for ch in path):
        # Netdata's "bind to" splits its value at spaces and commas.
        raise StartError(f"--runtime-dir {runtime_dir}: no spaces or commas (the tools' socket paths)")
    return path


def upstreams(ctx: StartContext) -> tuple:
    result = []
    for tool in ctx.tools:
        if tool.route is None or (tool.port is None and not tool.socket):
            continue
        result.append(nginx_mod.Upstream(
            tool.name, tool.port, tool.route.prefix, tool.route.strip_prefix, tool.route.websockets,
            ctx.available[tool.name] and bool(tool.processes),
            address=f"unix:{ctx.tool_sockets[tool.name]}" if tool.socket else "",
            headers=secret_files.gateway_headers(tool.secret, ctx.tool_secrets.get(tool.name)),
            user_content=tool.route.user_content, blocked=tool.route.blocked,
            untyped_html=tool.route.untyped_html))
    return tuple(result + list(ctx.extra_upstreams))


def run(ctx: StartContext) -> None:
    import secrets

    settings, options = ctx.settings, ctx.options
    ctx.tool_sockets = {tool.name: tool_socket_path(ctx.runtime_dir, tool.name) for tool in ctx.tools if tool.socket}
    ctx.tool_secrets = {tool.name: secrets.token_hex(32) for tool in ctx.tools if tool.secret}
    ctx.gateway = nginx_mod.GatewayConfig(
        runtime_dir=ctx.runtime_dir,
        static_dir=STATIC_DIR,
        listen_address=options.bind,
        port=settings.port,
        base_url=settings.base_url,
        auth_mode=settings.auth_mode,
        cookie_name=ctx.cookie_name,
        session_secret=ctx.secrets["session"],
        revoked_file=ctx.files["revoked_map"],
        gateway_secret=ctx.secrets["gateway"],
        token=ctx.token,
        htpasswd_file=ctx.htpasswd,
        ssl_cert=ctx.ssl_cert,
        ssl_key=ctx.ssl_key,
        login_socket=ctx.files["login_socket"],
        health_tool=ctx.manifest.health_tool.name,
        upstreams=upstreams(ctx),
    )
    nginx_conf = ctx.path("nginx", "nginx.conf")
    write_private(nginx_conf, nginx_mod.render_nginx_conf(ctx.gateway))
    ctx.add_program(
        "gateway",
        [ctx.nginx_bin, "-p", ctx.path("nginx"), "-c", nginx_conf, "-e", "stderr", "-g", "daemon off;"],
        {"PATH": ctx.path_env, "HOME": ctx.user.pw_dir},
        100,
        ctx.runtime_dir,
        # nginx does not remove its unix socket when it is killed, and refuses to bind it again.
        stale_sockets=(ctx.path("nginx", "check.sock"),),
    )
