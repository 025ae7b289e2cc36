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
@click.option("--bind", default=lambda: os.environ.get("WORKSPACE_BIND", "0.0.0.0"), show_default="0.0.0.0 or $WORKSPACE_BIND",
              help="Address the gateway listens on (internal services always use 127.0.0.1).")
@click.option("--dry-run", is_flag=True, help="Write the runtime folder and print the URL, but start nothing.")
def start(flavor, manifest_path, port, tools, runtime_dir, workspace_dir, user, bind, dry_run):
    """Start the workspace: gateway, login, Jupyter and the flavor's tools, supervised.

    Configuration comes from environment variables (WORKSPACE_PORT, WORKSPACE_BASE_URL,
    AUTHENTICATE_VIA_JUPYTER, WORKSPACE_AUTH_USER/PASSWORD, WORKSPACE_SSL_ENABLED, ...; see
    docs/runtime.md). Invalid values are all reported and nothing is started.
    """
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
