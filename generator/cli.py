"""The `mlws` command line: generate, validate, list, show (and the runtime's `start`)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import click

from .load import load_spec
from .model import ResolvedFlavor, Spec, SpecInvalid
from .output import plan, write
from .render import render_all
from .resolve import resolve_all, tool_nixpkgs, tool_python

EXIT_SPEC_ERROR = 2
EXIT_CHECK_FAILED = 1


class NoRoot(click.ClickException):
    exit_code = EXIT_SPEC_ERROR


def find_root(start: Path) -> Path:
    """The nearest folder at or above `start` that has a spec/ folder."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / "spec").is_dir():
            return folder
    raise NoRoot(f"no mlws spec found: neither {start} nor any folder above it has a spec/ folder; pass --root DIR")


def root_option(command):
    return click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Repository folder holding spec/ (default: the nearest folder at or above the current one that has spec/).",
    )(command)


def _root(root: Path | None) -> Path:
    if root is None:
        return find_root(Path.cwd())
    if not (root / "spec").is_dir():
        raise NoRoot(f"{root}: no spec/ folder there")
    return root.resolve()


def build(root: Path) -> tuple[Spec, dict[str, ResolvedFlavor], dict[str, str]]:
    """Load, check and resolve the spec, and render every file in memory (raises SpecInvalid)."""
    spec, errors = load_spec(root)
    if errors:
        raise SpecInvalid(errors)
    flavors, errors = resolve_all(spec)
    if errors:
        raise SpecInvalid(errors)
    return spec, flavors, render_all(spec, flavors)


def _build_or_exit(root: Path, what_happens: str):
    try:
        return build(root)
    except SpecInvalid as invalid:
        for error in invalid.errors:
            click.echo(str(error), err=True)
        count = len(invalid.errors)
        click.echo(f"{count} error{'s' if count != 1 else ''} in the spec under {root}; {what_happens}", err=True)
        sys.exit(EXIT_SPEC_ERROR)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="mlws", message="%(prog)s %(version)s")
def main() -> None:
    """mlws: ML workspace images from one declarative spec.

    The spec (spec/tools/*.toml, spec/flavors/*.toml) describes every tool and flavor. `mlws
    generate` turns it into Nix modules (modules/, flavors/) and runtime manifests, which the
    flake builds into images. See docs/architecture.md for every key.
    """


@main.command()
@root_option
@click.option("--check", is_flag=True, help="Write nothing; list stale, missing and extra generated files and exit 1 if there are any.")
def generate(root: Path | None, check: bool) -> None:
    """Render modules/<tool>.nix, flavors/<flavor>.nix and flavors/<flavor>.manifest.json.

    All files are rendered in memory first; nothing is written if the spec has any error (exit 2).
    Generated files whose spec is gone are removed. The output is byte-identical on every run.
    """
    root = _root(root)
    _, _, files = _build_or_exit(root, "nothing was written." if not check else "nothing was checked.")
    todo = plan(root, files)
    if check:
        for label, paths in (("stale", todo.stale), ("missing", todo.missing), ("extra", todo.extra)):
            for rel in paths:
                click.echo(f"{label}: {rel}")
        if not todo.clean:
            click.echo("generated files are out of date: run `mlws generate`", err=True)
            sys.exit(EXIT_CHECK_FAILED)
        click.echo(f"up to date: {len(files)} generated files match the spec")
        return
    write(root, files, todo)
    click.echo(
        f"{len(todo.missing)} created, {len(todo.stale)} updated, {len(todo.extra)} removed, "
        f"{len(todo.unchanged)} unchanged"
    )


