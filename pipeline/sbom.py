"""CycloneDX SBOMs of images and closures, made and checked with cyclonedx-python-lib.

Components:
  * every store path: type library, name and version as Nix splits the store name, the SHA-256 of
    its NAR (the narHash `nix path-info` shows), bom-ref = the store path;
  * every Python distribution of the environment: its METADATA name and version, purl
    pkg:pypi/<name>@<version>, the store path it lives in as a property;
  * every locked flake input: its revision as version (purl pkg:github/... for GitHub inputs) and
    the narHash Nix checks it against.
The image itself is metadata.component (type container), with the tarball's SHA-256 and the
config and layer digests as properties, so a later diff can compare layers from two SBOMs.
Output is deterministic: the serial number derives from the subject and the timestamp is the
image's creation time, so one image always yields the same SBOM bytes.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

from .errors import PipelineError
from .inventory import Inventory, Layer, PythonDist, StorePath
from .lock import source_url
from .storepath import sha256_hex, split_name

SCHEMA = "1.6"
P_STORE_PATH = "nix:store-path"
P_NAR_SIZE = "nix:nar-size"
P_FLAKE_INPUT = "nix:flake-input"
P_LAYER = "mlws:layer"  # "<position> <digest> <size> <store path> ...": properties are a set, so the position keeps the order
P_KIND = "mlws:source-kind"
P_TARBALL_SIZE = "mlws:tarball-size"
P_CONFIG = "mlws:config-digest"
P_CONFIG_SIZE = "mlws:config-size"
P_FILE = "mlws:tarball-file"
P_ARCH = "mlws:architecture"
EPOCH = datetime(1970, 1, 1, 0, 0, 1, tzinfo=timezone.utc)


def _library():
    """cyclonedx-python-lib, imported on first use so the generator CLI works without it."""
    try:
        from cyclonedx import model
        from cyclonedx.model import bom, component
        from cyclonedx.output.json import JsonV1Dot6
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
        from packageurl import PackageURL
    except ImportError as missing:
        raise PipelineError(
            f"the SBOM commands need cyclonedx-python-lib with JSON validation ({missing}); install it with "
            "pip install 'cyclonedx-python-lib[json-validation]' (CI: pip install -r pipeline/requirements.txt)"
        ) from None
    return model, bom, component, JsonV1Dot6, SchemaVersion, JsonStrictValidator, PackageURL


def _created(inventory: Inventory) -> datetime:
    try:
        value = datetime.fromisoformat((inventory.created or "").replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    except ValueError:
        return EPOCH


def build_sbom(inventory: Inventory, lock_inputs: dict[str, dict] | None = None) -> str:
    """The SBOM as CycloneDX 1.6 JSON text, validated against the schema the library ships."""
    model, bom_mod, comp, Json16, SchemaVersion, Validator, PackageURL = _library()
    C, T = comp.Component, comp.ComponentType

    def sha(hex_digest: str | None):
        return [model.HashType(alg=model.HashAlgorithm.SHA_256, content=hex_digest)] if hex_digest else []

    def props(*pairs):
        return [model.Property(name=n, value=str(v)) for n, v in pairs if v is not None]

    subject_id = inventory.tarball_sha256 or ",".join(p.path for p in inventory.store_paths)
    subject_props = [(P_KIND, inventory.kind), (P_ARCH, inventory.architecture),
                     (P_TARBALL_SIZE, inventory.tarball_size), (P_CONFIG, inventory.config_digest),
                     (P_CONFIG_SIZE, inventory.config_size), (P_FILE, inventory.tarball_file)]
    for position, layer in enumerate(inventory.layers or []):
        subject_props.append((P_LAYER, " ".join([f"{position:04d}", layer.digest, str(layer.size), *layer.store_paths])))
    subject = C(
        type=T.CONTAINER if inventory.kind == "image" else T.APPLICATION,
        name=inventory.image_name or Path(inventory.source).name,
        version=inventory.image_tag or None,
        bom_ref="subject",
        hashes=sha(inventory.tarball_sha256),
        properties=props(*subject_props),
    )
    components = []
    for store_path in inventory.store_paths:
        components.append(C(
            type=T.LIBRARY, name=store_path.name, version=store_path.version or None,
            bom_ref=store_path.path, hashes=sha(store_path.nar_sha256),
            properties=props((P_STORE_PATH, store_path.path), (P_NAR_SIZE, store_path.nar_size)),
        ))
    for dist in inventory.python:
        components.append(C(
            type=T.LIBRARY, name=dist.name, version=dist.version,
            bom_ref=f"pypi:{dist.name}@{dist.version}:{dist.store_path}",
            purl=PackageURL(type="pypi", name=dist.name.lower().replace("_", "-"), version=dist.version),
            properties=props(("mlws:python-in", dist.store_path)),
        ))
    for name, locked in sorted((lock_inputs or {}).items()):
        purl = None
        if locked.get("type") == "github" and locked.get("owner") and locked.get("repo"):
            purl = PackageURL(type="github", namespace=locked["owner"], name=locked["repo"], version=locked.get("rev"))
        try:
            nar = sha256_hex(locked["narHash"]) if locked.get("narHash") else None
        except ValueError as problem:
            raise PipelineError(f"flake.lock: input {name}: narHash: {problem}") from None
        refs = [model.ExternalReference(type=model.ExternalReferenceType.VCS, url=model.XsUri(source_url(locked)))] if source_url(locked) else []
        components.append(C(
            type=T.LIBRARY, name=name, version=locked.get("rev"), bom_ref=f"flake-input:{name}",
            purl=purl, hashes=sha(nar), external_references=refs,
            properties=props((P_FLAKE_INPUT, name), ("nix:last-modified", locked.get("lastModified"))),
        ))
    tool = C(type=T.APPLICATION, name="mlws", version="0.1.0")
    bom = bom_mod.Bom(
        serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"mlws-sbom:{subject_id}"),
        metadata=bom_mod.BomMetaData(timestamp=_created(inventory), component=subject,
                                     tools=model.tool.ToolRepository(components=[tool])),
        components=components,
    )
    by_ref = {c.bom_ref.value: c for c in components}
    bom.register_dependency(subject, [c for c in components if c.bom_ref.value.startswith("/nix/store/")])
    for store_path, references in inventory.references.items():
        if store_path in by_ref:
            bom.register_dependency(by_ref[store_path], [by_ref[r] for r in references if r in by_ref])
    text = Json16(bom).output_as_string(indent=2)
    problem = validate_sbom_text(text)
    if problem:
        raise PipelineError(f"the SBOM made for {inventory.source} is not valid CycloneDX {SCHEMA}: {problem}")
    return text + "\n"


def validate_sbom_text(text: str) -> str | None:
    """None when `text` is valid CycloneDX 1.6 JSON, else the validator's message."""
    *_, SchemaVersion, Validator, _purl = _library()
    error = Validator(SchemaVersion.V1_6).validate_str(text)
    return None if error is None else str(error)


