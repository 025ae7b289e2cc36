"""Share links (runtime/shares.py): the deployment's signing key, the share service, its routes.

The key and the store of live links live in the work folder (<work>/.workspace/shares/, 0700,
files 0600), so links outlive a restart and a re-created container, and a new deployment (a new
work folder) has a new key. The service runs on a unix socket of the runtime folder. This step
comes after 50_gateway and adds the share routes to its configuration (rewriting nginx.conf, as
52_ssh does after it); with SHARED_LINKS_ENABLED=false the routes answer 401 and the API says
sharing is off.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

from runtime import nginx as nginx_mod
from runtime import shares
from runtime.startup import StartContext, StartError
from runtime.system import own_pythonpath, write_private

SHARES_FOLDER = os.path.join(".workspace", "shares")


def run(ctx: StartContext) -> None:
    shares_dir = os.path.join(ctx.workspace_dir, SHARES_FOLDER)
    if not ctx.options.dry_run:
        try:
            shares.load_key(shares_dir)
        except (OSError, shares.ShareError) as error:
            raise StartError(f"share links: {error}") from None
    socket_path = ctx.path("sockets", "shares.sock")
    settings_file = ctx.path("shares.json")
    write_private(settings_file, json.dumps({
        "socket": socket_path,
        "base_url": ctx.settings.base_url,
        "shares_dir": shares_dir,
        "workspace_dir": ctx.workspace_dir,
        "enabled": ctx.settings.shared_links_enabled,
        "secure": bool(ctx.settings.ssl_enabled),
        "default_hours": shares.DEFAULT_HOURS,
        "gateway_ports": [ctx.settings.port],
    }, indent=2))
    ctx.add_program("shares", [sys.executable, "-m", "runtime.shares", settings_file],
                    {"PATH": ctx.path_env, "HOME": ctx.user.pw_dir, "PYTHONPATH": own_pythonpath()},
                    100, ctx.runtime_dir)
    ctx.gateway = dataclasses.replace(ctx.gateway, shares_socket=socket_path,
                                      shares_enabled=ctx.settings.shared_links_enabled)
    write_private(ctx.path("nginx", "nginx.conf"), nginx_mod.render_nginx_conf(ctx.gateway))