@main.command()
@root_option
def validate(root: Path | None) -> None:
    """Check the spec and report every error (exit 2 if there is any)."""
    root = _root(root)
    spec, flavors, _ = _build_or_exit(root, "fix them and run `mlws validate` again.")
    click.echo(f"spec OK: {len(spec.tools)} tools, {len(flavors)} flavors")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [headers, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


@main.command("list")
@root_option
def list_(root: Path | None) -> None:
    """Show a table of the flavors and a table of the tools."""
    root = _root(root)
    spec, flavors, _ = _build_or_exit(root, "fix them first.")
    click.echo(
        _table(
            ["FLAVOR", "EXTENDS", "IMAGE", "TOOLS", "PYTHON", "SYSTEMS", "UNFREE LICENCES"],
            [
                [f.name, f.extends or "-", f.image, str(len(f.tools)), str(len(tool_python(spec, f))), ",".join(f.systems), ", ".join(f.unfree_licenses) or "-"]
                for f in flavors.values()
            ],
        )
    )
    click.echo()
    click.echo(
        _table(
            ["TOOL", "PORT", "ROUTE", "PROCESSES", "DESCRIPTION"],
            [
                [t.name, str(t.port) if t.port else ("socket" if t.socket else "-"), t.route.prefix if t.route else "-", ",".join(p.name for p in t.processes) or "-", t.description]
                for t in (spec.tools[n] for n in sorted(spec.tools))
            ],
        )
    )


def flavor_summary(spec: Spec, flavor: ResolvedFlavor) -> dict:
    """The resolved flavor as plain JSON-able data (what `mlws show --json` prints)."""
    return {
        "name": flavor.name,
        "description": flavor.description,
        "extends": flavor.extends,
        "files": list(flavor.files),
        "image": flavor.image,
        "systems": list(flavor.systems),
        "unfree_licenses": list(flavor.unfree_licenses),
        "cuda": None if flavor.cuda is None else {"enable": flavor.cuda.enable, "capabilities": None if flavor.cuda.capabilities is None else list(flavor.cuda.capabilities)},
        "tools": list(flavor.tools),
        "python": list(flavor.python),
        "nixpkgs": list(flavor.nixpkgs),
        "r": list(flavor.r),
        "all_python": list(tool_python(spec, flavor)),
        "all_nixpkgs": list(tool_nixpkgs(spec, flavor)),
        "replaced": {"python": flavor.replaced_python, "nixpkgs": flavor.replaced_nixpkgs},
        "env": flavor.env,
        "ports": {t: spec.tools[t].port for t in flavor.tools if spec.tools[t].port is not None},
        "sockets": [t for t in flavor.tools if spec.tools[t].socket],  # tools on a runtime-made unix socket
    }


@main.command()
@root_option
@click.argument("flavor")
@click.option("--json", "as_json", is_flag=True, help="Print the resolved flavor as JSON.")
def show(root: Path | None, flavor: str, as_json: bool) -> None:
    """Show one flavor resolved: its parents' tools and packages included.

    "python"/"nixpkgs" are the flavor's own packages; "all_python"/"all_nixpkgs" add its tools';
    "r" lists the rPackages R is wrapped with (and the Jupyter R kernel runs).
    """
    root = _root(root)
    spec, flavors, _ = _build_or_exit(root, "fix them first.")
    if flavor not in flavors:
        raise click.BadParameter(f"no flavor {flavor!r}; flavors: {', '.join(sorted(flavors))}", param_hint="FLAVOR")
    summary = flavor_summary(spec, flavors[flavor])
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    rows = []
    for key in ("name", "description", "extends", "files", "image", "systems", "unfree_licenses", "cuda", "tools", "all_nixpkgs", "all_python", "r", "replaced", "env"):
        value = summary[key]
        if isinstance(value, list):
            value = " ".join(value) or "-"
        elif isinstance(value, dict):
            value = json.dumps(value, sort_keys=True) if value else "-"
        elif value is None:
            value = "-"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        rows.append([key, textwrap.fill(str(value), width=100, subsequent_indent=" " * 14, break_on_hyphens=False, break_long_words=False)])
    click.echo("\n".join(f"{k:<13} {v}" for k, v in rows))


# The runtime's `mlws start` lives in runtime/cli.py (another part of the project). Register it
# when that module exists, so the generator CLI also works in a checkout without the runtime.
try:
    from runtime.cli import start as _start
    from runtime.jobs import job as _job
except ModuleNotFoundError as missing:
    if missing.name not in ("runtime", "runtime.cli", "runtime.jobs"):
        raise
else:
    main.add_command(_start, "start")

# `mlws deploy ...` (deploy/cli.py): Helm values and a DockerSpawner config from the spec.
try:
    from deploy.cli import deploy_group as _deploy
except ModuleNotFoundError as missing:
    if missing.name not in ("deploy", "deploy.cli"):
        raise
else:
    main.add_command(_deploy, "deploy")
    main.add_command(_job, "job")

# The release pipeline's `mlws image ...` (SBOM, diff, manifest, CI matrix, push) lives in pipeline/;
# a checkout without that folder still gets the rest of the CLI.
try:
    from pipeline.cli import image as _image
except ModuleNotFoundError as missing:
    if missing.name != "pipeline":
        raise
else:
    main.add_command(_image, "image")


if __name__ == "__main__":
    main()
