"""The locked inputs of flake.lock (lock format version 7): name -> what exactly was fetched."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import PipelineError


def locked_inputs(path: Path) -> dict[str, dict]:
    """Every node but the root: {type, owner, repo, url, rev, narHash, lastModified} as locked."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such file (expected the flake's flake.lock)")
    try:
        lock = json.loads(path.read_text(encoding="utf-8"))
        nodes, root = lock["nodes"], lock.get("root", "root")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as problem:
        raise PipelineError(f"{path}: not a flake.lock (expected JSON with a 'nodes' object: {problem})") from None
    inputs = {}
    for name, node in sorted(nodes.items()):
        if name == root or not isinstance(node, dict) or "locked" not in node:
            continue
        locked = node["locked"]
        inputs[name] = {key: locked[key] for key in ("type", "owner", "repo", "url", "rev", "narHash", "lastModified") if key in locked}
    return inputs


def source_url(locked: dict) -> str | None:
    if locked.get("type") == "github" and locked.get("owner") and locked.get("repo"):
        return f"https://github.com/{locked['owner']}/{locked['repo']}"
    return locked.get("url")
