"""The configuration backup: once at start, then on CONFIG_BACKUP_ENABLED's schedule (default hourly)."""
from __future__ import annotations

import sys

from runtime.startup import StartContext
from runtime.system import own_pythonpath


def run(ctx: StartContext) -> None:
    schedule = ctx.settings.backup_schedule
    if schedule is None:
        return
    ctx.add_program(
        "backup",
        [sys.executable, "-m", "runtime.backup", "--home", ctx.user.pw_dir, "--work", ctx.workspace_dir,
         "--schedule", schedule],
        {"PATH": ctx.path_env, "HOME": ctx.user.pw_dir, "PYTHONPATH": own_pythonpath()},
        950, ctx.runtime_dir,
    )
