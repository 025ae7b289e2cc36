"""Resolve flavors: follow `extends`, close over tool `needs`, apply replacements, merge env.

Order for one flavor: start from the parent's resolved flavor, swap what `replace` names in the
inherited packages, then add the flavor's own tools and packages; lists end sorted and
de-duplicated, env is the parent's with the child's keys laid over it.
"""

from __future__ import annotations

from .model import Flavor, ResolvedFlavor, Spec, SpecError, SYSTEMS, Tool

# lib.licenses.nvidiaCudaRedist's short name: the licence every CUDA build pulls in.
CUDA_LICENCE = "CUDA EULA"


def extends_chain(spec: Spec, name: str) -> tuple[list[str], list[str] | None]:
    """The flavor and its ancestors, child first; the second value is the cycle if there is one."""
    chain = [name]
    while True:
        parent = spec.flavors[chain[-1]].extends
        if parent is None or parent not in spec.flavors:
            return chain, None
        if parent in chain:
            return chain, chain[chain.index(parent):] + [parent]
        chain.append(parent)


def needs_closure(tools: dict[str, Tool], names) -> tuple[str, ...]:
    """The tools named plus everything they need, transitively; sorted."""
    result: set[str] = set()
    pending = [n for n in names if n in tools]
    while pending:
        name = pending.pop()
        if name in result:
            continue
        result.add(name)
        pending.extend(n for n in tools[name].needs if n in tools)
    return tuple(sorted(result))


def _replace(items: set[str], table: dict[str, str], file: str, key: str, what: str, errors: list[SpecError]) -> dict[str, str]:
    done = {}
    for old, new in sorted(table.items()):
        if old not in items:
            errors.append(SpecError(file, f"replace.{key}.{old}", f"a {what} the parent flavor installs", f'"{old}", which it does not'))
            continue
        items.discard(old)
        items.add(new)
        done[old] = new
    return done


def _remove(items: set[str], names: tuple[str, ...], file: str, key: str, what: str, errors: list[SpecError]) -> None:
    for name in names:
        if name not in items:
            errors.append(SpecError(file, f"remove.{key}", f"a {what} the parent flavor installs", f'"{name}", which it does not'))
        items.discard(name)


