"""The flake's `lib.mkJobImage` (nix/job-image.nix), evaluated for real by Nix against the stand-ins.

Nix runs as tests/test_flake.py runs it (a scratch copy of the flake, the strict nixpkgs and
poetry2nix stand-ins as --override-input, offline). `--impure` because the job's code is a path
outside the flake, as in a user's own flake (`code = ./train;`). Nothing is built: the stand-in
records each builder call, and the test reads what the image was asked to contain.
"""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.test_flake import REPO, Nix, committable_files, copy_tree_files, make_stand_ins

SYSTEM = "x86_64-linux"

# What an image is, as JSON: its builder call's config and the packages of its Python environment.
SUMMARY = """
  image: let
    args = image.standInArgs;
    pythonEnvs = builtins.filter (d: (d.standInAttrPath or "") == "python3.withPackages") args.contents;
  in {
    fn = image.standInCall.fn;
    name = args.name;
    inherit (args.config) Env Entrypoint WorkingDir User;
    title = args.config.Labels."org.opencontainers.image.title";
    description = args.config.Labels."org.opencontainers.image.description";
    python = map (env: map (p: p.standInAttrPath) env.standInArgs.packages) pythonEnvs;
  }
"""


@pytest.fixture(scope="module")
def nix(tmp_path_factory) -> Nix:
    if shutil.which("nix") is None:
        raise AssertionError("Nix is required: apt-get install -y nix-bin (Debian's Nix 2.8 evaluates flakes offline)")
    base = tmp_path_factory.mktemp("job-flake")
    copy_tree_files(REPO, base / "src", committable_files(REPO))
    stand_ins = make_stand_ins(base / "stand-ins")
    (base / "home").mkdir()
    return Nix(base / "src", stand_ins, base / "home")


@pytest.fixture(scope="module")
def job_code(tmp_path_factory):
    folder = tmp_path_factory.mktemp("job-code") / "train"
    folder.mkdir()
    (folder / "__main__.py").write_text("import tabulate\nprint(tabulate.tabulate([[1, 2]]))\n")
    return folder


def job_image(nix: Nix, arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    apply = f"lib: ({SUMMARY}) (lib.mkJobImage {{ {arguments} }})"
    return nix.run("eval", "--json", "--impure", f"{nix.flake_ref}#lib", *nix.overrides, "--apply", apply, check=check)


def env_of(summary: dict) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in summary["Env"])


def workspace_image(nix: Nix, flavor_image: str) -> dict:
    return nix.eval_json(f"packages.{SYSTEM}.{flavor_image}", apply=SUMMARY)


def test_job_image_bakes_the_code_and_its_python_packages_into_the_flavor_image(nix, job_code):
    summary = json.loads(job_image(nix, f'system = "{SYSTEM}"; name = "train"; code = {job_code}; '
                                        'pythonPackages = ps: [ ps.tabulate ];').stdout)
    assert summary["fn"] == "dockerTools.buildLayeredImage"
    assert summary["name"] == summary["title"] == "train"
    env = env_of(summary)
    assert env["EXECUTE_CODE"].startswith("/nix/store/") and env["EXECUTE_CODE"].endswith("-train")
    assert env["MLWS_JOB_MODE"] == "code-only"
    # Still the workspace's entrypoint, user and work folder: `mlws start` runs the job.
    base = workspace_image(nix, "ml-workspace-minimal")
    for key in ("Entrypoint", "WorkingDir", "User"):
        assert summary[key] == base[key]
    assert env["MLWS_MANIFEST"] == env_of(base)["MLWS_MANIFEST"]
    # One Python environment: the flavor's packages plus the job's.
    assert len(summary["python"]) == 1 and len(base["python"]) == 1
    assert set(summary["python"][0]) == set(base["python"][0]) | {"python3Packages.tabulate"}
    assert "python3Packages.tabulate" not in base["python"][0]
    assert summary["description"] == "train: a job on ml-workspace-minimal"


def test_job_image_options_flavor_mode_env_and_duplicates(nix, job_code):
    summary = json.loads(job_image(nix, f'system = "{SYSTEM}"; flavor = "r"; name = "train"; code = {job_code}; '
                                        'mode = "all"; env = { LOG_LEVEL = "debug"; EXECUTE_CODE = "/elsewhere"; }; '
                                        'pythonPackages = ps: [ ps.numpy ];').stdout)
    env = env_of(summary)
    assert env["MLWS_JOB_MODE"] == "all" and env["LOG_LEVEL"] == "debug"
    assert env["EXECUTE_CODE"] != "/elsewhere", "a user's env must not replace EXECUTE_CODE"
    base = workspace_image(nix, "ml-workspace-r")
    assert sorted(summary["python"][0]) == sorted(base["python"][0]), "numpy (already in the flavor) is listed once"


@pytest.mark.parametrize("arguments, message", [
    ('mode = "sometimes";', 'mlws.lib.mkJobImage: mode = "sometimes": expected one of ["code-only","all","requirements-only"]'),
    ('flavor = "nope";', 'mlws.lib.mkJobImage: flavor "nope": expected one built for x86_64-linux'),
    ('pythonPackages = [ ];', "mlws.lib.mkJobImage: pythonPackages must be a function (ps: [ ps.tqdm ]), got a list"),
])
def test_job_image_bad_arguments_fail_with_a_clear_message(nix, job_code, arguments, message):
    result = job_image(nix, f'system = "{SYSTEM}"; name = "train"; code = {job_code}; {arguments}', check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_job_image_unknown_system_fails_with_a_clear_message(nix, job_code):
    result = job_image(nix, f'system = "riscv64-linux"; name = "train"; code = {job_code};', check=False)
    assert result.returncode != 0
    assert 'mlws.lib.mkJobImage: system "riscv64-linux": expected one of ["x86_64-linux","aarch64-linux"]' in result.stderr
