"""supervisord's configuration: every program the steps added."""
from __future__ import annotations

import sys

from runtime.startup import StartContext, log
from runtime.supervisor import render_supervisor_conf
from runtime.system import stdout_reopenable, write_private


def run(ctx: StartContext) -> None:
    log_to_stdout = stdout_reopenable()
    if not log_to_stdout:
        log(f"stdout cannot be reopened by {ctx.user.pw_name}: program logs go to {ctx.runtime_dir}/logs/")
    ctx.files["supervisor_conf"] = ctx.path("supervisord.conf")
    write_private(ctx.files["supervisor_conf"],
                  render_supervisor_conf(ctx.runtime_dir, sys.executable, ctx.programs, log_to_stdout))
