"""The flake, evaluated for real by Nix against the strict nixpkgs stand-in (tests/stand-ins/nixpkgs).

How Nix runs here (Debian's nix-bin, Nix 2.8, as root, offline):
  * HOME and XDG_CACHE_HOME point at a fresh temporary folder (Nix writes its fetcher cache there);
    nothing is built, only evaluated, so no sandbox or daemon is needed.
  * The flake under test is `path:<scratch copy>`: the files git would commit (tracked plus
    untracked, minus ignored: `git ls-files --cached --others --exclude-standard`) copied into a
    temporary folder. Evaluating `.` would mean the git flake, which ignores untracked files, and
    `path:<repo>` would copy .venv, node_modules and .git into the store on every run.
  * The stand-ins are copied too, and the project's spec/known-attributes.toml is placed next to the
    nixpkgs stand-in's flake.nix (a flake's source is copied to the store alone, so the stand-in
    cannot read ../../../spec): the stand-in offers exactly those attributes.
  * Every command gets
      --extra-experimental-features 'nix-command flakes'
      --override-input nixpkgs path:<abs stand-in nixpkgs>
      --no-write-lock-file
    (absolute paths: Nix 2.8 rejects relative `path:` overrides).
  * Many assertions share one `nix eval --json <output> --apply <summary function>` per output kind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAND_INS = REPO / "tests" / "stand-ins"
SYSTEMS = ("x86_64-linux", "aarch64-linux")
NIX_FEATURES = ["--extra-experimental-features", "nix-command flakes"]
FIXED_CREATED = "1970-01-01T00:00:01Z"
STORE_PATH = re.compile(r"^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+$")


# ---------------------------------------------------------------------------------------------
# Running Nix


class Nix:
    """Runs Nix commands against one scratch copy of the flake, with the stand-ins as inputs."""

    def __init__(self, flake_dir: Path, stand_ins: Path, home: Path):
        self.flake_dir = flake_dir
        self.flake_ref = f"path:{flake_dir}"
        self.stand_ins = stand_ins
        self.env = dict(os.environ, HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
        self.overrides = [
            "--override-input", "nixpkgs", f"path:{stand_ins / 'nixpkgs'}",
            "--no-write-lock-file",
        ]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["nix", *NIX_FEATURES, *args], env=self.env, capture_output=True, text=True, timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"nix {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def eval_json(self, attr: str, apply: str | None = None, flake_ref: str | None = None):
        args = ["eval", "--json", f"{flake_ref or self.flake_ref}#{attr}", *self.overrides]
        if apply:
            args += ["--apply", apply]
        return json.loads(self.run(*args).stdout)

    def eval_expr(self, expr: str, check: bool = True) -> subprocess.CompletedProcess:
        """Evaluate a plain expression (impure: it may builtins.getFlake the stand-ins by path)."""
        return self.run("eval", "--json", "--impure", "--expr", expr, check=check)


def copy_tree_files(source: Path, target: Path, files: list[str]) -> None:
    for name in files:
        path = source / name
        if path.is_file() or path.is_symlink():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / name, follow_symlinks=False)


def committable_files(root: Path) -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout
    return [name for name in listing.split("\0") if name]


def make_stand_ins(target: Path) -> Path:
    shutil.copytree(STAND_INS, target, ignore=shutil.ignore_patterns("known-attributes.toml"))
    shutil.copy2(REPO / "spec" / "known-attributes.toml", target / "nixpkgs" / "known-attributes.toml")
    return target


@pytest.fixture(scope="session")
def nix(tmp_path_factory) -> Nix:
    if shutil.which("nix") is None:
        raise AssertionError("Nix is required: apt-get install -y nix-bin (Debian's Nix 2.8 evaluates flakes offline)")
    base = tmp_path_factory.mktemp("flake")
    flake_dir = base / "src"
    copy_tree_files(REPO, flake_dir, committable_files(REPO))
    stand_ins = make_stand_ins(base / "stand-ins")
    home = base / "home"
    home.mkdir()
    return Nix(flake_dir, stand_ins, home)


# ---------------------------------------------------------------------------------------------
# What the flake should contain, read from the generated files themselves


@pytest.fixture(scope="session")
def flavors(nix: Nix) -> dict:
    """Every flavors/<name>.nix as data (functions dropped), read by Nix from the scratch copy."""
    expr = f"""
      let
        dir = {nix.flake_dir}/flavors;
        # rPackages as their names: a set of the known `r` names, each mapped to itself.
        rNames = builtins.listToAttrs (map (n: {{ name = n; value = n; }})
          (builtins.attrNames (builtins.fromTOML (builtins.readFile {nix.flake_dir}/spec/known-attributes.toml)).r));
        names = map (f: builtins.substring 0 (builtins.stringLength f - 4) f)
          (builtins.filter (f: builtins.match ".*\\\\.nix" f != null) (builtins.attrNames (builtins.readDir dir)));
      in builtins.listToAttrs (map (name: let f = import (dir + "/${{name}}.nix"); in {{
        inherit name;
        value = {{
          inherit (f) name extends imageName description systems tools nixpkgsConfig unfreeLicenses env;
          manifest = toString f.manifest;
          rPackages = f.rPackages rNames;
        }};
      }}) names)
    """
    data = json.loads(nix.eval_expr(expr).stdout)
    assert data, "no flavors/*.nix in the repository"
    return data


def ancestors(flavors: dict, name: str) -> list[str]:
    chain, current = [], flavors[name]["extends"]
    while current is not None:
        chain.append(current)
        current = flavors[current]["extends"]
    return chain


def pyproject() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["poetry"]


# One summary per output kind. `info` follows a stand-in derivation to what it was made from.
DRV_INFO = """
  jsonSafe = v: if builtins.isFunction v then "<function>" else if builtins.isAttrs v then builtins.mapAttrs (_: jsonSafe) v else v;
  info = d: {
    drvPath = d.drvPath;
    out = d.outPath;
    attr = d.standInAttrPath or null;
    unfree = d.meta.unfree or false;
    licenses = map (l: { inherit (l) shortName free; }) (d.meta.license or [ ]);
    cudaSupport = d.cudaSupport or null;
    cudaBuild = d.standInCudaBuild or false;
    provides = d.standInProvides or [ ];
    config = jsonSafe (d.standInNixpkgsConfig or { });
    call = d.standInCall or null;
  };
  pythonEnvs = ds: map (env: (info env) // {
      packages = map info env.standInArgs.packages;
      closure = map info env.standInClosure;
    })
    (builtins.filter (d: (d.standInAttrPath or "") == "python3.withPackages") ds);
  # Everything an image holds: its contents and all they depend on, each once.
  holdings = contents: map (item: info item.d) (builtins.genericClosure {
    startSet = map (d: { key = d.outPath; inherit d; }) contents;
    operator = item: map (d: { key = d.outPath; inherit d; }) (item.d.standInRuntimeDeps or [ ]);
  });
