"""Jupyter's settings: the gateway's identity header, its static config file, the user's kernel.

Jupyter behind the gateway needs no token: it trusts the gateway's header, so no token can reach
a page config (B/lab) or Jupyter's server-info file. Under a hub, the hub's. The `python3` kernel
runs the user environment's interpreter (step 40), so `%pip install` installs where the running
kernel imports from; its spec lives in a Jupyter data folder of the runtime folder that comes
first on JUPYTER_PATH, which replaces Jupyter's built-in kernel of the same name. The same folder
holds the "Share…" context-menu extension of the file browser.
"""
from __future__ import annotations

import json
import os
import shutil

from runtime import nginx as nginx_mod
from runtime import userenv
from runtime.startup import StartContext
from runtime.system import write_private

RUNTIME_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JUPYTER_CONFIG = os.path.join(RUNTIME_DIR, "jupyter_config.py")
LABEXTENSIONS = os.path.join(RUNTIME_DIR, "labextension")


def run(ctx: StartContext) -> None:
    ctx.files["jupyter_settings"] = ctx.path("jupyter", "settings.json")
    write_private(ctx.files["jupyter_settings"], json.dumps({
        "gateway_header": nginx_mod.GATEWAY_HEADER,
        "gateway_secret": ctx.secrets["gateway"],
        "token": "",
        "auth_kind_header": nginx_mod.AUTH_KIND_HEADER,
        "user_name": ctx.user.pw_name,
        "mode": ctx.settings.auth_mode,
    }))
    ctx.files["jupyter_config"] = ctx.path("jupyter_server_config.py")
    shutil.copyfile(JUPYTER_CONFIG, ctx.files["jupyter_config"])
    os.chmod(ctx.files["jupyter_config"], 0o600)

    # Settings overrides (the Open Tool menu, step 75) go into a labconfig folder on JUPYTER_CONFIG_PATH.
    ctx.files["jupyter_config_dir"] = ctx.path("jupyter", "config")
    os.makedirs(os.path.join(ctx.files["jupyter_config_dir"], "labconfig"), mode=0o700, exist_ok=True)

    # A Jupyter data folder of our own, first on JUPYTER_PATH: the user environment's kernel and
    # the hand-written "Share…" extension (runtime/labextension/: no npm build, see its file).
    data_dir = ctx.path("jupyter", "data")
    ctx.files["jupyter_data"] = data_dir
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    shutil.copytree(LABEXTENSIONS, os.path.join(data_dir, "labextensions"))
    if ctx.user_env is not None:
        kernel_dir = os.path.join(data_dir, "kernels", "python3")
        os.makedirs(kernel_dir, mode=0o700, exist_ok=True)
        write_private(os.path.join(kernel_dir, "kernel.json"),
                      json.dumps(userenv.kernel_spec(ctx.user_env), indent=2) + "\n")
