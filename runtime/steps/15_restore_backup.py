"""Restore the user's configuration from the work folder's backup, before any tool starts.

Off with CONFIG_BACKUP_ENABLED=false. A file in the home that is newer than its backup is kept
(runtime/backup.py). A failed restore is reported and does not stop the workspace: the user's
files in the work folder are untouched either way.
"""
from __future__ import annotations

from runtime import backup
from runtime.startup import StartContext, log


def run(ctx: StartContext) -> None:
    if ctx.settings.backup_schedule is None:
        return
    try:
        restored = backup.restore(ctx.user.pw_dir, ctx.workspace_dir)
    except (OSError, backup.BackupError) as error:
        log(f"WARNING: could not restore the configuration backup from "
            f"{backup.backup_link(ctx.workspace_dir)}: {error}")
        return
    if restored:
        log(f"restored {restored} configuration files from {backup.backup_link(ctx.workspace_dir)}")
