"""Compare rendered files with the repo, and write them all-or-nothing.

Only files that carry the generated header (or, for JSON manifests, the manifest's own shape)
are ever considered ours to remove: a hand-written file in modules/ or flavors/ is left alone.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .model import GENERATED_HEADER_START

GENERATED_DIRS = ("modules", "flavors")


def is_generated(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if path.name.endswith(".manifest.json"):
        # JSON has no comments: a manifest is recognised by its schema and flavor keys.
        try:
            data = json.loads(text)
        except ValueError:
            return False
        return isinstance(data, dict) and "schema" in data and "flavor" in data
    return path.suffix == ".nix" and text.startswith(GENERATED_HEADER_START)


def generated_on_disk(root: Path) -> set[str]:
    found = set()
    for folder in GENERATED_DIRS:
        directory = root / folder
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            if path.is_file() and is_generated(path):
                found.add(f"{folder}/{path.name}")
    return found


@dataclass
class Plan:
    """What `generate` would change: files to create, to rewrite, to remove."""

    missing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.stale or self.extra)


def plan(root: Path, files: dict[str, str]) -> Plan:
    result = Plan()
    for rel, content in sorted(files.items()):
        path = root / rel
        if not path.exists():
            result.missing.append(rel)
        elif path.read_bytes() != content.encode("utf-8"):
            result.stale.append(rel)
        else:
            result.unchanged.append(rel)
    result.extra = sorted(generated_on_disk(root) - set(files))
    return result


def write(root: Path, files: dict[str, str], todo: Plan) -> None:
    """Write missing and stale files, then remove extra ones.

    Every new content goes to a temporary file next to its target first; only when all of them
    are written are they renamed into place (rename is atomic on one file system), so a failure
    while writing leaves every target untouched.
    """
    staged: list[tuple[str, str]] = []
    try:
        for rel in todo.missing + todo.stale:
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            staged.append((temp, str(target)))
            with os.fdopen(fd, "wb") as handle:
                handle.write(files[rel].encode("utf-8"))
            os.chmod(temp, 0o644)
    except BaseException:
        for temp, _ in staged:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
        raise
    for temp, target in staged:
        os.replace(temp, target)
    for rel in todo.extra:
        (root / rel).unlink()
