"""The runtime manifest (docs/architecture.md, "Runtime manifest"): find it, load it, check it.

The manifest is plain data; this module turns it into small frozen dataclasses so the rest of the
runtime never indexes raw dicts, and every shape error names the file and the key.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import string

PLACEHOLDERS = {"port", "base_url", "prefix", "workspace", "home", "runtime_dir", "tool_dir", "user"}
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]*$")


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
    for _, field, _, _ in string.Formatter().parse(text):
        if field is not None and field not in PLACEHOLDERS:
            raise ManifestError(f"{where}: unknown placeholder {{{field}}} in {text!r}")


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
        route = None
        raw_route = raw.get("route")
        if raw_route is not None:
            if port is None:
                raise ManifestError(f"{where}.route: a route needs a port")
            prefix = _require(raw_route, "prefix", str, where + ".route")
            if not (prefix.startswith("/") and prefix.endswith("/")) or any(ch in prefix for ch in "?#{}; \"'\\"):
                raise ManifestError(f"{where}.route.prefix: expected a path like /tools/{name}/, found {prefix!r}")
            route = Route(
                prefix=prefix,
                strip_prefix=bool(raw_route.get("strip_prefix", True)),
                websockets=bool(raw_route.get("websockets", True)),
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
                and (isinstance(ready.get("http"), str) or isinstance(ready.get("tcp"), int))
            ):
                raise ManifestError(f"{p_where}.ready: expected null, {{\"http\": PATH}} or {{\"tcp\": PORT}}")
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
            )
        )
    health = [tool.name for tool in tools if tool.health]
    if len(health) != 1:
        raise ManifestError(f"{path}: expected exactly one tool with \"health\": true (Jupyter), found {health or 'none'}")
    health_tool = next(tool for tool in tools if tool.health)
    if health_tool.port is None or health_tool.route is None:
        raise ManifestError(f"{path}: tool {health_tool.name}: the health tool needs a port and a route")
    return Manifest(
        path=path,
        flavor=str(data.get("flavor", "")),
        image=str(data.get("image", "")),
        env=_string_map(data.get("env") or {}, path + ": env"),
        tools=tuple(tools),
    )


def substitute(text: str, values: dict[str, str]) -> str:
    """Fill {placeholders}; values are inserted verbatim into one argv element, never a shell."""
    return text.format_map(values)
