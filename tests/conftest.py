"""Shared fixtures. Generator tests: a scratch copy of the repo's spec and generated files, and a
way to run the real `mlws` CLI in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GENERATOR_TREES = ("spec", "modules", "flavors")
if str(REPO) not in sys.path:  # the repo's packages (generator, runtime) without installing them
    sys.path.insert(0, str(REPO))


def run_mlws(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m generator ARGS` (the `mlws` entry point) from this checkout."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(REPO) + os.pathsep + environment.get("PYTHONPATH", "")
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "generator", *args],
        cwd=cwd or REPO, env=environment, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
def mlws():
    return run_mlws


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A scratch repo holding copies of spec/, modules/ and flavors/."""
    root = tmp_path / "repo"
    for tree in GENERATOR_TREES:
        shutil.copytree(REPO / tree, root / tree)
    return root
