"""Reading the docker-archive tarball that `pkgs.dockerTools.buildLayeredImage` writes.

The layout, as read in nixpkgs' source (pkgs/build-support/docker/stream_layered_image.py at
commit 0137840114d1444c766db37c01e96258e4edf5fb, and default.nix at 34b7a306c35b, whose
buildLayeredImage is `${streamLayeredImage args} | pigz -nT > $out`, the newest versions the search
tool stores; the pinned 26.05 adds a `compressor` argument, "gz" by default, "zstd" or "none",
per ../shared/reference/nixpkgs-facts.md):

  * one outer tar, gzip-compressed by default, holding in this order
      <sha256>/layer.tar   one per layer: an uncompressed tar; <sha256> is its own SHA-256;
      <sha256>.json        the image configuration (architecture, os, config, created,
                           rootfs.diff_ids = ["sha256:<layer sha256>", ...], history);
      manifest.json        [{"Config": "<sha256>.json", "RepoTags": ["name:tag"],
                             "Layers": ["<sha256>/layer.tar", ...]}]
  * a store layer starts with the directories /nix and /nix/store, then every file of each of its
    store paths under its absolute name (/nix/store/<hash>-<name>/...), hard links stored as
    regular files, sorted; the last layer is the customisation layer (the symlinks to the
    contents, extraCommands, fakeRootCommands), which holds no store path.

The archive is read in one streaming pass (manifest.json comes last), so a multi-gigabyte image
is never unpacked or seeked in: each layer's SHA-256 and each store path's NAR hash are computed
as the bytes go by, and checked against the names and the configuration.
"""

from __future__ import annotations

import email.parser
import gzip
import hashlib
import json
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .errors import PipelineError
from .inventory import Inventory, Layer, PythonDist, StorePath
from .nar import NarHasher
from .storepath import STORE_DIR, is_store_basename, split_name

_METADATA = re.compile(r"^lib/python[0-9.]+/site-packages/[^/]+\.dist-info/METADATA$")
_MAX_JSON = 64 << 20  # a configuration or manifest larger than this is not one


class _HashingReader:
    """A read-only stream that hashes and counts every byte read through it."""

    def __init__(self, raw: IO[bytes]):
        self._raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


@dataclass
class _LayerScan:
    sha256: str
    size: int
    store_paths: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (nar hex, nar size)
    python: list[PythonDist] = field(default_factory=list)


def _member_path(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _scan_layer(stream: IO[bytes], where: str) -> _LayerScan:
    reader = _HashingReader(stream)
    store_paths: dict[str, tuple[str, int]] = {}
    python: list[PythonDist] = []
    current: tuple[str, NarHasher] | None = None

    def finish() -> None:
        if current is not None:
            path, hasher = current
            store_paths[path] = (hasher.hexdigest(), hasher.size)

    try:
        with tarfile.open(fileobj=reader, mode="r|") as layer:
            for member in layer:
                parts = tuple(p for p in _member_path(member.name).split("/") if p)
                if len(parts) < 3 or parts[:2] != ("nix", "store") or not is_store_basename(parts[2]):
                    continue  # /nix, /nix/store, or a customisation-layer file
                path = f"{STORE_DIR}/{parts[2]}"
                if current is None or current[0] != path:
                    finish()
                    if path in store_paths:
                        raise PipelineError(f"{where}: {path} appears twice in one layer")
                    current = (path, NarHasher())
                content = layer.extractfile(member) if member.isfile() else None
                relative = "/".join(parts[3:])
                if content is not None and _METADATA.match(relative) and member.size < (1 << 20):
                    data = content.read()
                    python.append(_dist_from_metadata(data, path, where))
                    content = _Replay(data)
                try:
                    current[1].add(parts[3:], member, content)
                except ValueError as problem:
                    raise PipelineError(f"{where}: {path}: {problem}") from None
            finish()
        reader.drain()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as problem:
        raise PipelineError(f"{where}: not a readable layer tar ({problem})") from None
    return _LayerScan(reader.sha.hexdigest(), reader.size, store_paths, python)


class _Replay:
    def __init__(self, data: bytes):
        self._data, self._at = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._at + size
        chunk, self._at = self._data[self._at:end], min(end, len(self._data))
        return chunk


def _dist_from_metadata(data: bytes, store_path: str, where: str) -> PythonDist:
    message = email.parser.BytesHeaderParser().parsebytes(data)
    name, version = message.get("Name"), message.get("Version")
    if not name or not version:
        raise PipelineError(f"{where}: {store_path}: a METADATA file without Name or Version")
    return PythonDist(name=str(name).strip(), version=str(version).strip(), store_path=store_path)


def _decompressed(path: Path, raw: IO[bytes], reader: _HashingReader) -> IO[bytes]:
    """The outer tar stream: gzip (buildLayeredImage's default compressor) or none."""
    magic = raw.read(4)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=reader, mode="rb")
    if magic == b"\x28\xb5\x2f\xfd":
        raise PipelineError(
            f"{path}: a zstd-compressed image (buildLayeredImage compressor = \"zstd\"); decompress it "
            "first (zstd -d) or build with the default gzip compressor"
        )
    return reader


