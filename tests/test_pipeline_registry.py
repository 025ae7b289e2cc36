"""`mlws image push` and `mlws image index` against a real registry on loopback: Debian's
docker-registry (the CNCF distribution registry), started as a plain process with its own config
in a temporary folder, on a free port. skopeo pulls the images back by digest."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from test_pipeline_images import build_image, make_store_path, python_package, run_mlws

REGISTRY_CONFIG = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    binary = shutil.which("docker-registry")
    if binary is None:
        raise AssertionError("docker-registry is required: apt-get install -y docker-registry (scripts/install-deps does)")
    folder = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = folder / "config.yml"
    config.write_text(REGISTRY_CONFIG.format(root=folder / "data", port=port))
    log = (folder / "registry.log").open("w")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"docker-registry did not start: {(folder / 'registry.log').read_text()}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("push")
    root = folder / "nix" / "store"
    libc = make_store_path(root, "glibc-2.40-66", {"lib/libc.so.6": b"\x7fELF libc"})
    tool = make_store_path(root, "hello-2.12.1", {"bin/hello": ("exec", b"#!hello\n")})
    numpy = python_package(root, "numpy", "2.1.3")
    return {
        "amd64": build_image(folder / "ml-workspace.amd64.tar.gz", "ml-workspace", [[libc], [tool, numpy]]),
        "arm64": build_image(folder / "ml-workspace.arm64.tar.gz", "ml-workspace", [[libc], [tool]], architecture="arm64"),
    }


def skopeo(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def pushed(tarball: Path, destination: str, tmp_path: Path) -> str:
    digest_file = tmp_path / f"{tarball.name}.digest"
    result = run_mlws("image", "push", "--insecure", "--digest-file", str(digest_file), str(tarball), destination)
    assert result.returncode == 0, result.stderr
    reference = result.stdout.strip()
    assert digest_file.read_text().strip() == reference
    return reference


def test_push_by_digest_and_pull_back_the_same_image(registry, tarballs, tmp_path):
    reference = pushed(tarballs["amd64"], f"{registry}/mlws/ml-workspace:0.1.0-amd64", tmp_path)
    repository, digest = reference.split("@")
    assert repository == f"{registry}/mlws/ml-workspace" and digest.startswith("sha256:")
    # The registry serves that digest, under the digest and under the tag.
    by_digest = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{reference}").stdout)
    by_tag = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{registry}/mlws/ml-workspace:0.1.0-amd64").stdout)
    assert by_digest["Digest"] == by_tag["Digest"] == digest
    # Pulled back by digest: the manifest bytes hash to the digest, the config is ours, byte for byte.
    pulled = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", f"docker://{reference}", f"dir:{pulled}")
    manifest_bytes = (pulled / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(manifest_bytes).hexdigest() == digest
    ours = json.loads(run_mlws("image", "inspect", "--json", str(tarballs["amd64"])).stdout)
    manifest = json.loads(manifest_bytes)
    assert manifest["config"]["digest"] == ours["config"]
    config = json.loads((pulled / manifest["config"]["digest"].split(":")[1]).read_bytes())
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in ours["layers"]]
    # Pushing the same tarball again gives the same digest: the reference is stable.
    again = pushed(tarballs["amd64"], f"{registry}/mlws/ml-workspace:again", tmp_path)
    assert again == reference


def test_index_joins_both_architectures_under_one_tag(registry, tarballs, tmp_path):
    references = {arch: pushed(tarball, f"{registry}/mlws/ml-workspace:0.1.0-{arch}", tmp_path) for arch, tarball in tarballs.items()}
    result = run_mlws("image", "index", "--insecure", f"{registry}/mlws/ml-workspace:0.1.0", *references.values())
    assert result.returncode == 0, result.stderr
    index_reference = result.stdout.strip()
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry}/mlws/ml-workspace:0.1.0").stdout
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == index_reference.split("@")[1]
    index = json.loads(raw)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert {m["digest"]: m["platform"]["architecture"] for m in index["manifests"]} == {
        references["amd64"].split("@")[1]: "amd64", references["arm64"].split("@")[1]: "arm64"}
    # A client on each architecture pulls its own image through the one tag.
    for arch, reference in references.items():
        pulled = tmp_path / f"pulled-{arch}"
        skopeo("copy", "--src-tls-verify=false", "--override-arch", arch, "--override-os", "linux",
               f"docker://{registry}/mlws/ml-workspace:0.1.0", f"dir:{pulled}")
        assert "sha256:" + hashlib.sha256((pulled / "manifest.json").read_bytes()).hexdigest() == reference.split("@")[1]


def test_bad_push_inputs_exit_2_and_upload_nothing(registry, tarballs, tmp_path):
    not_an_image = tmp_path / "notes.tar.gz"
    not_an_image.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    for args, expected in (
        ([str(not_an_image), f"{registry}/mlws/broken:1"], "truncated or not a tar archive"),
        ([str(tmp_path / "absent.tar.gz"), f"{registry}/mlws/broken:1"], "no such file"),
        ([str(tarballs["amd64"]), "ml-workspace:1"], "expected <registry host>/<name>"),
    ):
        result = run_mlws("image", "push", "--insecure", *args)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and expected in result.stderr, result.stderr
    with urllib.request.urlopen(f"http://{registry}/v2/_catalog", timeout=5) as response:
        assert "mlws/broken" not in json.load(response)["repositories"]
    # An index must name images by digest, of its own repository.
    result = run_mlws("image", "index", "--insecure", f"{registry}/mlws/ml-workspace:x", f"{registry}/mlws/ml-workspace:0.1.0-amd64")
    assert result.returncode == 2 and "by digest" in result.stderr, result.stderr
