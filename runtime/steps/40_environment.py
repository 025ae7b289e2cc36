"""The environment every tool gets, and the user's own software environment layered on the image's.

Tools get the user's environment minus the runtime's secrets, plus the manifest's variables, the
thread variables (only where unset) and the proxy variables. The user environment
(runtime/userenv.py: a venv in the work folder that sees the image's packages) comes first on
PATH, so `pip install` and `npm install -g` in a terminal or a notebook install there and survive
a new container. Without a `python3` on PATH there is none (a warning; the workspace still starts).
"""
from __future__ import annotations

from runtime import hub, userenv
from runtime.startup import StartContext, log
from runtime.system import find_executable

# Secrets of the runtime itself: no tool process needs to see them. The hub's API token goes to
# Jupyter alone (runtime/hub.py adds it back there).
HIDDEN_FROM_TOOLS = ("AUTHENTICATE_VIA_JUPYTER", "WORKSPACE_AUTH_PASSWORD", "MLWS_TOOLS", *hub.HUB_SECRETS)


def run(ctx: StartContext) -> None:
    settings = ctx.settings
    env = {k: v for k, v in ctx.env.items() if k not in HIDDEN_FROM_TOOLS}
    env.update(ctx.manifest.env)
    env.update(settings.thread_env)
    env.update(settings.proxy_env)
    env["WORKSPACE_BASE_URL"] = settings.base_url or "/"
    env["MLWS_RUNTIME_DIR"] = ctx.runtime_dir
    # TensorBoard's notebook integration (%tensorboard, tensorboard.notebook.display) frames
    # localhost:<port> unless TENSORBOARD_PROXY_URL names a URL ("%PORT%" replaced with the port,
    # tensorboard/notebook.py _display_ipython): the gateway serves the user's ports there.
    # A value the container or the manifest sets wins.
    env.setdefault("TENSORBOARD_PROXY_URL", f"{settings.base_url}/tools/%PORT%/")

    python = find_executable("python3", ctx.path_env)
    if python:
        try:
            ctx.user_env = userenv.ensure(ctx.workspace_dir, python)
        except (userenv.UserEnvError, OSError) as error:
            log(f"WARNING: no user Python environment (pip installs will not work): {error}")
    else:
        log("WARNING: no `python3` on PATH: no user Python environment (pip installs will not work)")
    if ctx.user_env is not None:
        env.update(userenv.tool_environment(ctx.user_env, env.get("PATH", ctx.path_env)))
    ctx.tool_env = env
