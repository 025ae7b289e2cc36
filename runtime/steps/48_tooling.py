"""The tooling service (runtime/tooling.py): B/tooling/tools, B/tooling/storage, the home page.

It is routed by the gateway like a tool (behind the same login and origin checks), on a unix
socket in the runtime folder, so this step runs before the gateway's configuration is written.
"""
from __future__ import annotations

import json
import sys

from runtime import nginx as nginx_mod
from runtime.startup import StartContext
from runtime.system import own_pythonpath, write_private

PREFIX = "/tooling/"


def run(ctx: StartContext) -> None:
    socket_path = ctx.path("sockets", "tooling.sock")
    settings_file = ctx.path("tooling.json")
    write_private(settings_file, json.dumps({
        "socket": socket_path,
        "base_url": ctx.settings.base_url,
        "home": ctx.user.pw_dir,
        "workspace_dir": ctx.workspace_dir,
        "menu_file": ctx.path("tools-menu.json"),
        "max_workspace_gb": ctx.settings.max_workspace_gb,
        "max_container_gb": ctx.settings.max_container_gb,
    }))
    ctx.extra_upstreams.append(nginx_mod.Upstream(
        "tooling", None, PREFIX, True, False, True, address=f"unix:{socket_path}"))
    ctx.add_program("tooling", [sys.executable, "-m", "runtime.tooling", settings_file],
                    {"PATH": ctx.path_env, "HOME": ctx.user.pw_dir, "PYTHONPATH": own_pythonpath()},
                    100, ctx.runtime_dir)
