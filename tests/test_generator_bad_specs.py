"""The broken-spec corpus (tests/bad-specs/): every mistake gives exit 2, an error line naming the
file and the key, and leaves every generated file as it was."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "bad-specs"
CASES = tomllib.loads((CORPUS / "cases.toml").read_text())


def lay_over(case: str, root: Path) -> None:
    for rel in CASES[case].get("delete", []):
        (root / rel).unlink()
    source = CORPUS / case
    for path in sorted(source.rglob("*")):
        if path.is_file() and path.name != "README":
            target = root / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


def generated_state(root: Path) -> dict[str, tuple[bytes, int]]:
    state = {}
    for tree in ("modules", "flavors"):
        for path in sorted((root / tree).rglob("*")):
            state[str(path.relative_to(root))] = (path.read_bytes(), os.stat(path).st_mtime_ns)
    return state


def test_corpus_has_thirty_distinct_cases_each_with_a_folder():
    folders = {p.name for p in CORPUS.iterdir() if p.is_dir()}
    assert folders == set(CASES)
    assert len(CASES) >= 30
    for name, case in CASES.items():
        assert set(case) <= {"file", "key", "delete"}, name
        assert isinstance(case["file"], str) and isinstance(case["key"], str), name


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_spec_is_rejected_naming_file_and_key_and_nothing_is_written(case, repo_copy, mlws):
    lay_over(case, repo_copy)
    # A valid change as well: had generation gone ahead, it would have rewritten files.
    vscode = repo_copy / "spec/tools/vscode.toml"
    vscode.write_text(vscode.read_text().replace('name = "VS Code"', 'name = "VS Code (changed)"'))
    before = generated_state(repo_copy)

    result = mlws("generate", "--root", str(repo_copy))

    expected = CASES[case]
    where = f"{expected['file']}: {expected['key']}" if expected["key"] else expected["file"]
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert any(line.startswith(f"error: {where}: expected ") for line in errors), (
        f"no error naming {where!r} in:\n" + result.stderr
    )
    matching = next(line for line in errors if line.startswith(f"error: {where}: expected "))
    assert ", found " in matching  # says what was expected and what was found
    assert generated_state(repo_copy) == before
    assert mlws("validate", "--root", str(repo_copy)).returncode == 2
