"""One supervised program per process of every available tool, its placeholders filled in."""
from __future__ import annotations

import os
import subprocess

from runtime import hub
from runtime import manifest as manifest_mod
from runtime import secret_files
from runtime.startup import StartContext, StartError, log
from runtime.system import find_executable

# Helper files tools load from the runtime package ({toolkit}): node-unix-listen.js, tensorboard_unix.py.
TOOLKIT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "toolkit")


def ensure_ssh_host_keys(argv: list[str], path_env: str) -> None:
    """sshd does not start without its host keys, and a fresh workspace has none: make each key the
    manifest names (`-o HostKey=PATH`) that does not exist yet. They live in the tool's folder, which
    is kept across starts, so clients see the same host key after a restart."""
    if os.path.basename(argv[0]) != "sshd":
        return
    for key in [arg.split("=", 1)[1] for arg in argv if arg.startswith("HostKey=")]:
        if os.path.exists(key):
            continue
        keygen = find_executable("ssh-keygen", path_env)
        if not keygen:
            raise StartError(f"sshd's host key {key} does not exist and `ssh-keygen` is not on PATH to make it")
        kind = next((k for k in ("rsa", "ecdsa", "ed25519") if k in os.path.basename(key)), "ed25519")
        result = subprocess.run([keygen, "-q", "-t", kind, "-N", "", "-C", "mlws-workspace", "-f", key],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if result.returncode != 0:
            raise StartError(f"could not make sshd's host key {key}: {result.stderr.strip()}")
        log(f"generated the SSH host key {key} (kept for later starts)")


def placeholder_values(ctx: StartContext, tool) -> dict[str, str]:
    settings = ctx.settings
    return {
        "port": str(tool.port or ""),
        "base_url": settings.base_url,
        "prefix": settings.base_url + (tool.route.prefix if tool.route else f"/tools/{tool.name}/"),
        "workspace": ctx.workspace_dir,
        "home": ctx.user.pw_dir,
        "runtime_dir": ctx.runtime_dir,
        "tool_dir": ctx.path("tools", tool.name),
        "user": ctx.user.pw_name,
        "socket": ctx.tool_sockets.get(tool.name, ""),
        "secret": ctx.tool_secrets.get(tool.name, ""),
        "toolkit": TOOLKIT_DIR,
        **{f"package:{program}": folder for (name, program), folder in ctx.packages.items() if name == tool.name},
    }


def jupyter_arguments(ctx: StartContext, argv: list[str], program_env: dict[str, str]) -> None:
    """What the health tool (Jupyter) gets beyond its manifest entry."""
    settings = ctx.settings
    # The manifest may name {runtime_dir}/jupyter_server_config.py itself; either way Jupyter
    # loads our static file (copied there, so the user can always read it).
    if not any(arg.startswith("--config=") for arg in argv):
        argv.append(f"--config={ctx.files['jupyter_config']}")
    program_env["MLWS_JUPYTER_SETTINGS"] = ctx.files["jupyter_settings"]
    if "jupyter_data" in ctx.files:
        program_env["JUPYTER_PATH"] = os.pathsep.join(
            p for p in (ctx.files["jupyter_data"], program_env.get("JUPYTER_PATH", "")) if p)
    program_env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
        p for p in (ctx.files["jupyter_config_dir"], program_env.get("JUPYTER_CONFIG_PATH", "")) if p)
    if settings.auth_mode == "hub":
        jupyter_address = next(up.server for up in ctx.gateway.upstreams if up.name == ctx.manifest.health_tool.name)
        program_env.update(hub.jupyter_environment(settings.hub_api_token or "", jupyter_address, settings.base_url))
    if settings.cull_idle_seconds:
        argv += [
            f"--MappingKernelManager.cull_idle_timeout={settings.cull_idle_seconds}",
            f"--MappingKernelManager.cull_interval={min(60, settings.cull_idle_seconds)}",
            "--MappingKernelManager.cull_connected=False",
            "--MappingKernelManager.cull_busy=False",
        ]
    argv += list(settings.notebook_args)


def run(ctx: StartContext) -> None:
    for tool in ctx.tools:
        if not ctx.available[tool.name]:
            continue
        os.makedirs(ctx.path("tools", tool.name), mode=0o700, exist_ok=True)
        values = placeholder_values(ctx, tool)
        if tool.secret is not None:
            for secret_file in tool.secret.files:
                secret_files.write(manifest_mod.substitute(secret_file.path, values), secret_file.format,
                                   ctx.tool_secrets[tool.name], secret_file.display)
        for process in tool.processes:
            argv = [manifest_mod.substitute(arg, values) for arg in process.command]
            argv[0] = ctx.resolved[(tool.name, process.name)]
            if not ctx.options.dry_run:
                ensure_ssh_host_keys(argv, ctx.path_env)
            program_env = dict(ctx.tool_env)
            program_env.update({k: manifest_mod.substitute(v, values) for k, v in tool.env.items()})
            program_env.update({k: manifest_mod.substitute(v, values) for k, v in process.env.items()})
            if tool.health:
                jupyter_arguments(ctx, argv, program_env)
            else:
                program_env.pop("JUPYTERHUB_API_TOKEN", None)
            ctx.add_program(f"{tool.name}-{process.name}", argv, program_env, 300, ctx.workspace_dir)