"""

PACKAGES_SUMMARY = f"""
  bySystem: let {DRV_INFO} in builtins.mapAttrs (system: builtins.mapAttrs (name: d:
    (info d) // (if d ? standInArgs.contents then {{
      contents = map info d.standInArgs.contents;
      python = pythonEnvs d.standInArgs.contents;
      holds = holdings d.standInArgs.contents;
    }} else {{ }}))) bySystem
"""

SHELLS_SUMMARY = f"""
  bySystem: let {DRV_INFO} in builtins.mapAttrs (system: builtins.mapAttrs (name: d:
    (info d) // {{
      packages = map info d.standInArgs.packages;
      python = pythonEnvs d.standInArgs.packages;
    }})) bySystem
"""

CHECKS_SUMMARY = f"""
  bySystem: let {DRV_INFO} in builtins.mapAttrs (system: builtins.mapAttrs (name: d: info d)) bySystem
"""


@pytest.fixture(scope="session")
def packages(nix: Nix) -> dict:
    return nix.eval_json("packages", PACKAGES_SUMMARY)


@pytest.fixture(scope="session")
def shells(nix: Nix) -> dict:
    return nix.eval_json("devShells", SHELLS_SUMMARY)


@pytest.fixture(scope="session")
def checks(nix: Nix) -> dict:
    return nix.eval_json("checks", CHECKS_SUMMARY)


@pytest.fixture(scope="session")
def apps(nix: Nix) -> dict:
    return nix.eval_json("apps")


def flavors_on(flavors: dict, system: str) -> list[str]:
    return sorted(name for name, flavor in flavors.items() if system in flavor["systems"])


def image_call(packages: dict, system: str, flavor: dict) -> dict:
    call = packages[system][flavor["imageName"]]["call"]
    assert call["fn"] == "dockerTools.buildLayeredImage"
    return call["args"]


def env_dict(entries: list[str]) -> dict:
    pairs = [entry.split("=", 1) for entry in entries]
    assert all(len(pair) == 2 for pair in pairs), entries
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"duplicate Env names: {names}"
    return dict(pairs)


def importable(python_env: dict) -> set[str]:
    return {module for package in python_env["packages"] for module in package["provides"]}


# ---------------------------------------------------------------------------------------------
# Whole-flake evaluation


def test_flake_show_lists_the_outputs_derived_from_the_flavor_files(nix: Nix, flavors: dict):
    shown = json.loads(nix.run("flake", "show", "--json", nix.flake_ref, *nix.overrides).stdout)
    for system in SYSTEMS:
        names = flavors_on(flavors, system)
        assert set(shown["packages"][system]) == {flavors[n]["imageName"] for n in names} | {"mlws", "default"}
        assert set(shown["devShells"][system]) == set(names) | {"default"}
        assert set(shown["apps"][system]) == {"mlws", "default"}
        assert shown["formatter"][system]["type"] == "derivation"
        expected_checks = {"mlws-generate"}
        for name in names:
            expected_checks |= {f"{name}-image", f"{name}-commands"}
            expected_checks |= {f"{name}-commands-of-{parent}" for parent in ancestors(flavors, name)}
        assert set(shown["checks"][system]) == expected_checks
    assert "ml-workspace-gpu" not in shown["packages"]["aarch64-linux"]
    assert "ml-workspace-gpu" in shown["packages"]["x86_64-linux"]


def test_flake_check_evaluates_every_output_of_every_system(nix: Nix):
    result = nix.run("flake", "check", "--no-build", nix.flake_ref, *nix.overrides)
    assert "error" not in result.stderr.lower()


def test_every_output_has_a_well_formed_derivation(packages: dict, shells: dict, checks: dict, apps: dict, nix: Nix):
    formatters = nix.eval_json(
        "formatter", "builtins.mapAttrs (s: d: { drvPath = d.drvPath; attr = d.standInAttrPath; call = d.standInCall; })"
    )
    for system in SYSTEMS:
        for kind, outputs in (("packages", packages), ("devShells", shells), ("checks", checks)):
            for name, drv in outputs[system].items():
                assert drv["drvPath"].endswith(".drv") and STORE_PATH.match(drv["drvPath"]), (kind, name, drv["drvPath"])
                assert STORE_PATH.match(drv["out"]), (kind, name)
        assert formatters[system]["attr"] == "nixfmt-tree"
        # Generated files stay as the generator writes them.
        excludes = formatters[system]["call"]["args"]["settings"]["formatter"]["nixfmt"]["excludes"]
        assert set(excludes) == {"modules/*.nix", "flavors/*.nix"}
        assert STORE_PATH.match(formatters[system]["drvPath"])
        mlws_out = packages[system]["mlws"]["out"]
        for app in ("mlws", "default"):
            assert apps[system][app] == {"type": "app", "program": f"{mlws_out}/bin/mlws"}


def test_defaults_point_at_the_main_image_and_the_minimal_shell(packages: dict, shells: dict, flavors: dict):
    for system in SYSTEMS:
        main = [f["imageName"] for n, f in flavors.items() if system in f["systems"] and f["imageName"] == "ml-workspace"]
        expected = main[0] if main else flavors["minimal"]["imageName"]
        assert packages[system]["default"]["drvPath"] == packages[system][expected]["drvPath"]
        assert shells[system]["default"]["drvPath"] == shells[system]["minimal"]["drvPath"]


# ---------------------------------------------------------------------------------------------
# Images


def test_images_have_the_documented_configuration(packages: dict, flavors: dict, nix: Nix):
    project = pyproject()
    for system in SYSTEMS:
        mlws_out = packages[system]["mlws"]["out"]
        for name in flavors_on(flavors, system):
            flavor = flavors[name]
            args = image_call(packages, system, flavor)
            config = args["config"]
            assert args["name"] == flavor["imageName"]
            assert args["tag"] == project["version"]
            assert args["created"] == FIXED_CREATED
            assert config["User"] == "1000:1000"
            assert config["WorkingDir"] == "/workspace"
            assert config["Volumes"] == {"/workspace": {}}
            assert config["ExposedPorts"] == {"8080/tcp": {}}
            assert config["Entrypoint"] == [f"{mlws_out}/bin/mlws", "start"]
            env = env_dict(config["Env"])
            assert env["HOME"] == "/home/workspace" and env["USER"] == "workspace"
            assert env["WORKSPACE_PORT"] == "8080"
            assert env["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-bundle.crt"
            assert "/bin" in env["PATH"].split(":")
            for key, value in flavor["env"].items():
                assert env[key] == value, (name, key)
            # The manifest in the store is this flavor's generated manifest, byte for byte.
            manifest = Path(env["MLWS_MANIFEST"])
            assert STORE_PATH.match(str(manifest)) and manifest.name.endswith(f"-{name}.manifest.json")
            assert manifest.read_bytes() == (nix.flake_dir / "flavors" / f"{name}.manifest.json").read_bytes()
            assert json.loads(manifest.read_text())["flavor"] == name
            assert config["Labels"] == {
                "org.opencontainers.image.title": flavor["imageName"],
                "org.opencontainers.image.description": flavor["description"],
                "org.opencontainers.image.version": project["version"],
                "org.opencontainers.image.revision": "dirty",  # a path: flake has no git revision
                "org.opencontainers.image.source": project.get("repository") or project.get("homepage") or "unknown",
                "org.opencontainers.image.licenses": project["license"],
            }


def test_images_create_the_workspace_user_and_folders(packages: dict, flavors: dict):
    for system in SYSTEMS:
        for name in flavors_on(flavors, system):
            package = packages[system][flavors[name]["imageName"]]
            attrs = [item["attr"] for item in package["contents"]]
            for helper in ("dockerTools.binSh", "dockerTools.usrBinEnv", "dockerTools.caCertificates", "fakeNss"):
                assert helper in attrs, (name, helper)
            assert attrs.count("python3.withPackages") == 1
            assert packages[system]["mlws"]["out"] in {item["out"] for item in package["contents"]}
            nss = next(item for item in package["contents"] if item["attr"] == "fakeNss")["call"]["args"]
            assert nss["extraPasswdLines"] == ["workspace:x:1000:1000:ML workspace user:/home/workspace:/bin/sh"]
            assert nss["extraGroupLines"] == ["workspace:x:1000:"]
            args = image_call(packages, system, flavors[name])
            # extraCommands runs in the layer's root without privileges: relative paths only.
            extra = args["extraCommands"]
            assert "chmod 1777 tmp var/tmp" in extra
            assert re.search(r"mkdir -p .*\./workspace", extra) and re.search(r"\./home/workspace", extra)
            assert not re.search(r"(^|\s)/(tmp|workspace|home)", extra)
            assert "chown -R 1000:1000 ./workspace ./home/workspace ./run" in args["fakeRootCommands"]


def test_gpu_image_uses_cuda_builds_and_the_host_driver(packages: dict, flavors: dict):
    gpu = [name for name, f in flavors.items() if f["nixpkgsConfig"].get("cudaSupport")]
    assert gpu == ["gpu"], "exactly the gpu flavor enables CUDA"
    flavor = flavors["gpu"]
    for system in flavor["systems"]:
        package = packages[system][flavor["imageName"]]
        (python,) = package["python"]
        config = python["config"]
        # nixpkgs' CUDA guide: cudaSupport, nixpkgs' default capabilities (the CUDA cache's), an
        # unfree predicate instead of allowUnfree.
        assert config["cudaSupport"] is True
        assert "cudaCapabilities" not in config and "allowUnfree" not in config
        assert config["allowUnfreePredicate"] == "<function>"
        by_module: dict[str, list[str]] = {}
        for item in python["closure"]:
            for module in item["provides"]:
                by_module.setdefault(module, []).append(item["attr"])
        # One torch in the whole closure: the source build, as a CUDA build; everything built on
        # it (torchvision, accelerate, fastai, ...) uses that one.
        assert by_module["torch"] == ["python3Packages.torch"]
        closure = {item["attr"]: item for item in python["closure"]}
        for attr in ("torch", "torchvision", "torchaudio", "tensorflow-bin", "jax", "cupy", "opencv4"):
            assert closure[f"python3Packages.{attr}"]["cudaSupport"] is True, attr
        assert "python3Packages.catboost" not in closure, "catboost is broken with cudaSupport"
        env = env_dict(image_call(packages, system, flavor)["config"]["Env"])
        assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
        assert "compute" in env["NVIDIA_DRIVER_CAPABILITIES"].split(",")
        assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
        assert "/run/opengl-driver/lib" in env["LD_LIBRARY_PATH"].split(":")


def image_report(package: dict) -> dict:
    """What an image holds, as a person reading the test output wants it."""
    holds = package["holds"]
    (python,) = package["python"]
    return {
        "cuda_builds": sorted(i["attr"] for i in holds if i["cudaBuild"]),
        "unfree": {i["attr"]: sorted(l["shortName"] for l in i["licenses"] if not l["free"]) for i in holds if i["unfree"]},
        "python_packages": len(python["closure"]),
        "python_listed": len(python["packages"]),
    }


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "spec" / "flavors").glob("*.toml")))
def test_image_holds_only_what_its_flavor_admits(name: str, packages: dict, flavors: dict):
    """Prints what each image holds (CUDA builds, unfree packages with their licences, Python
    packages) and checks nothing unexpected is there: no CUDA build outside gpu, no unfree licence
    the flavor does not admit by name, and every admitted licence actually needed."""
    flavor = flavors[name]
    for system in flavor["systems"]:
        report = image_report(packages[system][flavor["imageName"]])
        print(f"\n{flavor['imageName']} ({system}): {json.dumps(report, indent=1, sort_keys=True)}")
        licences = {l for ls in report["unfree"].values() for l in ls}
        assert licences == set(flavor["unfreeLicenses"]), (name, system)
        # Netdata's dashboard build is the one unfree package of a CPU image.
        if "netdata" in flavor["tools"]:
            assert report["unfree"]["netdata"] == ["ncul1"]
        assert report["python_packages"] >= report["python_listed"] > 0
        if flavor["nixpkgsConfig"].get("cudaSupport"):
            assert "python3Packages.torch" in report["cuda_builds"]
            assert set(report["unfree"]) - {"netdata"} == {a for a in report["unfree"] if a.startswith("cudaPackages.")}
        else:
            assert report["cuda_builds"] == [], (name, system)
            assert set(report["unfree"]) <= {"netdata"}, (name, system)


def test_spark_image_holds_only_sparks_programs_and_one_pyspark(packages: dict, flavors: dict, nix: Nix):
    """nixpkgs' spark puts its whole distribution at the top of its output (`mv * $out/`): the
    image gets a package of links to its bin/ instead, without the programs pyspark's own
    package installs (bin/pyspark, bin/find-spark-home), so `pyspark` is there once."""
    flavor = flavors["spark"]
    spark_out = nix.eval_json(f"packages.x86_64-linux.{flavor['imageName']}", "i: (builtins.head (builtins.filter (c: (c.name or \"\") == \"spark-programs-run\") i.standInArgs.contents)).standInArgs.buildCommand")
    for system in flavor["systems"]:
        package = packages[system][flavor["imageName"]]
        attrs = [item["attr"] for item in package["contents"]]
        assert "spark" not in attrs, "the spark package itself would spill into the image's /"
        (programs,) = [item for item in package["contents"] if item["attr"] == "runCommand" and item["call"]["args"]["name"] == "spark-programs"]
        script = programs["call"]["args"]["buildCommand"]
        assert "mkdir -p $out/bin" in script and 'ln -s "$program" "$out/bin/$name"' in script
        assert 'case " find-spark-home pyspark " in' in script
        (python,) = package["python"]
        assert [p["attr"] for p in python["closure"] if p["attr"] == "python3Packages.pyspark"] == ["python3Packages.pyspark"]
    # The links point into nixpkgs' spark package.
    assert re.search(r"for program in /nix/store/[0-9a-z]{32}-spark-[^/]+/bin/\*; do", spark_out)


def test_dev_shells_carry_exactly_the_image_packages_and_python(packages: dict, shells: dict, flavors: dict):
    image_only = {"dockerTools.binSh", "dockerTools.usrBinEnv", "dockerTools.caCertificates", "fakeNss"}
    for system in SYSTEMS:
        for name in flavors_on(flavors, system):
            image = packages[system][flavors[name]["imageName"]]
            shell = shells[system][name]
            assert shell["call"]["fn"] == "mkShell"
            image_contents = [item["out"] for item in image["contents"] if item["attr"] not in image_only]
            assert [item["out"] for item in shell["packages"]] == image_contents
            assert shell["python"][0]["out"] == image["python"][0]["out"]
            assert [p["attr"] for p in shell["python"][0]["packages"]] == [p["attr"] for p in image["python"][0]["packages"]]
            image_env = env_dict(image_call(packages, system, flavors[name])["config"]["Env"])
            hook = shell["call"]["args"]["shellHook"].splitlines()
            assert f"export MLWS_MANIFEST='{image_env['MLWS_MANIFEST']}'" in hook
            # The flavor's environment too, except the loader path: on a host it would put the
            # distribution's libraries in front of Nix's.
            for key, value in flavors[name]["env"].items():
                exported = f"export {key}='{value}'" in hook
                assert exported == (key != "LD_LIBRARY_PATH"), (name, key)
            # The R kernel's path, exactly when the image sets it.
            jupyter_path = [line for line in hook if line.startswith("export JUPYTER_PATH=")]
            if "JUPYTER_PATH" in image_env and "JUPYTER_PATH" not in flavors[name]["env"]:
                assert jupyter_path == [f"export JUPYTER_PATH='{image_env['JUPYTER_PATH']}'"], name
            elif "JUPYTER_PATH" not in image_env:
                assert jupyter_path == [], name


# ---------------------------------------------------------------------------------------------
# A flavor that extends another passes its parent's checks


def flavor_pairs() -> list[tuple[str, str]]:
    """(flavor, owner of the checks) for every flavor and each flavor it extends, itself included."""
    import tomllib

    specs = {p.stem: tomllib.loads(p.read_text()) for p in (REPO / "spec" / "flavors").glob("*.toml")}
    pairs = []
    for name in sorted(specs):
        owner = name
        while owner is not None:
            pairs.append((name, owner))
            owner = specs[owner].get("extends")
    return pairs


@pytest.mark.parametrize(("name", "owner"), flavor_pairs())
def test_flavor_passes_the_checks_of(name: str, owner: str, packages: dict, flavors: dict, checks: dict):
    """The owner's expectations, applied to the flavor: a child keeps what its parent offers."""
    flavor, expected = flavors[name], flavors[owner]
    assert owner == name or owner in ancestors(flavors, name)
    assert set(flavor["systems"]) <= set(expected["systems"])
    assert set(expected["tools"]) <= set(flavor["tools"])
    owner_manifest = json.loads(Path(expected["manifest"]).read_text())
    manifest = json.loads(Path(flavor["manifest"]).read_text())
    assert {t["name"] for t in owner_manifest["tools"]} <= {t["name"] for t in manifest["tools"]}
    for system in flavor["systems"]:
        image = packages[system][flavor["imageName"]]
        owner_image = packages[system][expected["imageName"]]
        # Everything importable in the owner's Python is importable in the flavor's (a replaced
        # package still provides the module), except what the flavor's spec removes (gpu:
        # catboost, broken with cudaSupport).
        removed = {m for p in owner_image["python"][0]["packages"] if p["attr"].split(".", 1)[1] in removed_python(name) for m in p["provides"]}
        assert importable(owner_image["python"][0]) - removed <= importable(image["python"][0])
        owner_system = {i["attr"] for i in owner_image["contents"]} - {"python3.withPackages", "runCommand"}
        assert owner_system <= {i["attr"] for i in image["contents"]}
        env = env_dict(image_call(packages, system, flavor)["config"]["Env"])
        for key in expected["env"]:
            assert key in env
        suffix = "commands" if owner == name else f"commands-of-{owner}"
        assert f"{name}-{suffix}" in checks[system]
        # The owner's R packages reach the flavor's R, Jupyter and RStudio.
        assert set(expected["rPackages"]) <= set(flavor["rPackages"])
        if expected["rPackages"]:
            assert_r_is_wired(packages, system, flavor)


