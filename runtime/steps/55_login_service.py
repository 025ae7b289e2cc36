"""The login service, in every mode.

Besides logins and sessions (token mode) it tells the gateway who listens on an arbitrary port
(/tools/<port>/) and renders the "from another site" page (runtime/login.py).
"""
from __future__ import annotations

import json
import sys

from runtime.startup import StartContext
from runtime.system import own_pythonpath, write_private


def run(ctx: StartContext) -> None:
    settings = ctx.settings
    health = ctx.manifest.health_tool.name
    login_settings = ctx.path("login.json")
    write_private(login_settings, json.dumps({
        "socket": ctx.files["login_socket"], "base_url": settings.base_url, "cookie_name": ctx.cookie_name,
        "token": ctx.token if settings.auth_mode == "token" else None, "secure": bool(ctx.ssl_cert),
        "session_secret": ctx.secrets["session"],
        "revoked_map": ctx.files["revoked_map"], "revoked_json": ctx.path("nginx", "revoked.json"),
        "nginx_pid": ctx.path("nginx", "nginx.pid"),
        "check_socket": ctx.path("nginx", "check.sock"),
        "session_seconds": settings.session_hours * 3600,
        # Under a hub, /tools/<port>/ also needs the hub session, which Jupyter checks.
        "hub_jupyter": next(up.server for up in ctx.gateway.upstreams if up.name == health)
        if settings.auth_mode == "hub" else None,
    }))
    login_env = {"PATH": ctx.path_env, "HOME": ctx.user.pw_dir, "PYTHONPATH": own_pythonpath()}
    ctx.add_program("login", [sys.executable, "-m", "runtime.login", login_settings], login_env, 100, ctx.runtime_dir)
