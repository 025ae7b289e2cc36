"""One server profile per flavor of the spec: what every JupyterHub deployment offers its users.

Plain data from the resolved spec (generator.resolve): the image by digest in a registry, the
resources, the GPU, the nodes it can run on. deploy/helm.py and deploy/docker.py write it in the
form of each engine; a new flavor in spec/flavors/ is a new profile with no other change.
"""
from __future__ import annotations

import dataclasses
import re

from generator.model import ResolvedFlavor

# The registry and digests come from CI (the images it pushed); without them the generated files
# carry this placeholder, which no registry accepts, so nothing is ever pulled by accident.
PLACEHOLDER_REGISTRY = "REGISTRY.example/OWNER"
PLACEHOLDER_DIGEST = "sha256:REPLACE-WITH-THE-DIGEST-CI-PUSHED"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
REGISTRY_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
# Where the image keeps the user's work (nix/image.nix: Volumes, WorkingDir) and its user.
WORKSPACE_MOUNT = "/workspace"
IMAGE_UID = 1000
IMAGE_GID = 1000
# The port the image exposes (nix/image.nix); the runtime listens where the hub's spawner says
# (JUPYTERHUB_SERVICE_URL), so the spawners are told this one.
IMAGE_PORT = 8080
# What every server gets: the hub authenticates (runtime/settings.py, AUTHENTICATE_VIA_JUPYTER).
HUB_ENV = {"AUTHENTICATE_VIA_JUPYTER": "true"}
# Nix system -> Kubernetes node label kubernetes.io/arch.
KUBERNETES_ARCH = {"x86_64-linux": "amd64", "aarch64-linux": "arm64"}


class DeployError(ValueError):
    """A bad parameter: the message names it, its value and what was expected."""


@dataclasses.dataclass(frozen=True)
class Resources:
    cpu_guarantee: float
    cpu_limit: float
    mem_guarantee: str  # Kubernetes/JupyterHub byte strings: "2G"
    mem_limit: str
    gpus: int = 0


# A workspace runs Jupyter, VS Code, a desktop and monitoring at once; the data-science flavors
# load large libraries, the GPU flavor CUDA ones. Operators tune these in the generated files.
LIGHT = Resources(cpu_guarantee=0.5, cpu_limit=2.0, mem_guarantee="1G", mem_limit="4G")
HEAVY = Resources(cpu_guarantee=1.0, cpu_limit=4.0, mem_guarantee="2G", mem_limit="8G")
GPU = Resources(cpu_guarantee=2.0, cpu_limit=8.0, mem_guarantee="8G", mem_limit="32G", gpus=1)


@dataclasses.dataclass(frozen=True)
class Profile:
    slug: str  # the flavor name
    display_name: str
    description: str
    image: str  # <registry>/<image>@sha256:<digest>
    resources: Resources
    node_selector: dict[str, str]
    default: bool
    env: dict[str, str]


def resources_for(flavor: ResolvedFlavor) -> Resources:
    if flavor.cuda is not None and flavor.cuda.enable:
        return GPU
    # Any flavor beyond the minimal one's package set (full, r, spark, custom ones) is heavy.
    return LIGHT if flavor.extends is None else HEAVY


def node_selector_for(flavor: ResolvedFlavor) -> dict[str, str]:
    """A flavor built for one architecture only runs on nodes of it."""
    arches = sorted({KUBERNETES_ARCH[system] for system in flavor.systems if system in KUBERNETES_ARCH})
    return {"kubernetes.io/arch": arches[0]} if len(arches) == 1 else {}


def check_parameters(flavors: dict[str, ResolvedFlavor], registry: str, digests: dict[str, str],
                     default: str) -> None:
    """Every problem of the parameters at once."""
    problems = []
    if registry != PLACEHOLDER_REGISTRY and not REGISTRY_RE.match(registry):
        problems.append(f"--registry {registry!r}: expected a registry and path such as ghcr.io/my-org "
                        "(lower case, no scheme, no trailing /)")
    for name, digest in sorted(digests.items()):
        if name not in flavors:
            problems.append(f"--digest {name}=...: no flavor {name!r}; flavors: {', '.join(sorted(flavors))}")
        if not DIGEST_RE.match(digest):
            problems.append(f"--digest {name}={digest!r}: expected sha256: and 64 lower-case hex digits "
                            "(the digest CI printed when it pushed the image)")
    if default not in flavors:
        problems.append(f"--default-flavor {default!r}: no such flavor; flavors: {', '.join(sorted(flavors))}")
    if problems:
        raise DeployError("\n".join(problems))


def build_profiles(flavors: dict[str, ResolvedFlavor], registry: str = PLACEHOLDER_REGISTRY,
                   digests: dict[str, str] | None = None, default: str = "minimal") -> list[Profile]:
    """One profile per flavor, the default first, then by name."""
    digests = digests or {}
    check_parameters(flavors, registry, digests, default)
    order = [default] + sorted(name for name in flavors if name != default)
    return [
        Profile(
            slug=name,
            display_name=f"{flavors[name].image} ({name})",
            description=flavors[name].description,
            image=f"{registry}/{flavors[name].image}@{digests.get(name, PLACEHOLDER_DIGEST)}",
            resources=resources_for(flavors[name]),
            node_selector=node_selector_for(flavors[name]),
            default=name == default,
            env=dict(HUB_ENV),
        )
        for name in order
    ]


def missing_digests(profiles: list[Profile]) -> list[str]:
    return [profile.slug for profile in profiles if profile.image.endswith(PLACEHOLDER_DIGEST)]
