"""What changed between two images (tarballs, closures or SBOMs of them), as data and as text.

Packages are compared by name (the store name without its version): added, removed, changed
(old -> new versions) and rebuilt (same version, another store path: a dependency or the build
changed). Python distributions likewise, by their normalised PyPI name. Layers are compared by
digest: reused ones need no upload or download when updating from the old image.
"""

from __future__ import annotations

import re
from collections import defaultdict

from .inventory import Inventory


def _pypi(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _compare(old: dict[str, list[tuple[str, str]]], new: dict[str, list[tuple[str, str]]]) -> dict:
    """Each side maps name -> [(version, identity)]; identity tells rebuilds apart."""
    added = [{"name": n, "versions": sorted({v for v, _ in new[n]})} for n in sorted(new.keys() - old.keys())]
    removed = [{"name": n, "versions": sorted({v for v, _ in old[n]})} for n in sorted(old.keys() - new.keys())]
    changed, rebuilt = [], []
    for name in sorted(old.keys() & new.keys()):
        old_versions, new_versions = sorted(v for v, _ in old[name]), sorted(v for v, _ in new[name])
        if old_versions != new_versions:
            changed.append({"name": name, "old": sorted(set(old_versions)), "new": sorted(set(new_versions))})
        elif sorted(i for _, i in old[name]) != sorted(i for _, i in new[name]):
            rebuilt.append(name)
    return {"added": added, "removed": removed, "changed": changed, "rebuilt": rebuilt}


def _packages(inventory: Inventory) -> dict[str, list[tuple[str, str]]]:
    by_name = defaultdict(list)
    for store_path in inventory.store_paths:
        by_name[store_path.name].append((store_path.version, store_path.path))
    return by_name


def _python(inventory: Inventory) -> dict[str, list[tuple[str, str]]]:
    by_name = defaultdict(list)
    for dist in inventory.python:
        by_name[_pypi(dist.name)].append((dist.version, dist.store_path))
    return by_name


def _side(inventory: Inventory) -> dict:
    return {"source": inventory.source, "kind": inventory.kind, "image": inventory.title,
            "architecture": inventory.architecture, "tarball_sha256": inventory.tarball_sha256,
            "size": inventory.tarball_size, "store_paths": len(inventory.store_paths)}


def _layers(old: Inventory, new: Inventory) -> dict | None:
    if old.layers is None or new.layers is None:
        return None
    old_digests = {layer.digest: layer for layer in old.layers}
    new_digests = {layer.digest: layer for layer in new.layers}
    reused = [d for d in new_digests if d in old_digests]
    return {
        "reused": len(reused),
        "reused_bytes": sum(new_digests[d].size for d in reused),
        "added": [{"digest": d, "size": layer.size} for d, layer in new_digests.items() if d not in old_digests],
        "removed": [{"digest": d, "size": layer.size} for d, layer in old_digests.items() if d not in new_digests],
        "old_count": len(old.layers),
        "new_count": len(new.layers),
    }


def diff(old: Inventory, new: Inventory) -> dict:
    size = None
    if old.tarball_size is not None and new.tarball_size is not None:
        size = {"old": old.tarball_size, "new": new.tarball_size, "change": new.tarball_size - old.tarball_size}
    return {
        "old": _side(old),
        "new": _side(new),
        "identical": old.tarball_sha256 is not None and old.tarball_sha256 == new.tarball_sha256,
        "packages": _compare(_packages(old), _packages(new)),
        "python": _compare(_python(old), _python(new)),
        "layers": _layers(old, new),
        "size": size,
    }


def _bytes(count: int) -> str:
    sign = "-" if count < 0 else ""
    value = float(abs(count))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def _section(title: str, changes: dict, bullet: str, markdown: bool = False) -> list[str]:
    lines = []
    for item in changes["added"]:
        lines.append(f"{bullet}added    {item['name']} {', '.join(v or '(no version)' for v in item['versions'])}")
    for item in changes["removed"]:
        lines.append(f"{bullet}removed  {item['name']} {', '.join(v or '(no version)' for v in item['versions'])}")
    for item in changes["changed"]:
        lines.append(f"{bullet}changed  {item['name']} {', '.join(item['old']) or '-'} -> {', '.join(item['new']) or '-'}")
    if changes["rebuilt"]:
        lines.append(f"{bullet}rebuilt  {len(changes['rebuilt'])} with the same version: {', '.join(changes['rebuilt'])}")
    if markdown:  # a blank line around a list, so every renderer sees one
        return ["", f"**{title.rstrip(':')}**", "", *(lines or [f"{bullet}no change"]), ""]
    return [title, *(lines or [f"{bullet}no change"])]


def render_text(result: dict, markdown: bool = False) -> str:
    """Readable text (or Markdown for release notes and pull request bodies)."""
    head = "### " if markdown else ""
    bullet = "- " if markdown else "  "
    lines = [f"{head}{result['old']['image']} -> {result['new']['image']}"]
    if result["identical"]:
        lines.append("identical tarballs (same SHA-256)")
    lines += _section("packages (Nix store paths):", result["packages"], bullet, markdown)
    lines += _section("Python distributions:", result["python"], bullet, markdown)
    layers = result["layers"]
    if layers is None:
        lines.append("layers: not compared (one side is a closure, which has no layers)")
    else:
        lines.append(f"layers: {layers['reused']} of {layers['new_count']} reused ({_bytes(layers['reused_bytes'])}), "
                     f"{len(layers['added'])} new ({_bytes(sum(l['size'] for l in layers['added']))}), "
                     f"{len(layers['removed'])} dropped")
    if result["size"] is not None:
        size = result["size"]
        lines.append(f"size: {_bytes(size['old'])} -> {_bytes(size['new'])} ({'+' if size['change'] >= 0 else ''}{_bytes(size['change'])})")
    return "\n".join(lines) + "\n"
