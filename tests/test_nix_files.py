"""Every Nix file of the repository parses, and the nix/ library documents its API.

`nix-instantiate --parse` (Debian's nix-bin, Nix 2.8) parses without evaluating; the files are the
ones git would commit (tracked plus untracked, minus ignored).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from test_flake import NIX_FEATURES, REPO, committable_files


def nix_files() -> list[str]:
    return sorted(name for name in committable_files(REPO) if name.endswith(".nix") and (REPO / name).is_file())


def nix_env(tmp_path: Path) -> dict:
    return dict(os.environ, HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / ".cache"))


def test_the_repository_has_nix_files_to_check():
    names = nix_files()
    assert "flake.nix" in names and "nix/image.nix" in names
    assert any(name.startswith("modules/") for name in names)
    assert any(name.startswith("flavors/") for name in names)


def test_every_nix_file_parses(tmp_path: Path):
    if shutil.which("nix-instantiate") is None:
        raise AssertionError("nix-instantiate is required: apt-get install -y nix-bin")
    names = nix_files()
    failures = []
    for name in names:
        result = subprocess.run(
            ["nix-instantiate", "--parse", str(REPO / name)], capture_output=True, text=True, env=nix_env(tmp_path)
        )
        if result.returncode != 0:
            failures.append(f"{name}: {result.stderr.strip()}")
    assert not failures, "\n".join(failures)


LIBRARY = sorted(p.name for p in (REPO / "nix").glob("*.nix"))


@pytest.mark.parametrize("name", LIBRARY)
def test_library_file_documents_every_argument(name: str, tmp_path: Path):
    """Each nix/ file starts with a comment naming the file and describing each argument it takes
    (`#   <argument>  ...`), like nix2container's API comments."""
    path = REPO / "nix" / name
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert header and header[0].startswith(f"# nix/{name}:"), f"{name}: the header comment must start with '# nix/{name}:'"
    # A file may be curried (`pkgs: { package, except }:`): then the attribute set of named
    # arguments is the one its first function returns a function of.
    expr = f"""
      let f = import {path}; args = builtins.functionArgs f;
      in if args != {{ }} then args else builtins.functionArgs (f {{ }})
    """
    result = subprocess.run(
        ["nix", *NIX_FEATURES, "eval", "--json", "--impure", "--expr", expr],
        capture_output=True, text=True, env=nix_env(tmp_path), check=True,
    )
    arguments = json.loads(result.stdout)
    assert arguments, f"{name} should take an attribute set of named arguments"
    text = "\n".join(header)
    assert "argument" in text.lower() and "Returns" in text, f"{name}: header needs its arguments and 'Returns'"
    for argument in arguments:
        assert re.search(rf"^#\s+{re.escape(argument)}\s", text, re.M), f"{name}: argument {argument!r} is not documented"
