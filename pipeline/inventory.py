"""What an image (or a closure, or an SBOM of either) is made of, as plain data.

Every reader (archive.py for tarballs, closure.py for `nix path-info --json`, sbom.py for our
CycloneDX files) returns an Inventory; the SBOM, diff and manifest commands work on it only.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StorePath:
    path: str  # /nix/store/<hash>-<name>
    name: str  # pname, as builtins.parseDrvName splits it
    version: str  # "" when the name has none
    nar_sha256: str | None  # hex; None when unknown
    nar_size: int | None


@dataclass(frozen=True)
class PythonDist:
    name: str  # as its METADATA says
    version: str
    store_path: str  # the store path whose site-packages holds its .dist-info


@dataclass(frozen=True)
class Layer:
    digest: str  # sha256:<hex> of the uncompressed layer tar (the config's diff_id)
    size: int  # bytes of the uncompressed layer tar
    store_paths: tuple[str, ...]  # store paths it holds; () for the customisation layer


@dataclass
class Inventory:
    source: str  # the file it was read from
    kind: str  # "image", "closure" or "sbom"
    image_name: str | None = None
    image_tag: str | None = None
    architecture: str | None = None
    created: str | None = None
    tarball_file: str | None = None  # the tarball's file name
    tarball_sha256: str | None = None
    tarball_size: int | None = None
    config_digest: str | None = None
    config_size: int | None = None
    store_paths: list[StorePath] = field(default_factory=list)
    python: list[PythonDist] = field(default_factory=list)
    layers: list[Layer] | None = None  # None: the input does not say (a closure)
    references: dict[str, list[str]] = field(default_factory=dict)  # store path -> store paths

    @property
    def title(self) -> str:
        if self.image_name:
            return f"{self.image_name}:{self.image_tag}" if self.image_tag else self.image_name
        return self.source
