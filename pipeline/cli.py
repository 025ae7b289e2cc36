"""`mlws image ...`: the release pipeline's commands (registered in generator/cli.py)."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from .errors import PipelineError
from .files import write_atomic

EXIT_USAGE = 2


def clear_errors(command):
    """Turn a PipelineError into one line on stderr and exit 2: no traceback, no partial output."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PipelineError as problem:
            click.echo(f"error: {problem}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


def emit(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=False)
    else:
        write_atomic(output, text)
        click.echo(f"wrote {output}", err=True)


def progress(message: str) -> None:
    click.echo(message, err=True)


output_option = click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
                             help="Write to this file (atomically) instead of standard output.")
store_root_option = click.option("--store-root", type=click.Path(file_okay=False, path_type=Path), default=Path("/"),
                                 show_default=True, help="Root of a chroot store (nix --store DIR) holding the closure's paths.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def image() -> None:
    """Image tarballs for release: SBOM, diff, manifest, CI matrix, push by digest.

    Inputs are the docker-archive tarballs `nix build .#<image>` writes (pkgs.dockerTools.buildLayeredImage), `nix path-info --recursive --json` output, or SBOMs this command wrote.
    Every command exits 2 with one clear line on a bad input and writes no partial file.
    """


@image.command("inspect")
@click.argument("tarball", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@clear_errors
def inspect_command(tarball: Path, as_json: bool) -> None:
    """Digests of an image tarball: tarball SHA-256, config and layer digests, store paths."""
    from .archive import read_image

    progress(f"reading {tarball} ...")
    inventory = read_image(tarball)
    data = {
        "image": inventory.image_name, "tag": inventory.image_tag, "architecture": inventory.architecture,
        "sha256": inventory.tarball_sha256, "size": inventory.tarball_size,
        "config": inventory.config_digest,
        "layers": [{"digest": l.digest, "size": l.size, "store_paths": list(l.store_paths)} for l in inventory.layers or []],
        "python": [{"name": d.name, "version": d.version} for d in inventory.python],
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{inventory.title} ({inventory.architecture})\nsha256  {data['sha256']}  {data['size']} bytes\nconfig  {data['config']}")
    for layer in inventory.layers or []:
        click.echo(f"layer   {layer.digest}  {layer.size:>12}  {len(layer.store_paths)} store paths")
    click.echo(f"{len(inventory.store_paths)} store paths, {len(inventory.python)} Python distributions")


@image.command("sbom")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--lock", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="flake.lock whose locked inputs are listed as components (default: ./flake.lock when present).")
@store_root_option
@output_option
@clear_errors
def sbom_command(source: Path, lock: Path | None, store_root: Path, output: Path | None) -> None:
    """A CycloneDX 1.6 JSON SBOM of SOURCE: an image tarball or `nix path-info -r --json` output.

    Every store path is a component (name, version, NAR SHA-256), every Python distribution one with
    its PyPI purl, every locked flake input one with its revision. The SBOM is validated against the
    CycloneDX schema before it is written.
    """
    from .inputs import read_any
    from .lock import locked_inputs
    from .sbom import build_sbom

    if lock is None and Path("flake.lock").is_file():
        lock = Path("flake.lock")
    progress(f"reading {source} ...")
    inventory = read_any(source, store_root)
    if inventory.kind == "sbom":
        raise PipelineError(f"{source}: already an SBOM; give the image tarball or the closure JSON")
    text = build_sbom(inventory, locked_inputs(lock) if lock else None)
    progress(f"{len(inventory.store_paths)} store paths, {len(inventory.python)} Python distributions; valid CycloneDX 1.6")
    emit(text, output)


@image.command("diff")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True,
              help="text to read, json for programs, markdown for release notes and pull requests.")
@store_root_option
@output_option
@clear_errors
def diff_command(old: Path, new: Path, fmt: str, store_root: Path, output: Path | None) -> None:
    """What changed from OLD to NEW (image tarballs, closures or SBOMs, in any mix).

    Packages added, removed, changed (old -> new version) and rebuilt; Python distributions; layers
    reused and new; the size change.
    """
    from .diff import diff, render_text
    from .inputs import read_any

    progress(f"reading {old} ...")
    before = read_any(old, store_root)
    progress(f"reading {new} ...")
    after = read_any(new, store_root)
    result = diff(before, after)
    emit(json.dumps(result, indent=2) + "\n" if fmt == "json" else render_text(result, markdown=fmt == "markdown"), output)


@image.command("manifest")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--lock", type=click.Path(dir_okay=False, path_type=Path), default=Path("flake.lock"), show_default=True,
              help="The flake.lock the images were built from.")
@click.option("--sbom-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder with each tarball's SBOM, named <tarball name without .tar.gz>.cdx.json.")
@output_option
@clear_errors
def manifest_command(inputs: tuple[Path, ...], lock: Path, sbom_dir: Path | None, output: Path | None) -> None:
    """The release manifest (JSON) of INPUTS: image tarballs, or the SBOMs `mlws image sbom` made of them.

    Per image: tarball SHA-256 and size, config and layer digests, the SBOM file, plus the
    flake.lock revisions. From SBOMs alone (the release job) no multi-gigabyte download is needed.
    """
    from .inputs import read_any
    from .manifest import release_manifest

    images = []
    for source in inputs:
        progress(f"reading {source} ...")
        images.append((source, read_any(source)))
    emit(json.dumps(release_manifest(images, lock, sbom_dir), indent=2) + "\n", output)


@image.command("matrix")
@click.option("--flake", default=".", show_default=True, help="Flake reference to evaluate.")
@click.option("--flavors-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("flavors"), show_default=True,
              help="The generated flavors/ folder (tells which images are CUDA builds).")
@click.option("--system", "systems", multiple=True, help="Only these systems (default: every system of the flake).")
@click.option("--nix-arg", "nix_args", multiple=True, help="Extra argument for nix eval (repeatable), e.g. --nix-arg=--override-input.")
@click.option("--github-output", is_flag=True,
              help="Append include=<json> (every entry) and rebuild=<json> (the entries with a rebuild proof, "
                   "runner = the second runner) to $GITHUB_OUTPUT as well.")
@clear_errors
def matrix_command(flake: str, flavors_dir: Path, systems: tuple[str, ...], nix_args: tuple[str, ...], github_output: bool) -> None:
    """The CI build matrix: one entry per image output of every system, read from the flake."""
    import os

    from .matrix import flavor_images, images_by_system, matrix

    if not flavors_dir.is_dir():
        raise PipelineError(f"{flavors_dir}: no such folder (expected the generated flavors/ of the repository)")
    progress(f"evaluating {flake}#packages ...")
    images = images_by_system(flake, list(nix_args))
    if systems:
        unknown = sorted(set(systems) - images.keys())
        if unknown:
            raise PipelineError(f"--system {', '.join(unknown)}: the flake has packages for {', '.join(sorted(images))} only")
        images = {s: images[s] for s in systems}
    entries = matrix(images, flavor_images(flavors_dir))
    text = json.dumps(entries, separators=(",", ":"))
    click.echo(text)
    if github_output:
        target = os.environ.get("GITHUB_OUTPUT")
        if not target:
            raise PipelineError("--github-output: GITHUB_OUTPUT is not set (it is inside a GitHub Actions step)")
        rebuild = [{**e, "runner": e["rebuild_runner"]} for e in entries if e["rebuild_runner"]]
        with open(target, "a", encoding="utf-8") as out:
            out.write(f"include={text}\nrebuild={json.dumps(rebuild, separators=(',', ':'))}\n")


@image.command("push")
@click.argument("tarball", type=click.Path(path_type=Path))
@click.argument("destination")
@click.option("--insecure", is_flag=True, help="Plain HTTP / no TLS verification (a registry on loopback).")
@click.option("--authfile", type=click.Path(dir_okay=False, path_type=Path), default=None, help="skopeo/containers auth file.")
@click.option("--digest-file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write <repo>@<digest> here.")
@clear_errors
def push_command(tarball: Path, destination: str, insecure: bool, authfile: Path | None, digest_file: Path | None) -> None:
    """Push TARBALL to DESTINATION (<registry>/<name>:<tag>) and print <registry>/<name>@<digest>."""
    from .archive import read_image
    from .registry import push

    progress(f"checking {tarball} ...")
    read_image(tarball)  # a bad tarball fails here, with our message, before anything is uploaded
    progress(f"pushing to {destination} ...")
    reference = push(tarball, destination, tls_verify=not insecure, authfile=authfile)
    if digest_file is not None:
        write_atomic(digest_file, reference + "\n")
    click.echo(reference)


@image.command("index")
@click.argument("tag_reference")
@click.argument("images", nargs=-1, required=True)
@click.option("--insecure", is_flag=True, help="Plain HTTP (a registry on loopback).")
@clear_errors
def index_command(tag_reference: str, images: tuple[str, ...], insecure: bool) -> None:
    """Join IMAGES (<repo>@<digest>, one per architecture) into the multi-arch TAG_REFERENCE (<repo>:<tag>).

    Credentials come from REGISTRY_USERNAME and REGISTRY_PASSWORD (in GitHub Actions: the actor
    and GITHUB_TOKEN). Prints <repo>@<digest of the index>.
    """
    from .registry import publish_index, split_reference

    host, name, tag = split_reference(tag_reference)
    if tag.startswith("sha256:") or "@" in tag_reference:
        raise PipelineError(f"{tag_reference!r}: the first argument is the tag to create, <repo>:<tag>")
    for reference in images:
        if split_reference(reference)[:2] != (host, name):
            raise PipelineError(f"{reference!r} is not in {host}/{name}: an index joins images of its own repository")
    click.echo(publish_index(list(images), tag, insecure=insecure))