def read_sbom(path: Path) -> Inventory:
    """An SBOM this module wrote, back as an Inventory (for diffs against a previous release)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such file (expected a CycloneDX SBOM written by mlws image sbom)")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as problem:
        raise PipelineError(f"{path}: not JSON ({problem})") from None
    if not isinstance(data, dict) or data.get("bomFormat") != "CycloneDX":
        raise PipelineError(f"{path}: not a CycloneDX SBOM (no bomFormat: CycloneDX)")
    problem = validate_sbom_text(text)
    if problem:
        raise PipelineError(f"{path}: not valid CycloneDX {SCHEMA}: {problem}")
    subject = (data.get("metadata") or {}).get("component") or {}
    subject_props = [(p["name"], p["value"]) for p in subject.get("properties", [])]
    first = {n: v for n, v in reversed(subject_props)}
    inventory = Inventory(source=str(path), kind="sbom", image_name=subject.get("name"), image_tag=subject.get("version"))
    inventory.architecture = first.get(P_ARCH)
    inventory.config_digest = first.get(P_CONFIG)
    inventory.config_size = int(first[P_CONFIG_SIZE]) if P_CONFIG_SIZE in first else None
    inventory.tarball_file = first.get(P_FILE)
    inventory.tarball_size = int(first[P_TARBALL_SIZE]) if P_TARBALL_SIZE in first else None
    hashes = {h["alg"]: h["content"] for h in subject.get("hashes", [])}
    inventory.tarball_sha256 = hashes.get("SHA-256")
    layers = sorted(value.split(" ") for name, value in subject_props if name == P_LAYER)
    inventory.layers = [Layer(f[1], int(f[2]), tuple(f[3:])) for f in layers] if layers else None
    for component in data.get("components", []):
        cprops = {p["name"]: p["value"] for p in component.get("properties", [])}
        if P_STORE_PATH in cprops:
            store_path = cprops[P_STORE_PATH]
            name, version = split_name(store_path.rsplit("/", 1)[1])
            nar = {h["alg"]: h["content"] for h in component.get("hashes", [])}.get("SHA-256")
            size = int(cprops[P_NAR_SIZE]) if P_NAR_SIZE in cprops else None
            inventory.store_paths.append(StorePath(store_path, name, version, nar, size))
        elif str(component.get("purl", "")).startswith("pkg:pypi/"):
            inventory.python.append(PythonDist(component["name"], component.get("version", ""), cprops.get("mlws:python-in", "")))
    return inventory
