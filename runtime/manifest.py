"""The runtime manifest (docs/architecture.md, "Runtime manifest"): find it, load it, check it.

The manifest is plain data; this module turns it into small frozen dataclasses so the rest of the
runtime never indexes raw dicts, and every shape error names the file and the key.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re

PLACEHOLDERS = {
    "port", "base_url", "prefix", "workspace", "home", "runtime_dir", "tool_dir", "user", "socket", "secret",
    "toolkit",
}
# {package:PROGRAM}: the package folder of a program on PATH (docs/architecture.md).
PACKAGE_PLACEHOLDER = re.compile(r"^package:([a-z][a-z0-9_.+-]*)$")
PLACEHOLDER_PATTERN = re.compile(r"\{([^{}]*)\}")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]*$")
SECRET_SCHEMES = {"basic", "header"}
SECRET_FILE_FORMATS = {"glances-password", "plain", "xauthority"}


class ManifestError(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Process:
    name: str
    command: tuple[str, ...]
    env: dict[str, str]
    ready: dict | None


@dataclasses.dataclass(frozen=True)
class Route:
    prefix: str
    strip_prefix: bool
    websockets: bool
    user_content: tuple[str, ...] = ()  # sub-paths (relative to prefix) serving the user's files
    blocked: tuple[str, ...] = ()  # sub-paths the gateway refuses
    untyped_html: tuple[str, ...] = ()  # exact sub-paths of the tool's own HTML pages sent without a type


@dataclasses.dataclass(frozen=True)
class SecretFile:
    path: str  # with placeholders ({tool_dir}/..., {runtime_dir}/...)
    format: str  # "plain" | "glances-password" | "xauthority"
    display: int | None = None


@dataclasses.dataclass(frozen=True)
class Secret:
    scheme: str | None  # how the gateway presents it: "basic", "header" or None
    user: str | None
    header: str | None
    files: tuple[SecretFile, ...] = ()


@dataclasses.dataclass(frozen=True)
class Tool:
    name: str
    description: str
    port: int | None
    health: bool
    route: Route | None
    env: dict[str, str]
    processes: tuple[Process, ...]
    menu: tuple[dict, ...]
    socket: bool = False  # the web server listens on the runtime-made unix socket {socket}
    secret: Secret | None = None


@dataclasses.dataclass(frozen=True)
class Manifest:
    path: str
    flavor: str
    image: str
    env: dict[str, str]
    tools: tuple[Tool, ...]

    @property
    def health_tool(self) -> Tool:
        return next(tool for tool in self.tools if tool.health)


def find_manifest(manifest_path: str | None, flavor: str | None, env: dict[str, str]) -> str:
    """--manifest, else $MLWS_MANIFEST, else --flavor (default minimal) in $MLWS_FLAVORS_DIR or the
    checkout's flavors/ folder."""
    if manifest_path:
        candidates = [manifest_path]
        source = "--manifest"
    elif env.get("MLWS_MANIFEST") and not flavor:
        candidates = [env["MLWS_MANIFEST"]]
        source = "MLWS_MANIFEST"
    else:
        name = flavor or "minimal"
        if not NAME_PATTERN.match(name):
            raise ManifestError(f"--flavor {name!r}: expected a flavor name like 'minimal'")
        folders = []
        if env.get("MLWS_FLAVORS_DIR"):
            folders.append(env["MLWS_FLAVORS_DIR"])
        folders.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "flavors"))
        candidates = [os.path.join(folder, f"{name}.manifest.json") for folder in folders]
        source = f"--flavor {name}" + (" (MLWS_FLAVORS_DIR)" if env.get("MLWS_FLAVORS_DIR") else "")
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise ManifestError(f"{source}: manifest not found; looked at: " + ", ".join(candidates))


def _require(data: dict, key: str, kind, where: str, allow_none: bool = False):
    if key not in data:
        raise ManifestError(f"{where}: missing key {key!r}")
    value = data[key]
    if value is None and allow_none:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, found {value!r}")
    return value