def removed_python(name: str) -> set[str]:
    """python3Packages a flavor's spec (or its ancestors') removes from what it inherits."""
    import tomllib

    removed: set[str] = set()
    current = name
    while current is not None:
        spec = tomllib.loads((REPO / "spec" / "flavors" / f"{current}.toml").read_text())
        removed |= set(spec.get("remove", {}).get("python", []))
        current = spec.get("extends")
    return removed


def r_items(image: dict) -> dict[str, list[dict]]:
    """The image's R-related contents by attribute path."""
    wanted = ("R", "rWrapper", "rstudio-server", "rstudioServerWrapper", "writeTextDir")
    return {attr: [item for item in image["contents"] if item["attr"] == attr] for attr in wanted}


def assert_r_is_wired(packages: dict, system: str, flavor: dict) -> None:
    """R wrapped with the flavor's R packages, a kernelspec running that R on JUPYTER_PATH, and
    RStudio Server wrapped with the same packages; no bare R or rstudio-server beside them."""
    image = packages[system][flavor["imageName"]]
    items = r_items(image)
    expected = [f"rPackages.{name}" for name in flavor["rPackages"]]
    (r_env,) = items["rWrapper"]
    assert r_env["call"] == {"fn": "rWrapper.override", "args": {"packages": expected}}
    assert items["R"] == [], "bare R sees no rPackages: only the wrapper belongs in the image"
    if "rstudio" in flavor["tools"]:
        (rstudio,) = items["rstudioServerWrapper"]
        assert rstudio["call"] == {"fn": "rstudioServerWrapper.override", "args": {"packages": expected}}
        assert items["rstudio-server"] == []
    (kernel,) = items["writeTextDir"]
    assert kernel["call"]["fn"] == "writeTextDir"
    assert kernel["call"]["args"]["path"] == "share/jupyter/kernels/ir/kernel.json"
    spec = json.loads(kernel["call"]["args"]["text"])
    assert spec["argv"] == [f"{r_env['out']}/bin/R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"]
    assert spec["language"] == "R" and spec["display_name"] == "R"
    env = env_dict(image_call(packages, system, flavor)["config"]["Env"])
    assert env["JUPYTER_PATH"] == f"{kernel['out']}/share/jupyter"


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "spec" / "flavors").glob("*.toml")))
def test_r_packages_reach_r_jupyter_and_rstudio_only_where_listed(name: str, packages: dict, flavors: dict):
    flavor = flavors[name]
    for system in flavor["systems"]:
        if flavor["rPackages"]:
            assert "IRkernel" in flavor["rPackages"], "every flavor with R offers R in Jupyter"
            assert_r_is_wired(packages, system, flavor)
        else:
            image = packages[system][flavor["imageName"]]
            items = r_items(image)
            assert items["rWrapper"] == items["rstudioServerWrapper"] == items["writeTextDir"] == [], name
            assert "JUPYTER_PATH" not in env_dict(image_call(packages, system, flavor)["config"]["Env"])


