"""Work and runtime folders; as root, hand them to the workspace user and drop privileges."""
from __future__ import annotations

import os

from runtime import nginx as nginx_mod
from runtime.startup import StartContext, StartError, log
from runtime.system import (default_workspace_dir, drop_privileges, ensure_folder, hand_over_stdio,
                            readable_by, user_environment)

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(ctx: StartContext) -> None:
    options, user, env = ctx.options, ctx.user, ctx.env
    ctx.runtime_dir = os.path.abspath(
        options.runtime_dir or os.path.join(user.pw_dir, ".mlws", f"run-{ctx.settings.port}"))
    ctx.workspace_dir = os.path.abspath(
        options.workspace_dir or env.get("WORKSPACE_DIR") or default_workspace_dir(user))
    nginx_mod.safe_path(ctx.runtime_dir, "--runtime-dir")

    if os.geteuid() == 0:
        if not readable_by(os.path.join(PACKAGE_DIR, "launch.py"), user):
            raise StartError(
                f"the runtime package in {PACKAGE_DIR} is not readable by user {user.pw_name}: install mlws "
                "where that user can read it (not under /root), e.g. in a venv under /opt"
            )
        ensure_folder(ctx.workspace_dir, user)
        if ctx.runtime_dir.startswith(user.pw_dir + "/"):
            ensure_folder(os.path.join(user.pw_dir, ".mlws"), user, 0o700)
        ensure_folder(ctx.runtime_dir, user, 0o700)
        hand_over_stdio(user)
        drop_privileges(user)
        log(f"running as user {user.pw_name} (uid {user.pw_uid})")
    ctx.env = user_environment(env, user)
    os.makedirs(ctx.workspace_dir, exist_ok=True)
    os.makedirs(ctx.runtime_dir, mode=0o700, exist_ok=True)
    if os.stat(ctx.runtime_dir).st_uid != os.getuid():
        raise StartError(f"--runtime-dir {ctx.runtime_dir}: owned by another user; expected a folder of {user.pw_name}")
    os.chmod(ctx.runtime_dir, 0o700)
    if not os.access(ctx.workspace_dir, os.W_OK):
        raise StartError(f"workspace folder {ctx.workspace_dir}: not writable by {user.pw_name}")
    ctx.path_env = ctx.env.get("PATH", os.defpath)
