"""Render the generated files from a valid spec, all in memory.

Each output kind has one context function (plain data in, a dict out) and one template or
serialiser: modules/<tool>.nix (tool.nix.j2), flavors/<flavor>.nix (flavor.nix.j2) and
flavors/<flavor>.manifest.json (JSON). Every list is sorted and nothing depends on time, locale
or hash order, so the bytes are the same on every run.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

from .model import GENERATED_HEADER_START, ResolvedFlavor, Spec, Tool
from .resolve import tool_python

TEMPLATES = Path(__file__).parent / "templates"
INLINE_LIST_MAX = 4  # longer Nix lists get one item per line, for readable diffs
MANIFEST_SCHEMA = 1

NIX_KEYWORDS = {"assert", "else", "if", "in", "inherit", "let", "or", "rec", "then", "with"}


def header(files) -> str:
    return f"{GENERATED_HEADER_START}{', '.join(files)}. Do not edit: change the spec and run `mlws generate`."


# --- Nix literals ---------------------------------------------------------------------------


def nix_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def nix_str_or_null(value: str | None) -> str:
    return "null" if value is None else nix_str(value)


def nix_name(key: str) -> str:
    """An attribute name, quoted only where Nix needs it."""
    plain = key and (key[0].isalpha() or key[0] == "_") and all(ch.isalnum() or ch in "_'-" for ch in key)
    return key if plain and key not in NIX_KEYWORDS else nix_str(key)


def _nix_items(items: list[str]) -> str:
    if not items:
        return "[ ]"
    if len(items) <= INLINE_LIST_MAX:
        return "[ " + " ".join(items) + " ]"
    return "[\n" + "".join(f"    {item}\n" for item in items) + "  ]"


def nix_list(attrs, prefix: str) -> str:
    """Attribute references: ["numpy"] with prefix "ps." -> [ ps.numpy ]."""
    return _nix_items([prefix + a for a in attrs])


def nix_exprs(exprs) -> str:
    """A list of ready Nix expressions."""
    return _nix_items(list(exprs))


def package_expr(attr: str, overrides: dict[str, bool]) -> str:
    """`pkgs.netdata`, or `(pkgs.netdata.override { withCloudUi = true; })` with arguments."""
    if not overrides:
        return f"pkgs.{attr}"
    args = " ".join(f"{nix_name(k)} = {nix_value(v)};" for k, v in sorted(overrides.items()))
    return f"(pkgs.{attr}.override {{ {args} }})"


def nix_strings(values) -> str:
    return _nix_items([nix_str(v) for v in values])


def nix_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return nix_str(value)
    if isinstance(value, (list, tuple)):
        return "[ " + " ".join(nix_value(v) for v in value) + " ]" if value else "[ ]"
    raise TypeError(f"no Nix literal for {value!r}")


def nix_attrs(mapping: dict) -> str:
    if not mapping:
        return "{ }"
    return "{ " + " ".join(f"{nix_name(k)} = {nix_value(v)};" for k, v in sorted(mapping.items())) + " }"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(
        nix_str=nix_str,
        nix_str_or_null=nix_str_or_null,
        nix_list=nix_list,
        nix_strings=nix_strings,
        nix_attrs=nix_attrs,
        nix_exprs=nix_exprs,
    )
    return env


# --- contexts: plain data for each output kind ----------------------------------------------


def tool_module_context(tool: Tool) -> dict:
    return {
        "header": header([tool.file]),
        "name": tool.name,
        "packages": [package_expr(a, tool.overrides.get(a, {})) for a in sorted(tool.nixpkgs)],
        "python": sorted(tool.python),
        "needs": sorted(tool.needs),
        "env": dict(sorted(tool.env.items())),
    }


def nixpkgs_config(flavor: ResolvedFlavor) -> dict:
    """The config nixpkgs is imported with (flake.nix adds the allowUnfreePredicate made from
    `unfreeLicenses`). No cudaCapabilities unless the spec sets them: nixpkgs' default list is the
    one the CUDA binary cache builds (pkgs/top-level/release-cuda.nix sets none)."""
    config: dict = {}
    if flavor.cuda is not None and flavor.cuda.enable:
        config["cudaSupport"] = True
        if flavor.cuda.capabilities is not None:
            config["cudaCapabilities"] = sorted(flavor.cuda.capabilities, key=_capability_order)
    return config


def programs_only(spec: Spec, flavor: ResolvedFlavor, python: tuple[str, ...]) -> list[str]:
    """`{ package = pkgs.spark; except = [ ... ]; }` for each flavor package whose base entry says
    only its programs belong in an image; `except` are the programs the flavor's Python packages
    install themselves (pyspark's bin/pyspark), so each program is there once."""
    taken = sorted({p for name in python for p in spec.known.python_programs.get(name, ())})
    items = []
    for attr in flavor.nixpkgs:
        if attr in spec.known.programs_only:
            clash = [p for p in spec.known.programs_only[attr] if p in taken]
            items.append(f"{{ package = pkgs.{attr}; except = {nix_value(clash)}; }}")
    return items


def _capability_order(capability: str) -> tuple:
    major, _, minor = capability.partition(".")
    return (int(major), minor)


def flavor_module_context(spec: Spec, flavor: ResolvedFlavor) -> dict:
    return {
        "header": header(flavor.files),
        "name": flavor.name,
        "extends": flavor.extends,
        "image": flavor.image,
        "description": flavor.description,
        "systems": list(flavor.systems),
        "tools": list(flavor.tools),
        "packages": [a for a in flavor.nixpkgs if a not in spec.known.programs_only],
        "programs_only": programs_only(spec, flavor, tool_python(spec, flavor)),
        "python": list(flavor.python),
        "r": list(flavor.r),
        "nixpkgs_config": nixpkgs_config(flavor),
        "unfree_licenses": list(flavor.unfree_licenses),
        "env": flavor.env,
    }


def tool_manifest_entry(tool: Tool) -> dict:
    return {
        "name": tool.name,
        "description": tool.description,
        "port": tool.port,
        "socket": tool.socket,
        "secret": None if tool.secret is None else tool.secret.as_json(),
        "health": tool.health,
        "route": None
        if tool.route is None
        else {
            "prefix": tool.route.prefix,
            "strip_prefix": tool.route.strip_prefix,
            "websockets": tool.route.websockets,
            "user_content": list(tool.route.user_content),
            "blocked": list(tool.route.blocked),
            "untyped_html": list(tool.route.untyped_html),
        },
        "env": dict(sorted(tool.env.items())),
        "processes": [
            {"name": p.name, "command": list(p.command), "env": dict(sorted(p.env.items())), "ready": p.ready.as_json()}
            for p in tool.processes
        ],
        "menu": [
            {"id": m.id, "name": m.name, "description": m.description, "url_path": m.url_path} for m in tool.menu
        ],
    }


def manifest(spec: Spec, flavor: ResolvedFlavor) -> dict:
    return {
        "schema": MANIFEST_SCHEMA,
        "flavor": flavor.name,
        "image": flavor.image,
        "env": flavor.env,
        "tools": [tool_manifest_entry(spec.tools[name]) for name in flavor.tools],
    }


def manifest_text(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- everything -----------------------------------------------------------------------------


def render_all(spec: Spec, flavors: dict[str, ResolvedFlavor]) -> dict[str, str]:
    """Every generated file: relative path -> content. Pure: reads no files but the templates."""
    env = _environment()
    tool_template = env.get_template("tool.nix.j2")
    flavor_template = env.get_template("flavor.nix.j2")
    files: dict[str, str] = {}
    for name in sorted(spec.tools):
        files[f"modules/{name}.nix"] = tool_template.render(tool_module_context(spec.tools[name]))
    for name in sorted(flavors):
        files[f"flavors/{name}.nix"] = flavor_template.render(flavor_module_context(spec, flavors[name]))
        files[f"flavors/{name}.manifest.json"] = manifest_text(manifest(spec, flavors[name]))
    return dict(sorted(files.items()))
