"""Read the package base (spec/known-attributes.toml) into plain data, checking every entry.

The base records, for every nixpkgs / python3Packages / rPackages attribute the spec may name,
what nixpkgs' source says about it (file, copy read, licences, CUDA switch, platforms, broken
conditions, removal). The generator uses the names (and refuses removed or renamed ones with
nixpkgs' reason), the licences an `.override` argument adds, and which packages only put their
programs into an image; the nixpkgs stand-in (tests/stand-ins/nixpkgs) reads the rest.
"""

from __future__ import annotations

import re

from .model import SYSTEMS, KnownAttributes, SpecError

SECTIONS = ("nixpkgs", "python", "r")
TOP_KEYS = ("licenses", "cudaPackages", *SECTIONS)
ENTRY_KEYS = (
    "file", "checked", "licenses", "platforms", "cuda", "cuda_libs", "cuda_deps", "platforms_with_cuda",
    "broken", "vulnerabilities", "removed", "renamed", "deps", "deps_read", "provides", "programs",
    "top_level", "image", "override", "note",
)
CHECKED_RE = re.compile(r"(source|index|reference): \S.*\Z")
NAME_RES = {
    "nixpkgs": re.compile(r"[A-Za-z_][A-Za-z0-9_'-]*(\.[A-Za-z_][A-Za-z0-9_'-]*)?\Z"),
    "python": re.compile(r"[A-Za-z_][A-Za-z0-9_'-]*\Z"),
    "r": re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z"),
}
ENUMS = {"cuda": ("config", "always"), "broken": ("always", "cudaSupport"), "image": ("programs",)}
LIST_KEYS = ("licenses", "platforms", "cuda_libs", "cuda_deps", "platforms_with_cuda", "vulnerabilities",
             "deps", "provides", "programs", "top_level")
STRING_KEYS = ("file", "removed", "renamed", "note")


def _error(errors: list[SpecError], file: str, key: str, expected: str, found: object) -> None:
    errors.append(SpecError(file, key, expected, found if isinstance(found, str) else repr(found)))


def _check_entry(file: str, where: str, entry: object, errors: list[SpecError]) -> dict:
    if not isinstance(entry, dict):
        _error(errors, file, where, "a table describing the attribute (file, checked, ...)", "a " + type(entry).__name__)
        return {}
    for key in sorted(entry):
        if key not in ENTRY_KEYS:
            _error(errors, file, f"{where}.{key}", "one of the keys " + ", ".join(ENTRY_KEYS), f'an unknown key "{key}"')
    for key in ("file", "checked"):
        if key not in entry:
            _error(errors, file, f"{where}.{key}", "the nixpkgs file read and how it was checked (it is required)", "nothing (the key is missing)")
    if "checked" in entry and not (isinstance(entry["checked"], str) and CHECKED_RE.match(entry["checked"])):
        _error(errors, file, f"{where}.checked", '"source: <commit>", "index: <commit>" or "reference: <file>"', repr(entry["checked"]))
    for key in STRING_KEYS:
        if key in entry and not (isinstance(entry[key], str) and entry[key].strip()):
            _error(errors, file, f"{where}.{key}", "a non-empty string", repr(entry[key]))
    for key in LIST_KEYS:
        if key in entry and not (isinstance(entry[key], list) and all(isinstance(i, str) for i in entry[key])):
            _error(errors, file, f"{where}.{key}", "a list of strings", repr(entry[key]))
    for key, allowed in ENUMS.items():
        if key in entry and entry[key] not in allowed:
            _error(errors, file, f"{where}.{key}", "one of " + ", ".join(f'"{a}"' for a in allowed), repr(entry[key]))
    for key in ("platforms", "platforms_with_cuda"):
        for system in entry.get(key, []) if isinstance(entry.get(key), list) else []:
            if system not in SYSTEMS:
                _error(errors, file, f"{where}.{key}", "systems among " + ", ".join(SYSTEMS), repr(system))
    if "deps_read" in entry and not isinstance(entry["deps_read"], bool):
        _error(errors, file, f"{where}.deps_read", "true or false", repr(entry["deps_read"]))
    override = entry.get("override", {})
    if not isinstance(override, dict) or not all(isinstance(v, list) for v in override.values()):
        _error(errors, file, f"{where}.override", "a table of argument = [licences it adds]", repr(override))
    return entry


def read_base(file: str, data: dict, errors: list[SpecError]) -> KnownAttributes:
    """The base as KnownAttributes; every problem is appended to `errors`."""
    for key in sorted(data):
        if key not in TOP_KEYS:
            _error(errors, file, key, "one of the keys " + ", ".join(TOP_KEYS), f'an unknown key "{key}"')
    what = {"nixpkgs": "nixpkgs", "python": "python3Packages", "r": "rPackages"}
    entries: dict[str, dict[str, dict]] = {}
    for section in SECTIONS:
        table = data.get(section)
        if not isinstance(table, dict):
            _error(errors, file, section, f"a table of {what[section]} attribute names, one [{section}.<name>] entry each",
                   "nothing (the key is missing)" if table is None else "a " + type(table).__name__)
            entries[section] = {}
            continue
        entries[section] = {}
        for name in sorted(table):
            if not NAME_RES[section].match(name):
                _error(errors, file, f"{section}.{name}", f"a {what[section]} attribute name", f'"{name}"')
                continue
            entries[section][name] = _check_entry(file, f"{section}.{name}", table[name], errors)

    licenses = data.get("licenses", {})
    if not isinstance(licenses, dict):
        _error(errors, file, "licenses", "a table of unfree licence short names", "a " + type(licenses).__name__)
        licenses = {}
    unfree = frozenset(name for name, v in licenses.items() if isinstance(v, dict) and v.get("free") is False)

    retired: dict[tuple[str, str], str] = {}
    for section, table in entries.items():
        for name, entry in table.items():
            if "removed" in entry:
                retired[(section, name)] = f"removed from nixpkgs: {entry['removed']}"
            elif "renamed" in entry:
                retired[(section, name)] = f"renamed in nixpkgs to \"{entry['renamed']}\""
            for dep in entry.get("deps", []) + entry.get("cuda_deps", []) if section == "python" else []:
                if isinstance(dep, str) and dep not in table:
                    _error(errors, file, f"{section}.{name}.deps", "dependencies that are entries of the base", f'"{dep}"')
            for arg, added in (entry.get("override") or {}).items() if isinstance(entry.get("override"), dict) else []:
                for licence in added if isinstance(added, list) else []:
                    if licence not in unfree:
                        _error(errors, file, f"{section}.{name}.override.{arg}", "licences listed as unfree in [licenses]", f'"{licence}"')

    def usable(section: str) -> frozenset[str]:
        return frozenset(n for n in entries[section] if (section, n) not in retired)

    return KnownAttributes(
        file=file,
        nixpkgs=usable("nixpkgs"),
        python=usable("python"),
        r=usable("r"),
        retired=retired,
        unfree_licenses=unfree,
        overrides={n: dict(e.get("override", {})) for n, e in entries["nixpkgs"].items() if isinstance(e.get("override"), dict) and e.get("override")},
        programs_only={n: tuple(e.get("programs", ())) for n, e in entries["nixpkgs"].items() if e.get("image") == "programs"},
        python_programs={n: tuple(e.get("programs", ())) for n, e in entries["python"].items() if e.get("programs")},
    )
