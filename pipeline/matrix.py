"""The CI build matrix, derived from the flake: one entry per image output of every system.

An image output is a package whose derivation has `imageName` (buildLayeredImage sets it, with
`passthru.imageTag`: nixpkgs pkgs/build-support/docker/default.nix). Which images need CUDA is
read from the generated flavor files (flavors/<flavor>.nix: imageName, nixpkgsConfig), so a new
flavor gets its job, with the right runner and set-up, without editing a workflow.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .errors import PipelineError

NIX = ["nix", "--extra-experimental-features", "nix-command flakes"]

# GitHub-hosted runner labels per system: the build runner and, for the reproducibility proof, a
# second runner on another OS image (a different kernel, distribution and toolchain around Nix).
RUNNERS = {
    "x86_64-linux": ("ubuntu-latest", "ubuntu-22.04"),
    "aarch64-linux": ("ubuntu-24.04-arm", "ubuntu-22.04-arm"),
}

IMAGES_BY_SYSTEM = "bySystem: builtins.mapAttrs (system: packages: builtins.filter (name: (packages.${name}.imageName or null) != null && name != \"default\") (builtins.attrNames packages)) bySystem"

FLAVOR_IMAGES = """
dir: let
  files = builtins.filter (f: builtins.match ".*\\\\.nix" f != null) (builtins.attrNames (builtins.readDir dir));
in map (f: let flavor = import (dir + "/${f}"); in {
  inherit (flavor) name imageName;
  cuda = flavor.nixpkgsConfig.cudaSupport or false;
}) files
"""


def _nix_json(args: list[str], what: str) -> object:
    try:
        result = subprocess.run([*NIX, *args], capture_output=True, text=True, timeout=900)
    except FileNotFoundError:
        raise PipelineError("nix is not on PATH: the matrix is read from the flake by evaluating it") from None
    if result.returncode != 0:
        raise PipelineError(f"nix eval of {what} failed ({result.returncode}):\n{result.stderr.strip()}")
    return json.loads(result.stdout)


def images_by_system(flake: str, nix_args: list[str]) -> dict[str, list[str]]:
    return _nix_json(["eval", "--json", f"{flake}#packages", "--apply", IMAGES_BY_SYSTEM, *nix_args],
                     f"{flake}#packages")


def flavor_images(flavors_dir: Path) -> dict[str, dict]:
    expr = f"({FLAVOR_IMAGES}) (/. + {json.dumps(str(Path(flavors_dir).resolve()))})"
    return {f["imageName"]: f for f in _nix_json(["eval", "--json", "--impure", "--expr", expr], f"{flavors_dir}/*.nix")}


def matrix(images: dict[str, list[str]], flavors: dict[str, dict]) -> list[dict]:
    entries = []
    for system in sorted(images):
        if system not in RUNNERS:
            raise PipelineError(f"the flake builds images for {system}, which has no GitHub runner in pipeline/matrix.py RUNNERS")
        runner, second_runner = RUNNERS[system]
        for image in sorted(images[system]):
            if image not in flavors:
                raise PipelineError(f"packages.{system}.{image} is an image, but no flavors/*.nix has imageName = \"{image}\"")
            cuda = bool(flavors[image]["cuda"])
            entries.append({
                "system": system, "image": image, "flavor": flavors[image]["name"], "runner": runner,
                "arch": {"x86_64-linux": "amd64", "aarch64-linux": "arm64"}[system],
                "cuda": cuda,
                # nvcc output is not bit-reproducible: the CUDA image gets no rebuild proof.
                "rebuild_runner": None if cuda else second_runner,
            })
    return entries