def _string_map(value, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ManifestError(f"{where}: expected an object of strings")
    return dict(value)


def _check_placeholders(text: str, where: str) -> None:
    rest = PLACEHOLDER_PATTERN.sub("", text)
    if "{" in rest or "}" in rest:
        raise ManifestError(f"{where}: unbalanced brace in {text!r}")
    for field in PLACEHOLDER_PATTERN.findall(text):
        if field not in PLACEHOLDERS and not PACKAGE_PLACEHOLDER.match(field):
            raise ManifestError(f"{where}: unknown placeholder {{{field}}} in {text!r}")


def package_programs(text: str) -> list[str]:
    """Programs named by {package:PROGRAM} placeholders in `text`."""
    return [m.group(1) for m in map(PACKAGE_PLACEHOLDER.match, PLACEHOLDER_PATTERN.findall(text)) if m]


def _string_list(value, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.startswith("/") for v in value):
        raise ManifestError(f"{where}: expected a list of paths starting with /")
    return tuple(value)


def _secret(raw, where: str) -> Secret | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected an object or null")
    scheme = raw.get("scheme")
    if scheme is not None and scheme not in SECRET_SCHEMES:
        raise ManifestError(f"{where}.scheme: expected one of {sorted(SECRET_SCHEMES)} or null, found {scheme!r}")
    user, header = raw.get("user"), raw.get("header")
    if scheme == "basic" and not (isinstance(user, str) and re.match(r"^[A-Za-z0-9._-]+$", user)):
        raise ManifestError(f"{where}.user: expected a user name for scheme basic, found {user!r}")
    if scheme == "header" and not (isinstance(header, str) and re.match(r"^[A-Za-z0-9-]+$", header)):
        raise ManifestError(f"{where}.header: expected a header name for scheme header, found {header!r}")
    files = []
    for index, item in enumerate(raw.get("files") or []):
        f_where = f"{where}.files[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise ManifestError(f"{f_where}: expected an object with a path")
        if not re.match(r"^\{(tool_dir|runtime_dir)\}/[^{}]+$", item["path"]) or "/../" in item["path"] + "/":
            raise ManifestError(f"{f_where}.path: expected {{tool_dir}}/NAME or {{runtime_dir}}/NAME, found {item['path']!r}")
        if item.get("format") not in SECRET_FILE_FORMATS:
            raise ManifestError(f"{f_where}.format: expected one of {sorted(SECRET_FILE_FORMATS)}, found {item.get('format')!r}")
        display = item.get("display")
        if item["format"] == "xauthority" and not (isinstance(display, int) and not isinstance(display, bool) and 0 <= display <= 999):
            raise ManifestError(f"{f_where}.display: expected an X display number, found {display!r}")
        files.append(SecretFile(item["path"], item["format"], display))
    return Secret(scheme, user if scheme == "basic" else None, header if scheme == "header" else None, tuple(files))


def load_manifest(path: str) -> Manifest:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as error:
        raise ManifestError(f"{path}: cannot read ({error.strerror})") from error
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path}: invalid JSON at line {error.lineno}: {error.msg}") from error
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    if data.get("schema") != 1:
        raise ManifestError(f"{path}: schema: expected 1, found {data.get('schema')!r}")
    tools = []
    seen_ports: dict[int, str] = {}
    for index, raw in enumerate(_require(data, "tools", list, path)):
        where = f"{path}: tools[{index}]"
        if not isinstance(raw, dict):
            raise ManifestError(f"{where}: expected an object")
        name = _require(raw, "name", str, where)
        if not NAME_PATTERN.match(name):
            raise ManifestError(f"{where}.name: expected [a-z][a-z0-9-]*, found {name!r}")
        where = f"{path}: tools[{index}] ({name})"
        port = _require(raw, "port", int, where, allow_none=True)
        if port is not None:
            if not 1 <= port <= 65535:
                raise ManifestError(f"{where}.port: expected 1-65535, found {port}")
            if port in seen_ports:
                raise ManifestError(f"{where}.port: {port} is also the port of {seen_ports[port]}")
            seen_ports[port] = name
        socket = raw.get("socket") is True
        if socket and port is not None:
            raise ManifestError(f"{where}: a tool has a port or \"socket\": true, not both")
        route = None
        raw_route = raw.get("route")
        if raw_route is not None:
            if port is None and not socket:
                raise ManifestError(f"{where}.route: a route needs a port or \"socket\": true")
            prefix = _require(raw_route, "prefix", str, where + ".route")
            if not (prefix.startswith("/") and prefix.endswith("/")) or any(ch in prefix for ch in "?#{}; \"'\\"):
                raise ManifestError(f"{where}.route.prefix: expected a path like /tools/{name}/, found {prefix!r}")
            route = Route(
                prefix=prefix,
                strip_prefix=bool(raw_route.get("strip_prefix", True)),
                websockets=bool(raw_route.get("websockets", True)),
                user_content=_string_list(raw_route.get("user_content"), where + ".route.user_content"),
                blocked=_string_list(raw_route.get("blocked"), where + ".route.blocked"),
                untyped_html=_string_list(raw_route.get("untyped_html"), where + ".route.untyped_html"),
            )
        processes = []
        for p_index, raw_process in enumerate(raw.get("processes") or []):
            p_where = f"{where}.processes[{p_index}]"
            p_name = _require(raw_process, "name", str, p_where)
            if not NAME_PATTERN.match(p_name):
                raise ManifestError(f"{p_where}.name: expected [a-z][a-z0-9-]*, found {p_name!r}")
            command = _require(raw_process, "command", list, p_where)
            if not command or not all(isinstance(arg, str) for arg in command):
                raise ManifestError(f"{p_where}.command: expected a non-empty list of strings")
            for arg in command:
                _check_placeholders(arg, p_where + ".command")
            p_env = _string_map(raw_process.get("env") or {}, p_where + ".env")
            for value in p_env.values():
                _check_placeholders(value, p_where + ".env")
            ready = raw_process.get("ready")
            if ready is not None and not (
                isinstance(ready, dict)
                and (isinstance(ready.get("http"), str) or isinstance(ready.get("tcp"), int)
                     or isinstance(ready.get("socket"), str))
            ):
                raise ManifestError(
                    f"{p_where}.ready: expected null, {{\"http\": PATH}}, {{\"tcp\": PORT}} or {{\"socket\": PATH}}")
            if ready is not None and isinstance(ready.get("socket"), str):
                _check_placeholders(ready["socket"], p_where + ".ready.socket")
            processes.append(Process(p_name, tuple(command), p_env, ready))
        tool_env = _string_map(raw.get("env") or {}, where + ".env")
        for value in tool_env.values():
            _check_placeholders(value, where + ".env")
        menu = tuple(entry for entry in (raw.get("menu") or []) if isinstance(entry, dict))
        tools.append(
            Tool(
                name=name,
                description=str(raw.get("description", "")),
                port=port,
                health=raw.get("health") is True,
                route=route,
                env=tool_env,
                processes=tuple(processes),
                menu=menu,
                socket=socket,
                secret=_secret(raw.get("secret"), where + ".secret"),
            )
        )
    health = [tool.name for tool in tools if tool.health]
    if len(health) != 1:
        raise ManifestError(f"{path}: expected exactly one tool with \"health\": true (Jupyter), found {health or 'none'}")
    health_tool = next(tool for tool in tools if tool.health)
    if (health_tool.port is None and not health_tool.socket) or health_tool.route is None:
        raise ManifestError(f"{path}: tool {health_tool.name}: the health tool needs a port or socket, and a route")
    return Manifest(
        path=path,
        flavor=str(data.get("flavor", "")),
        image=str(data.get("image", "")),
        env=_string_map(data.get("env") or {}, path + ": env"),
        tools=tuple(tools),
    )


def substitute(text: str, values: dict[str, str]) -> str:
    """Fill {placeholders}; values are inserted verbatim into one argv element, never a shell.
    `values` has a key per placeholder, "package:PROGRAM" included."""
    return PLACEHOLDER_PATTERN.sub(lambda match: values[match.group(1)], text)
