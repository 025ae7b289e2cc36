"""Which tools can run here: a missing executable skips the tool (Jupyter's is an error)."""
from __future__ import annotations

import os

from runtime import manifest as manifest_mod
from runtime.startup import StartContext, StartError, log
from runtime.system import find_executable

SYSTEM_BIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def run(ctx: StartContext) -> None:
    ctx.nginx_bin = find_executable("nginx", ctx.path_env, SYSTEM_BIN_DIRS)
    if not ctx.nginx_bin:
        raise StartError("nginx is not on PATH (nor in /usr/sbin): the gateway needs it")
    for tool in ctx.tools:
        ok = True
        for process in tool.processes:
            exe = find_executable(process.command[0], ctx.path_env)
            if exe:
                ctx.resolved[(tool.name, process.name)] = exe
            else:
                ok = False
                if tool.health:
                    raise StartError(f"tool {tool.name}: `{process.command[0]}` is not on PATH; Jupyter is required")
                ctx.unavailable[tool.name] = f"`{process.command[0]}` is not installed in this image"
                log(f"WARNING: tool {tool.name} skipped: `{process.command[0]}` is not on PATH")
        # {package:PROGRAM}: the folder of the package that really holds PROGRAM (nixpkgs' store
        # path, or the stand-in's prefix); a missing program makes the tool unavailable too.
        texts = [*tool.env.values()]
        for process in tool.processes:
            texts += [*process.command, *process.env.values()]
        for program in sorted({p for text in texts for p in manifest_mod.package_programs(text)}):
            found = find_executable(program, ctx.path_env)
            if found:
                ctx.packages[(tool.name, program)] = os.path.dirname(os.path.dirname(os.path.realpath(found)))
            else:
                ok = False
                ctx.unavailable.setdefault(tool.name, f"`{program}` is not installed in this image")
                log(f"WARNING: tool {tool.name} skipped: `{program}` (whose package it uses) is not on PATH")
        ctx.available[tool.name] = ok
