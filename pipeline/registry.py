"""Pushing images by digest, and joining per-architecture images into one multi-arch tag.

Pushing uses skopeo (`skopeo copy docker-archive:<tarball> docker://<repo>:<tag>`, with
--digestfile for the digest the registry stored); the result is printed as <repo>@<digest>, the
reference signatures and attestations are made for. skopeo cannot write an image index, so the
multi-arch tag is made here with the registry HTTP API (OCI distribution spec: GET/PUT
/v2/<name>/manifests/<reference>), with the token flow registries such as ghcr.io use
(a 401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .errors import PipelineError

MANIFEST_TYPES = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
]
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def split_reference(reference: str) -> tuple[str, str, str]:
    """'host:5000/a/b@sha256:..' or 'host/a/b:tag' -> (host, 'a/b', reference)."""
    if "@" in reference:
        repository, ref = reference.split("@", 1)
    else:
        repository, _, ref = reference.rpartition(":") if ":" in reference.rsplit("/", 1)[-1] else (reference, "", "latest")
    host, _, name = repository.partition("/")
    if not name or ("." not in host and ":" not in host and host != "localhost"):
        raise PipelineError(f"{reference!r}: expected <registry host>/<name>[:tag|@digest], e.g. ghcr.io/owner/ml-workspace")
    return host, name, ref


def _uncompressed(tarball: Path, scratch: Path) -> Path:
    """The archive as a plain tar. Why: skopeo 1.9 (Debian bookworm) misreads gzip-compressed
    docker-archive files ("loading tar component manifest.json: unexpected EOF", tested here), and
    every skopeo reads a plain tar. The copy goes to TMPDIR (a `result` link points into the
    read-only store)."""
    with Path(tarball).open("rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            return Path(tarball)
        handle.seek(0)
        plain = scratch / "image.tar"
        with gzip.GzipFile(fileobj=handle) as source, plain.open("wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
    return plain


def push(tarball: Path, destination: str, tls_verify: bool = True, authfile: Path | None = None) -> str:
    """Push one tarball to `destination` (<repo>:<tag>); return <repo>@<digest>."""
    if not Path(tarball).is_file():
        raise PipelineError(f"{tarball}: no such file (expected an image tarball)")
    host, name, _ = split_reference(destination)
    with tempfile.TemporaryDirectory(prefix="mlws-push-") as scratch:
        tarball = _uncompressed(tarball, Path(scratch))
        digest_file = Path(scratch) / "digest"
        command = ["skopeo", "copy", "--quiet", f"--digestfile={digest_file}", f"--dest-tls-verify={str(tls_verify).lower()}"]
        if authfile is not None:
            command.append(f"--dest-authfile={authfile}")
        command += [f"docker-archive:{tarball}", f"docker://{destination}"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        except FileNotFoundError:
            raise PipelineError("skopeo is not on PATH (Debian/Ubuntu: apt-get install skopeo)") from None
        if result.returncode != 0:
            raise PipelineError(f"skopeo copy to {destination} failed ({result.returncode}): {result.stderr.strip()}")
        digest = digest_file.read_text().strip()
    if not DIGEST.match(digest):
        raise PipelineError(f"skopeo reported {digest!r} as the digest of {destination}, not a sha256 digest")
    return f"{host}/{name}@{digest}"


class Registry:
    """A minimal OCI distribution client: fetch manifests and blobs, put a manifest."""

    def __init__(self, host: str, name: str, insecure: bool = False, username: str | None = None, password: str | None = None):
        self.base = f"{'http' if insecure else 'https'}://{host}/v2/{name}"
        self.name = name
        self.username, self.password = username, password
        self.token: str | None = None

    def _authorise(self, challenge: str) -> None:
        scheme, _, params = challenge.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if scheme.lower() == "basic" and self.username:
            self.token = "Basic " + base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
            return
        if scheme.lower() != "bearer" or "realm" not in fields:
            raise PipelineError(f"{self.base}: the registry asks for {challenge!r}, which this client cannot answer")
        query = {"service": fields.get("service", ""), "scope": f"repository:{self.name}:pull,push"}
        request = urllib.request.Request(f"{fields['realm']}?{urllib.parse.urlencode(query)}")
        if self.username:
            basic = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
            request.add_header("Authorization", f"Basic {basic}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = json.load(response)
        except (urllib.error.URLError, ValueError) as problem:
            raise PipelineError(f"{fields['realm']}: no registry token ({problem}); set REGISTRY_USERNAME and REGISTRY_PASSWORD") from None
        self.token = "Bearer " + (body.get("token") or body.get("access_token") or "")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, retry: bool = True):
        request = urllib.request.Request(f"{self.base}/{path}", data=body, method=method, headers=dict(headers or {}))
        if self.token:
            request.add_header("Authorization", self.token)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.read(), response.headers
        except urllib.error.HTTPError as error:
            if error.code == 401 and retry and error.headers.get("WWW-Authenticate"):
                self._authorise(error.headers["WWW-Authenticate"])
                return self.request(method, path, body, headers, retry=False)
            detail = error.read().decode("utf-8", "replace")[:500]
            raise PipelineError(f"{method} {self.base}/{path}: HTTP {error.code} {detail}") from None
        except urllib.error.URLError as problem:
            raise PipelineError(f"{method} {self.base}/{path}: {problem.reason}") from None


def _platform(registry: Registry, digest: str) -> dict:
    body, headers = registry.request("GET", f"manifests/{digest}", headers={"Accept": ", ".join(MANIFEST_TYPES)})
    manifest = json.loads(body)
    media_type = manifest.get("mediaType") or headers.get("Content-Type", "").split(";")[0]
    if media_type not in MANIFEST_TYPES:
        raise PipelineError(f"{registry.base}@{digest}: a {media_type or 'untyped'} manifest, not a single image")
    config, _ = registry.request("GET", f"blobs/{manifest['config']['digest']}")
    image = json.loads(config)
    return {
        "mediaType": media_type, "digest": digest, "size": len(body),
        "platform": {"architecture": image.get("architecture"), "os": image.get("os", "linux")},
    }


def publish_index(references: list[str], tag: str, insecure: bool = False) -> str:
    """Put an OCI image index naming every <repo>@<digest> under <repo>:<tag>; return its digest."""
    parsed = [split_reference(r) for r in references]
    repositories = {(host, name) for host, name, _ in parsed}
    if len(repositories) != 1:
        raise PipelineError(f"an index joins images of one repository; these name {len(repositories)}: {', '.join(references)}")
    host, name = repositories.pop()
    for (_, _, digest), reference in zip(parsed, references):
        if not DIGEST.match(digest):
            raise PipelineError(f"{reference!r}: name each image by digest (<repo>@sha256:...), as mlws image push prints it")
    registry = Registry(host, name, insecure, os.environ.get("REGISTRY_USERNAME"), os.environ.get("REGISTRY_PASSWORD"))
    manifests = [_platform(registry, digest) for _, _, digest in parsed]
    arches = [m["platform"]["architecture"] for m in manifests]
    if len(set(arches)) != len(arches):
        raise PipelineError(f"two images for one architecture ({', '.join(arches)}): an index holds one per platform")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, indent=2).encode()
    _, headers = registry.request("PUT", f"manifests/{tag}", body=index, headers={"Content-Type": OCI_INDEX})
    digest = "sha256:" + hashlib.sha256(index).hexdigest()
    stored = headers.get("Docker-Content-Digest")
    if stored and stored != digest:
        raise PipelineError(f"the registry stored the index as {stored}, not {digest}")
    return f"{host}/{name}@{digest}"
