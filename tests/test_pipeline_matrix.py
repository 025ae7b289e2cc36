"""`mlws image matrix` against the flake, evaluated by Nix with the stand-ins (as tests/test_flake.py
does): one entry per image output of both systems, with the runner and set-up each needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_flake import NIX_FEATURES, committable_files, copy_tree_files, make_stand_ins

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def flake(tmp_path_factory):
    base = tmp_path_factory.mktemp("matrix")
    source = base / "src"
    copy_tree_files(REPO, source, committable_files(REPO))
    stand_ins = make_stand_ins(base / "stand-ins")
    home = base / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PYTHONPATH=str(REPO))
    overrides = ["--override-input", "nixpkgs", f"path:{stand_ins / 'nixpkgs'}",
                 "--override-input", "poetry2nix", f"path:{stand_ins / 'poetry2nix'}", "--no-write-lock-file"]
    return source, env, overrides


def run_matrix(flake, *extra: str) -> subprocess.CompletedProcess:
    source, env, overrides = flake
    args = [sys.executable, "-m", "generator", "image", "matrix", "--flake", f"path:{source}",
            "--flavors-dir", str(source / "flavors"), *(f"--nix-arg={a}" for a in overrides), *extra]
    return subprocess.run(args, cwd=source, env=env, capture_output=True, text=True, timeout=600)


def test_matrix_lists_exactly_the_image_outputs_of_both_systems(flake):
    source, env, overrides = flake
    shown = subprocess.run(["nix", *NIX_FEATURES, "flake", "show", "--json", f"path:{source}", *overrides],
                           env=env, capture_output=True, text=True, timeout=600)
    assert shown.returncode == 0, shown.stderr
    packages = json.loads(shown.stdout)["packages"]
    expected = {(system, name) for system, outputs in packages.items() for name in outputs} - {
        (system, extra) for system in packages for extra in ("mlws", "default")}
    assert {system for system, _ in expected} == {"x86_64-linux", "aarch64-linux"}

    result = run_matrix(flake)
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert sorted((e["system"], e["image"]) for e in entries) == sorted(expected)
    runners = {"x86_64-linux": ("ubuntu-latest", "ubuntu-22.04", "amd64"), "aarch64-linux": ("ubuntu-24.04-arm", "ubuntu-22.04-arm", "arm64")}
    for entry in entries:
        runner, second, arch = runners[entry["system"]]
        assert (entry["runner"], entry["arch"]) == (runner, arch)
        # Only the CUDA image skips the rebuild proof (nvcc output is not bit-reproducible).
        assert entry["cuda"] == (entry["image"] == "ml-workspace-gpu")
        assert entry["rebuild_runner"] == (None if entry["cuda"] else second)
    assert [e["system"] for e in entries if e["cuda"]] == ["x86_64-linux"]


def test_github_output_holds_the_same_matrix(flake, tmp_path):
    output = tmp_path / "github-output"
    result = run_matrix(flake, "--system", "aarch64-linux", "--github-output")
    source, env, _ = flake
    assert result.returncode != 0 and "GITHUB_OUTPUT is not set" in result.stderr
    env["GITHUB_OUTPUT"] = str(output)
    try:
        result = run_matrix(flake, "--system", "aarch64-linux", "--github-output")
    finally:
        del env["GITHUB_OUTPUT"]
    assert result.returncode == 0, result.stderr
    lines = output.read_text().splitlines()
    assert [line.split("=", 1)[0] for line in lines] == ["include", "rebuild"]
    entries = json.loads(lines[0].split("=", 1)[1])
    assert entries == json.loads(result.stdout) and {e["system"] for e in entries} == {"aarch64-linux"}
    # The rebuild jobs: every entry with a proof, to run on the second runner image.
    rebuild = json.loads(lines[1].split("=", 1)[1])
    assert [(e["image"], e["runner"]) for e in rebuild] == [(e["image"], "ubuntu-22.04-arm") for e in entries if e["rebuild_runner"]]
    assert rebuild


def test_unknown_system_is_a_clear_error(flake):
    result = run_matrix(flake, "--system", "riscv64-linux")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--system riscv64-linux: the flake has packages for aarch64-linux, x86_64-linux only" in result.stderr