def test_commands_checks_use_each_owners_manifest_against_the_flavors_packages(checks: dict, flavors: dict, packages: dict):
    for system in SYSTEMS:
        for name in flavors_on(flavors, system):
            image = packages[system][flavors[name]["imageName"]]
            for owner in [name, *ancestors(flavors, name)]:
                check = checks[system][f"{name}-commands" if owner == name else f"{name}-commands-of-{owner}"]
                args = check["call"]["args"]
                assert args["env"]["nativeBuildInputs"][0]["drv"] == "python3.withPackages"
                search = args["env"]["searchPath"].split(":")
                assert f"{image['python'][0]['out']}/bin" in search
                assert f"{packages[system]['mlws']['out']}/bin" in search
                assert re.search(rf"python3 - /nix/store/\S+-{owner}\.manifest\.json", args["buildCommand"])


# ---------------------------------------------------------------------------------------------
# The app and the generate check


def test_mlws_app_is_built_by_nixpkgs_python_builder_from_the_project(packages: dict):
    project = pyproject()
    for system in SYSTEMS:
        call = packages[system]["mlws"]["call"]
        assert call["fn"] == "python3Packages.buildPythonApplication"
        args = call["args"]
        assert (args["pname"], args["version"]) == (project["name"], project["version"])
        # PEP 517 with the project's own backend, poetry-core; no poetry2nix anywhere.
        assert args["pyproject"] is True
        assert args["build-system"] == ["python3Packages.poetry-core"]
        assert args["meta"]["mainProgram"] == "mlws" and "mlws" in project["scripts"]
        # The filtered source: the app's files, not the tests, Nix files or docs.
        assert args["src"].endswith("-mlws-app-source")
        present = {p.name for p in Path(args["src"]).iterdir()}
        assert present == {"pyproject.toml", "poetry.lock", "README.md"} | {p["include"] for p in project["packages"]}
        # Every main dependency comes from nixpkgs' python3Packages.
        declared = {name.lower() for name in project["dependencies"]} - {"python"}
        assert set(args["dependencies"]) == {f"python3Packages.{name}" for name in declared}


