"""`mlws image sbom|diff` on `nix path-info --recursive --json` output from a real Nix store: a
chroot store in a temporary folder (`nix --store DIR`), filled with `nix store add-path`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from test_pipeline_images import NIX, make_store_path, python_package, run_mlws


@pytest.fixture(scope="module")
def chroot_store(tmp_path_factory):
    base = tmp_path_factory.mktemp("closure")
    env = dict(os.environ, HOME=str(base / "home"), XDG_CACHE_HOME=str(base / "home" / ".cache"))
    store = base / "store"
    sources = base / "src" / "nix" / "store"
    added = {}
    for key, path in {
        "bash": make_store_path(sources, "bash-5.2p37", {"bin/bash": ("exec", b"#!bash\n"), "bin/sh": ("link", "bash")}),
        "numpy": python_package(sources, "numpy", "2.1.3"),
    }.items():
        name = path.name[33:]
        result = subprocess.run([*NIX, "store", "add-path", "--store", str(store), "--name", name, str(path)],
                                env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        added[key] = result.stdout.strip()
    info = subprocess.run([*NIX, "path-info", "--store", str(store), "--recursive", "--json", *added.values()],
                          env=env, capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    closure = base / "closure.json"
    closure.write_text(info.stdout)
    return store, closure, added, env


def to_base16(nar_hash: str, env: dict) -> str:
    result = subprocess.run([*NIX, "hash", "to-base16", "--type", "sha256", nar_hash], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def components_by_path(sbom: dict) -> dict[str, dict]:
    found = {}
    for component in sbom["components"]:
        for prop in component.get("properties", []):
            if prop["name"] == "nix:store-path":
                found[prop["value"]] = component
    return found


def test_sbom_from_a_closure_has_every_path_with_its_nar_hash(chroot_store):
    store, closure, added, env = chroot_store
    result = run_mlws("image", "sbom", str(closure), "--store-root", str(store))
    assert result.returncode == 0, result.stderr
    sbom = json.loads(result.stdout)
    info = {entry["path"]: entry for entry in json.loads(closure.read_text())}
    by_path = components_by_path(sbom)
    assert set(by_path) == set(info) == set(added.values())
    for path, component in by_path.items():
        assert component["hashes"] == [{"alg": "SHA-256", "content": to_base16(info[path]["narHash"], env)}]
        assert {"name": "nix:nar-size", "value": str(info[path]["narSize"])} in component["properties"]
    assert (by_path[added["bash"]]["name"], by_path[added["bash"]]["version"]) == ("bash", "5.2p37")
    # The distribution is read from the store path's own site-packages in the chroot store.
    assert [c["purl"] for c in sbom["components"] if c.get("purl", "").startswith("pkg:pypi/")] == ["pkg:pypi/numpy@2.1.3"]
    assert sbom["metadata"]["component"]["type"] == "application"


def test_both_path_info_formats_and_hash_encodings_read_alike(chroot_store, tmp_path):
    """Nix 2.8-2.18 print a list, newer Nix an object keyed by path; hashes come as SRI or nix32."""
    store, closure, added, env = chroot_store
    entries = json.loads(closure.read_text())
    nix32 = []
    for entry in entries:
        result = subprocess.run([*NIX, "hash", "to-base32", "--type", "sha256", entry["narHash"]], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        nix32.append({**entry, "narHash": "sha256:" + result.stdout.strip()})
    as_object = {entry.pop("path"): entry for entry in json.loads(closure.read_text())}
    variants = {"list-nix32.json": nix32, "object.json": as_object}
    reference = components_by_path(json.loads(run_mlws("image", "sbom", str(closure), "--store-root", str(store)).stdout))
    for name, data in variants.items():
        (tmp_path / name).write_text(json.dumps(data))
        result = run_mlws("image", "sbom", str(tmp_path / name), "--store-root", str(store))
        assert result.returncode == 0, result.stderr
        assert components_by_path(json.loads(result.stdout)) == reference, name


def test_diff_of_closures_and_a_bad_closure(chroot_store, tmp_path):
    store, closure, added, env = chroot_store
    entries = json.loads(closure.read_text())
    smaller = tmp_path / "smaller.json"
    smaller.write_text(json.dumps([e for e in entries if e["path"] != added["numpy"]]))
    result = run_mlws("image", "diff", "--format", "json", "--store-root", str(store), str(smaller), str(closure))
    assert result.returncode == 0, result.stderr
    changes = json.loads(result.stdout)
    assert changes["packages"]["added"] == [{"name": "python3.12-numpy", "versions": ["2.1.3"]}]
    assert changes["python"]["added"] == [{"name": "numpy", "versions": ["2.1.3"]}]
    assert changes["layers"] is None and changes["packages"]["changed"] == changes["packages"]["removed"] == []
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"path": "/tmp/not-a-store-path", "narHash": "sha256-AAAA"}]))
    output = tmp_path / "sbom.json"
    result = run_mlws("image", "sbom", str(bad), "-o", str(output))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "entry 1: 'path' must be a store path" in result.stderr and not output.exists()
