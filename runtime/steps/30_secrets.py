"""Per-start secrets and the fresh generated folders of the runtime folder.

The login token (generated unless AUTHENTICATE_VIA_JUPYTER fixes one), the secret header the
gateway presents to Jupyter, and the key that signs session cookies: sessions live for one start
(the login service signs one cookie per login and lists revoked ones in a map nginx includes,
see runtime/login.py).
"""
from __future__ import annotations

import os
import secrets
import shutil

from runtime.startup import StartContext
from runtime.system import write_private

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")
REGENERATED = ("programs", "nginx", "logs", "jupyter", "sockets")
FOLDERS = ("programs", "logs", "jupyter", "nginx", "nginx/html", "nginx/tmp", "tools", "sockets")


def run(ctx: StartContext) -> None:
    settings = ctx.settings
    ctx.token = settings.token or (secrets.token_hex(24) if settings.auth_mode == "token" else None)
    ctx.secrets["gateway"] = secrets.token_hex(32)
    ctx.secrets["session"] = secrets.token_hex(32)
    ctx.cookie_name = f"mlws_session_{settings.port}"

    for sub in REGENERATED:
        shutil.rmtree(ctx.path(sub), ignore_errors=True)
    for sub in FOLDERS:
        os.makedirs(ctx.path(sub), mode=0o700, exist_ok=True)
        os.chmod(ctx.path(sub), 0o700)
    shutil.copy(os.path.join(STATIC_DIR, "starting.html"), ctx.path("nginx", "html", "starting.html"))
    ctx.files["revoked_map"] = ctx.path("nginx", "revoked.map")
    write_private(ctx.files["revoked_map"], "")
    ctx.files["login_socket"] = ctx.path("login.sock")
