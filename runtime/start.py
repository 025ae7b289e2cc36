"""`mlws start`: environment + manifest -> start-up steps -> supervisord in the foreground.

Every variable is parsed first (refuse on any error, nothing started) and the manifest loaded;
then the start-up steps of runtime/steps/ run in order (runtime/startup.py; docs/runtime.md lists
them): folders and privileges, tools, ports, secrets, TLS, environments, backup and hooks, the
gateway, the login service, Jupyter, the tools' programs, readiness, the menu, supervisord's
configuration, tutorials, the banner. Last, supervisord runs as our child (runtime/reaper.py:
signals forwarded, orphans reaped, nothing left running after it exits).
"""
from __future__ import annotations

import dataclasses
import os
import socket
import sys
import time

from runtime import manifest as manifest_mod
from runtime import nginx as nginx_mod
from runtime.settings import SettingsError, cgroup_cpu_limit, parse_settings
from runtime.startup import StartContext, StartError, log, run_steps
from runtime.system import default_workspace_dir, find_executable, own_pythonpath, target_user  # noqa: F401 (used by runtime.jobs)

__all__ = ["StartError", "StartOptions", "run_start", "default_workspace_dir", "find_executable", "target_user"]


@dataclasses.dataclass(frozen=True)
class StartOptions:
    flavor: str | None = None
    manifest: str | None = None
    port: int | None = None
    tools: tuple[str, ...] | None = None
    runtime_dir: str | None = None
    workspace_dir: str | None = None
    user: str | None = None
    bind: str | None = "0.0.0.0"  # None: the hub's JUPYTERHUB_SERVICE_URL address, else 0.0.0.0
    dry_run: bool = False  # write everything, print the banner, but do not exec supervisord


def select_tools(manifest: manifest_mod.Manifest, wanted: tuple[str, ...] | None) -> list[manifest_mod.Tool]:
    if not wanted:
        return list(manifest.tools)
    known = {tool.name for tool in manifest.tools}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise StartError(
            f"--tools/MLWS_TOOLS: unknown tool(s) {', '.join(unknown)}; the {manifest.flavor or 'chosen'} "
            f"flavor has: {', '.join(sorted(known))}"
        )
    # Jupyter (the health tool) is always part of the workspace.
    return [tool for tool in manifest.tools if tool.name in wanted or tool.health]


def run_start(options: StartOptions, environ: dict[str, str] | None = None) -> int:
    env = dict(os.environ if environ is None else environ)
    try:
        settings = parse_settings(env, port_override=options.port, cgroup_limit=cgroup_cpu_limit())
    except SettingsError as error:
        for problem in error.problems:
            log(f"error: {problem}")
        log("nothing was started: fix the variables above and start again")
        return 2
    if options.bind is None:  # no --bind / WORKSPACE_BIND: where the hub's spawner says, else everywhere
        options = dataclasses.replace(options, bind=settings.hub_bind or "0.0.0.0")
    try:
        path = manifest_mod.find_manifest(options.manifest, options.flavor, env)
        manifest = manifest_mod.load_manifest(path)
        tools = select_tools(manifest, options.tools)
        user = target_user(options, env)
        for warning in settings.warnings:
            log(f"WARNING: {warning}")
        ctx = StartContext(options=options, settings=settings, manifest=manifest, tools=tools, user=user, env=env)
        run_steps(ctx)
    except (StartError, manifest_mod.ManifestError, nginx_mod.ConfigValueError) as error:
        log(f"error: {error}")
        log("nothing was started")
        return 2
    if options.dry_run:
        return 0
    return run_supervisord(ctx)


def run_supervisord(ctx: StartContext) -> int:
    supervisord_argv = supervisor_command(ctx.path_env)
    supervisord_env = dict(ctx.tool_env)
    supervisord_env["PYTHONPATH"] = own_pythonpath()
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(ctx.runtime_dir)
    wake_supervisord_when_ready(ctx.path("supervisord.pid"), ctx.path("supervisor.sock"))
    # Not an exec: we stay supervisord's parent and the subreaper of everything below it, so a
    # process that daemonized out of its program's group is still stopped when the workspace stops.
    from runtime import reaper

    return reaper.run_supervised([*supervisord_argv, "-c", ctx.files["supervisor_conf"]], supervisord_env, log)


def wake_supervisord_when_ready(pid_file: str, control_socket: str, limit_seconds: float = 10.0) -> None:
    """Save a second of start-up: poke supervisord as soon as it enters its main loop.

    supervisord starts its programs only after the first turn of its loop, which waits up to 1 s
    in poll() for activity on its sockets (a signal does not cut that short: Python retries the
    call). It writes its pid file just before that loop, so a forked helper waits for the pid
    file, then connects once to the control socket: poll() returns at once and the programs are
    spawned. If anything goes wrong the helper just exits and supervisord starts them 1 s later.
    The helper is forked from the runtime before it spawns supervisord, so it is the runtime's
    child: runtime/reaper.py reaps it with every other child.
    """
    for stale in (pid_file, control_socket):
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    if os.fork():
        return
    try:
        deadline = time.monotonic() + limit_seconds
        while not os.path.exists(pid_file) and time.monotonic() < deadline:
            time.sleep(0.005)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(1)
            connection.connect(control_socket)
    except OSError:
        pass
    finally:
        os._exit(0)


def supervisor_command(path_env: str) -> list[str]:
    try:
        import supervisor.supervisord  # noqa: F401 (only checking it is there)

        return [sys.executable, "-m", "supervisor.supervisord"]
    except ImportError:
        found = find_executable("supervisord", path_env)
        if not found:
            raise StartError("supervisord is not installed (pip install supervisor)") from None
        return [found]
