"""The release manifest: per image the tarball's SHA-256 and size, config and layer digests, the
SBOM file, and the flake.lock revisions the images were built from."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import PipelineError
from .inventory import Inventory
from .lock import locked_inputs


def artifact_stem(tarball: Path) -> str:
    """'ml-workspace.tar.gz' -> 'ml-workspace': the name SBOMs and checksums are saved under."""
    name = Path(tarball).name
    for suffix in (".tar.gz", ".tgz", ".tar.zst", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def sbom_name(tarball: Path) -> str:
    return f"{artifact_stem(tarball)}.cdx.json"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def image_entry(source: Path, inventory: Inventory, sbom_dir: Path | None) -> dict:
    """One image, from its tarball (the SBOM looked up in sbom_dir) or from its SBOM itself."""
    if inventory.kind not in ("image", "sbom") or not inventory.tarball_sha256:
        raise PipelineError(f"{source}: give an image tarball, or an SBOM mlws image sbom made of one")
    tarball = Path(inventory.tarball_file or Path(source).name)
    entry = {
        "file": tarball.name,
        "image": inventory.image_name,
        "tag": inventory.image_tag,
        "architecture": inventory.architecture,
        "sha256": inventory.tarball_sha256,
        "size": inventory.tarball_size,
        "config": {"digest": inventory.config_digest, "size": inventory.config_size},
        "layers": [{"digest": layer.digest, "size": layer.size} for layer in inventory.layers or []],
        "store_paths": len(inventory.store_paths),
        "sbom": None,
    }
    if inventory.kind == "sbom":
        entry["sbom"] = {"file": Path(source).name, "sha256": _file_sha256(Path(source))}
    elif sbom_dir is not None:
        sbom = Path(sbom_dir) / sbom_name(tarball)
        if not sbom.is_file():
            raise PipelineError(f"{sbom}: no SBOM for {tarball} (expected mlws image sbom {tarball} -o {sbom})")
        entry["sbom"] = {"file": sbom.name, "sha256": _file_sha256(sbom)}
    return entry


def release_manifest(images: list[tuple[Path, Inventory]], lock: Path | None, sbom_dir: Path | None) -> dict:
    """The manifest of every image; the SBOM of a tarball is looked for in sbom_dir when given."""
    return {
        "schema": 1,
        "flake_lock": locked_inputs(lock) if lock is not None else None,
        "images": [image_entry(tarball, inventory, sbom_dir) for tarball, inventory in images],
    }
