"""pyproject.toml and poetry.lock in the form nixpkgs' Python builder and poetry2nix consume.

The flake builds the app with nixpkgs' buildPythonApplication (nix/app.nix): the poetry-core
backend of `[build-system]`, the packages of `tool.poetry.packages`, the dependencies of
`tool.poetry.dependencies` taken from nixpkgs. poetry2nix (rev ce2369db, no longer a flake input)
stays usable for those who want it: it reads the project from `tool.poetry.*` only, and from
poetry.lock each package's `files` (lock-version 2.x) and `python-versions`; it builds every
dependency of the project from the lock, so each one must be locked.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCK = tomllib.loads((REPO / "poetry.lock").read_text())


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_project_is_described_in_the_classic_poetry_table():
    poetry = PYPROJECT["tool"]["poetry"]
    assert "project" not in PYPROJECT  # poetry2nix would ignore a PEP 621 table
    assert (poetry["name"], poetry["version"], poetry["license"]) == ("mlws", "0.1.0", "Apache-2.0")
    packages = {p["include"] for p in poetry["packages"]}
    assert {"generator", "runtime"} <= packages
    assert poetry["scripts"] == {"mlws": "generator.cli:main"}
    assert poetry["dependencies"]["python"] == ">=3.11,<3.14"
    assert {"click", "jinja2", "supervisor"} <= set(poetry["dependencies"])
    assert PYPROJECT["build-system"]["build-backend"] == "poetry.core.masonry.api"
    for package in packages:  # each one a Python package the build finds in the source
        assert (REPO / package / "__init__.py").is_file(), package
    assert list((REPO / "generator/templates").glob("*.nix.j2"))


def test_lock_has_what_poetry2nix_reads_for_every_package():
    assert LOCK["metadata"]["lock-version"].startswith("2.")
    assert LOCK["metadata"]["python-versions"] == PYPROJECT["tool"]["poetry"]["dependencies"]["python"]
    for package in LOCK["package"]:
        assert package["files"], package["name"]
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", f["hash"]) for f in package["files"]), package["name"]
        assert isinstance(package["python-versions"], str), package["name"]
        assert "source" not in package, f"{package['name']}: locked from a non-PyPI source"


def test_every_declared_dependency_and_its_dependencies_are_locked():
    locked = {normalise(p["name"]): p for p in LOCK["package"]}
    poetry = PYPROJECT["tool"]["poetry"]
    declared = set(poetry["dependencies"]) | set(poetry["group"]["dev"]["dependencies"])
    for name in declared - {"python"}:
        assert normalise(name) in locked, name
    for package in LOCK["package"]:
        for dependency in package.get("dependencies", {}):
            assert normalise(dependency) in locked, f"{package['name']} needs {dependency}"