def test_generate_check_runs_mlws_generate_check_on_the_generated_sources(checks: dict, packages: dict, nix: Nix):
    for system in SYSTEMS:
        check = checks[system]["mlws-generate"]["call"]["args"]
        assert check["env"]["nativeBuildInputs"][0]["call"]["fn"] == "python3Packages.buildPythonApplication"
        match = re.search(r"mlws generate --root (/nix/store/\S+) --check", check["buildCommand"])
        assert match, check["buildCommand"]
    source = Path(match.group(1))
    assert source.name.endswith("-mlws-generated-source")
    present = {p.name for p in source.iterdir()}
    assert {"spec", "modules", "flavors", "generator", "runtime", "pyproject.toml"} <= present
    assert not present & {"tests", "flake.nix", "nix", "bench", ".git"}
    assert not list(source.rglob("__pycache__"))


def test_image_revision_is_the_git_commit_of_a_clean_checkout(nix: Nix, tmp_path: Path, flavors: dict):
    checkout = tmp_path / "checkout"
    shutil.copytree(nix.flake_dir, checkout)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=checkout, check=True)
    # Nix 2.8 drops self.rev when the lock file in use differs from the committed one (as with
    # --override-input), so the checkout commits a lock of the stand-ins: its clean tree is then
    # evaluated without overrides, as a real checkout with its real lock would be.
    lock_overrides = [arg for arg in nix.overrides if arg != "--no-write-lock-file"]
    nix.run("flake", "lock", f"path:{checkout}", *lock_overrides)
    subprocess.run([*git, "add", "-A"], cwd=checkout, check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], cwd=checkout, check=True)
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, check=True).stdout.strip()
    image = flavors["minimal"]["imageName"]
    result = nix.run("eval", "--json", f"git+file://{checkout}#packages.x86_64-linux.{image}.standInCall.args.config.Labels")
    assert json.loads(result.stdout)["org.opencontainers.image.revision"] == rev
    assert "dirty" not in result.stderr


