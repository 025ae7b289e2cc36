"""The gateway's nginx configuration, rendered from plain data.

No value from the environment is pasted raw into the configuration: the base URL is normalised and
URL-quoted (settings.normalise_base_url), secrets compared by nginx are runtime-made hex, a token
set by the user appears only through `nginx_string(regex_literal(token))`, and paths are checked by
`safe_path`. Every proxied location repeats its headers and error pages because nginx does not
inherit `proxy_set_header`/`error_page` into a location that sets any of its own.
"""
from __future__ import annotations

import dataclasses
import re
import urllib.parse

GATEWAY_HEADER = "X-Mlws-Gateway"
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+@=-]*$")


class ConfigValueError(ValueError):
    pass


def nginx_string(value: str) -> str:
    """A double-quoted nginx string that nginx reads back as exactly `value`.

    nginx's lexer turns \\" into " and \\\\ into \\ inside double quotes and knows no other
    escape that could end the string, so escaping those two is enough. Control characters have no
    safe spelling in nginx configuration: they are refused.
    """
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ConfigValueError(f"value {value!r} contains a control character and cannot be written into nginx configuration")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def regex_literal(value: str) -> str:
    """A PCRE pattern matching `value` literally: every non-alphanumeric character escaped."""
    return "".join(ch if ch.isalnum() and ch.isascii() else "\\" + ch for ch in value)


def uri_path(path: str) -> str:
    """A `location` argument: nginx matches locations against the decoded URI, so the URL-quoted
    base URL is decoded first and then written as a quoted nginx string."""
    return nginx_string(urllib.parse.unquote(path))


def safe_path(path: str, what: str) -> str:
    if not SAFE_PATH.match(path):
        raise ConfigValueError(
            f"{what} {path!r}: expected an absolute path of letters, digits and . _ / + @ = - only"
        )
    return path


@dataclasses.dataclass(frozen=True)
class Upstream:
    name: str  # tool name
    port: int
    prefix: str  # route prefix without base URL, e.g. "/tools/vnc/" or "/"
    strip_prefix: bool
    websockets: bool
    available: bool


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    runtime_dir: str  # nginx prefix folder lives at <runtime_dir>/nginx
    static_dir: str  # runtime/static (login page assets)
    listen_address: str
    port: int
    base_url: str
    auth_mode: str  # "off" | "token" | "hub"
    cookie_name: str
    session_value: str  # hex
    gateway_secret: str  # hex
    token: str | None
    htpasswd_file: str | None
    ssl_cert: str | None
    ssl_key: str | None
    login_port: int | None
    health_tool: str
    upstreams: tuple[Upstream, ...]


def _proxy_headers(gateway_secret: str | None) -> list[str]:
    lines = [
        "proxy_http_version 1.1;",
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Scheme $scheme;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $mlws_connection;",
    ]
    # Always overwrite the secret header: a client-sent one never reaches a backend.
    lines.append(f"proxy_set_header {GATEWAY_HEADER} {gateway_secret or chr(34) * 2};")
    return lines


def _indent(lines: list[str], depth: int) -> list[str]:
    return ["    " * depth + line if line else "" for line in lines]


