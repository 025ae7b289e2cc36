"""The manifest's readiness checks, watched by a one-shot program that reports when all pass."""
from __future__ import annotations

import json
import sys

from runtime import manifest as manifest_mod
from runtime import secret_files
from runtime.startup import StartContext, public_url
from runtime.system import own_pythonpath, write_private


def checks(ctx: StartContext) -> list[dict]:
    result = []
    for tool in ctx.tools:
        if not ctx.available[tool.name]:
            continue
        for process in tool.processes:
            ready = process.ready or {}
            name = f"{tool.name}-{process.name}"
            if "tcp" in ready:
                result.append({"name": name, "tcp": ready["tcp"]})
            elif "socket" in ready:
                result.append({"name": name, "socket": manifest_mod.substitute(ready["socket"], {
                    "socket": ctx.tool_sockets.get(tool.name, ""), "runtime_dir": ctx.runtime_dir,
                    "tool_dir": ctx.path("tools", tool.name)})})
            elif "http" in ready and (tool.port or tool.socket):
                # A backend that sees full paths (no prefix stripping) lives under the base URL.
                under_base = tool.route is not None and not tool.route.strip_prefix
                check = {"name": name, "path": (ctx.settings.base_url if under_base else "") + ready["http"],
                         "headers": dict(secret_files.gateway_headers(tool.secret, ctx.tool_secrets.get(tool.name)))}
                if tool.socket:
                    check["unix"] = ctx.tool_sockets[tool.name]
                else:
                    check["port"] = tool.port
                result.append(check)
    return result


def run(ctx: StartContext) -> None:
    ready_file = ctx.path("ready.json")
    write_private(ready_file, json.dumps({"checks": checks(ctx), "timeout": 600,
                                          "url": public_url(ctx.settings, ctx.options)}))
    ctx.add_program("ready", [sys.executable, "-m", "runtime.ready", ready_file],
                    {"PATH": ctx.path_env, "HOME": ctx.user.pw_dir, "PYTHONPATH": own_pythonpath()}, 900,
                    ctx.runtime_dir, oneshot=True)
