"""`mlws image inspect|sbom|diff|manifest` on image tarballs the tests build in the layout
`dockerTools.buildLayeredImage` writes, checked against real tools: skopeo (digests), Nix (NAR
hashes) and the CycloneDX schema (through cyclonedx-python-lib's own validator).

The builder below follows nixpkgs' pkgs/build-support/docker/stream_layered_image.py (commit
0137840114d1, read for pipeline/archive.py): one uncompressed tar per layer named
<sha256>/layer.tar holding /nix, /nix/store and each store path's files under absolute names,
sorted, with fixed mtime and owner; a customisation layer without store paths; the config
<sha256>.json with rootfs.diff_ids and history; manifest.json last; the whole gzip-compressed
(buildLayeredImage pipes the stream through `pigz -nT`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NIX = ["nix", "--extra-experimental-features", "nix-command flakes"]
MTIME = 1  # "1970-01-01T00:00:01Z", the created/mtime buildLayeredImage uses by default
STORE_HASHES = itertools.count(1)


def store_basename(name: str, salt: str = "") -> str:
    """A well-formed store name whose hash part is derived from the name (Nix base32 letters)."""
    alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
    digest = hashlib.sha256(f"{salt}{name}".encode()).digest()
    return "".join(alphabet[b % 32] for b in digest[:32]) + "-" + name


def make_store_path(root: Path, name: str, files: dict[str, object], salt: str = "") -> Path:
    """Write a store path's files on disk: bytes (a file), ("exec", bytes) or ("link", target)."""
    path = root / store_basename(name, salt)
    path.mkdir(parents=True)
    for relative, content in sorted(files.items()):
        target = path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple) and content[0] == "link":
            target.symlink_to(content[1])
        elif isinstance(content, tuple) and content[0] == "exec":
            target.write_bytes(content[1])
            target.chmod(0o755)
        else:
            target.write_bytes(content)
            target.chmod(0o644)
    return path