# ---------------------------------------------------------------------------------------------
# The lock file


def test_flake_lock_pins_the_facts_file_revisions():
    lock = json.loads((REPO / "flake.lock").read_text())
    assert lock["version"] == 7 and lock["root"] == "root"
    nodes = lock["nodes"]
    # nixpkgs is the one input (the app is built with nixpkgs' own Python builder).
    assert nodes["root"]["inputs"] == {"nixpkgs": "nixpkgs"}
    assert set(nodes) == {"root", "nixpkgs"}
    nixpkgs = nodes["nixpkgs"]
    assert nixpkgs["locked"] == {
        "lastModified": 1786245335,
        "narHash": "sha256-NVDxntpqjGupi9GU2vQPrWKzgOL2rjGxedlshk65kNk=",
        "owner": "NixOS",
        "repo": "nixpkgs",
        "rev": "33ddeb9e7c03403e17814e8aac1f7affe6d70b21",
        "type": "github",
    }
    assert nixpkgs["original"] == {"owner": "NixOS", "ref": "nixos-26.05", "repo": "nixpkgs", "type": "github"}
    for name, node in nodes.items():
        if name == "root":
            continue
        assert re.fullmatch(r"[0-9a-f]{40}", node["locked"]["rev"]), name
        assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", node["locked"]["narHash"]), name
        for target in node.get("inputs", {}).values():
            if isinstance(target, str):
                assert target in nodes, (name, target)