def read_image(path: Path) -> Inventory:
    """Read and check one docker-archive tarball (gzip-compressed or plain)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such file (expected an image tarball from nix build)")
    layers: dict[str, _LayerScan] = {}
    small: dict[str, bytes] = {}
    with path.open("rb") as raw_file:
        outer_reader = _HashingReader(raw_file)
        try:
            stream = _decompressed(path, raw_file, outer_reader)
            with tarfile.open(fileobj=stream, mode="r|") as outer:
                for member in outer:
                    name = _member_path(member.name)
                    if not member.isfile():
                        continue
                    handle = outer.extractfile(member)
                    if name.endswith(".tar"):
                        layers[name] = _scan_layer(handle, f"{path}: layer {name}")
                    elif name.endswith(".json") and member.size <= _MAX_JSON:
                        small[name] = handle.read()
            outer_reader.drain()
        except PipelineError:
            raise
        except (tarfile.TarError, EOFError, OSError, zlib.error) as problem:
            raise PipelineError(f"{path}: truncated or not a tar archive ({problem}); expected the "
                                "docker-archive tarball nix build writes for an image") from None
    return _inventory(path, layers, small, outer_reader)


def _json(path: Path, small: dict[str, bytes], name: str, what: str):
    if name not in small:
        raise PipelineError(f"{path}: no {name} in the archive: not a docker-archive image ({what})")
    try:
        return json.loads(small[name])
    except (ValueError, UnicodeDecodeError) as problem:
        raise PipelineError(f"{path}: {name} is not valid JSON ({problem})") from None


def _inventory(path: Path, layers: dict[str, _LayerScan], small: dict[str, bytes], outer: _HashingReader) -> Inventory:
    manifest = _json(path, small, "manifest.json", "expected manifest.json at the top of the tarball")
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        raise PipelineError(f"{path}: manifest.json must be a list of exactly one image, found {type(manifest).__name__}"
                            f"{' of ' + str(len(manifest)) if isinstance(manifest, list) else ''}")
    entry = manifest[0]
    config_name, layer_names = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list):
        raise PipelineError(f"{path}: manifest.json: expected keys Config (a file name) and Layers (a list)")
    config = _json(path, small, _member_path(config_name), f"manifest.json names {config_name} as its Config")
    config_bytes = small[_member_path(config_name)]
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") if isinstance(config, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layer_names):
        raise PipelineError(f"{path}: {config_name}: rootfs.diff_ids must list one digest per layer "
                            f"({len(layer_names)} layers in manifest.json)")
    inventory = Inventory(source=str(path), kind="image")
    tags = entry.get("RepoTags") or []
    if tags and isinstance(tags[0], str):
        name, _, tag = tags[0].rpartition(":")
        inventory.image_name, inventory.image_tag = (name, tag) if name else (tags[0], None)
    inventory.architecture = config.get("architecture")
    inventory.created = config.get("created")
    inventory.tarball_file = path.name
    inventory.tarball_sha256 = outer.sha.hexdigest()
    inventory.tarball_size = outer.size
    inventory.config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    inventory.config_size = len(config_bytes)
    inventory.layers = []
    seen: set[str] = set()
    for layer_name, diff_id in zip(layer_names, diff_ids):
        scan = layers.get(_member_path(str(layer_name)))
        if scan is None:
            raise PipelineError(f"{path}: manifest.json names layer {layer_name}, which the archive lacks")
        if diff_id != f"sha256:{scan.sha256}":
            raise PipelineError(f"{path}: layer {layer_name} has SHA-256 {scan.sha256}, but the "
                                f"configuration's diff_id is {diff_id}: the archive is corrupt")
        inventory.layers.append(Layer(f"sha256:{scan.sha256}", scan.size, tuple(scan.store_paths)))
        for store_path, (nar_hex, nar_size) in scan.store_paths.items():
            if store_path in seen:
                continue
            seen.add(store_path)
            name, version = split_name(store_path.rsplit("/", 1)[1])
            inventory.store_paths.append(StorePath(store_path, name, version, nar_hex, nar_size))
        inventory.python.extend(scan.python)
    inventory.store_paths.sort(key=lambda p: p.path)
    inventory.python.sort(key=lambda d: (d.name.lower(), d.version, d.store_path))
    return inventory
