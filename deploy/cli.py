"""`mlws deploy helm-values` and `mlws deploy dockerspawner-config`: the click commands."""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import click

from deploy import docker, helm
from deploy.profiles import PLACEHOLDER_REGISTRY, DeployError, build_profiles, missing_digests

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class UsageError(click.ClickException):
    exit_code = 2


def read_digests_file(path: Path, flavors: dict) -> tuple[dict[str, str], str | None]:
    """({flavor: digest}, registry or None) from a JSON object {"FLAVOR": "sha256:..."}, or from
    lines `<registry>/<image>@sha256:...` as `mlws image push --digest-file` and `mlws image index`
    print them (the registry is then taken from them)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"--digests-file {path}: cannot be read ({error.strerror})") from None
    if text.lstrip().startswith("{") or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except ValueError as error:
            raise UsageError(f"--digests-file {path}: expected a JSON object {{\"FLAVOR\": \"sha256:...\"}} ({error})") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise UsageError(f"--digests-file {path}: expected a JSON object of flavor name -> \"sha256:...\" strings")
        return data, None
    by_image = {flavor.image: name for name, flavor in flavors.items()}
    digests, registries = {}, set()
    for number, line in enumerate(text.splitlines(), start=1):
        reference = line.strip()
        if not reference or reference.startswith("#"):
            continue
        repository, sep, digest = reference.partition("@")
        registry, _, image = repository.rpartition("/")
        image = image.partition(":")[0]
        if not sep or not registry or image not in by_image:
            raise UsageError(f"--digests-file {path}: line {number} {reference!r}: expected <registry>/<image>@sha256:... "
                             f"with an image of the spec ({', '.join(sorted(by_image))})")
        digests[by_image[image]] = digest
        registries.add(registry)
    if len(registries) > 1:
        raise UsageError(f"--digests-file {path}: expected the images of one registry, found {', '.join(sorted(registries))}")
    return digests, (registries.pop() if registries else None)


def parse_digest_options(values: tuple[str, ...], digests_file: Path | None, flavors: dict) -> tuple[dict[str, str], str | None]:
    digests: dict[str, str] = {}
    registry = None
    if digests_file is not None:
        digests, registry = read_digests_file(digests_file, flavors)
    for value in values:
        flavor, sep, digest = value.partition("=")
        if not sep or not flavor:
            raise UsageError(f"--digest {value!r}: expected FLAVOR=sha256:<64 hex digits>")
        digests[flavor] = digest
    return digests, registry


def write_output(text: str, output: Path | None) -> None:
    """stdout, or the file written whole (a temp file renamed over it)."""
    if output is None:
        click.echo(text, nl=False)
        return
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"--output {output}: the folder {folder} does not exist")
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{output.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, output)
    except BaseException:
        os.unlink(temp)
        raise
    click.echo(f"wrote {output}", err=True)


def common_options(command):
    options = [
        click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Repository folder holding spec/ (default: the nearest folder at or above the current one with spec/)."),
        click.option("--registry", default=PLACEHOLDER_REGISTRY, show_default=True,
                     help="Registry and path the images were pushed to, e.g. ghcr.io/my-org (CI's registry)."),
        click.option("--digest", "digests", multiple=True, metavar="FLAVOR=sha256:...",
                     help="Digest of a flavor's image as CI pushed it; repeat per flavor."),
        click.option("--digests-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     help='The digests: JSON {"FLAVOR": "sha256:..."}, or lines <registry>/<image>@sha256:... as '
                          '`mlws image push --digest-file` / `mlws image index` print them (registry included).'),
        click.option("--default-flavor", default="minimal", show_default=True, help="The profile offered first."),
        click.option("--cull-hours", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
                     help="Stop servers idle for this long."),
        click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write to this file (atomically) instead of standard output."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def profiles_from_spec(root: Path | None, registry: str, digest_values, digests_file, default_flavor: str):
    from generator.cli import _build_or_exit, _root

    spec_root = _root(root)
    _, flavors, _ = _build_or_exit(spec_root, "fix them first.")
    digests, file_registry = parse_digest_options(digest_values, digests_file, flavors)
    if file_registry is not None:
        if registry not in (PLACEHOLDER_REGISTRY, file_registry):
            raise UsageError(f"--registry {registry} and --digests-file {digests_file} ({file_registry}) disagree: "
                             "give one of them")
        registry = file_registry
    try:
        profiles = build_profiles(flavors, registry, digests, default_flavor)
    except DeployError as error:
        raise UsageError(str(error)) from None
    placeholders = missing_digests(profiles)
    if placeholders or registry == PLACEHOLDER_REGISTRY:
        click.echo("warning: placeholders left (no registry accepts them): "
                   + (f"registry {PLACEHOLDER_REGISTRY} (pass --registry); " if registry == PLACEHOLDER_REGISTRY else "")
                   + (f"no digest for {', '.join(placeholders)} (pass --digest FLAVOR=sha256:... or --digests-file)"
                      if placeholders else ""), err=True)
    return profiles


@click.group("deploy")
def deploy_group() -> None:
    """Deployment files for JupyterHub, one profile per flavor of the spec.

    `helm-values` writes Zero to JupyterHub (Kubernetes) values, `dockerspawner-config` a
    jupyterhub_config.py for DockerSpawner. Images are named by digest: pass the registry CI
    pushed to and each flavor's digest. See docs/deploy.md.
    """


@deploy_group.command("helm-values")
@common_options
@click.option("--version", "image_version", default="0.1.0", show_default=True,
              help="Image tag written beside the digest of the default image (the digest decides).")
@click.option("--storage", default="10Gi", show_default=True, help="Size of each user's /workspace volume.")
def helm_values_command(root, registry, digests, digests_file, default_flavor, cull_hours, output, image_version, storage):
    """Zero to JupyterHub values: singleuser.profileList with one entry per flavor."""
    if not re.match(r"^[0-9]+(?:\.[0-9]+)?[KMGTPE]i?$", storage):
        raise UsageError(f"--storage {storage!r}: expected a Kubernetes quantity such as 10Gi")
    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", image_version):
        raise UsageError(f"--version {image_version!r}: expected an image tag (letters, digits, . _ -)")
    profiles = profiles_from_spec(root, registry, digests, digests_file, default_flavor)
    write_output(helm.render(helm.helm_values(profiles, image_version, storage, cull_hours)), output)


@deploy_group.command("dockerspawner-config")
@common_options
@click.option("--network", default="mlws", show_default=True, help="Docker network of the hub and the workspaces.")
@click.option("--hub-name", default="jupyterhub", show_default=True,
              help="Name the workspaces reach the hub by on that network (the hub container's name).")
def dockerspawner_config_command(root, registry, digests, digests_file, default_flavor, cull_hours, output, network, hub_name):
    """A jupyterhub_config.py for DockerSpawner with one profile per flavor."""
    for option, value in (("--network", network), ("--hub-name", hub_name)):
        if not NAME_RE.match(value):
            raise UsageError(f"{option} {value!r}: expected a Docker name (letters, digits, _ . -)")
    profiles = profiles_from_spec(root, registry, digests, digests_file, default_flavor)
    write_output(docker.dockerspawner_config(profiles, network, hub_name, cull_hours), output)


if __name__ == "__main__":
    sys.exit(deploy_group())
