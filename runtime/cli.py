"""`mlws start`: the click command (the generator's `mlws` group registers it)."""
from __future__ import annotations

import os
import sys

import click

from runtime.start import StartOptions, run_start


def _tools_option(value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    return tuple(name.strip() for name in value.split(",") if name.strip())


@click.command("start")
@click.option("--flavor", help="Flavor whose manifest to run (default: $MLWS_MANIFEST, else minimal).")
@click.option("--manifest", "manifest_path", type=click.Path(dir_okay=False), help="Path of a runtime manifest JSON (overrides --flavor).")
@click.option("--port", type=click.IntRange(1, 65535), help="Gateway port (overrides WORKSPACE_PORT, default 8080).")
@click.option("--tools", "tools", envvar="MLWS_TOOLS", help="Comma-separated tools to run (Jupyter always runs); env MLWS_TOOLS.")
@click.option("--runtime-dir", type=click.Path(file_okay=False), help="Folder for generated configuration, sockets and logs (default ~/.mlws/run-<port>).")
@click.option("--workspace-dir", type=click.Path(file_okay=False), help="Work folder (default $WORKSPACE_DIR, else /workspace if it exists, else ~/workspace).")
@click.option("--user", help="User to run as when started as root (default $NB_USER). Required as root.")
@click.option("--bind", default=lambda: os.environ.get("WORKSPACE_BIND") or None,
              show_default="$WORKSPACE_BIND, else the address of $JUPYTERHUB_SERVICE_URL, else 0.0.0.0",
              help="Address the gateway listens on (internal services always use 127.0.0.1).")
@click.option("--dry-run", is_flag=True, help="Write the runtime folder and print the URL, but start nothing.")
@click.option("--requirements-only", is_flag=True, help="With EXECUTE_CODE: run the job's install steps and exit (env MLWS_JOB_MODE=requirements-only).")
@click.option("--code-only", is_flag=True, help="With EXECUTE_CODE: skip the job's install steps (env MLWS_JOB_MODE=code-only).")
def start(flavor, manifest_path, port, tools, runtime_dir, workspace_dir, user, bind, dry_run, requirements_only, code_only):
    """Start the workspace: gateway, login, Jupyter and the flavor's tools, supervised.

    Configuration comes from environment variables (WORKSPACE_PORT, WORKSPACE_BASE_URL,
    AUTHENTICATE_VIA_JUPYTER, WORKSPACE_AUTH_USER/PASSWORD, WORKSPACE_SSL_ENABLED, ...; see
    docs/runtime.md). Invalid values are all reported and nothing is started.

    With EXECUTE_CODE set, the job runs instead of the workspace (as `mlws job EXECUTE_CODE`, from
    the work folder) and this command exits with its exit code.
    """
    if os.environ.get("EXECUTE_CODE", "").strip() or requirements_only or code_only:
        from runtime.jobs import run_execute_code

        sys.exit(run_execute_code(os.environ.get("EXECUTE_CODE", ""), workspace_dir, user, requirements_only, code_only))
    options = StartOptions(
        flavor=flavor,
        manifest=manifest_path,
        port=port,
        tools=_tools_option(tools),
        runtime_dir=runtime_dir,
        workspace_dir=workspace_dir,
        user=user,
        bind=bind,
        dry_run=dry_run,
    )
    sys.exit(run_start(options))
