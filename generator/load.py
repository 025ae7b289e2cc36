"""Read spec/ into plain data, checking every key of every file and collecting ALL errors.

Each file is checked on its own first (keys, types, names, placeholders); then the checks that
need several files (references, ports, route prefixes, known attributes) run over the whole set.
Flavor resolution checks (extends cycles, replacements, health) live in `generator.resolve`.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .base import read_base
from .model import (
    PACKAGE_PLACEHOLDER_RE,
    PLACEHOLDERS,
    PORT_PLACEHOLDERS,
    ROUTE_PLACEHOLDERS,
    SECRET_FILE_FORMATS,
    SECRET_SCHEMES,
    SYSTEMS,
    Cuda,
    Flavor,
    KnownAttributes,
    Remove,
    MenuEntry,
    Process,
    Ready,
    Replace,
    Route,
    Secret,
    SecretFile,
    Spec,
    SpecError,
    Tool,
)

TOOLS_DIR = "spec/tools"
FLAVORS_DIR = "spec/flavors"
KNOWN_FILE = "spec/known-attributes.toml"

NAME_RE = re.compile(r"[a-z][a-z0-9-]*\Z")
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# A Nix attribute path of plain identifiers: "xfce4-panel", "rPackages.IRkernel".
ATTR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_'-]*(\.[A-Za-z_][A-Za-z0-9_'-]*)*\Z")
PREFIX_RE = re.compile(r"/([A-Za-z0-9._~-]+/)*\Z")
IMAGE_RE = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*\Z")
CUDA_CAP_RE = re.compile(r"[0-9]+\.[0-9]+[a-z]?\Z")
PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
PACKAGE_RE = re.compile(PACKAGE_PLACEHOLDER_RE + r"\Z")
HEADER_RE = re.compile(r"[A-Za-z0-9-]+\Z")
USER_RE = re.compile(r"[A-Za-z0-9._-]+\Z")

MISSING = object()


@dataclass(frozen=True)
class Where:
    """What a tool offers its placeholders: which of {port} {prefix} {socket} {secret} make sense."""

    port: bool
    route: bool
    socket: bool
    secret: bool


def describe(value: Any) -> str:
    """Say what a TOML value is, short enough for one error line."""
    if value is MISSING:
        return "nothing (the key is missing)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        text = json.dumps(value, ensure_ascii=False, default=str)
        return f"a list {text}" if len(text) <= 60 else "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__} ({value})"


@dataclass(frozen=True)
class Kind:
    """What a value must be: a test and the words an error uses for it."""

    expected: str
    test: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


STRING = Kind("a string", lambda v: isinstance(v, str))
TEXT = Kind("a non-empty string", lambda v: isinstance(v, str) and v.strip() != "")
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
PORT = Kind("an integer 1-65535", lambda v: _is_int(v) and 1 <= v <= 65535)
NAME = Kind("a name matching [a-z][a-z0-9-]*", lambda v: isinstance(v, str) and bool(NAME_RE.match(v)))
ATTR = Kind(
    "a Nix attribute path such as \"xfce4-panel\" or \"rPackages.IRkernel\"",
    lambda v: isinstance(v, str) and bool(ATTR_RE.match(v)),
)
# rPackages names are single attributes: nixpkgs writes R's dots as "_" ("data.table" -> data_table).
R_ATTR_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
R_ATTR = Kind(
    'an rPackages attribute name such as "IRkernel" (R\'s dots written "_": "data_table")',
    lambda v: isinstance(v, str) and bool(R_ATTR_RE.match(v)),
)
PREFIX = Kind(
    'a URL path starting and ending with "/" (letters, digits, "._~-" between slashes)',
    lambda v: isinstance(v, str) and bool(PREFIX_RE.match(v)),
)
URL_PATH = Kind('a URL path starting with "/"', lambda v: isinstance(v, str) and v.startswith("/"))
# Sub-paths of a route the gateway treats specially; `*` stands for the rest of one path segment.
SUB_PATH = Kind(
    'a URL path starting with "/" of letters, digits and . _ / + @ = - (and * for the rest of a segment)',
    lambda v: isinstance(v, str) and re.fullmatch(r"/[A-Za-z0-9._/+@=*-]*", v) is not None,
)
MENU_URL = Kind(
    'a URL path starting with "/", or "" for an action button',
    lambda v: isinstance(v, str) and (v == "" or v.startswith("/")),
)
IMAGE = Kind(
    "an image name of lower-case letters, digits and . _ - / (e.g. \"ml-workspace\")",
    lambda v: isinstance(v, str) and bool(IMAGE_RE.match(v)),
)
SYSTEM = Kind("one of " + ", ".join(f'"{s}"' for s in SYSTEMS), lambda v: v in SYSTEMS)
CUDA_CAPABILITY = Kind(
    'a CUDA compute capability such as "8.6"',
    lambda v: isinstance(v, str) and bool(CUDA_CAP_RE.match(v)),
)
TABLE = Kind("a table", lambda v: isinstance(v, dict))


class Checker:
    """Collects the errors of one file while its tables are read."""

    def __init__(self, file: str, errors: list[SpecError]):
        self.file = file
        self.errors = errors
        self.used: set[str] = set()  # placeholders seen in commands and env values

    def error(self, key: str, expected: str, found: str) -> None:
        self.errors.append(SpecError(self.file, key, expected, found))

    def keys(self, table: dict, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> None:
        for key in sorted(table):
            if key not in allowed:
                self.error(join(path, key), "one of the keys " + ", ".join(allowed), f'an unknown key "{key}"')
        for key in required:
            if key not in table:
                self.error(join(path, key), _expected_for_required(key), describe(MISSING))

    def value(self, table: dict, path: str, key: str, kind: Kind, default: Any = MISSING) -> Any:
        """The value of `key` if it is of `kind`; else record an error and return `default`."""
        value = table.get(key, MISSING)
        if value is MISSING:
            return default
        if not kind.test(value):
            self.error(join(path, key), kind.expected, describe(value))
            return default
        return value

    def items(self, table: dict, path: str, key: str, kind: Kind) -> tuple:
        """A list of unique items of `kind` (errors name the item: `python[3]`)."""
        return tuple(item for _, item in self.indexed_items(table, path, key, kind))

    def indexed_items(self, table: dict, path: str, key: str, kind: Kind) -> list[tuple[int, Any]]:
        value = table.get(key, MISSING)
        if value is MISSING:
            return []
        if not isinstance(value, list):
            self.error(join(path, key), f"a list of items, each {kind.expected}", describe(value))
            return []
        good: list[tuple[int, Any]] = []
        for index, item in enumerate(value):
            where = f"{join(path, key)}[{index}]"
            if not kind.test(item):
                self.error(where, kind.expected, describe(item))
            elif any(item == seen for _, seen in good):
                self.error(where, "no item listed twice", f"{describe(item)} a second time")
            else:
                good.append((index, item))
        return good

    def references(self, table: dict, path: str, key: str, names: frozenset[str] | None, folder: str, itself: str | None = None) -> tuple[str, ...]:
        """Names of other spec files (tools in `needs`/`tools`), each one that exists."""
        items = self.indexed_items(table, path, key, NAME)
        if names is not None:
            listing = ", ".join(sorted(names)) or "(none)"
            for index, item in items:
                where = f"{join(path, key)}[{index}]"
                if item == itself:
                    self.error(where, "another tool (a tool does not need itself)", f'"{item}"')
                elif item not in names:
                    self.error(where, f"a name from {folder} ({listing})", f'"{item}"')
        return tuple(item for _, item in items)

    def attributes(self, table: dict, path: str, key: str, known: KnownAttributes | None) -> tuple[str, ...]:
        """Attribute names (key "nixpkgs", "python" or "r"), each one the known list has."""
        items = self.indexed_items(table, path, key, R_ATTR if key == "r" else ATTR)
        if known is not None:
            names = {"nixpkgs": known.nixpkgs, "python": known.python, "r": known.r}[key]
            what = {"nixpkgs": "a nixpkgs attribute", "python": "a python3Packages attribute", "r": "an rPackages attribute"}[key]
            for index, item in items:
                if item in names:
                    continue
                where = f"{join(path, key)}[{index}]"
                reason = known.retired.get((key, item))
                if reason is not None:
                    self.error(where, f"{what} nixpkgs still has", f'"{item}", {reason} ({known.file}: {key}.{item})')
                else:
                    self.error(where, f"{what} listed in {known.file}", f'"{item}"')
        return tuple(item for _, item in items)

    def licences(self, table: dict, path: str, key: str, known: KnownAttributes | None) -> tuple[str, ...]:
        """Unfree licence short names, each one the base lists as unfree."""
        items = self.indexed_items(table, path, key, STRING)
        if known is not None:
            listing = ", ".join(f'"{n}"' for n in sorted(known.unfree_licenses))
            for index, item in items:
                if item not in known.unfree_licenses:
                    self.error(f"{join(path, key)}[{index}]", f"an unfree licence of {known.file} [licenses] ({listing})", f'"{item}"')
        return tuple(item for _, item in items)

    def env(self, table: dict, path: str, key: str, ctx: "Where | None") -> dict[str, str]:
        """An env table: variable names to strings (placeholders checked when `ctx`, the tool's, is given)."""
        value = table.get(key, MISSING)
        if value is MISSING:
            return {}
        where = join(path, key)
        if not isinstance(value, dict):
            self.error(where, "a table of environment variables", describe(value))
            return {}
        env: dict[str, str] = {}
        for name in sorted(value):
            item_where = join(where, name)
            if not ENV_KEY_RE.match(name):
                self.error(item_where, "an environment variable name matching [A-Za-z_][A-Za-z0-9_]*", f'"{name}"')
            elif not isinstance(value[name], str):
                self.error(item_where, "a string", describe(value[name]))
            else:
                if ctx is not None:
                    self.placeholders(item_where, value[name], ctx)
                env[name] = value[name]
        return env

    def placeholders(self, where: str, text: str, tool: Where) -> None:
        known = ", ".join("{" + p + "}" for p in PLACEHOLDERS) + ", {package:PROGRAM}"
        if "{" in PLACEHOLDER_RE.sub("", text) or "}" in PLACEHOLDER_RE.sub("", text):
            self.error(where, f"placeholders of the form {{name}} ({known})", f"an unbalanced brace in {describe(text)}")
        for name in PLACEHOLDER_RE.findall(text):
            self.used.add(name)
            if PACKAGE_RE.match(name):
                continue
            if name not in PLACEHOLDERS:
                self.error(where, f"only the placeholders {known}", f'the unknown placeholder "{{{name}}}"')
            elif name in PORT_PLACEHOLDERS and not tool.port:
                self.error(where, f"no {{{name}}} in a tool without `port`", f'"{{{name}}}" in {describe(text)}')
            elif name in ROUTE_PLACEHOLDERS and not tool.route:
                self.error(where, f"no {{{name}}} in a tool without `port` or `socket = true`", f'"{{{name}}}" in {describe(text)}')
            elif name == "socket" and not tool.socket:
                self.error(where, "no {socket} in a tool without `socket = true`", f'"{{socket}}" in {describe(text)}')
            elif name == "secret" and not tool.secret:
                self.error(where, "no {secret} in a tool without a [secret] table", f'"{{secret}}" in {describe(text)}')


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _expected_for_required(key: str) -> str:
    return {
        "description": "a non-empty string",
        "name": "a name matching [a-z][a-z0-9-]*",
        "command": "a non-empty list of strings",
        "id": "a name matching [a-z][a-z0-9-]*",
        "url_path": 'a URL path starting with "/"',
        "nixpkgs": "a list of Nix attribute paths",
        "python": "a list of python3Packages attribute names",
        "r": "a list of rPackages attribute names",
        "enable": "true or false",
    }.get(key, "a value")


def read_toml(path: Path, file: str, errors: list[SpecError]) -> dict | None:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        errors.append(SpecError(file, "", "valid TOML", f"a syntax error: {exc}"))
    except UnicodeDecodeError as exc:
        errors.append(SpecError(file, "", "valid TOML in UTF-8", f"undecodable bytes ({exc.reason})"))
    except OSError as exc:
        errors.append(SpecError(file, "", "a readable file", f"{exc.strerror or exc}"))
    return None


# ---------------------------------------------------------------------------------------------
# tools

TOOL_KEYS = ("description", "nixpkgs", "python", "needs", "port", "socket", "health", "env", "secret", "process", "route", "menu", "override", "unfree_licenses")
PROCESS_KEYS = ("name", "command", "env", "ready")
READY_KEYS = ("http", "tcp", "socket")
ROUTE_KEYS = ("prefix", "strip_prefix", "websockets", "user_content", "blocked", "untyped_html")
SECRET_KEYS = ("scheme", "user", "header", "file")
SECRET_FILE_KEYS = ("path", "format", "display")
# A secret file lives in the runtime's 0700 folder, never anywhere else.
SECRET_PATH_RE = re.compile(r"\{(tool_dir|runtime_dir)\}/[^{}]+\Z")
MENU_KEYS = ("id", "name", "description", "url_path")


def check_tool(
    name: str, file: str, data: dict, errors: list[SpecError],
    known: KnownAttributes | None = None, tool_names: frozenset[str] | None = None,
) -> Tool:
    """One tool file; `known`/`tool_names` (when given) check attributes and `needs`."""
    c = Checker(file, errors)
    c.keys(data, "", TOOL_KEYS, required=("description",))
    port = c.value(data, "", "port", PORT, None)
    has_port = "port" in data  # a wrong port is reported once, not again for each {port}
    socket = c.value(data, "", "socket", BOOL, False)
    if socket and has_port:
        c.error("socket", "either `port` (TCP) or socket = true (a unix socket), not both", "socket = true and a port")
    has_route = has_port or socket
    health = c.value(data, "", "health", BOOL, False)
    if health and not has_route:
        c.error("health", "health = true only on a tool with a `port` or socket = true", "health = true and neither")
    secret = _check_secret(c, data, has_route)
    ctx = Where(port=has_port, route=has_route, socket=bool(socket), secret="secret" in data)

    processes = []
    raw_processes = data.get("process", [])
    if not isinstance(raw_processes, list) or not all(isinstance(p, dict) for p in raw_processes):
        c.error("process", "an array of tables ([[process]])", describe(raw_processes))
        raw_processes = []
    seen_names: set[str] = set()
    for index, raw in enumerate(raw_processes):
        process = _check_process(c, f"process[{index}]", raw, ctx)
        if process.name in seen_names:
            c.error(f"process[{index}].name", "a process name unique within the tool", f'"{process.name}" a second time')
        seen_names.add(process.name)
        processes.append(process)

    route = None
    raw_route = data.get("route", MISSING)
    if raw_route is not MISSING and not isinstance(raw_route, dict):
        c.error("route", "a table ([route])", describe(raw_route))
        raw_route = MISSING
    if raw_route is not MISSING and not has_route:
        c.error("route", "no [route] in a tool without `port` or socket = true (the gateway needs somewhere to proxy to)", "a [route] table")
    if has_route:
        raw_route = raw_route if raw_route is not MISSING else {}
        c.keys(raw_route, "route", ROUTE_KEYS)
        route = Route(
            prefix=c.value(raw_route, "route", "prefix", PREFIX, f"/tools/{name}/"),
            strip_prefix=c.value(raw_route, "route", "strip_prefix", BOOL, True),
            websockets=c.value(raw_route, "route", "websockets", BOOL, True),
            user_content=c.items(raw_route, "route", "user_content", SUB_PATH),
            blocked=c.items(raw_route, "route", "blocked", SUB_PATH),
            untyped_html=c.items(raw_route, "route", "untyped_html", SUB_PATH),
        )

    menu = []
    raw_menu = data.get("menu", [])
    if not isinstance(raw_menu, list) or not all(isinstance(m, dict) for m in raw_menu):
        c.error("menu", "an array of tables ([[menu]])", describe(raw_menu))
        raw_menu = []
    for index, raw in enumerate(raw_menu):
        path = f"menu[{index}]"
        c.keys(raw, path, MENU_KEYS, required=("id", "name", "url_path"))
        menu.append(
            MenuEntry(
                id=c.value(raw, path, "id", NAME, ""),
                name=c.value(raw, path, "name", TEXT, ""),
                description=c.value(raw, path, "description", STRING, ""),
                url_path=c.value(raw, path, "url_path", MENU_URL, ""),
            )
        )

    tool_env = c.env(data, "", "env", ctx)
    nixpkgs = c.attributes(data, "", "nixpkgs", known)
    unfree_licenses = c.licences(data, "", "unfree_licenses", known)
    overrides = _check_overrides(c, data, nixpkgs, unfree_licenses, known)
    # A socket or a secret the tool is never told about protects nothing: say so.
    if socket and ctx.socket and "socket" not in c.used:
        c.error("socket", "{socket} in a process command or env value (where the tool listens)", "socket = true and no {socket}")
    if secret is not None and "secret" not in c.used and not secret.files:
        c.error("secret", "{secret} in a process command or env value, or a [[secret.file]]", "a [secret] the tool never receives")
    return Tool(
        name=name,
        file=file,
        description=c.value(data, "", "description", TEXT, ""),
        nixpkgs=nixpkgs,
        python=c.attributes(data, "", "python", known),
        needs=c.references(data, "", "needs", tool_names, TOOLS_DIR, itself=name),
        port=port,
        health=health,
        env=tool_env,
        processes=tuple(processes),
        route=route,
        menu=tuple(menu),
        socket=bool(socket),
        secret=secret,
        overrides=overrides,
        unfree_licenses=unfree_licenses,
    )


def _check_overrides(
    c: Checker, data: dict, nixpkgs: tuple[str, ...], unfree_licenses: tuple[str, ...], known: KnownAttributes | None,
) -> dict[str, dict[str, bool]]:
    """[override.<attr>] tables: `.override` arguments the base lists for an attribute the tool
    installs, each true or false; the licences an argument adds must be in unfree_licenses."""
    raw = c.value(data, "", "override", TABLE, {})
    result: dict[str, dict[str, bool]] = {}
    for attr in sorted(raw):
        where = join("override", attr)
        args = raw[attr]
        if attr not in nixpkgs:
            c.error(where, "an attribute of this tool's `nixpkgs` list", f'"{attr}"')
            continue
        if not isinstance(args, dict):
            c.error(where, "a table of .override arguments (name = true/false)", describe(args))
            continue
        allowed = known.overrides.get(attr, {}) if known is not None else None
        good = {}
        for arg in sorted(args):
            arg_where = join(where, arg)
            if allowed is not None and arg not in allowed:
                listing = ", ".join(sorted(allowed)) or "none"
                c.error(arg_where, f"an .override argument {known.file} lists for {attr} ({listing})", f'"{arg}"')
            elif not isinstance(args[arg], bool):
                c.error(arg_where, "true or false", describe(args[arg]))
            else:
                good[arg] = args[arg]
                missing = [l for l in (allowed or {}).get(arg, []) if args[arg] and l not in unfree_licenses]
                if missing:
                    c.error(arg_where, f"the licence it adds ({', '.join(missing)}) admitted in unfree_licenses", "it is not listed")
        result[attr] = good
    return result


def _check_secret(c: Checker, data: dict, has_route: bool) -> Secret | None:
    raw = data.get("secret", MISSING)
    if raw is MISSING:
        return None
    if not isinstance(raw, dict):
        c.error("secret", "a table ([secret])", describe(raw))
        return None
    c.keys(raw, "secret", SECRET_KEYS)
    scheme = c.value(raw, "secret", "scheme", Kind("one of " + ", ".join(f'"{s}"' for s in SECRET_SCHEMES), lambda v: v in SECRET_SCHEMES), None)
    user = c.value(raw, "secret", "user", Kind("a user name of letters, digits and . _ -", lambda v: isinstance(v, str) and bool(USER_RE.match(v))), None)
    header = c.value(raw, "secret", "header", Kind("an HTTP header name of letters, digits and -", lambda v: isinstance(v, str) and bool(HEADER_RE.match(v))), None)
    if scheme is not None and not has_route:
        c.error("secret.scheme", "a scheme only on a tool the gateway proxies to (`port`)", f'"{scheme}" and no port')
    if scheme == "basic" and user is None and "user" not in raw:
        c.error("secret.user", 'a user name (scheme "basic" sends Authorization: Basic base64(user:secret))', describe(MISSING))
    if scheme == "header" and header is None and "header" not in raw:
        c.error("secret.header", 'a header name (scheme "header" sends the secret in it)', describe(MISSING))
    if "user" in raw and scheme != "basic":
        c.error("secret.user", 'user only with scheme = "basic"', describe(raw["user"]))
    if "header" in raw and scheme != "header":
        c.error("secret.header", 'header only with scheme = "header"', describe(raw["header"]))
    files = []
    raw_files = raw.get("file", [])
    if not isinstance(raw_files, list) or not all(isinstance(f, dict) for f in raw_files):
        c.error("secret.file", "an array of tables ([[secret.file]])", describe(raw_files))
        raw_files = []
    for index, item in enumerate(raw_files):
        where = f"secret.file[{index}]"
        c.keys(item, where, SECRET_FILE_KEYS, required=("path", "format"))
        path = c.value(item, where, "path", Kind('a path "{tool_dir}/NAME" or "{runtime_dir}/NAME" (inside the private runtime folder)', lambda v: isinstance(v, str) and bool(SECRET_PATH_RE.match(v))), "")
        fmt = c.value(item, where, "format", Kind("one of " + ", ".join(f'"{f}"' for f in SECRET_FILE_FORMATS), lambda v: v in SECRET_FILE_FORMATS), "plain")
        display = c.value(item, where, "display", Kind("an X display number 0-999", lambda v: _is_int(v) and 0 <= v <= 999), None)
        if fmt == "xauthority" and display is None and "display" not in item:
            c.error(join(where, "display"), 'the X display number (format "xauthority")', describe(MISSING))
        if "display" in item and fmt != "xauthority":
            c.error(join(where, "display"), 'display only with format = "xauthority"', describe(item["display"]))
        files.append(SecretFile(path=path, format=fmt, display=display))
    return Secret(scheme=scheme, user=user, header=header, files=tuple(files))


def _check_process(c: Checker, path: str, raw: dict, ctx: Where) -> Process:
    c.keys(raw, path, PROCESS_KEYS, required=("name", "command"))
    command = raw.get("command", MISSING)
    good_command: tuple[str, ...] = ()
    if command is not MISSING:
        if not isinstance(command, list) or not command:
            c.error(join(path, "command"), "a non-empty list of strings (argv, no shell)", describe(command))
        else:
            for index, arg in enumerate(command):
                where = f"{join(path, 'command')}[{index}]"
                if not isinstance(arg, str) or (index == 0 and not arg.strip()):
                    c.error(where, "a string" if index else "a program name (non-empty string)", describe(arg))
                else:
                    c.placeholders(where, arg, ctx)
            good_command = tuple(a for a in command if isinstance(a, str))

    ready = Ready()
    raw_ready = raw.get("ready", MISSING)
    if raw_ready is not MISSING:
        where = join(path, "ready")
        if not isinstance(raw_ready, dict):
            c.error(where, "a table with http = PATH, tcp = PORT or socket = PATH", describe(raw_ready))
        else:
            c.keys(raw_ready, where, READY_KEYS)
            if len([k for k in READY_KEYS if k in raw_ready]) != 1:
                c.error(where, "exactly one of http = PATH, tcp = PORT or socket = PATH", f"{len(raw_ready)} keys")
            if "http" in raw_ready and not ctx.route:
                c.error(join(where, "http"), "http only in a tool with `port` or socket = true (it is polled there)", describe(raw_ready["http"]))
            socket_path = c.value(raw_ready, where, "socket", Kind(
                'a unix socket path under the runtime folder: "{socket}", "{tool_dir}/NAME" or "{runtime_dir}/NAME"',
                lambda v: isinstance(v, str) and (v == "{socket}" or bool(SECRET_PATH_RE.match(v)))), None)
            if socket_path is not None:
                c.placeholders(join(where, "socket"), socket_path, ctx)
            ready = Ready(
                http=c.value(raw_ready, where, "http", URL_PATH, None),
                tcp=c.value(raw_ready, where, "tcp", PORT, None),
                socket=socket_path,
            )
    return Process(
        name=c.value(raw, path, "name", NAME, ""),
        command=good_command,
        env=c.env(raw, path, "env", ctx),
        ready=ready,
    )


# ---------------------------------------------------------------------------------------------
# flavors

FLAVOR_KEYS = ("description", "extends", "image", "tools", "python", "nixpkgs", "r", "systems", "unfree_licenses", "env", "cuda", "replace", "remove")
CUDA_KEYS = ("enable", "capabilities")
REPLACE_KEYS = ("python", "nixpkgs")


def check_flavor(
    name: str, file: str, data: dict, errors: list[SpecError], known: KnownAttributes | None = None,
    tool_names: frozenset[str] | None = None, flavor_names: frozenset[str] | None = None,
) -> Flavor:
    """One flavor file; `known`/`tool_names`/`flavor_names` (when given) check references."""
    c = Checker(file, errors)
    c.keys(data, "", FLAVOR_KEYS, required=("description",))

    systems = None
    if "systems" in data:
        systems = c.items(data, "", "systems", SYSTEM)
        if isinstance(data["systems"], list) and not data["systems"]:
            c.error("systems", "at least one of " + ", ".join(f'"{s}"' for s in SYSTEMS), "an empty list")

    cuda = None
    raw_cuda = c.value(data, "", "cuda", TABLE, None)
    if raw_cuda is not None:
        c.keys(raw_cuda, "cuda", CUDA_KEYS, required=("enable",))
        cuda = Cuda(
            enable=c.value(raw_cuda, "cuda", "enable", BOOL, False),
            capabilities=c.items(raw_cuda, "cuda", "capabilities", CUDA_CAPABILITY) if "capabilities" in raw_cuda else None,
        )

    replace = Replace()
    raw_replace = c.value(data, "", "replace", TABLE, None)
    if raw_replace is not None:
        c.keys(raw_replace, "replace", REPLACE_KEYS)
        replace = Replace(
            python=_check_replace_table(c, raw_replace, "python"),
            nixpkgs=_check_replace_table(c, raw_replace, "nixpkgs"),
        )

    remove = Remove()
    raw_remove = c.value(data, "", "remove", TABLE, None)
    if raw_remove is not None:
        c.keys(raw_remove, "remove", REPLACE_KEYS)
        remove = Remove(python=c.items(raw_remove, "remove", "python", ATTR), nixpkgs=c.items(raw_remove, "remove", "nixpkgs", ATTR))

    return Flavor(
        name=name,
        file=file,
        description=c.value(data, "", "description", TEXT, ""),
        extends=_extends(c, data, flavor_names),
        image=c.value(data, "", "image", IMAGE, None),
        tools=c.references(data, "", "tools", tool_names, TOOLS_DIR),
        python=c.attributes(data, "", "python", known),
        nixpkgs=c.attributes(data, "", "nixpkgs", known),
        r=c.attributes(data, "", "r", known),
        systems=systems,
        unfree_licenses=c.licences(data, "", "unfree_licenses", known) if "unfree_licenses" in data else None,
        env=c.env(data, "", "env", None),
        cuda=cuda,
        replace=replace,
        remove=remove,
    )


def _extends(c: Checker, data: dict, flavor_names: frozenset[str] | None) -> str | None:
    parent = c.value(data, "", "extends", NAME, None)
    if parent is not None and flavor_names is not None and parent not in flavor_names:
        c.error("extends", f"a name from {FLAVORS_DIR} ({', '.join(sorted(flavor_names))})", f'"{parent}"')
    return parent


def _check_replace_table(c: Checker, raw: dict, key: str) -> dict[str, str]:
    table = raw.get(key, {})
    where = join("replace", key)
    if not isinstance(table, dict):
        c.error(where, 'a table of old = "new" attribute names', describe(table))
        return {}
    good = {}
    for old in sorted(table):
        item = join(where, old)
        if not ATTR_RE.match(old):
            c.error(item, ATTR.expected, f'"{old}"')
        elif not ATTR.test(table[old]):
            c.error(item, ATTR.expected, describe(table[old]))
        else:
            good[old] = table[old]
    return good


# ---------------------------------------------------------------------------------------------
# the whole spec


def check_known(file: str, data: dict, errors: list[SpecError]) -> KnownAttributes:
    """The package base (generator/base.py reads and checks it)."""
    return read_base(file, data, errors)


def _spec_files(root: Path, folder: str, errors: list[SpecError]) -> list[tuple[str, str, Path]]:
    """(name, relative file, path) of each *.toml in a spec folder, sorted by name."""
    directory = root / folder
    if not directory.is_dir():
        errors.append(SpecError(folder, "", "a folder of *.toml files", "no such folder"))
        return []
    found = []
    for path in sorted(directory.iterdir(), key=lambda p: p.name):
        if path.name.startswith("."):
            continue
        file = f"{folder}/{path.name}"
        if path.suffix != ".toml" or not path.is_file():
            # A typo such as "vnc.tml" would otherwise drop a tool without a word.
            errors.append(SpecError(file, "", f"only <name>.toml files in {folder}", f'"{path.name}"'))
            continue
        if not NAME_RE.match(path.stem):
            errors.append(SpecError(file, "", "a file name matching [a-z][a-z0-9-]*.toml", f'"{path.name}"'))
            continue
        found.append((path.stem, file, path))
    return found


def load_spec(root: Path) -> tuple[Spec, list[SpecError]]:
    """Read and check every spec file. Returns the spec and every error found (empty if valid)."""
    errors: list[SpecError] = []

    known = KnownAttributes(KNOWN_FILE, frozenset(), frozenset())
    known_path = root / KNOWN_FILE
    if not known_path.is_file():
        errors.append(SpecError(KNOWN_FILE, "", "the package base: one entry per nixpkgs, python and r attribute", "no such file"))
        known_checked = False
    else:
        data = read_toml(known_path, KNOWN_FILE, errors)
        known_checked = False
        if data is not None:
            before = len(errors)
            known = check_known(KNOWN_FILE, data, errors)
            # A broken list would flag every attribute of the spec: report the list alone.
            known_checked = len(errors) == before

    known_or_none = known if known_checked else None
    tool_files = _spec_files(root, TOOLS_DIR, errors)
    flavor_files = _spec_files(root, FLAVORS_DIR, errors)
    # Names come from file names, so a reference to a tool whose file is broken is not unknown.
    tool_names = frozenset(name for name, _, _ in tool_files)
    flavor_names = frozenset(name for name, _, _ in flavor_files)

    tools: dict[str, Tool] = {}
    for name, file, path in tool_files:
        data = read_toml(path, file, errors)
        if data is not None:
            tools[name] = check_tool(name, file, data, errors, known_or_none, tool_names)

    flavors: dict[str, Flavor] = {}
    for name, file, path in flavor_files:
        data = read_toml(path, file, errors)
        if data is not None:
            flavors[name] = check_flavor(name, file, data, errors, known_or_none, tool_names, flavor_names)

    spec = Spec(root=root, tools=tools, flavors=flavors, known=known)
    errors += check_references(spec, check_attributes=known_checked)
    return spec, errors


def check_references(spec: Spec, check_attributes: bool = True) -> list[SpecError]:
    """Checks across files: shared ports, route prefixes and menu ids; replacement targets."""
    errors: list[SpecError] = []

    port_owner: dict[int, str] = {}
    prefix_owner: dict[str, str] = {}
    menu_owner: dict[str, str] = {}
    for name in sorted(spec.tools):
        tool = spec.tools[name]
        # Every port a tool occupies: its web port and the TCP ports its processes wait on.
        occupied = [("port", tool.port)] if tool.port is not None else []
        occupied += [
            (f"process[{i}].ready.tcp", p.ready.tcp)
            for i, p in enumerate(tool.processes)
            if p.ready.tcp is not None and p.ready.tcp != tool.port
        ]
        for key, port in occupied:
            if port in port_owner and port_owner[port] != tool.file:
                errors.append(SpecError(tool.file, key, "a port no other tool uses", f"{port}, also used by {port_owner[port]}"))
            port_owner.setdefault(port, tool.file)

        if tool.route is not None:
            prefix = tool.route.prefix
            if prefix in prefix_owner:
                errors.append(SpecError(tool.file, "route.prefix", "a route prefix no other tool uses", f'"{prefix}", also used by {prefix_owner[prefix]}'))
            prefix_owner.setdefault(prefix, tool.file)

        for index, entry in enumerate(tool.menu):
            if entry.id and entry.id in menu_owner:
                errors.append(SpecError(tool.file, f"menu[{index}].id", "a menu id no other entry uses", f'"{entry.id}", also used by {menu_owner[entry.id]}'))
            menu_owner.setdefault(entry.id, tool.file)


    for name in sorted(spec.flavors):
        flavor = spec.flavors[name]
        if check_attributes:
            for new_key, table, known in (
                ("python", flavor.replace.python, spec.known.python),
                ("nixpkgs", flavor.replace.nixpkgs, spec.known.nixpkgs),
            ):
                for old, new in sorted(table.items()):
                    reason = spec.known.retired.get((new_key, new))
                    if reason is not None:
                        errors.append(SpecError(flavor.file, f"replace.{new_key}.{old}", f"a {new_key} attribute nixpkgs still has", f'"{new}", {reason} ({spec.known.file}: {new_key}.{new})'))
                    elif new not in known:
                        errors.append(SpecError(flavor.file, f"replace.{new_key}.{old}", f"a {new_key} attribute listed in {spec.known.file}", f'"{new}"'))
    return errors

