"""Our tutorial notebooks, only into an empty work folder (never over a user's files).

Empty means: nothing but the workspace's own `.workspace/` folder (the user environment and
backups, made by earlier steps).
"""
from __future__ import annotations

import os
import shutil

from runtime.startup import StartContext, log

TUTORIALS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tutorials")


def copy_tutorials(workspace_dir: str) -> bool:
    if [name for name in os.listdir(workspace_dir) if name != ".workspace"]:
        return False
    shutil.copytree(TUTORIALS_DIR, os.path.join(workspace_dir, "tutorials"))
    return True


def run(ctx: StartContext) -> None:
    if ctx.settings.include_tutorials and copy_tutorials(ctx.workspace_dir):
        log(f"copied tutorial notebooks into {ctx.workspace_dir}/tutorials")