def resolve_flavor(spec: Spec, name: str, errors: list[SpecError], _cache: dict | None = None) -> ResolvedFlavor | None:
    """Resolve one flavor; problems are appended to `errors` and give None."""
    cache = _cache if _cache is not None else {}
    if name in cache:
        return cache[name]
    flavor: Flavor = spec.flavors[name]
    chain, cycle = extends_chain(spec, name)
    if cycle is not None:
        if name in cycle:
            errors.append(SpecError(flavor.file, "extends", "a chain of flavors that ends (no cycle)", "the cycle " + " -> ".join(cycle)))
        cache[name] = None
        return None

    parent = None
    if flavor.extends is not None:
        if flavor.extends not in spec.flavors:
            cache[name] = None  # reported by check_references
            return None
        parent = resolve_flavor(spec, flavor.extends, errors, cache)
        if parent is None:
            cache[name] = None
            return None

    python = set(parent.python) if parent else set()
    nixpkgs = set(parent.nixpkgs) if parent else set()
    replaced_python = dict(parent.replaced_python) if parent else {}
    replaced_nixpkgs = dict(parent.replaced_nixpkgs) if parent else {}
    replaced_python.update(_replace(python, flavor.replace.python, flavor.file, "python", "python3Packages attribute", errors))
    replaced_nixpkgs.update(_replace(nixpkgs, flavor.replace.nixpkgs, flavor.file, "nixpkgs", "nixpkgs attribute", errors))
    _remove(python, flavor.remove.python, flavor.file, "python", "python3Packages attribute", errors)
    _remove(nixpkgs, flavor.remove.nixpkgs, flavor.file, "nixpkgs", "nixpkgs attribute", errors)
    python.update(flavor.python)
    nixpkgs.update(flavor.nixpkgs)
    r = set(parent.r) if parent else set()
    r.update(flavor.r)

    tool_names = set(parent.tools) if parent else set()
    tool_names.update(flavor.tools)
    tools = needs_closure(spec.tools, tool_names)

    systems = flavor.systems if flavor.systems is not None else (parent.systems if parent else SYSTEMS)
    if parent and not set(systems) <= set(parent.systems):
        errors.append(SpecError(flavor.file, "systems", "systems the parent flavor supports (" + ", ".join(parent.systems) + ")", ", ".join(systems)))
    # Unfree licences are admitted by name (an allowUnfreePredicate), never all of them: the
    # flavor chain's own plus those its tools declare for their packages.
    unfree = set(parent.unfree_licenses) if parent else set()
    unfree.update(flavor.unfree_licenses or ())
    for tool in tools:
        unfree.update(spec.tools[tool].unfree_licenses)
    cuda = flavor.cuda if flavor.cuda is not None else (parent.cuda if parent else None)
    if cuda is not None and cuda.enable and CUDA_LICENCE not in unfree:
        errors.append(SpecError(flavor.file, "cuda.enable" if flavor.cuda else "unfree_licenses", f'"{CUDA_LICENCE}" in unfree_licenses with CUDA (the CUDA libraries are unfree)', "it is not admitted"))
    if cuda is not None and cuda.enable and cuda.capabilities is not None and not cuda.capabilities:
        errors.append(SpecError(flavor.file, "cuda.capabilities", "at least one CUDA capability, or no key for nixpkgs' default list", "an empty list"))

    health = [t for t in tools if spec.tools[t].health]
    if len(health) != 1:
        found = ", ".join(health) if health else "none"
        errors.append(SpecError(flavor.file, "tools", "exactly one tool with health = true among the flavor's tools", found))

    env = dict(parent.env) if parent else {}
    env.update(flavor.env)

    resolved = ResolvedFlavor(
        name=name,
        files=tuple(spec.flavors[n].file for n in chain),
        extends=flavor.extends,
        image=flavor.image or f"ml-workspace-{name}",
        description=flavor.description,
        systems=tuple(sorted(systems)),
        unfree_licenses=tuple(sorted(unfree)),
        cuda=cuda,
        tools=tools,
        python=tuple(sorted(python)),
        nixpkgs=tuple(sorted(nixpkgs)),
        r=tuple(sorted(r)),
        env=dict(sorted(env.items())),
        replaced_python=dict(sorted(replaced_python.items())),
        replaced_nixpkgs=dict(sorted(replaced_nixpkgs.items())),
    )
    cache[name] = resolved
    return resolved


def resolve_all(spec: Spec) -> tuple[dict[str, ResolvedFlavor], list[SpecError]]:
    """Resolve every flavor; also checks that no two flavors build the same image."""
    errors: list[SpecError] = []
    cache: dict = {}
    resolved = {}
    for name in sorted(spec.flavors):
        flavor = resolve_flavor(spec, name, errors, cache)
        if flavor is not None:
            resolved[name] = flavor
    image_owner: dict[str, str] = {}
    for name, flavor in sorted(resolved.items()):
        if flavor.image in image_owner:
            errors.append(SpecError(spec.flavors[name].file, "image", "an image name no other flavor uses", f'"{flavor.image}", also used by {image_owner[flavor.image]}'))
        image_owner.setdefault(flavor.image, spec.flavors[name].file)
    return resolved, errors


def tool_python(spec: Spec, flavor: ResolvedFlavor) -> tuple[str, ...]:
    """Every python3Packages attribute in the flavor's environment: its own and its tools'."""
    return tuple(sorted(set(flavor.python).union(*(spec.tools[t].python for t in flavor.tools))))


def tool_nixpkgs(spec: Spec, flavor: ResolvedFlavor) -> tuple[str, ...]:
    """Every nixpkgs attribute in the flavor's image: its own and its tools'."""
    return tuple(sorted(set(flavor.nixpkgs).union(*(spec.tools[t].nixpkgs for t in flavor.tools))))
