"""The user's own software environment, layered on the image's and kept in the work folder.

Why: in an image built with Nix the Python environment is a read-only `python3.withPackages`
(nixpkgs' pkgs/development/interpreters/python/wrapper.nix: a buildEnv whose `bin/python3` is a
makeWrapper of the interpreter with `--set PYTHONNOUSERSITE true`), so neither `pip install`
nor `pip install --user` can work as the workspace user. A venv can: `python -m venv` from the
environment's interpreter gives `sys.prefix` = the venv, which pip installs into. Its packages
must still see the image's pinned ones, and pip must resolve against them; a `.pth` file in the
venv's site-packages adds the image's site-packages after the venv's own (`site.addsitedir`, so
the `.pth` files there are processed too). A user's install of a newer version shadows the
image's; the image's own files are never touched.

The venv lives under `<work folder>/.workspace/python/cpython-<major>.<minor>/`, so it survives
re-creating the container. Its `bin/python` is a symlink to the interpreter of the image that
made it; a new image (another store path) would leave it dangling, so every start refreshes the
venv's links and `.pth` (`venv --upgrade` keeps site-packages) when the image's Python moved.
npm's global prefix lives beside it (`.workspace/npm`), for `npm install -g`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess

ENV_FOLDER = os.path.join(".workspace", "python")
NPM_FOLDER = os.path.join(".workspace", "npm")
PTH_NAME = "mlws-image.pth"
# `pip` and `pip3` in the venv: the image's pip, run by the venv's interpreter (`--without-pip`
# keeps pip itself out of the venv, so pip is the image's pinned one).
PIP_SHIM = '#!/bin/sh\n# mlws: the image\'s pip, installing into this environment\nexec "$(dirname "$0")/python" -m pip "$@"\n'


class UserEnvError(Exception):
    """The user environment cannot be prepared; the message says where and why."""


@dataclasses.dataclass(frozen=True)
class BasePython:
    """What the image's interpreter reports about itself."""

    executable: str
    version: str  # "3.13"
    site_packages: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class UserEnv:
    root: str
    python: str
    bin_dir: str
    site_packages: str
    npm_prefix: str


def inspect_python(python: str) -> BasePython:
    """Ask the image's interpreter for its version and site-packages (it may not be ours)."""
    probe = ("import json, site, sys; print(json.dumps({'executable': sys.executable, "
             "'version': '%d.%d' % sys.version_info[:2], 'site': site.getsitepackages()}))")
    try:
        out = subprocess.run([python, "-c", probe], check=True, capture_output=True, text=True, timeout=60)
        data = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        raise UserEnvError(f"cannot run the image's Python {python}: {error}") from error
    return BasePython(python, data["version"], tuple(data["site"]))


def env_paths(workspace_dir: str, version: str) -> UserEnv:
    root = os.path.join(workspace_dir, ENV_FOLDER, f"cpython-{version}")
    return UserEnv(
        root=root,
        python=os.path.join(root, "bin", "python"),
        bin_dir=os.path.join(root, "bin"),
        site_packages=os.path.join(root, "lib", f"python{version}", "site-packages"),
        npm_prefix=os.path.join(workspace_dir, NPM_FOLDER),
    )


def _write_atomic(path: str, text: str, mode: int) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def ensure(workspace_dir: str, base_python: str) -> UserEnv:
    """Create or refresh the user environment for the image's Python; return its paths."""
    base = inspect_python(base_python)
    paths = env_paths(workspace_dir, base.version)
    if os.path.realpath(os.path.dirname(base.executable)) == os.path.realpath(paths.bin_dir):
        return paths  # started from inside the workspace: PATH's python3 is this environment already
    # Which interpreter made the venv: pyvenv.cfg's `home` names the base of a base (a venv made
    # from a venv records the outer one's home), so a marker of our own says which one we used.
    marker = os.path.join(paths.root, "mlws-base-python")
    made_from = None
    try:
        with open(marker, encoding="utf-8") as handle:
            made_from = handle.read().strip()
    except OSError:
        pass
    if made_from != base.executable or not os.path.exists(paths.python):
        os.makedirs(os.path.dirname(paths.root), exist_ok=True)
        argv = [base.executable, "-m", "venv", "--without-pip"]
        if os.path.exists(os.path.join(paths.root, "pyvenv.cfg")):
            argv.append("--upgrade")  # keep site-packages: only the links and pyvenv.cfg change
        try:
            subprocess.run([*argv, paths.root], check=True, capture_output=True, text=True, timeout=120)
        except subprocess.CalledProcessError as error:
            raise UserEnvError(f"cannot create the Python environment {paths.root}: "
                               f"{(error.stderr or error.stdout).strip()}") from error
        except (OSError, subprocess.SubprocessError) as error:
            raise UserEnvError(f"cannot create the Python environment {paths.root}: {error}") from error
        _write_atomic(marker, base.executable + "\n", 0o644)
    os.makedirs(paths.site_packages, exist_ok=True)
    lines = ["# mlws: the image's packages, after this environment's own (written at every start)"]
    lines += [f"import site; site.addsitedir({path!r})" for path in base.site_packages if os.path.isdir(path)]
    _write_atomic(os.path.join(paths.site_packages, PTH_NAME), "\n".join(lines) + "\n", 0o644)
    for name in ("pip", "pip3", f"pip{base.version}"):
        _write_atomic(os.path.join(paths.bin_dir, name), PIP_SHIM, 0o755)
    os.makedirs(os.path.join(paths.npm_prefix, "bin"), exist_ok=True)
    return paths


def tool_environment(paths: UserEnv, path_env: str) -> dict[str, str]:
    """Variables every tool process gets, so terminals, kernels and jobs use the user environment."""
    return {
        "PATH": os.pathsep.join([paths.bin_dir, os.path.join(paths.npm_prefix, "bin"), path_env]),
        "VIRTUAL_ENV": paths.root,
        "NPM_CONFIG_PREFIX": paths.npm_prefix,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


def kernel_spec(paths: UserEnv) -> dict:
    """The `python3` kernel of the user environment (replaces Jupyter's native one by name)."""
    return {
        "argv": [paths.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "metadata": {"debugger": True},
    }
