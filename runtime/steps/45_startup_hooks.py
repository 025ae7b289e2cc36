"""The user's start-up hooks, as the workspace user, before any tool starts.

First `<work folder>/on_startup.sh` (the original's hook, run with bash), then the hook folder
`<work folder>/.workspace/startup.d/` in the docker-stacks convention: in name order, `*.sh`
files are sourced by bash (so they may export variables for the tools: what they export reaches
every tool) and other executables are run. A failing hook is reported with its name and exit
code and the workspace starts anyway, unless MLWS_HOOKS_STRICT=true.
"""
from __future__ import annotations

import json
import os
import subprocess

from runtime.startup import StartContext, StartError, log

HOOK_FILE = "on_startup.sh"
HOOK_FOLDER = os.path.join(".workspace", "startup.d")
# Sourcing runs in one bash that then prints its environment as JSON, so exports reach the tools.
SOURCE_AND_DUMP = ('set -a; . "$1" >&2; status=$?; set +a; '
                   '[ $status -eq 0 ] && "$2" -c "import json, os; print(json.dumps(dict(os.environ)))"; exit $status')


def hooks(workspace_dir: str) -> list[str]:
    found = []
    single = os.path.join(workspace_dir, HOOK_FILE)
    if os.path.isfile(single):
        found.append(single)
    folder = os.path.join(workspace_dir, HOOK_FOLDER)
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isfile(path) and (name.endswith(".sh") or os.access(path, os.X_OK)):
                found.append(path)
    return found


def run_hook(path: str, env: dict[str, str], cwd: str, python: str) -> tuple[int, dict[str, str] | None]:
    """Returns (exit code, the environment it exported: only for sourced *.sh hooks)."""
    if path.endswith(".sh"):
        result = subprocess.run(["bash", "-c", SOURCE_AND_DUMP, "mlws-hook", path, python],
                                env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        exported = None
        if result.returncode == 0:
            try:
                exported = json.loads(result.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
            except (ValueError, IndexError):
                exported = None
        return result.returncode, exported
    result = subprocess.run([path], env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    return result.returncode, None


def run(ctx: StartContext) -> None:
    import sys

    for path in hooks(ctx.workspace_dir):
        name = os.path.relpath(path, ctx.workspace_dir)
        log(f"start-up hook {name}")
        try:
            code, exported = run_hook(path, dict(ctx.tool_env), ctx.workspace_dir, sys.executable)
        except OSError as error:
            code, exported = 126, None
            log(f"start-up hook {name}: cannot run: {error}")
        if code != 0:
            message = f"start-up hook {name} failed with exit code {code}"
            if ctx.settings.hooks_strict:
                raise StartError(f"{message} (MLWS_HOOKS_STRICT=true)")
            log(f"WARNING: {message}; starting anyway (MLWS_HOOKS_STRICT=true would stop here)")
        elif exported is not None:
            changed = {k: v for k, v in exported.items() if ctx.tool_env.get(k) != v and k not in ("_", "SHLVL", "PWD", "OLDPWD")}
            ctx.tool_env.update(changed)
