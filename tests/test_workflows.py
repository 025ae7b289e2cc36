"""The GitHub workflows under .github/: linted by the real tools (actionlint with shellcheck,
zizmor offline), every action pinned by commit SHA, least-privilege permissions, and thin steps
that only call the repository's scripts and `mlws` commands (whose logic is tested here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
GITHUB = REPO / ".github"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))
ACTIONS = sorted(GITHUB.glob("actions/*/action.yml"))
SCRIPTS = sorted(p for p in (GITHUB / "scripts").iterdir() if p.is_file())
VENV_BIN = Path(sys.executable).parent
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
# What a `run:` line may start with: our scripts, mlws, and a few plain tools.
ALLOWED_COMMANDS = {"mlws", "nix", "cosign", "cat", "rm", "python3", "bash"}


def tool(name: str) -> str:
    found = shutil.which(name) or (str(VENV_BIN / name) if (VENV_BIN / name).exists() else None)
    if found is None:
        raise AssertionError(f"{name} is required (scripts/install-deps installs it)")
    return found


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def jobs() -> list[tuple[str, str, dict]]:
    return [(path.name, name, job) for path in WORKFLOWS for name, job in load(path)["jobs"].items()]


def steps() -> list[tuple[str, dict]]:
    found = [(f"{w}:{j}", step) for w, j, job in jobs() for step in job["steps"]]
    found += [(path.parent.name, step) for path in ACTIONS for step in load(path)["runs"]["steps"]]
    return found


def test_there_are_workflows_for_images_and_the_lock_update():
    assert {p.name for p in WORKFLOWS} == {"images.yml", "update-flake-lock.yml"}
    images = load(GITHUB / "workflows" / "images.yml")
    triggers = images[True]  # YAML 1.1 reads the key `on` as true
    assert set(triggers) == {"pull_request", "push", "workflow_dispatch"}
    assert triggers["push"] == {"branches": ["main"], "tags": ["v*"]}
    assert "schedule" in load(GITHUB / "workflows" / "update-flake-lock.yml")[True]


def test_actionlint_passes_with_shellcheck():
    shellcheck = tool("shellcheck")
    env = dict(os.environ, PATH=f"{Path(shellcheck).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run([tool("actionlint"), "-color=false", *map(str, WORKFLOWS)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing_at_medium_or_above():
    result = subprocess.run([tool("zizmor"), "--offline", "--format", "json", str(GITHUB)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    findings = json.loads(result.stdout)
    serious = [(f["ident"], f["determinations"]["severity"], f["locations"][0]["symbolic"]["key"])
               for f in findings if f["determinations"]["severity"] in ("Medium", "High")]
    assert serious == []
    audited = result.stderr.count("completed")
    assert audited == len(WORKFLOWS) + len(ACTIONS), result.stderr


def test_every_action_is_pinned_by_commit_sha_with_its_version():
    uses = [(where, step["uses"]) for where, step in steps() if "uses" in step]
    assert uses
    text = "\n".join(p.read_text() for p in [*WORKFLOWS, *ACTIONS])
    for where, reference in uses:
        if reference.startswith("./"):
            assert (REPO / reference / "action.yml").is_file(), (where, reference)
            continue
        assert PINNED.match(reference), (where, reference)
        assert re.search(re.escape(reference) + r" # v\d+\.\d+\.\d+\n", text), f"{reference}: no version comment"


def test_permissions_are_none_by_default_and_least_privilege_per_job():
    for path in WORKFLOWS:
        assert load(path)["permissions"] == {}, path.name
    for workflow, name, job in jobs():
        permissions = job.get("permissions")
        assert isinstance(permissions, dict) and permissions, f"{workflow}:{name} sets no permissions"
        assert set(permissions.values()) <= {"read", "write"}
        writes = {scope for scope, level in permissions.items() if level == "write"}
        if workflow == "images.yml":
            # Only the tag-only publishing jobs may write, and only what pushing and releasing need.
            if writes:
                assert "refs/tags/v" in job["if"], name
                assert writes <= {"packages", "id-token", "attestations", "contents"}, name
                assert "contents" not in writes or name == "release", name
        else:
            assert writes <= ({"contents", "pull-requests"} if name == "pull-request" else set()), name


def test_checkouts_keep_no_credentials():
    for where, step in steps():
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False, where


def mlws_commands() -> set[tuple[str, ...]]:
    sys.path.insert(0, str(REPO))
    from generator.cli import main

    commands = set()
    for name, command in main.commands.items():
        commands.add((name,))
        for sub in getattr(command, "commands", {}):
            commands.add((name, sub))
    return commands


def test_steps_are_thin_calls_of_repository_scripts_and_mlws_commands():
    known = mlws_commands()
    texts = [(where, step["run"]) for where, step in steps() if "run" in step]
    texts += [(script.name, script.read_text()) for script in SCRIPTS]
    used_scripts = set()
    for where, step in steps():
        if "run" not in step:
            continue
        lines = [line.strip() for line in step["run"].strip().splitlines()]
        assert len(lines) <= 3, f"{where}: a run step of {len(lines)} lines belongs in a script"
        for line in lines:
            command = line.split()[0]
            if command.startswith(".github/scripts/") or '"$GITHUB_ACTION_PATH/../../scripts/' in line:
                script = re.search(r"scripts/([\w.-]+)", line).group(1)
                assert os.access(GITHUB / "scripts" / script, os.X_OK), f"{where}: {script} missing or not executable"
                used_scripts.add(script)
            else:
                assert command in ALLOWED_COMMANDS, f"{where}: {line!r}"
    for where, text in texts:
        for match in re.finditer(r"\bmlws ((?:image )?[a-z-]+)", text):
            assert tuple(match.group(1).split()) in known, f"{where}: mlws {match.group(1)} does not exist"
    helpers = {"diffoscope-report"}  # called by rebuild-check too
    assert {s.name for s in SCRIPTS} == used_scripts | helpers


def test_scripts_pass_shellcheck():
    bash_scripts = [str(s) for s in SCRIPTS if s.read_text().startswith("#!/usr/bin/env bash")]
    assert bash_scripts
    result = subprocess.run([tool("shellcheck"), "--external-sources", *bash_scripts], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cuda_settings_come_from_the_flake(tmp_path):
    """The GPU job trusts exactly the CUDA cache flake.nix's nixConfig names; others trust none."""
    output = tmp_path / "github-output"
    for cuda in ("true", "false"):
        output.write_text("")
        result = subprocess.run([sys.executable, str(GITHUB / "scripts" / "nix-config"), cuda], cwd=REPO,
                                env=dict(os.environ, GITHUB_OUTPUT=str(output)), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        lines = output.read_text().splitlines()
        assert lines[0].startswith("config<<") and lines[-1] == lines[0][len("config<<"):]
        settings = dict(line.split(" = ", 1) for line in lines[1:-1])
        flake = (REPO / "flake.nix").read_text()
        if cuda == "true":
            assert settings["extra-substituters"] == settings["extra-trusted-substituters"] == "https://cache.nixos-cuda.org"
            assert settings["extra-trusted-public-keys"] in flake
        else:
            assert set(settings) == {"experimental-features"}
