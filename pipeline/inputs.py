"""One entry point for every input kind: an image tarball, a path-info closure or an SBOM."""

from __future__ import annotations

import json
from pathlib import Path

from .archive import read_image
from .closure import read_closure
from .errors import PipelineError
from .inventory import Inventory
from .sbom import read_sbom


def read_any(path: Path, store_root: Path = Path("/")) -> Inventory:
    """Tarball by its first bytes; JSON is an SBOM when it says bomFormat CycloneDX, else a closure."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such file (expected an image tarball, nix path-info --json output or an SBOM)")
    with path.open("rb") as handle:
        start = handle.read(1 << 16)
    if start.lstrip()[:1] in (b"[", b"{"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as problem:
            raise PipelineError(f"{path}: looks like JSON but is not ({problem})") from None
        if isinstance(data, dict) and data.get("bomFormat") == "CycloneDX":
            return read_sbom(path)
        return read_closure(path, store_root)
    return read_image(path)