def test_flake_offers_the_cuda_binary_cache_and_pins_its_inputs(nix: Nix):
    flake = json.loads(nix.eval_expr(
        f"let f = import {REPO / 'flake.nix'}; in {{ inherit (f) description nixConfig; "
        "inputs = builtins.mapAttrs (n: i: removeAttrs i [ \"inputs\" ] // { follows = builtins.mapAttrs (m: j: j.follows or null) (i.inputs or { }); }) f.inputs; }"
    ).stdout)
    assert flake["description"].startswith("mlws")
    assert flake["nixConfig"] == {
        "extra-substituters": ["https://cache.nixos-cuda.org"],
        "extra-trusted-public-keys": ["cache.nixos-cuda.org:74DUi4Ye579gUqzH4ziL9IyiJBlDpMRn9MBN8oNan9M="],
    }
    assert flake["inputs"] == {"nixpkgs": {"url": "github:NixOS/nixpkgs/nixos-26.05", "follows": {}}}


def fake_flake(path: Path, inputs: dict[str, str], follows: dict[str, str] | None = None) -> None:
    """A do-nothing flake with the given inputs (name -> url) and `inputs.X.inputs.Y.follows`."""
    path.mkdir(parents=True)
    lines = [f'    {name}.url = "{url}";' for name, url in inputs.items()]
    lines += [f'    {name}.follows = "{target}";' for name, target in (follows or {}).items()]
    path.joinpath("flake.nix").write_text("{\n  inputs = {\n" + "\n".join(lines) + "\n  };\n  outputs = _: { };\n}\n")


def lock_shape(lock: dict) -> dict:
    """The graph of a lock file: each node's inputs, without what was fetched."""
    return {name: node.get("inputs", {}) for name, node in lock["nodes"].items()}


def test_flake_lock_graph_is_what_nix_computes_from_the_inputs_and_follows(nix: Nix, tmp_path: Path):
    """Nix locks a copy of flake.nix whose github input points at a local look-alike: the graph
    must be the committed flake.lock's."""
    fakes = tmp_path / "fakes"
    fake_flake(fakes / "nixpkgs", {})
    work = tmp_path / "flake"
    work.mkdir()
    source = (REPO / "flake.nix").read_text()
    rewritten = source.replace('"github:NixOS/nixpkgs/nixos-26.05"', f'"path:{fakes / "nixpkgs"}"')
    assert rewritten.count("path:") == 1, "flake.nix input URLs changed: update this test"
    (work / "flake.nix").write_text(rewritten)
    nix.run("flake", "lock", f"path:{work}")
    computed = json.loads((work / "flake.lock").read_text())
    committed = json.loads((REPO / "flake.lock").read_text())
    assert lock_shape(computed) == lock_shape(committed)
