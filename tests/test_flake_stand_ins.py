"""The strict stand-ins refuse what the real nixpkgs/poetry2nix would refuse (or what mlws must never
do), loudly; and the flake fails to evaluate when a flavor breaks those rules.

Nix runs as described in tests/test_flake.py; plain expressions reach the stand-ins with
`nix eval --json --impure --expr '(builtins.getFlake "path:<copy>/nixpkgs") ...'` (an unlocked
`path:` flake needs --impure).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from test_flake import NIX_FEATURES, REPO, STORE_PATH, Nix, committable_files, copy_tree_files, make_stand_ins


@pytest.fixture(scope="module")
def nix(tmp_path_factory) -> Nix:
    if shutil.which("nix") is None:
        raise AssertionError("Nix is required: apt-get install -y nix-bin (Debian's Nix 2.8 evaluates flakes offline)")
    base = tmp_path_factory.mktemp("stand-ins")
    flake_dir = base / "src"
    copy_tree_files(REPO, flake_dir, committable_files(REPO))
    home = base / "home"
    home.mkdir()
    return Nix(flake_dir, make_stand_ins(base / "stand-ins"), home)


def nixpkgs_expr(nix: Nix, body: str, config: str = "{ }") -> str:
    """`body` evaluated with `pkgs` = the stand-in imported for x86_64-linux with `config`."""
    return f"""
      let
        nixpkgs = builtins.getFlake "path:{nix.stand_ins / 'nixpkgs'}";
        pkgs = import nixpkgs {{ system = "x86_64-linux"; config = {config}; }};
      in {body}
    """


def evaluate(nix: Nix, expr: str):
    return json.loads(nix.eval_expr(expr).stdout)


def refusal(nix: Nix, expr: str) -> str:
    result = nix.eval_expr(expr, check=False)
    assert result.returncode != 0, f"expected a refusal, got {result.stdout}"
    return result.stderr


REFUSALS = {
    # Attributes nixpkgs 26.05 does not have.
    "unknown top-level attribute": ("pkgs.definitely-not-in-nixpkgs.outPath", "{ }", r"attribute 'definitely-not-in-nixpkgs' missing"),
    "jupyter-server-proxy is not packaged": ("pkgs.python3Packages.jupyter-server-proxy.outPath", "{ }", r"attribute 'jupyter-server-proxy' missing"),
    "xfce set is the 25.11 layout": ("pkgs.xfce.xfce4-panel.outPath", "{ }", r"attribute 'xfce' missing"),
    # Arguments the real functions do not take.
    "buildLayeredImage runAsRoot": (
        'pkgs.dockerTools.buildLayeredImage { name = "x"; runAsRoot = "true"; }',
        "{ }",
        r'unknown argument\(s\) \["runAsRoot"\] to dockerTools.buildLayeredImage',
    ),
    "buildLayeredImage config typo": (
        'pkgs.dockerTools.buildLayeredImage { name = "x"; config.Entrypoints = [ ]; }',
        "{ }",
        r'unknown argument\(s\) \["Entrypoints"\] to dockerTools.buildLayeredImage \{ config \}',
    ),
    "buildLayeredImage created now": (
        'pkgs.dockerTools.buildLayeredImage { name = "x"; created = "now"; }',
        "{ }",
        r"unreproducible",
    ),
    "buildLayeredImage bad Env": (
        'pkgs.dockerTools.buildLayeredImage { name = "x"; config.Env = [ "NOEQUALS" ]; }',
        "{ }",
        r"config.Env entries must be",
    ),
    "mkShell typo": ("pkgs.mkShell { buildInputz = [ ]; }", "{ }", r'unknown argument\(s\) \["buildInputz"\] to mkShell'),
    "fakeNss.override typo": (
        'pkgs.dockerTools.fakeNss.override { extraPasswordLines = [ ]; }',
        "{ }",
        r'unknown argument\(s\) \["extraPasswordLines"\] to fakeNss.override',
    ),
    "withPackages takes a function": ("pkgs.python3.withPackages [ ]", "{ }", r"takes a function"),
    "withPackages only python packages": ("pkgs.python3.withPackages (ps: [ pkgs.git ])", "{ }", r"not python3Packages"),
    "unknown config option": ("pkgs.git.outPath", "{ allowUnfre = true; }", r'unknown argument\(s\) \["allowUnfre"\] to import nixpkgs \{ config \}'),
    # R: packages only through the wrappers' real arguments, only rPackages the spec knows.
    "rPackages outside the known r list": ("pkgs.rPackages.not-an-r-package.outPath", "{ }", r"attribute 'not-an-r-package' missing"),
    "rPackages is not a top-level path of nixpkgs": ("pkgs.IRkernel.outPath", "{ }", r"attribute 'IRkernel' missing"),
    "rWrapper.override typo": (
        "(pkgs.rWrapper.override { package = [ pkgs.rPackages.IRkernel ]; }).outPath",
        "{ }",
        r'unknown argument\(s\) \["package"\] to rWrapper.override',
    ),
    "rWrapper.override only rPackages": (
        "(pkgs.rWrapper.override { packages = [ pkgs.git ]; }).outPath",
        "{ }",
        r"rWrapper.override: packages: not rPackages",
    ),
    "rstudioServerWrapper.override takes no rstudio-server": (
        "(pkgs.rstudioServerWrapper.override { rstudio-server = pkgs.rstudio-server; }).outPath",
        "{ }",
        r'unknown argument\(s\) \["rstudio-server"\] to rstudioServerWrapper.override',
    ),
    "writeTextDir takes a relative path": ('(pkgs.writeTextDir "/share/x" "text").outPath', "{ }", r"writeTextDir: the path must be a relative path"),
    "writeTextDir takes text": ('(pkgs.writeTextDir "share/x" { }).outPath', "{ }", r"the text must be a string"),
    # Unfree packages without config.allowUnfree, also through a dependency or CUDA.
    "torch-bin is unfree": ("pkgs.python3Packages.torch-bin.outPath", "{ }", r"refusing to evaluate 'python3Packages.torch-bin'"),
    "torchvision-bin needs torch-bin": ("pkgs.python3Packages.torchvision-bin.drvPath", "{ }", r"refusing to evaluate 'python3Packages.torch-bin'"),
    "CUDA builds need unfree CUDA": ("pkgs.python3Packages.torch.outPath", "{ cudaSupport = true; }", r"refusing to evaluate 'cudaPackages\."),
    "cupy is always CUDA": ("pkgs.python3Packages.cupy.outPath", "{ }", r"refusing to evaluate 'cudaPackages\."),
    # Two packages installing one module collide in the environment.
    "torch and torch-bin collide": (
        "(pkgs.python3.withPackages (ps: [ ps.torch ps.torch-bin ])).outPath",
        "{ allowUnfree = true; }",
        r"python3Packages.torch and python3Packages.torch-bin both install the module 'torch'",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_nixpkgs_stand_in_refuses_loudly(nix: Nix, case: str):
    body, config, message = REFUSALS[case]
    stderr = refusal(nix, nixpkgs_expr(nix, body, config))
    assert re.search(message, stderr), stderr


def test_nixpkgs_stand_in_wraps_r_and_writes_text_dirs_recording_the_calls(nix: Nix):
    summary = evaluate(nix, nixpkgs_expr(nix, """
      let
        r = pkgs.rWrapper.override { packages = [ pkgs.rPackages.IRkernel ]; };
        rstudio = pkgs.rstudioServerWrapper.override { packages = [ pkgs.rPackages.IRkernel ]; };
        text = pkgs.writeTextDir "share/jupyter/kernels/ir/kernel.json" "{}";
      in {
        r = { out = r.outPath; call = r.standInCall; program = r.meta.mainProgram; };
        bareR = pkgs.R.outPath;
        plainWrapper = pkgs.rWrapper.outPath;
        rstudio = { out = rstudio.outPath; call = rstudio.standInCall; program = rstudio.meta.mainProgram; };
        text = { out = text.outPath; call = text.standInCall; };
      }
    """))
    assert summary["r"]["call"] == {"fn": "rWrapper.override", "args": {"packages": ["rPackages.IRkernel"]}}
    assert summary["r"]["program"] == "R"
    # The wrapper is a derivation of its own, different from bare R and from the empty wrapper.
    assert len({summary["r"]["out"], summary["bareR"], summary["plainWrapper"]}) == 3
    assert summary["rstudio"]["call"] == {"fn": "rstudioServerWrapper.override", "args": {"packages": ["rPackages.IRkernel"]}}
    assert summary["rstudio"]["program"] == "rserver"
    assert summary["text"]["call"] == {"fn": "writeTextDir", "args": {"path": "share/jupyter/kernels/ir/kernel.json", "text": "{}"}}
    assert STORE_PATH.match(summary["text"]["out"]) and summary["text"]["out"].endswith("-kernel.json-text")


def test_nixpkgs_stand_in_refuses_unknown_import_arguments_and_systems(nix: Nix):
    flake = f'builtins.getFlake "path:{nix.stand_ins / "nixpkgs"}"'
    stderr = refusal(nix, f'(import ({flake}) {{ system = "x86_64-linux"; confg = {{ }}; }}).git.outPath')
    assert 'unknown argument(s) ["confg"] to import nixpkgs' in stderr
    stderr = refusal(nix, f'(import ({flake}) {{ system = "x86_64-darwin"; }}).git.outPath')
    assert "system x86_64-darwin is not one the stand-in offers" in stderr
    stderr = refusal(nix, f'(import ({flake}) {{ }}).git.outPath')
    assert "needs `system`" in stderr


def test_nixpkgs_stand_in_builds_what_is_allowed_and_records_the_call(nix: Nix):
    summary = evaluate(nix, nixpkgs_expr(nix, """
      let
        env = pkgs.python3.withPackages (ps: [ ps.numpy ps.torch-bin ps.tensorflow-bin ]);
        image = pkgs.dockerTools.buildLayeredImage {
          name = "demo"; tag = "1"; contents = [ env ]; config.User = "1000:1000";
        };
      in {
        torchBin = { out = pkgs.python3Packages.torch-bin.outPath; cuda = pkgs.python3Packages.torch-bin.cudaSupport; };
        tensorflowCuda = pkgs.python3Packages.tensorflow-bin.cudaSupport;
        env = env.standInCall;
        image = image.standInCall;
        imageOut = image.outPath;
      }
    """, "{ allowUnfree = true; cudaSupport = true; }"))
    assert STORE_PATH.match(summary["torchBin"]["out"]) and summary["torchBin"]["cuda"] is True
    assert summary["tensorflowCuda"] is True
    assert summary["env"] == {
        "fn": "python3.withPackages",
        "args": {"packages": ["python3Packages.numpy", "python3Packages.torch-bin", "python3Packages.tensorflow-bin"]},
    }
    assert summary["image"]["fn"] == "dockerTools.buildLayeredImage"
    assert summary["image"]["args"]["config"] == {"User": "1000:1000"}
    assert summary["image"]["args"]["contents"][0]["drv"] == "python3.withPackages"
    assert STORE_PATH.match(summary["imageOut"])
    # Without cudaSupport the same wheel of TensorFlow is the CPU build, and it is free.
    plain = evaluate(nix, nixpkgs_expr(nix, "{ cuda = pkgs.python3Packages.tensorflow-bin.cudaSupport; out = pkgs.python3Packages.tensorflow-bin.outPath; }"))
    assert plain["cuda"] is False and STORE_PATH.match(plain["out"])


def test_nixpkgs_stand_in_offers_exactly_the_known_attributes(nix: Nix):
    import tomllib

    known = tomllib.loads((REPO / "spec" / "known-attributes.toml").read_text())
    offered = evaluate(nix, nixpkgs_expr(nix, """{
      top = builtins.attrNames pkgs;
      python = builtins.attrNames pkgs.python3Packages;
      r = builtins.attrNames pkgs.rPackages;
    }"""))
    infrastructure = {
        "lib", "config", "stdenv", "python3", "python313", "python3Packages", "python313Packages",
        "cudaPackages", "cudaPackages_12", "dockerTools", "fakeNss", "mkShell", "runCommand", "nixfmt", "nixfmt-tree",
        "writeTextDir", "rPackages",
    }
    top_known = {name for name in known["nixpkgs"] if "." not in name}
    sets = {name.split(".")[0] for name in known["nixpkgs"] if "." in name}
    assert set(offered["top"]) == top_known | sets | infrastructure
    assert set(offered["python"]) == set(known["python"]) | {"jinja2", "markupsafe"}
    assert set(offered["r"]) == set(known["r"])
    # The stand-in's metadata only describes packages that exist.
    catalog = json.loads(nix.run("eval", "--json", "--file", str(nix.stand_ins / "nixpkgs" / "catalog.nix")).stdout)
    assert set(catalog["python"]) <= set(known["python"])
    assert set(catalog["top"]) <= set(known["nixpkgs"])


def test_poetry2nix_stand_in_refuses_unknown_arguments(nix: Nix):
    expr = f"""
      let
        nixpkgs = builtins.getFlake "path:{nix.stand_ins / 'nixpkgs'}";
        poetry2nix = builtins.getFlake "path:{nix.stand_ins / 'poetry2nix'}";
        pkgs = nixpkgs.legacyPackages.x86_64-linux;
      in (poetry2nix.lib.mkPoetry2Nix {{ inherit pkgs; }}).mkPoetryApplication {{
        projectDir = {nix.flake_dir}; pythn = pkgs.python3;
      }}
    """
    assert 'unknown argument(s) ["pythn"] to mkPoetryApplication' in refusal(nix, expr)
    expr = f"""((builtins.getFlake "path:{nix.stand_ins / 'poetry2nix'}").lib.mkPoetry2Nix {{ pkgs = {{ }}; lib = {{ }}; }})"""
    assert "mkPoetry2Nix takes exactly { pkgs }" in refusal(nix, expr + ".mkPoetryApplication")


def scratch_flake(nix: Nix, tmp_path: Path) -> Nix:
    target = tmp_path / "flake"
    shutil.copytree(nix.flake_dir, target)
    return Nix(target, nix.stand_ins, Path(nix.env["HOME"]))


def flavor_file_with(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} no longer contains {old!r}: update this test"
    path.write_text(text.replace(old, new, 1))


def test_flake_refuses_an_unfree_package_in_a_free_flavor(nix: Nix, tmp_path: Path):
    scratch = scratch_flake(nix, tmp_path)
    flavor_file_with(scratch.flake_dir / "flavors" / "minimal.nix", "ps.numpy", "ps.numpy\n    ps.torchvision-bin")
    result = scratch.run("eval", "--json", f"{scratch.flake_ref}#packages.x86_64-linux.ml-workspace-minimal.drvPath", *scratch.overrides, check=False)
    assert result.returncode != 0
    assert "refusing to evaluate 'python3Packages.torch-bin'" in result.stderr


def test_flake_names_the_flavor_file_that_lists_an_unknown_tool(nix: Nix, tmp_path: Path):
    scratch = scratch_flake(nix, tmp_path)
    flavor_file_with(scratch.flake_dir / "flavors" / "minimal.nix", '"filebrowser"', '"filebrowser"\n    "no-such-tool"')
    result = scratch.run("eval", "--json", f"{scratch.flake_ref}#devShells.x86_64-linux.minimal.drvPath", *scratch.overrides, check=False)
    assert result.returncode != 0
    assert 'flavors/minimal.nix: tools: no modules/<tool>.nix for ["no-such-tool"]' in result.stderr


def test_flake_picks_up_a_new_flavor_file_without_other_changes(nix: Nix, tmp_path: Path):
    scratch = scratch_flake(nix, tmp_path)
    flavors_dir = scratch.flake_dir / "flavors"
    text = (flavors_dir / "minimal.nix").read_text()
    (flavors_dir / "tiny.nix").write_text(
        text.replace('name = "minimal";', 'name = "tiny";')
        .replace('imageName = "ml-workspace-minimal";', 'imageName = "ml-workspace-tiny";')
        .replace("./minimal.manifest.json", "./tiny.manifest.json")
    )
    shutil.copy2(flavors_dir / "minimal.manifest.json", flavors_dir / "tiny.manifest.json")
    names = scratch.eval_json("packages.aarch64-linux", "builtins.attrNames")
    assert "ml-workspace-tiny" in names
    assert "tiny" in scratch.eval_json("devShells.x86_64-linux", "builtins.attrNames")


def test_flake_check_evaluates_the_outputs_of_every_system(nix: Nix, tmp_path: Path):
    """A flavor broken only where it is built (aarch64-linux here) fails `nix flake check
    --no-build` run on x86_64: the check covers every system, not only the host's."""
    scratch = scratch_flake(nix, tmp_path)
    path = scratch.flake_dir / "flavors" / "gpu.nix"
    text = re.sub(r"systems = \[[^]]*\];", 'systems = [ "aarch64-linux" ];', path.read_text(), count=1)
    assert "pythonPackages = ps: [" in text, "flavors/gpu.nix changed shape: update this test"
    path.write_text(text.replace("pythonPackages = ps: [", "pythonPackages = ps: [\n    ps.no-such-python-package", 1))
    result = scratch.run("flake", "check", "--no-build", scratch.flake_ref, *scratch.overrides, check=False)
    assert result.returncode != 0
    assert "attribute 'no-such-python-package' missing" in result.stderr
    # The same copy still evaluates for x86_64-linux, where the flavor is no longer built.
    assert "ml-workspace-gpu" not in scratch.eval_json("packages.x86_64-linux", "builtins.attrNames")
