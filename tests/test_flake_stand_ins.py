"""The strict stand-ins refuse what the real nixpkgs/poetry2nix would refuse (or what mlws must never
do), loudly, with messages shaped like nixpkgs' own; and the flake fails to evaluate when a flavor
breaks those rules. What the nixpkgs stand-in refuses comes from the package base
(spec/known-attributes.toml): each refusal below is a small expression that must fail, with the
message it gives.

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
    # Removed attributes throw nixpkgs' message (the base's `removed`).
    "removed attribute": (
        "pkgs.python3Packages.scikit-optimize.outPath",
        "{ }",
        r"scikit-optimize was removed from nixpkgs in 2024: abandoned upstream",
    ),
    "renamed attribute without aliases": ("pkgs.python3Packages.pytorch.outPath", "{ allowAliases = false; }", r"attribute 'pytorch' missing"),
    # Broken under the config in force (catboost: broken = cudaSupport || ...).
    "catboost with cudaSupport": (
        "pkgs.python3Packages.catboost.outPath",
        "{ cudaSupport = true; allowUnfree = true; }",
        r"Package ‘catboost-[^’]*’ in pkgs/by-name/ca/catboost/package\.nix.* is marked as broken, refusing to evaluate\.",
    ),
    "catboost breaks the environment it is in": (
        "(pkgs.python3.withPackages (ps: [ ps.numpy ps.catboost ])).outPath",
        "{ cudaSupport = true; allowUnfree = true; }",
        r"catboost.* is marked as broken",
    ),
    # Unfree licences without allowUnfree, or with a predicate that does not admit them, also
    # through a dependency or CUDA.
    "torch-bin is unfree": (
        "pkgs.python3Packages.torch-bin.outPath",
        "{ }",
        r"Package ‘torch-bin-[^’]*’ in pkgs/development/python-modules/torch/bin/default\.nix has an unfree license \(‘unfreeRedistributable’\), refusing to evaluate\.",
    ),
    "torchvision-bin needs torch-bin": ("pkgs.python3Packages.torchvision-bin.drvPath", "{ }", r"Package ‘torch-bin-.*unfree license"),
    "CUDA builds need unfree CUDA": ("pkgs.python3Packages.torch.outPath", "{ cudaSupport = true; }", r"Package ‘cuda_cudart-.*has an unfree license \(‘CUDA EULA’\)"),
    "cupy is always CUDA": ("pkgs.python3Packages.cupy.outPath", "{ }", r"has an unfree license \(‘CUDA EULA’\)"),
    "a predicate admits only the licences it names": (
        "pkgs.python3Packages.torch.outPath",
        '{ cudaSupport = true; allowUnfreePredicate = p: builtins.all (l: l.free || l.shortName == "CUDA EULA") p.meta.license; }',
        r"Package ‘cudnn-.*has an unfree license \(‘cuDNN EULA’\)",
    ),
    "netdata's dashboard licence": (
        "(pkgs.netdata.override { withCloudUi = true; }).outPath",
        "{ }",
        r"Package ‘netdata-[^’]*’ in pkgs/by-name/ne/netdata/package\.nix has an unfree license \(‘ncul1’\)",
    ),
    "netdata.override takes its own arguments": (
        "(pkgs.netdata.override { withDashboard = true; }).outPath",
        "{ }",
        r'unknown argument\(s\) \["withDashboard"\] to netdata.override',
    ),
    # A system the package does not support (tensorflow-bin has no aarch64 GPU wheel).
    "tensorflow-bin with CUDA on aarch64": (
        "(import nixpkgs { system = \"aarch64-linux\"; config = { cudaSupport = true; allowUnfree = true; }; }).python3Packages.tensorflow-bin.outPath",
        "{ }",
        r"tensorflow-bin: unsupported configuration: aarch64-linux_313_gpu",
    ),
    # Two packages installing one module collide in the environment, also through the closure.
    "torch and torch-bin collide": (
        "(pkgs.python3.withPackages (ps: [ ps.torch ps.torch-bin ])).outPath",
        "{ allowUnfree = true; }",
        r"collision between `torch-bin-[^']*/lib/python3\.13/site-packages/torch' and `torch-[^']*/lib/python3\.13/site-packages/torch'",
    ),
    "fastai pulls torch beside torch-bin": (
        "(pkgs.python3.withPackages (ps: [ ps.fastai ps.torch-bin ])).outPath",
        "{ allowUnfree = true; }",
        r"collision between `torch-[0-9][^']*' and `torch-bin-[^']*' \(python3Packages: python3Packages.torch and python3Packages.torch-bin both install 'torch'\)",
    ),
    # An image never gets a package that is a whole distribution at its top (spark).
    "spark in an image's contents": (
        'pkgs.dockerTools.buildLayeredImage { name = "x"; contents = [ pkgs.spark ]; }',
        "{ }",
        r"spark-[^ ]* would put .*README\.md.*jars.*python.* at the image's /",
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
        closure = map (p: p.standInAttrPath) env.standInClosure;
        image = image.standInCall;
        imageOut = image.outPath;
      }
    """, "{ allowUnfree = true; cudaSupport = true; }"))
    assert STORE_PATH.match(summary["torchBin"]["out"]) and summary["torchBin"]["cuda"] is True
    assert summary["closure"][:3] == ["python3Packages.numpy", "python3Packages.torch-bin", "python3Packages.tensorflow-bin"]
    # The environment holds the runtime closure, not only what was listed.
    assert {"python3Packages.jinja2", "python3Packages.markupsafe", "python3Packages.h5py", "python3Packages.tensorboard"} <= set(summary["closure"])
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
      noAliases = builtins.attrNames (import nixpkgs { system = "x86_64-linux"; config.allowAliases = false; }).python3Packages;
    }"""))
    infrastructure = {
        "lib", "config", "stdenv", "python3", "python313", "python3Packages", "python313Packages",
        "cudaPackages", "cudaPackages_12", "dockerTools", "fakeNss", "mkShell", "runCommand", "nixfmt", "nixfmt-tree",
        "writeTextDir", "rPackages",
    }
    top_known = {name for name in known["nixpkgs"] if "." not in name}
    sets = {name.split(".")[0] for name in known["nixpkgs"] if "." in name}
    assert set(offered["top"]) == top_known | sets | infrastructure
    assert set(offered["python"]) == set(known["python"]) | {"buildPythonApplication"}
    assert set(offered["r"]) == set(known["r"])
    # With allowAliases = false the renamed and removed names are gone, as in nixpkgs.
    retired = {n for n, e in known["python"].items() if "removed" in e or "renamed" in e}
    assert retired and set(offered["noAliases"]) == set(offered["python"]) - retired


def stand_in_with_base(nix: Nix, tmp_path: Path, edit) -> Path:
    """A copy of the nixpkgs stand-in whose package base `edit` (a function of the base's text)
    changed: the refusals that no real entry needs today, proven on an entry that has them."""
    target = tmp_path / "nixpkgs"
    shutil.copytree(nix.stand_ins / "nixpkgs", target)
    base = target / "known-attributes.toml"
    base.write_text(edit(base.read_text()))
    return target


def entry_with(text: str, section: str, name: str, line: str) -> str:
    header = f"[{section}.{name}]\n"
    assert header in text, f"no {header.strip()} in the base: update this test"
    return text.replace(header, header + line + "\n", 1)


def test_nixpkgs_stand_in_refuses_insecure_packages_unless_permitted(nix: Nix, tmp_path: Path):
    stand_in = stand_in_with_base(nix, tmp_path, lambda t: entry_with(t, "nixpkgs", "nodejs", 'vulnerabilities = ["CVE-2099-0001: example"]'))
    expr = f'''(import (builtins.getFlake "path:{stand_in}") {{ system = "x86_64-linux"; config = CONFIG; }}).nodejs.outPath'''
    stderr = refusal(nix, expr.replace("CONFIG", "{ }"))
    assert re.search(r"Package ‘nodejs-[^’]*’ in pkgs/development/web/nodejs/nodejs\.nix is marked as insecure, refusing to evaluate\.", stderr), stderr
    assert "CVE-2099-0001: example" in stderr
    permitted = json.loads(nix.eval_expr(expr.replace("CONFIG", '{ permittedInsecurePackages = [ "nodejs-1.0" ]; }')).stdout)
    assert STORE_PATH.match(permitted)


def test_nixpkgs_stand_in_refuses_a_system_outside_the_platforms(nix: Nix, tmp_path: Path):
    stand_in = stand_in_with_base(nix, tmp_path, lambda t: entry_with(t, "python", "polars", 'platforms = ["x86_64-linux"]'))
    expr = f'''(import (builtins.getFlake "path:{stand_in}") {{ system = "SYSTEM"; }}).python3Packages.polars.outPath'''
    stderr = refusal(nix, expr.replace("SYSTEM", "aarch64-linux"))
    assert re.search(r"Package ‘polars-[^’]*’ in \S+ is not available on the requested hostPlatform:", stderr), stderr
    assert 'hostPlatform.system = "aarch64-linux"' in stderr
    assert STORE_PATH.match(json.loads(nix.eval_expr(expr.replace("SYSTEM", "x86_64-linux")).stdout))


def test_nixpkgs_stand_in_records_cuda_builds_under_the_config(nix: Nix):
    expr = """
      let cpu = import nixpkgs { system = "x86_64-linux"; };
          cuda = import nixpkgs { system = "x86_64-linux"; config = { cudaSupport = true; allowUnfree = true; }; };
          env = pkgs: pkgs.python3.withPackages (ps: [ ps.accelerate ps.jax ps.numpy ]);
          builds = pkgs: map (p: p.standInAttrPath) (builtins.filter (p: p.standInCudaBuild) (env pkgs).standInClosure);
      in { cpu = builds cpu; cuda = builds cuda; }
    """
    summary = evaluate(nix, nixpkgs_expr(nix, expr))
    assert summary["cpu"] == []
    # accelerate itself reads no CUDA switch; torch under it does. jax gains its CUDA plugin.
    assert set(summary["cuda"]) == {"python3Packages.torch", "python3Packages.jax", "python3Packages.jax-cuda12-plugin", "python3Packages.jax-cuda12-pjrt"}


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


def test_project_stays_consumable_by_poetry2nix(nix: Nix):
    """For users who build the app with poetry2nix themselves: its mkPoetryApplication (here the
    stand-in of rev ce2369db, which reads pyproject.toml and poetry.lock as the real one does)
    takes the project's files, finds the project's name, version and script, and every locked
    main dependency can come from nixpkgs (the real poetry2nix's PyPI fetcher no longer works)."""
    import tomllib

    expr = f"""
      let
        nixpkgs = builtins.getFlake "path:{nix.stand_ins / 'nixpkgs'}";
        poetry2nix = builtins.getFlake "path:{nix.stand_ins / 'poetry2nix'}";
        pkgs = nixpkgs.legacyPackages.x86_64-linux;
        p2n = poetry2nix.lib.mkPoetry2Nix {{ inherit pkgs; }};
        lock = builtins.fromTOML (builtins.readFile {nix.flake_dir}/poetry.lock);
        main = builtins.filter (p: builtins.elem "main" (p.groups or [ "main" ])) lock.package;
        fromNixpkgs = final: prev: builtins.listToAttrs (map (p: {{ name = p.name; value = pkgs.python3Packages.${{p.name}}; }}) main);
        app = p2n.mkPoetryApplication {{
          projectDir = {nix.flake_dir}; python = pkgs.python3; checkGroups = [ ];
          overrides = [ p2n.defaultPoetryOverrides fromNixpkgs ];
        }};
      in {{ call = app.standInCall; out = app.outPath; }}
    """
    summary = evaluate(nix, expr)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["poetry"]
    call = summary["call"]
    assert call["fn"] == "poetry2nix.mkPoetryApplication" and STORE_PATH.match(summary["out"])
    assert (call["project"]["name"], call["project"]["version"]) == (project["name"], project["version"])
    assert call["project"]["scripts"] == project["scripts"]
    lock = tomllib.loads((REPO / "poetry.lock").read_text())
    assert set(call["project"]["lockedPackages"]) == {p["name"] for p in lock["package"]}
    assert call["dependencies"] and all(origin == f"python3Packages.{name}" for name, origin in call["dependencies"].items())


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
    # The flavor admits ncul1 (Netdata's dashboard) by name, nothing else.
    assert re.search(r"Package ‘torch-bin-[^’]*’ in \S+ has an unfree license \(‘unfreeRedistributable’\), refusing to evaluate", result.stderr), result.stderr


# What the images were before this base existed, each refused as real nixpkgs refuses it.
OLD_MISTAKES = {
    "the removed scikit-optimize in full": (
        "full.nix", [("ps.scikit-image", "ps.scikit-image\n    ps.scikit-optimize")],
        "packages.x86_64-linux.ml-workspace.drvPath", r"scikit-optimize was removed from nixpkgs",
    ),
    "catboost in the CUDA image": (
        "gpu.nix", [("ps.category-encoders", "ps.catboost\n    ps.category-encoders")],
        "packages.x86_64-linux.ml-workspace-gpu.drvPath", r"Package ‘catboost-[^’]*’ in .* is marked as broken, refusing to evaluate",
    ),
    # (its licence admitted too, else that refusal comes first)
    "the torch wheels beside the source torch's dependents": (
        "gpu.nix", [("ps.torch\n", "ps.torch-bin\n"), ('"cuDNN EULA"', '"cuDNN EULA"\n    "unfreeRedistributable"')],
        "packages.x86_64-linux.ml-workspace-gpu.drvPath", r"collision between .*both install 'torch'",
    ),
    "gpu without the cuDNN licence": (
        "gpu.nix", [('"cuDNN EULA"', "")],
        "packages.x86_64-linux.ml-workspace-gpu.drvPath", r"has an unfree license \(‘cuDNN EULA’\)",
    ),
}


@pytest.mark.parametrize("case", sorted(OLD_MISTAKES))
def test_flake_refuses_what_real_nixpkgs_would_refuse(case: str, nix: Nix, tmp_path: Path):
    file, edits, attr, message = OLD_MISTAKES[case]
    scratch = scratch_flake(nix, tmp_path)
    for old, new in edits:
        flavor_file_with(scratch.flake_dir / "flavors" / file, old, new)
    result = scratch.run("eval", "--json", f"{scratch.flake_ref}#{attr}", *scratch.overrides, check=False)
    assert result.returncode != 0, result.stdout
    assert re.search(message, result.stderr), result.stderr


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
