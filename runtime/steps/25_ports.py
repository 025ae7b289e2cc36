"""The gateway's port and every internal TCP port must be free (a dry run starts nothing: no check)."""
from __future__ import annotations

from runtime.startup import StartContext, StartError
from runtime.system import port_is_free


def run(ctx: StartContext) -> None:
    port = ctx.settings.port
    if not ctx.options.dry_run and not port_is_free(ctx.options.bind, port):
        raise StartError(f"port {port} on {ctx.options.bind} is in use (WORKSPACE_PORT / --port)")
    for tool in ctx.tools:
        if (tool.port and ctx.available[tool.name] and tool.processes and not ctx.options.dry_run
                and not port_is_free("127.0.0.1", tool.port)):
            raise StartError(f"tool {tool.name}: internal port {tool.port} on 127.0.0.1 is in use")
        if tool.port == port:
            raise StartError(f"tool {tool.name}: its internal port {tool.port} is the gateway's port")