def render_nginx_conf(cfg: GatewayConfig) -> str:
    rt = safe_path(cfg.runtime_dir, "runtime folder")
    static = safe_path(cfg.static_dir, "static folder")
    ngx = rt + "/nginx"
    base = cfg.base_url
    if not re.match(r"^(/[A-Za-z0-9._~!$'()*+,;=:@%-]+)*$", base):
        raise ConfigValueError(f"base URL {base!r}: expected a normalised, URL-quoted path")
    if not re.match(r"^[0-9a-fA-F:.]+$", cfg.listen_address):
        raise ConfigValueError(f"listen address {cfg.listen_address!r}: expected an IP address")
    for secret in (cfg.session_value, cfg.gateway_secret):
        if not re.match(r"^[0-9a-f]{32,}$", secret):
            raise ConfigValueError("internal secrets must be runtime-made lowercase hex")
    if not re.match(r"^[a-z0-9_]+$", cfg.cookie_name):
        raise ConfigValueError(f"cookie name {cfg.cookie_name!r}: expected [a-z0-9_]+")
    segments_re = "(?:/[^/?]*){%d}" % base.count("/") if base else ""
    listen = f"[{cfg.listen_address}]" if ":" in cfg.listen_address else cfg.listen_address
    tls = bool(cfg.ssl_cert)
    gated = cfg.auth_mode in ("token", "hub")

    http: list[str] = [
        "default_type application/octet-stream;",
        "types { text/html html; text/css css; application/javascript js; image/svg+xml svg; image/png png; }",
        # Buffered: one write per 64 KiB or per second instead of one per request.
        f"access_log {ngx}/access.log combined buffer=64k flush=1s;",
        # Clients (browsers, API clients) keep their connection for many requests.
        "keepalive_requests 10000;",
        "map_hash_bucket_size 128;",
        # @mlws_login is reached through `error_page 418`; its own error_page (login service down:
        # the starting page) is a second redirect, which nginx follows only with this on.
        "recursive_error_pages on;",  # room for the 64-character session key of the cookie map
        f"client_body_temp_path {ngx}/tmp/body;",
        f"proxy_temp_path {ngx}/tmp/proxy;",
        f"fastcgi_temp_path {ngx}/tmp/fastcgi;",
        f"uwsgi_temp_path {ngx}/tmp/uwsgi;",
        f"scgi_temp_path {ngx}/tmp/scgi;",
        "server_tokens off;",
        "absolute_redirect off;",  # relative Location headers: right behind any port mapping
        "client_max_body_size 0;",
        "proxy_buffering off;",
        "proxy_request_buffering off;",
        "proxy_connect_timeout 3s;",
        "proxy_read_timeout 1d;",
        "proxy_send_timeout 1d;",
        "sendfile on;",
        "tcp_nodelay on;",
        "",
        "# Keep-alive to backends unless the client upgrades (websockets).",
        "map $http_upgrade $mlws_connection { default upgrade; \"\" \"\"; }",
    ]
    if cfg.auth_mode == "token":
        http += [
            "",
            "# Per-request authentication, entirely inside nginx (no round trip):",
            "# the session cookie set by the login service, or `Authorization: token <token>`.",
            # An exact key (runtime-made hex): a hash lookup, no regular expression.
            f"map $cookie_{cfg.cookie_name} $mlws_cookie_ok {{ default 0; {nginx_string(cfg.session_value)} 1; }}",
        ]
        header_lines = ["default 0;"]
        if cfg.token:
            header_lines.append(
                nginx_string(r"~^(?:[Tt][Oo][Kk][Ee][Nn]|[Bb][Ee][Aa][Rr][Ee][Rr])\s+" + regex_literal(cfg.token) + "$")
                + " 1;"
            )
        http += ["map $http_authorization $mlws_header_ok {", *_indent(header_lines, 1), "}"]
        http += ['map "$mlws_cookie_ok$mlws_header_ok" $mlws_authed { "00" 0; default 1; }']
    # The raw (still percent-encoded) rest of a /tools/<x>/ path, so %2F and friends reach backends intact.
    http += [
        "map $request_uri $mlws_tool_rest {",
        # The raw URI may spell the base URL's characters differently: count its segments instead.
        f"    {nginx_string('~^' + segments_re + '/tools/[^/?]+(?<rest>/[^?]*)')} $rest;",
        "    default /;",
        "}",
    ]
    # Tools with their own prefix: the raw rest after that many path segments.
    for up in cfg.upstreams:
        if up.strip_prefix and up.prefix != "/":
            depth = (base + up.prefix.rstrip("/")).count("/")
            http += [
                f"map $request_uri $mlws_rest_{up.name.replace('-', '_')} {{",
                f"    {nginx_string('~^(?:/[^/?]*){%d}(?<rest>/[^?]*)' % depth)} $rest;",
                "    default /;",
                "}",
            ]
    # /tools/<port>/ to a manifest tool's port goes through that tool's upstream, which keeps its
    # connections alive; any other port gets a new connection per request (stock nginx can keep
    # alive only to addresses it knows when it reads its configuration).
    known_ports = sorted({up.port: up.name for up in cfg.upstreams}.items())
    http += [
        "map $mlws_port $mlws_port_target {",
        "    default 127.0.0.1:$mlws_port;",
        *[f"    {port} mlws_tool_{name.replace('-', '_')};" for port, name in known_ports],
        "}",
    ]
    if cfg.auth_mode == "hub":
        http += [
            f"proxy_cache_path {ngx}/hub-auth-cache levels=1 keys_zone=mlws_hub_auth:1m max_size=10m inactive=60s;",
        ]
    for up in cfg.upstreams:
        http += [f"upstream mlws_tool_{up.name.replace('-', '_')} {{", f"    server 127.0.0.1:{up.port};", "    keepalive 32;", "}"]
    if cfg.login_port:
        http += ["upstream mlws_login {", f"    server 127.0.0.1:{cfg.login_port};", "    keepalive 4;", "}"]

    def upstream_name(name: str) -> str:
        return "mlws_tool_" + name.replace("-", "_")

    error_pages = ["error_page 502 504 =503 @mlws_starting;"]
    if cfg.auth_mode == "token":
        error_pages.append("error_page 418 = @mlws_login;")
        gate = ["if ($mlws_authed = 0) { return 418; }"]
    elif cfg.auth_mode == "hub":
        error_pages.append("error_page 401 403 = @mlws_hub_login;")
        gate = ["auth_request /_mlws/hub-auth;"]
    else:
        gate = []
    ungated_basic = ["auth_basic off;"] if cfg.htpasswd_file else []

    server: list[str] = []
    if tls:
        server += [
            f"listen {listen}:{cfg.port} ssl;",
            f"ssl_certificate {safe_path(cfg.ssl_cert, 'certificate')};",
            f"ssl_certificate_key {safe_path(cfg.ssl_key or '', 'certificate key')};",
            "ssl_protocols TLSv1.2 TLSv1.3;",
            "ssl_session_cache shared:mlws_ssl:1m;",
            "# Plain HTTP on the TLS port: nginx reports 497; send the client to https.",
            "error_page 497 =301 https://$http_host$request_uri;",
        ]
    else:
        server += [f"listen {listen}:{cfg.port};"]
    if cfg.htpasswd_file:
        server += ['auth_basic "mlws workspace";', f"auth_basic_user_file {safe_path(cfg.htpasswd_file, 'htpasswd file')};"]

    def location(head: str, body: list[str]) -> list[str]:
        return [f"location {head} {{", *_indent(body, 1), "}"]

    # Liveness and readiness: never gated.
    ping_paths = ["/ping"] + ([base + "/ping"] if base else [])
    for path in ping_paths:
        server += location("= " + uri_path(path), [*ungated_basic, "default_type text/plain;", 'return 200 "pong\\n";'])
    health = upstream_name(cfg.health_tool)
    health_body = [
        *ungated_basic,
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header Host $http_host;",
        f"proxy_set_header {GATEWAY_HEADER} \"\";",
        "proxy_intercept_errors on;",
        "proxy_connect_timeout 2s;",
        "proxy_read_timeout 5s;",
        "error_page 300 301 302 303 307 308 400 401 403 404 405 500 501 502 503 504 =503 @mlws_unhealthy;",
        f"proxy_pass http://{health}{base}/api;",
    ]
    for path in ["/healthy"] + ([base + "/healthy"] if base else []):
        server += location("= " + uri_path(path), health_body)
    server += location("@mlws_unhealthy", ["default_type text/plain;", 'return 503 "unhealthy: Jupyter does not answer\\n";'])
    server += location(
        "@mlws_starting",
        [
            "default_type text/html;",
            'add_header Retry-After 3 always;',
            'add_header Cache-Control "no-store" always;',
            f"root {ngx}/html;",
            "try_files /starting.html =503;",
        ],
    )
    # Assets the login page needs: never gated.
    server += location("^~ " + uri_path(f"{base}/_mlws/static/"), [*ungated_basic, f"alias {static}/;", "expires 1h;"])

    if cfg.auth_mode == "token":
        login_proxy = ["proxy_http_version 1.1;", 'proxy_set_header Connection "";', "proxy_set_header Host $http_host;",
                       "proxy_set_header X-Forwarded-Proto $scheme;", f"proxy_set_header {GATEWAY_HEADER} \"\";",
                       # The login service restarting: the starting page, as for any backend.
                       "error_page 502 504 =503 @mlws_starting;",
                       "proxy_pass http://mlws_login;"]
        server += location("@mlws_login", login_proxy)
        for path in ("login", "logout"):
            server += location("= " + uri_path(f"{base}/_mlws/{path}"), login_proxy)
    if cfg.auth_mode == "hub":
        # The hub's session is Jupyter's to check; ask it (GET {base}/api/me) once per cookie per 10 s.
        server += location(
            "= /_mlws/hub-auth",
            [
                "internal;",
                "proxy_http_version 1.1;",
                'proxy_set_header Connection "";',
                "proxy_set_header Host $http_host;",
                "proxy_set_header Cookie $http_cookie;",
                "proxy_set_header Authorization $http_authorization;",
                f"proxy_set_header {GATEWAY_HEADER} \"\";",
                'proxy_set_header Content-Length "";',
                "proxy_pass_request_body off;",
                "proxy_cache mlws_hub_auth;",
                "proxy_cache_key $http_cookie$http_authorization;",
                "proxy_cache_valid 200 10s;",
                "proxy_cache_valid any 0;",
                f"proxy_pass http://{health}{base}/api/me;",
            ],
        )
        # Not logged in to the hub: Jupyter's own page under the base URL starts the hub's OAuth login.
        server += location("@mlws_hub_login", [f"return 302 {base}/;"])

    # Named tools.
    for up in cfg.upstreams:
        if up.prefix == "/":
            continue
        prefix = base + up.prefix
        server += location("= " + uri_path(prefix.rstrip("/")), [*gate, *error_pages, f"return 302 {prefix}$is_args$args;"])
        body = [*gate, *error_pages, *_proxy_headers(None)]
        if not up.websockets:
            body = [line for line in body if "Upgrade" not in line]
        if not up.available:
            body += ["default_type text/plain;", f'return 503 "{up.name} is not available in this workspace\\n";']
        elif up.strip_prefix:
            body += [f"proxy_pass http://{upstream_name(up.name)}$mlws_rest_{up.name.replace('-', '_')}$is_args$args;"]
        else:
            body += [f"proxy_pass http://{upstream_name(up.name)};"]
        server += location("^~ " + uri_path(prefix), body)

    # Any internal port: /tools/<port>/..., never the gateway's own port (a loop).
    port_re = f"^{regex_literal(urllib.parse.unquote(base))}/tools/(?<mlws_port>[1-9][0-9]{{0,4}})(?<mlws_after>/.*)?$"
    server += location(
        f"~ {nginx_string(port_re)}",
        [
            *gate,
            *error_pages,
            f'if ($mlws_port = {cfg.port}) {{ return 403 "the gateway port cannot be proxied\\n"; }}',
            f'if ($mlws_after = "") {{ return 302 {base}/tools/$mlws_port/$is_args$args; }}',
            *_proxy_headers(None),
            "proxy_pass http://$mlws_port_target$mlws_tool_rest$is_args$args;",
        ],
    )

    # Jupyter: everything else under the base URL.
    jupyter_secret = cfg.gateway_secret if cfg.auth_mode in ("token", "off") else None
    jupyter_gate = gate if cfg.auth_mode == "token" else []  # under a hub, Jupyter checks the hub session itself
    server += location(
        uri_path(f"{base}/"),
        [*jupyter_gate, *error_pages, *_proxy_headers(jupyter_secret), f"proxy_pass http://{health};"],
    )
    if base:
        server += location("= " + uri_path(base), [f"return 302 {base}/$is_args$args;"])
        # Outside the base URL (path-segment boundary: /foobar is outside /foo): redirect into it.
        server += location("/", [f"return 302 {base}$request_uri;"])

    lines = [
        "# Generated by mlws start. Do not edit: it is rewritten at every start.",
        "worker_processes auto;",
        "pcre_jit on;",  # the auth and path maps are regular expressions evaluated per request
        f"pid {ngx}/nginx.pid;",
        "error_log stderr warn;",
        "events { worker_connections 4096; }",
        "http {",
        *_indent(http, 1),
        "",
        "    server {",
        *_indent(server, 2),
        "    }",
    ]
    lines += ["}", ""]
    return "\n".join(lines)
