"""The URL to open (with the generated token, printed once) and the tools' addresses."""
from __future__ import annotations

import urllib.parse

from runtime.startup import StartContext, public_url


def banner_lines(ctx: StartContext, url: str) -> list[str]:
    settings = ctx.settings
    lines = ["", "=" * 72, f"  mlws workspace ({ctx.manifest.flavor or 'custom'} flavor)"]
    if settings.auth_mode == "token":
        lines.append(f"  Open the workspace: {url}?token={urllib.parse.quote(ctx.token, safe='')}")
        lines.append(f"  Token: {ctx.token}" + ("   (generated for this start)" if settings.token_generated else ""))
        lines.append(f"  API clients: send the header  Authorization: token {ctx.token}")
    elif settings.auth_mode == "hub":
        lines.append(f"  JupyterHub single-user server at {url} (log in through the hub)")
    else:
        lines.append(f"  Open the workspace: {url}")
        if settings.basic_auth_user:
            lines.append(f"  Basic authentication as user {settings.basic_auth_user}")
        else:
            lines.append("  WARNING: no authentication (AUTHENTICATE_VIA_JUPYTER=false)")
    named = [t for t in ctx.tools if t.route and t.route.prefix != "/"]
    if named:
        lines.append("  Tools: " + ", ".join(
            settings.base_url + t.route.prefix + ("" if ctx.available[t.name] else " (unavailable)") for t in named
        ))
    return lines + ["=" * 72, ""]


def run(ctx: StartContext) -> None:
    print("\n".join(banner_lines(ctx, public_url(ctx.settings, ctx.options))), flush=True)
