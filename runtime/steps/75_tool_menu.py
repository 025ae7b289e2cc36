"""The tool menu: every tool's entries in the manifest's order, with availability; and the same
entries as an "Open Tool" menu in JupyterLab and Notebook 7.

The menu is declarative, not a JavaScript extension (which would need a fixed-output hash of its
npm dependencies to build with Nix): both apps read settings overrides from
`<JUPYTER_CONFIG_PATH>/labconfig/default_setting_overrides.json` (jupyterlab_server's
settings_utils), and the main-menu plugin's `menus` setting adds a menu whose items run the
built-in `help:open` command with `newBrowserTab` (it opens any http(s) URL in a new tab). That
command cannot be disabled per item, so an unavailable tool is listed with
`mlws:unavailable-tool`, a never-enabled command of the workspace's hand-written extension
(runtime/labextension/mlws-workspace/): greyed out, with the reason in its label.
"""
from __future__ import annotations

import json
import os

from runtime.startup import StartContext
from runtime.system import write_private

MENU_ID = "jp-mainmenu-mlws-open-tool"
MAIN_MENU_PLUGIN = "@jupyterlab/mainmenu-extension:plugin"


def menu_entries(ctx: StartContext) -> list[dict]:
    base_url = ctx.settings.base_url
    entries = []
    for tool in ctx.tools:
        for entry in tool.menu:
            item = dict(entry)
            item["url_path"] = base_url + str(entry.get("url_path", "")) if entry.get("url_path") else ""
            item["available"] = ctx.available[tool.name]
            if not item["available"]:
                item["reason"] = ctx.unavailable.get(tool.name, "not installed in this image")
            entries.append(item)
    return entries


def _open(url: str, text: str) -> dict:
    return {"command": "help:open", "args": {"url": url, "text": text, "newBrowserTab": True}}


def lab_overrides(entries: list[dict], base_url: str) -> dict:
    home = f"{base_url}/tooling/home"
    items = []
    for rank, entry in enumerate(entries):
        if entry["available"] and entry["url_path"]:
            item = _open(entry["url_path"], entry["name"])
        else:
            reason = entry.get("reason", "not installed")
            item = {"command": "mlws:unavailable-tool",
                    "args": {"text": f"{entry['name']} (unavailable: {reason})", "reason": reason}}
        item["rank"] = rank
        items.append(item)
    rank = len(items)
    items += [
        {"type": "separator", "rank": rank},
        {**_open(f"{home}#access-port", "Access Port…"), "rank": rank + 1},
        {**_open(f"{home}#ssh", "SSH…"), "rank": rank + 2},
        {**_open(f"{home}#share", "Share…"), "rank": rank + 3},
        {**_open(home, "Workspace Home"), "rank": rank + 4},
    ]
    return {MAIN_MENU_PLUGIN: {"menus": [{"id": MENU_ID, "label": "Open Tool", "rank": 55, "items": items}]}}


def run(ctx: StartContext) -> None:
    entries = menu_entries(ctx)
    write_private(ctx.path("tools-menu.json"), json.dumps(entries, indent=2) + "\n", 0o644)
    overrides = os.path.join(ctx.files["jupyter_config_dir"], "labconfig", "default_setting_overrides.json")
    write_private(overrides, json.dumps(lab_overrides(entries, ctx.settings.base_url), indent=2) + "\n")
