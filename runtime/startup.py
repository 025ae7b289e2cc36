"""Start-up as a sequence of named steps: one module each in runtime/steps/, run in file-name order.

`mlws start` parses the environment and the manifest (runtime/start.py), then hands a
`StartContext` to every step in `runtime/steps/`, sorted by file name (`10_folders.py`,
`20_tools.py`, ...), like docker-stacks' start-up hook folders: adding a start-up duty is one new
file with a `run(ctx)` function. A step reads what earlier steps put into the context and adds
its own results; it writes only under the runtime folder (or its own persisted folder) and starts
nothing itself: programs are added with `ctx.add_program` and started by supervisord at the end.
The order, and what each step does, is listed in docs/runtime.md ("Start-up order").
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys

STEPS_PACKAGE = "runtime.steps"
STEPS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "steps")


class StartError(Exception):
    """A problem that stops `mlws start` before anything is started; the message says what to do."""


def log(message: str) -> None:
    print(f"mlws: {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class StartContext:
    """Everything start-up knows, filled in step by step (each field says which step sets it)."""

    options: object  # runtime.start.StartOptions
    settings: object  # runtime.settings.Settings
    manifest: object  # runtime.manifest.Manifest
    tools: list  # the selected manifest tools
    user: object  # pwd.struct_passwd of the workspace user
    env: dict[str, str]  # the environment (HOME, USER of the workspace user after 10_folders)
    runtime_dir: str = ""  # 10_folders
    workspace_dir: str = ""  # 10_folders
    path_env: str = ""  # 10_folders
    nginx_bin: str = ""  # 20_tools
    resolved: dict = dataclasses.field(default_factory=dict)  # 20_tools: (tool, process) -> executable
    packages: dict = dataclasses.field(default_factory=dict)  # 20_tools: (tool, program) -> package folder
    available: dict = dataclasses.field(default_factory=dict)  # 20_tools: tool -> runs here
    unavailable: dict = dataclasses.field(default_factory=dict)  # 20_tools: tool -> why it does not
    secrets: dict = dataclasses.field(default_factory=dict)  # 30_secrets
    token: str | None = None  # 30_secrets
    cookie_name: str = ""  # 30_secrets
    ssl_cert: str | None = None  # 35_tls
    ssl_key: str | None = None  # 35_tls
    htpasswd: str | None = None  # 35_tls
    tool_env: dict = dataclasses.field(default_factory=dict)  # 40_environment: common to every tool
    user_env: object = None  # 40_environment: runtime.userenv.UserEnv, or None
    tool_sockets: dict = dataclasses.field(default_factory=dict)  # 50_gateway
    tool_secrets: dict = dataclasses.field(default_factory=dict)  # 50_gateway
    gateway: object = None  # 50_gateway: runtime.nginx.GatewayConfig
    extra_upstreams: list = dataclasses.field(default_factory=list)  # the runtime's own routed services
    files: dict = dataclasses.field(default_factory=dict)  # named files steps write for later ones
    programs: list = dataclasses.field(default_factory=list)  # every step: runtime.supervisor.Program

    def path(self, *parts: str) -> str:
        return os.path.join(self.runtime_dir, *parts)

    def add_program(self, name: str, argv: list[str], program_env: dict[str, str], priority: int, cwd: str,
                    oneshot: bool = False, stale_sockets: tuple[str, ...] = ()) -> None:
        """One supervised program: its JSON for runtime.launch, started by supervisord at the end."""
        from runtime.supervisor import Program
        from runtime.system import write_private

        spec_file = self.path("programs", f"{name}.json")
        spec = {"argv": argv, "env": program_env, "cwd": cwd, "umask": self.settings.nb_umask,
                "stale_sockets": list(stale_sockets)}
        write_private(spec_file, json.dumps(spec, indent=2, sort_keys=True) + "\n")
        self.programs.append(Program(name, spec_file, priority, oneshot))


def public_url(settings, options) -> str:
    """The address the banner prints and the readiness watcher reports."""
    scheme = "https" if settings.ssl_enabled else "http"
    host = "localhost" if options.bind in ("0.0.0.0", "::", "127.0.0.1") else options.bind
    return f"{scheme}://{host}:{settings.port}{settings.base_url}/"


def step_names() -> list[str]:
    """The step modules, in the order they run (file-name order)."""
    return sorted(name[:-3] for name in os.listdir(STEPS_DIR)
                  if name.endswith(".py") and name[:1].isdigit())


def run_step(name: str, ctx: StartContext) -> None:
    importlib.import_module(f"{STEPS_PACKAGE}.{name}").run(ctx)


def run_steps(ctx: StartContext) -> None:
    for name in step_names():
        run_step(name, ctx)
