"""Reading `nix path-info --recursive --json` output: a closure as an Inventory.

Nix 2.8 to 2.18 print a list of objects ({"path", "narHash": "sha256:<nix32>" or SRI,
"narSize", "references"}); newer Nix prints an object keyed by store path. Both are read.
The Python distributions come from the store paths themselves when they are on this machine
(`store_root` is prepended for a chroot store: `nix --store /some/root`).
"""

from __future__ import annotations

import email.parser
import json
from pathlib import Path

from .errors import PipelineError
from .inventory import Inventory, PythonDist, StorePath
from .storepath import is_store_basename, sha256_hex, split_name


def _entries(data, where: str) -> list[dict]:
    if isinstance(data, dict):
        entries = []
        for path, info in data.items():
            if not isinstance(info, dict):
                raise PipelineError(f"{where}: {path}: expected an object with narHash, narSize and references "
                                    "(is the path valid? nix path-info prints null for paths it lacks)")
            entries.append({**info, "path": path})
        return entries
    if isinstance(data, list) and all(isinstance(item, dict) for item in data):
        return data
    raise PipelineError(f"{where}: expected the JSON of `nix path-info --recursive --json` (a list or an object)")


def _python_dists(store_path: str, store_root: Path) -> list[PythonDist]:
    on_disk = store_root / store_path.lstrip("/")
    dists = []
    for metadata in sorted(on_disk.glob("lib/python*/site-packages/*.dist-info/METADATA")):
        if metadata.is_symlink():
            continue  # a Python environment's link to the distribution's own store path
        message = email.parser.BytesHeaderParser().parsebytes(metadata.read_bytes())
        if message.get("Name") and message.get("Version"):
            dists.append(PythonDist(str(message["Name"]).strip(), str(message["Version"]).strip(), store_path))
    return dists


def read_closure(path: Path, store_root: Path = Path("/")) -> Inventory:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such file (expected the output of nix path-info --recursive --json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as problem:
        raise PipelineError(f"{path}: not JSON ({problem}); expected nix path-info --recursive --json output") from None
    inventory = Inventory(source=str(path), kind="closure")
    for number, entry in enumerate(_entries(data, str(path)), start=1):
        store_path = entry.get("path")
        if not isinstance(store_path, str) or not is_store_basename(store_path.rsplit("/", 1)[-1]):
            raise PipelineError(f"{path}: entry {number}: 'path' must be a store path, found {store_path!r}")
        nar_hash = entry.get("narHash")
        try:
            nar_hex = sha256_hex(nar_hash) if nar_hash is not None else None
        except ValueError as problem:
            raise PipelineError(f"{path}: {store_path}: narHash: {problem}") from None
        name, version = split_name(store_path.rsplit("/", 1)[1])
        inventory.store_paths.append(StorePath(store_path, name, version, nar_hex, entry.get("narSize")))
        inventory.references[store_path] = sorted(r for r in entry.get("references") or [] if r != store_path)
        inventory.python.extend(_python_dists(store_path, store_root))
    inventory.store_paths.sort(key=lambda p: p.path)
    inventory.python.sort(key=lambda d: (d.name.lower(), d.version, d.store_path))
    return inventory