def make_store_file(root: Path, name: str, content: bytes) -> Path:
    """A store path that is a single file (what writeText makes)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / store_basename(name)
    path.write_bytes(content)
    path.chmod(0o444)
    return path


def python_package(root: Path, dist: str, version: str, salt: str = "") -> Path:
    metadata = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\nSummary: test\n\n".encode()
    module = dist.lower().replace("-", "_")
    return make_store_path(root, f"python3.12-{dist.lower()}-{version}", {
        f"lib/python3.12/site-packages/{module}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"lib/python3.12/site-packages/{module}-{version}.dist-info/METADATA": metadata,
        f"lib/python3.12/site-packages/{module}-{version}.dist-info/RECORD": b"",
    }, salt)


def _layer_bytes(store_paths: list[Path]) -> bytes:
    buffer = io.BytesIO()

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "root", "root"
        return info

    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for folder in ("/nix", "/nix/store"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            layer.addfile(owned(info))
        for path in store_paths:
            for file in sorted(itertools.chain([path], path.rglob("*") if path.is_dir() and not path.is_symlink() else [])):
                info = layer.gettarinfo(str(file), arcname="/nix/store/" + str(file.relative_to(path.parent)))
                info.name = "/nix/store/" + str(file.relative_to(path.parent))
                owned(info)
                if info.isfile():
                    with open(file, "rb") as handle:
                        layer.addfile(info, handle)
                else:
                    layer.addfile(info)
    return buffer.getvalue()


def _customisation_bytes(store_paths: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as layer:
        for folder in ("./", "./bin", "./tmp"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            layer.addfile(info)
        for path in store_paths:
            info = tarfile.TarInfo(f"./bin/{path.name[33:]}")
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, f"/nix/store/{path.name}", MTIME
            layer.addfile(info)
    return buffer.getvalue()


def build_image(target: Path, name: str, layers: list[list[Path]], architecture: str = "amd64", tag: str = "0.1.0",
                compress: bool = True) -> Path:
    """Write a docker-archive tarball: one layer per list of store paths, plus customisation."""
    blobs = [_layer_bytes(paths) for paths in layers]
    blobs.append(_customisation_bytes([p for paths in layers for p in paths]))
    sums = [hashlib.sha256(blob).hexdigest() for blob in blobs]
    config = json.dumps({
        "created": "1970-01-01T00:00:01+00:00", "architecture": architecture, "os": "linux",
        "config": {"User": "1000:1000", "Entrypoint": ["/bin/mlws", "start"]},
        "rootfs": {"diff_ids": [f"sha256:{s}" for s in sums], "type": "layers"},
        "history": [{"created": "1970-01-01T00:00:01+00:00", "comment": "store paths: [...]"} for _ in sums],
    }, indent=4).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [f"{name}:{tag}"],
                            "Layers": [f"{s}/layer.tar" for s in sums]}], indent=4).encode()
    outer = io.BytesIO()
    with tarfile.open(fileobj=outer, mode="w") as archive:
        for member, data in [*((f"{s}/layer.tar", b) for s, b in zip(sums, blobs)), (config_name, config), ("manifest.json", manifest)]:
            info = tarfile.TarInfo(member)
            info.size, info.mtime = len(data), MTIME
            archive.addfile(info, io.BytesIO(data))
    target.parent.mkdir(parents=True, exist_ok=True)
    data = outer.getvalue()
    target.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return target


def run_mlws(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "generator", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def mlws_json(*args: str):
    result = run_mlws(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, Path]:
    """Store paths on disk, shared by the images of this module."""
    root = tmp_path_factory.mktemp("store") / "nix" / "store"
    return {
        "glibc": make_store_path(root, "glibc-2.40-66", {"lib/libc.so.6": b"\x7fELF libc", "lib/ld.so": ("link", "libc.so.6")}),
        "bash": make_store_path(root, "bash-5.2p37", {"bin/bash": ("exec", b"#!bash\n" * 100), "bin/sh": ("link", "bash")}),
        "python": make_store_path(root, "python3-3.12.8", {"bin/python3.12": ("exec", b"python"), "lib/python3.12/os.py": b"# os\n"}),
        "numpy": python_package(root, "numpy", "2.1.3"),
        "numpy-new": python_package(root, "numpy", "2.2.0"),
        "six": python_package(root, "six", "1.16.0"),
        "nss": make_store_path(root, "fake-nss", {"etc/passwd": b"root:x:0:0::/:/bin/sh\n"}),
        "manifest": make_store_file(root, "mlws-manifest.json", b'{"schema": 1}\n'),
    }


@pytest.fixture(scope="module")
def images(store, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    base = [[store["glibc"]], [store["bash"], store["python"]], [store["nss"], store["manifest"]]]
    return {
        "old": build_image(folder / "ml-workspace.amd64.tar.gz", "ml-workspace", base + [[store["numpy"], store["six"]]]),
        "new": build_image(folder / "new" / "ml-workspace.amd64.tar.gz", "ml-workspace", base + [[store["numpy-new"], store["six"]]]),
        "arm": build_image(folder / "ml-workspace.arm64.tar.gz", "ml-workspace", base, architecture="arm64"),
    }


def skopeo_inspect(*args: str):
    result = subprocess.run(["skopeo", "inspect", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def plain_copy(tarball: Path, folder: Path) -> Path:
    """The archive decompressed: Debian's skopeo 1.9 misreads gzip-compressed docker-archives
    ("unexpected EOF"), so skopeo is shown the plain tar, as `mlws image push` does."""
    plain = folder / (tarball.name.removesuffix(".gz"))
    plain.write_bytes(gzip.decompress(tarball.read_bytes()))
    return plain


def test_inspect_reads_the_layout_and_skopeo_agrees_on_every_digest(images, tmp_path):
    for tarball in images.values():
        ours = mlws_json("image", "inspect", "--json", str(tarball))
        assert ours["sha256"] == hashlib.sha256(tarball.read_bytes()).hexdigest()
        assert ours["size"] == tarball.stat().st_size
        (tmp_path / tarball.parent.name).mkdir(exist_ok=True)
        plain = plain_copy(tarball, tmp_path / tarball.parent.name)
        plain_ours = mlws_json("image", "inspect", "--json", str(plain))
        assert plain_ours["layers"] == ours["layers"] and plain_ours["config"] == ours["config"]
        tarball = plain
        raw = skopeo_inspect("--raw", f"docker-archive:{tarball}")  # the manifest skopeo would push
        assert raw["config"]["digest"] == ours["config"]
        assert [layer["digest"] for layer in raw["layers"]] == [layer["digest"] for layer in ours["layers"]]
        assert [layer["size"] for layer in raw["layers"]] == [layer["size"] for layer in ours["layers"]]
        config = skopeo_inspect("--config", f"docker-archive:{tarball}")
        assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in ours["layers"]]
        assert skopeo_inspect(f"docker-archive:{tarball}")["Architecture"] == ours["architecture"]
    arm = mlws_json("image", "inspect", "--json", str(images["arm"]))
    assert (arm["image"], arm["tag"], arm["architecture"]) == ("ml-workspace", "0.1.0", "arm64")
    # The last layer is the customisation layer: no store paths; the others hold theirs.
    assert arm["layers"][-1]["store_paths"] == [] and len(arm["layers"]) == 4
    assert [len(layer["store_paths"]) for layer in arm["layers"][:-1]] == [1, 2, 2]


def test_an_uncompressed_archive_reads_the_same(store, tmp_path):
    plain = build_image(tmp_path / "plain.tar", "plain", [[store["bash"]]], compress=False)
    gzipped = build_image(tmp_path / "gz.tar.gz", "plain", [[store["bash"]]])
    first, second = (mlws_json("image", "inspect", "--json", str(p)) for p in (plain, gzipped))
    assert first["layers"] == second["layers"] and first["config"] == second["config"]
    assert first["sha256"] != second["sha256"]


def nix_hash_path(path: Path) -> str:
    result = subprocess.run([*NIX, "hash", "path", "--type", "sha256", "--base16", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_sbom_components_carry_the_nar_hash_nix_computes(images, store, tmp_path):
    sbom_file = tmp_path / "old.cdx.json"
    result = run_mlws("image", "sbom", str(images["old"]), "--lock", str(REPO / "flake.lock"), "-o", str(sbom_file))
    assert result.returncode == 0, result.stderr
    sbom = json.loads(sbom_file.read_text())
    by_path = {next(p["value"] for p in c["properties"] if p["name"] == "nix:store-path"): c
               for c in sbom["components"] if any(p["name"] == "nix:store-path" for p in c.get("properties", []))}
    expected = {f"/nix/store/{store[k].name}": store[k] for k in ("glibc", "bash", "python", "numpy", "six", "nss", "manifest")}
    assert set(by_path) == set(expected)
    for path, on_disk in expected.items():
        component = by_path[path]
        assert component["hashes"] == [{"alg": "SHA-256", "content": nix_hash_path(on_disk)}], path
    assert (by_path[f"/nix/store/{store['bash'].name}"]["name"], by_path[f"/nix/store/{store['bash'].name}"]["version"]) == ("bash", "5.2p37")
    assert by_path[f"/nix/store/{store['numpy'].name}"]["name"] == "python3.12-numpy"


def test_sbom_is_valid_cyclonedx_with_pypi_purls_and_the_locked_inputs(images, tmp_path):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    result = run_mlws("image", "sbom", str(images["old"]), "--lock", str(REPO / "flake.lock"))
    assert result.returncode == 0, result.stderr
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(result.stdout) is None
    sbom = json.loads(result.stdout)
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.6"
    assert sbom["metadata"]["component"]["type"] == "container"
    assert sbom["metadata"]["component"]["hashes"][0]["content"] == hashlib.sha256(images["old"].read_bytes()).hexdigest()
    purls = sorted(c["purl"] for c in sbom["components"] if c.get("purl", "").startswith("pkg:pypi/"))
    assert purls == ["pkg:pypi/numpy@2.1.3", "pkg:pypi/six@1.16.0"]
    lock = json.loads((REPO / "flake.lock").read_text())
    inputs = {c["name"]: c for c in sbom["components"] if any(p["name"] == "nix:flake-input" for p in c.get("properties", []))}
    assert set(inputs) == set(lock["nodes"]) - {lock["root"]}
    for name, component in inputs.items():
        assert component["version"] == lock["nodes"][name]["locked"]["rev"]
    nixpkgs = lock["nodes"]["nixpkgs"]["locked"]
    # The purl spec makes GitHub names lower case.
    assert inputs["nixpkgs"]["purl"] == f"pkg:github/{nixpkgs['owner'].lower()}/{nixpkgs['repo']}@{nixpkgs['rev']}"
    # One image, one SBOM: the same bytes every time (fixed serial number and timestamp).
    again = run_mlws("image", "sbom", str(images["old"]), "--lock", str(REPO / "flake.lock"))
    assert again.stdout == result.stdout


def test_diff_of_two_images_differing_in_one_package_names_exactly_it(images, tmp_path):
    result = mlws_json("image", "diff", "--format", "json", str(images["old"]), str(images["new"]))
    assert result["packages"]["changed"] == [{"name": "python3.12-numpy", "old": ["2.1.3"], "new": ["2.2.0"]}]
    assert result["packages"]["added"] == result["packages"]["removed"] == result["packages"]["rebuilt"] == []
    assert result["python"]["changed"] == [{"name": "numpy", "old": ["2.1.3"], "new": ["2.2.0"]}]
    assert result["python"]["added"] == result["python"]["removed"] == []
    # Layers 1-3 are byte-identical; the numpy layer and the customisation layer (links) differ.
    assert result["layers"]["reused"] == 3 and len(result["layers"]["added"]) == 2 and len(result["layers"]["removed"]) == 2
    assert result["size"]["change"] == images["new"].stat().st_size - images["old"].stat().st_size
    text = run_mlws("image", "diff", str(images["old"]), str(images["new"]))
    assert text.returncode == 0, text.stderr
    assert "changed  python3.12-numpy 2.1.3 -> 2.2.0" in text.stdout
    assert "changed  numpy 2.1.3 -> 2.2.0" in text.stdout
    assert "layers: 3 of 5 reused" in text.stdout
    markdown = run_mlws("image", "diff", "--format", "markdown", str(images["old"]), str(images["new"]))
    assert "\n**packages (Nix store paths)**\n\n- changed  python3.12-numpy 2.1.3 -> 2.2.0\n" in markdown.stdout
    # The same diff from the two images' SBOMs (how release notes compare with the last release).
    sboms = []
    for key in ("old", "new"):
        sboms.append(tmp_path / f"{key}.cdx.json")
        assert run_mlws("image", "sbom", str(images[key]), "-o", str(sboms[-1])).returncode == 0
    from_sboms = mlws_json("image", "diff", "--format", "json", *map(str, sboms))
    assert from_sboms["packages"] == result["packages"] and from_sboms["python"] == result["python"]
    assert from_sboms["layers"]["reused"] == 3 and from_sboms["size"] == result["size"]
    same = mlws_json("image", "diff", "--format", "json", str(images["old"]), str(images["old"]))
    assert same["identical"] and same["packages"]["changed"] == [] and same["layers"]["added"] == []


def test_release_manifest_from_tarballs_and_from_sboms(images, tmp_path):
    sbom_dir = tmp_path / "sboms"
    for key in ("old", "arm"):
        out = sbom_dir / images[key].name.replace(".tar.gz", ".cdx.json")
        assert run_mlws("image", "sbom", str(images[key]), "-o", str(out)).returncode == 0
    manifest = mlws_json("image", "manifest", str(images["old"]), str(images["arm"]), "--sbom-dir", str(sbom_dir),
                         "--lock", str(REPO / "flake.lock"))
    lock = json.loads((REPO / "flake.lock").read_text())
    assert manifest["flake_lock"]["nixpkgs"]["rev"] == lock["nodes"]["nixpkgs"]["locked"]["rev"]
    assert set(manifest["flake_lock"]) == set(lock["nodes"]) - {lock["root"]}
    for entry, key in zip(manifest["images"], ("old", "arm")):
        inspected = mlws_json("image", "inspect", "--json", str(images[key]))
        assert entry["file"] == images[key].name
        assert entry["sha256"] == inspected["sha256"] and entry["size"] == inspected["size"]
        assert entry["config"]["digest"] == inspected["config"]
        assert entry["layers"] == [{"digest": l["digest"], "size": l["size"]} for l in inspected["layers"]]
        sbom = sbom_dir / images[key].name.replace(".tar.gz", ".cdx.json")
        assert entry["sbom"] == {"file": sbom.name, "sha256": hashlib.sha256(sbom.read_bytes()).hexdigest()}
    from_sboms = mlws_json("image", "manifest", *sorted(map(str, sbom_dir.iterdir()))[::-1], "--lock", str(REPO / "flake.lock"))
    by_file = {e["file"]: e for e in from_sboms["images"]}
    for entry in manifest["images"]:
        assert by_file[entry["file"]] == entry


# ---- bad input: a clear message, exit 2, no traceback, no output file -----------------------------


def _truncated(images, tmp_path) -> Path:
    data = images["old"].read_bytes()
    path = tmp_path / "truncated.tar.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def _not_an_image(images, tmp_path) -> Path:
    path = tmp_path / "source.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        archive.add(REPO / "flake.nix", arcname="flake.nix")
    return path


def _corrupt_layer(images, tmp_path) -> Path:
    """A layer whose bytes no longer match the digest the configuration records."""
    data = bytearray(gzip.decompress(images["old"].read_bytes()))
    marker = data.find(b"#!bash")
    data[marker] = ord("X")
    path = tmp_path / "corrupt.tar.gz"
    path.write_bytes(gzip.compress(bytes(data), mtime=0))
    return path


def _text_file(images, tmp_path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not an image\n")
    return path


BAD_INPUTS = {
    "missing": (lambda images, tmp_path: tmp_path / "absent.tar.gz", "no such file"),
    "truncated": (_truncated, "truncated"),
    "not-an-image": (_not_an_image, "no manifest.json"),
    "corrupt-layer": (_corrupt_layer, "the archive is corrupt"),
    "text": (_text_file, "not a tar archive"),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
@pytest.mark.parametrize("command", ["sbom", "diff", "manifest", "inspect"])
def test_bad_input_gives_a_clear_error_and_writes_nothing(kind, command, images, tmp_path):
    make, expected = BAD_INPUTS[kind]
    bad = make(images, tmp_path)
    output = tmp_path / "out" / "result.json"
    args = {
        "sbom": ["sbom", str(bad), "-o", str(output)],
        "diff": ["diff", str(images["old"]), str(bad), "-o", str(output)],
        "manifest": ["manifest", str(bad), "-o", str(output)],
        "inspect": ["inspect", str(bad)],
    }[command]
    result = run_mlws("image", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and str(bad) in error_lines[0] and expected in error_lines[0], result.stderr
    assert not output.exists() and not (output.parent.exists() and any(output.parent.iterdir()))
