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
# How the gateway authenticated a request to Jupyter: "token" (API client) or "session" (browser).
AUTH_KIND_HEADER = "X-Mlws-Auth"
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+@=-]*$")
# Where nginx serves a file of a share link from (runtime/shares.py FILES_LOCATION).
FILES_LOCATION = "/_mlws/shared-files"


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
    port: int | None  # the tool's TCP port on 127.0.0.1, or None when it listens on a unix socket only
    prefix: str  # route prefix without base URL, e.g. "/tools/vnc/" or "/"
    strip_prefix: bool
    websockets: bool
    available: bool
    # Where nginx connects: "unix:/abs/path.sock" (a socket in the 0700 runtime folder) or
    # "127.0.0.1:PORT". Empty: 127.0.0.1:<port>.
    address: str = ""
    # Request headers the gateway sets on every request to this backend: the per-start secret of a
    # tool that can only listen on TCP and requires it (name, value); values are runtime-made.
    headers: tuple[tuple[str, str], ...] = ()
    # Sub-paths (relative to the route prefix, e.g. "/api/diff/image") that serve files of the
    # user's repositories or workspace as documents: answered with a sandboxing CSP.
    user_content: tuple[str, ...] = ()
    # Sub-paths the gateway refuses (e.g. code-server's own port proxy "/proxy/").
    blocked: tuple[str, ...] = ()
    # Exact sub-paths where the tool sends its own HTML page without a Content-Type (ungit's "/"):
    # labelled text/html, since every response is nosniff and browsers would show it as text.
    untyped_html: tuple[str, ...] = ()

    @property
    def server(self) -> str:
        address = self.address or f"127.0.0.1:{self.port}"
        if address.startswith("unix:"):
            safe_path(address[len("unix:"):], f"socket of tool {self.name}")
        elif not re.match(r"^127\.0\.0\.1:[0-9]{1,5}$", address):
            raise ConfigValueError(f"tool {self.name}: address {address!r}: expected unix:/PATH or 127.0.0.1:PORT")
        return address


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    runtime_dir: str  # nginx prefix folder lives at <runtime_dir>/nginx
    static_dir: str  # runtime/static (login page assets)
    listen_address: str
    port: int
    base_url: str
    auth_mode: str  # "off" | "token" | "hub"
    cookie_name: str
    session_secret: str  # hex: signs session cookies (login service) and checks them (nginx)
    revoked_file: str  # the login service's map of revoked session ids ("<hex>" 1;), included by nginx
    gateway_secret: str  # hex
    token: str | None
    htpasswd_file: str | None
    ssl_cert: str | None
    ssl_key: str | None
    login_socket: str  # unix socket of the login service (login, logout, sessions, port owners)
    health_tool: str
    upstreams: tuple[Upstream, ...]
    # SSH through the public port (runtime/steps/52_ssh.py): HAProxy holds the public port and
    # nginx listens on this unix socket instead, behind a PROXY protocol header that carries the
    # client's address ("": nginx holds the public port itself).
    internal_socket: str = ""
    # The SSH setup service's unix socket (runtime/ssh_setup.py); "": no SSH routes.
    ssh_setup_socket: str = ""
    # The share-link service's unix socket (runtime/shares.py); "": no share routes.
    shares_socket: str = ""
    # SHARED_LINKS_ENABLED: False refuses every B/shared/link/ and B/shared/tools/ route (401).
    shares_enabled: bool = True


# Response headers of every page the gateway proxies. Tools may frame only the workspace itself,
# browsers must not guess content types, and paths do not leak to other sites in Referer. A tool's
# own CORS grants are removed: no other origin may read the workspace with the user's cookies.
SECURITY_HEADERS = (
    "add_header Content-Security-Policy \"frame-ancestors 'self'\" always;",
    "add_header X-Frame-Options SAMEORIGIN always;",
    "add_header X-Content-Type-Options nosniff always;",
    "add_header Referrer-Policy same-origin always;",
    "proxy_hide_header X-Frame-Options;",
    "proxy_hide_header X-Content-Type-Options;",
    "proxy_hide_header Referrer-Policy;",
    "proxy_hide_header Access-Control-Allow-Origin;",
    "proxy_hide_header Access-Control-Allow-Credentials;",
    "proxy_hide_header Access-Control-Allow-Methods;",
    "proxy_hide_header Access-Control-Allow-Headers;",
    "proxy_hide_header Access-Control-Expose-Headers;",
    "proxy_hide_header Access-Control-Allow-Private-Network;",
)
# Files of the user's repositories or workspace shown as documents: scripts in them run in an
# opaque origin, never as the workspace.
SANDBOX_HEADER = 'add_header Content-Security-Policy "sandbox" always;'
# Cookies of the workspace itself, removed before a request goes to an arbitrary port.
# JupyterHub's names may carry the `__Host-` prefix (JupyterHub.cookie_host_prefix_enabled).
# Share-link cookies (mlws_share_...) are the workspace's too: a shared port's backend never sees them.
WORKSPACE_COOKIE = r"(?:mlws_session_[0-9]+|mlws_share_[a-z0-9_]+|(?:__Host-)?jupyterhub-[A-Za-z0-9_.-]*)"
# How many of them one request may carry to an arbitrary port (a browser has one session cookie,
# a share cookie per shared path it was given, and under a hub up to three of the hub's).
PORT_COOKIE_STAGES = 8
PORT_COOKIES_REFUSED = ('if ($mlws_port_cookie_left) { return 400 "too many of the workspace\'s own cookies '
                        'on one request to a port: remove some (they are never passed to the port)\\n"; }')

def _proxy_headers(gateway_secret: str | None, auth_kind: bool = False) -> list[str]:
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
    if auth_kind:
        # How the gateway authenticated the request ("token" for API clients, "session" for
        # browsers): Jupyter keeps XSRF checks for browser sessions only.
        lines.append(f"proxy_set_header {AUTH_KIND_HEADER} $mlws_auth_kind;")
    return lines


def _indent(lines: list[str], depth: int) -> list[str]:
    return ["    " * depth + line if line else "" for line in lines]


def _token_literals(token: str) -> str:
    """A regex alternation of the spellings a client may give the token in a query string."""
    spellings = dict.fromkeys([token, urllib.parse.quote(token, safe=""), urllib.parse.quote(token, safe="-_.~"),
                               urllib.parse.quote_plus(token, safe="")])
    return "(?:" + "|".join(regex_literal(spelling) for spelling in spellings) + ")"


def _http_maps(cfg: GatewayConfig, segments_re: str) -> list[str]:
    """The per-request decisions, all `map`s: evaluated lazily, in memory, no round trip."""
    gated = cfg.auth_mode == "token"
    lines = [
        "# Keep-alive to backends unless the client upgrades (websockets).",
        'map $http_upgrade $mlws_connection { default upgrade; "" ""; }',
        'map $http_upgrade $mlws_is_upgrade { default 1; "" 0; }',
        "",
        "# Where the request comes from. A browser sends Origin on websockets, CORS requests and",
        "# form posts: it must be the workspace's own (as the browser sees it: scheme from the TLS",
        "# port or from X-Forwarded-Proto of a proxy in front, which a page cannot set). Absent:",
        "# not a browser, or a plain navigation. `null` (sandboxed pages, privacy redirects) is foreign.",
        'map "$http_origin $scheme://$http_host $http_x_forwarded_proto://$http_host" $mlws_origin {',
        '    "~^ " none;',
        '    "~^(\\S+) (?:\\1 |\\S+ \\1$)" same;',
        "    default foreign;",
        "}",
        "# The verdict before authentication (contract weakness: tools trust any page the user visits):",
        "#   refuse    a foreign Origin, or any cross-site/same-site request but a navigation",
        "#   login     ?token= on a request that is not a websocket: the login service trades it for",
        "#             a session and sends the browser on without it",
        "#   elsewhere a navigation from another site (another host or another port of this host):",
        "#             a page that says so and offers to continue (a same-origin click)",
        "#   login     no valid session/token",
        "#   pass      authenticated and from the workspace's own pages (or not a browser)",
        'map "$mlws_origin:$http_sec_fetch_site:$http_sec_fetch_mode:$request_method:$mlws_token_login:$mlws_authed" $mlws_verdict {',
        '    "~^foreign:" refuse;',
        '    "~^[a-z]+:[^:]*:[^:]*:[A-Z]+:1:" login;',
        '    "~^[a-z]+:(?:cross-site|same-site):navigate:(?:GET|HEAD):" elsewhere;',
        '    "~^[a-z]+:(?:cross-site|same-site):" refuse;',
        '    "~:0$" login;',
        "    default pass;",
        "}",
    ]
    if gated:
        lines += [
            "",
            "# Authentication, entirely inside nginx: the session cookie of one login, the token",
            "# in `Authorization: token <token>`, or the token in the query of an API request.",
            "# A session cookie is <id>.<expires>.<mac>, mac = base64url(md5(expires:id:secret)),",
            "# made by the login service; nginx checks mac and expiry (secure_link) and that the id",
            "# was not revoked (logout: an included map, nginx reloaded).",
            *[f'map $cookie_{cfg.cookie_name} $mlws_session_{part} {{ "~^{pattern}$" ${capture}; default ""; }}'
              for part, pattern, capture in (
                  ("id", r"(?<mlws_sid>[0-9a-f]{32})\.[0-9]{1,12}\.[A-Za-z0-9_-]{22}", "mlws_sid"),
                  ("expires", r"[0-9a-f]{32}\.(?<mlws_sexp>[0-9]{1,12})\.[A-Za-z0-9_-]{22}", "mlws_sexp"),
                  ("mac", r"[0-9a-f]{32}\.[0-9]{1,12}\.(?<mlws_smac>[A-Za-z0-9_-]{22})", "mlws_smac"))],
            "secure_link $mlws_session_mac,$mlws_session_expires;",
            f'secure_link_md5 "$mlws_session_expires:$mlws_session_id:{cfg.session_secret}";',
            "map $mlws_session_id $mlws_session_revoked {",
            "    default 0;",
            f"    include {safe_path(cfg.revoked_file, 'revoked sessions file')};",
            "}",
            '# $secure_link: "1" right and not expired, "0" expired, "" wrong or missing.',
            'map "$secure_link:$mlws_session_revoked" $mlws_cookie_ok { "1:0" 1; default 0; }',
        ]
        header_lines = ["default 0;"]
        query_lines = ["default 0;"]
        if cfg.token:
            header_lines.append(
                nginx_string(r"~^(?:[Tt][Oo][Kk][Ee][Nn]|[Bb][Ee][Aa][Rr][Ee][Rr])\s+" + regex_literal(cfg.token) + "$")
                + " 1;"
            )
            query_lines.append(nginx_string("~^" + _token_literals(cfg.token) + "$") + " 1;")
        lines += ["map $http_authorization $mlws_header_ok {", *_indent(header_lines, 1), "}"]
        lines += ["map $arg_token $mlws_query_token_ok {", *_indent(query_lines, 1), "}"]
        lines += [
            'map "$mlws_cookie_ok$mlws_header_ok$mlws_query_token_ok" $mlws_authed { "~1" 1; default 0; }',
            'map "$mlws_header_ok$mlws_query_token_ok" $mlws_auth_kind { "~1" token; default session; }',
            "# A browser navigation (Sec-Fetch-Mode, or the Accept of browsers without it) with",
            "# ?token= goes to the login service, which trades it for a session cookie and sends the",
            "# browser on without it. Anything else (API clients, websockets) is authenticated by the",
            "# token directly, as Jupyter did, and the token is cut from the query it passes on.",
            'map "$http_sec_fetch_mode:$http_accept" $mlws_is_navigation { "~^navigate:" 1; "~^:.*text/html" 1; default 0; }',
            'map "$mlws_is_upgrade$mlws_is_navigation:$arg_token" $mlws_token_login { "~^01:." 1; default 0; }',
        ]
    else:
        lines += [
            "# No login of the gateway's own (basic auth, JupyterHub or none): origin checks only.",
            "map $request_method $mlws_authed { default 1; }",
            "map $request_method $mlws_token_login { default 0; }",
        ]
    lines += [
        "",
        "# The query without `token=...`, with its `?`: backends never see the token (nor log it).",
        "map $args $mlws_query {",
        '    "" "";',
        '    "~^token=[^&]*$" "";',
        '    "~^token=[^&]*&(?<mlws_qb>.*)$" "?$mlws_qb";',
        '    "~^(?<mlws_qa>.*?)&token=[^&]*$" "?$mlws_qa";',
        '    "~^(?<mlws_qc>.*?)&token=[^&]*&(?<mlws_qd>.*)$" "?$mlws_qc&$mlws_qd";',
        '    default "?$args";',
        "}",
        "# The path as the client sent it (percent-encoding kept).",
        'map $request_uri $mlws_raw_path { "~^(?<mlws_rp>[^?]*)" $mlws_rp; default /; }',
        # The raw (still percent-encoded) rest of a /tools/<x>/ path, so %2F and friends reach backends intact.
        "map $request_uri $mlws_tool_rest {",
        # The raw URI may spell the base URL's characters differently: count its segments instead.
        f"    {nginx_string('~^' + segments_re + '/tools/[^/?]+(?<rest>/[^?]*)')} $rest;",
        "    default /;",
        "}",
        "# Requests to arbitrary ports lose the workspace's own cookies: one map removes one, so",
        f"# {PORT_COOKIE_STAGES} in a row remove up to {PORT_COOKIE_STAGES}, and a request that still has one after",
        "# them is refused ($mlws_port_cookie_left), never forwarded with it.",
    ]
    previous = "$http_cookie"
    for stage in range(1, PORT_COOKIE_STAGES + 1):
        pattern = nginx_string(f"~^(?<mlws_c{stage}a>.*?)(?:^|;\\s*){WORKSPACE_COOKIE}=[^;]*(?<mlws_c{stage}b>.*)$")
        lines += [
            f"map {previous} $mlws_port_cookie{stage} {{",
            f'    {pattern} "$mlws_c{stage}a$mlws_c{stage}b";',
            f"    default {previous};",
            "}",
        ]
        previous = f"$mlws_port_cookie{stage}"
    left = nginx_string(f"~(?:^|;\\s*){WORKSPACE_COOKIE}=")
    lines += [f"map {previous} $mlws_port_cookie_left {{ {left} 1; default 0; }}",
              # Removing the first cookie leaves the separator that followed it.
              f'map {previous} $mlws_port_cookies {{ "~^;\\s*(?<mlws_cr>.*)$" $mlws_cr; default {previous}; }}']
    lines += [
        "# A tool's own page sent without a type (route.untyped_html): labelled HTML (add_header",
        "# adds nothing for an empty value, so a typed answer keeps its type).",
        'map $upstream_http_content_type $mlws_html_if_untyped { "" "text/html; charset=utf-8"; default ""; }',
        "# Access log: the path only; a query (or a Referer's query) may carry the token.",
        'map $http_referer $mlws_log_referer { "~^(?<mlws_lr>[^?]*)" $mlws_lr; default ""; }',
        "log_format mlws '$remote_addr - $remote_user [$time_local] \"$request_method $mlws_raw_path $server_protocol\" '",
        "                '$status $body_bytes_sent \"$mlws_log_referer\" \"$http_user_agent\"';",
    ]
    return lines


def render_nginx_conf(cfg: GatewayConfig) -> str:
    rt = safe_path(cfg.runtime_dir, "runtime folder")
    static = safe_path(cfg.static_dir, "static folder")
    login_socket = safe_path(cfg.login_socket, "login service socket")
    ngx = rt + "/nginx"
    base = cfg.base_url
    if not re.match(r"^(/[A-Za-z0-9._~!$'()*+,;=:@%-]+)*$", base):
        raise ConfigValueError(f"base URL {base!r}: expected a normalised, URL-quoted path")
    if not re.match(r"^[0-9a-fA-F:.]+$", cfg.listen_address):
        raise ConfigValueError(f"listen address {cfg.listen_address!r}: expected an IP address")
    if not all(re.match(r"^[0-9a-f]{32,}$", secret) for secret in (cfg.gateway_secret, cfg.session_secret)):
        raise ConfigValueError("internal secrets must be runtime-made lowercase hex")
    if not re.match(r"^[a-z0-9_]+$", cfg.cookie_name):
        raise ConfigValueError(f"cookie name {cfg.cookie_name!r}: expected [a-z0-9_]+")
    segments_re = "(?:/[^/?]*){%d}" % base.count("/") if base else ""
    listen = f"[{cfg.listen_address}]" if ":" in cfg.listen_address else cfg.listen_address
    tls = bool(cfg.ssl_cert)

    http: list[str] = [
        "default_type application/octet-stream;",
        "types { text/html html; text/css css; application/javascript js; image/svg+xml svg; image/png png; }",
        # Master-process messages (start-up, configuration) go to the main error log; request
        # errors would print the request line, whose query may hold a token: only critical ones.
        "error_log stderr crit;",
        "map_hash_bucket_size 128;",  # room for the 64-character session keys of the cookie map
        *_http_maps(cfg, segments_re),
        # Buffered: one write per 64 KiB or per second instead of one per request.
        f"access_log {ngx}/access.log mlws buffer=64k flush=1s;",
        # Clients (browsers, API clients) keep their connection for many requests.
        "keepalive_requests 10000;",
        # @mlws_login is reached through `error_page 418`; its own error_page (login service down:
        # the starting page) is a second redirect, which nginx follows only with this on.
        "recursive_error_pages on;",
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
        # Token guesses (a token in the query or header, or a posted form, that nginx did not
        # accept), per client address; other requests without a login are not limited (a key of
        # "" is not counted).
        'map "$arg_token:$http_authorization:$request_method" $mlws_guess_key { "~^::(?!POST)" ""; default $binary_remote_addr; }',
        "limit_req_zone $mlws_guess_key zone=mlws_login:1m rate=5r/s;",
        "limit_req_status 429;",
        "limit_req_log_level warn;",
        # Who listens on an arbitrary port, asked of the login service once per port per 2 s.
        f"proxy_cache_path {ngx}/port-owner-cache levels=1 keys_zone=mlws_port_owner:1m max_size=1m inactive=10s;",
    ]
    # /tools/<port>/ to a manifest tool's TCP port goes through that tool's upstream, which keeps
    # its connections alive; any other port gets a new connection per request (stock nginx can keep
    # alive only to addresses it knows when it reads its configuration).
    known_ports = sorted({up.port: up.name for up in cfg.upstreams
                          if up.port and not up.address.startswith("unix:")}.items())
    http += [
        "map $mlws_port $mlws_port_target {",
        "    default 127.0.0.1:$mlws_port;",
        *[f"    {port} mlws_tool_{name.replace('-', '_')};" for port, name in known_ports],
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
    if cfg.auth_mode == "hub":
        http += [
            f"proxy_cache_path {ngx}/hub-auth-cache levels=1 keys_zone=mlws_hub_auth:1m max_size=10m inactive=60s;",
        ]
    for up in cfg.upstreams:
        http += [f"upstream mlws_tool_{up.name.replace('-', '_')} {{", f"    server {up.server};", "    keepalive 32;", "}"]
    http += ["upstream mlws_login {", f"    server unix:{login_socket};", "    keepalive 4;", "}"]
    if cfg.shares_socket:
        http += _share_http(cfg, segments_re)
    if cfg.ssh_setup_socket:
        http += ["upstream mlws_ssh_setup {", f"    server unix:{safe_path(cfg.ssh_setup_socket, 'SSH setup socket')};",
                 "}",
                 # The SSH setup links work without a login (their one-time token is the credential):
                 # limited per client address.
                 "limit_req_zone $binary_remote_addr zone=mlws_ssh:1m rate=2r/s;"]

    def upstream_name(name: str) -> str:
        return "mlws_tool_" + name.replace("-", "_")

    error_pages = ["error_page 502 504 =503 @mlws_starting;", "error_page 419 = @mlws_elsewhere;"]
    too_many = ["error_page 429 @mlws_too_many;"]
    verdict = [
        'if ($mlws_verdict = refuse) { return 403 "refused: this request came from another site or origin\\n"; }',
        "if ($mlws_verdict = elsewhere) { return 419; }",
    ]
    if cfg.auth_mode == "token":
        error_pages.append("error_page 418 = @mlws_login;")
        gate = [*verdict, "if ($mlws_verdict = login) { return 418; }"]
    elif cfg.auth_mode == "hub":
        error_pages.append("error_page 401 403 = @mlws_hub_login;")
        gate = [*verdict, "auth_request /_mlws/hub-auth;"]
    else:
        gate = list(verdict)
    ungated_basic = ["auth_basic off;"] if cfg.htpasswd_file else []
    headers = list(SECURITY_HEADERS)

    server: list[str] = []
    # Behind the SSH multiplexer nginx listens on a socket of its 0700 folder; HAProxy forwards
    # everything that is not SSH there, TLS or not (TLS still ends here), after a PROXY protocol
    # header, which the realip module turns back into $remote_addr: rate limits and logs keep
    # the client's address.
    listen_at = f"{listen}:{cfg.port}"
    if cfg.internal_socket:
        listen_at = f"unix:{safe_path(cfg.internal_socket, 'gateway socket')} proxy_protocol"
        server += ["set_real_ip_from unix:;", "real_ip_header proxy_protocol;"]
    if tls:
        server += [
            f"listen {listen_at} ssl;",
            f"ssl_certificate {safe_path(cfg.ssl_cert, 'certificate')};",
            f"ssl_certificate_key {safe_path(cfg.ssl_key or '', 'certificate key')};",
            "ssl_protocols TLSv1.2 TLSv1.3;",
            "ssl_session_cache shared:mlws_ssl:1m;",
            "# Plain HTTP on the TLS port: nginx reports 497; send the client to https.",
            "error_page 497 =301 https://$http_host$request_uri;",
        ]
    else:
        server += [f"listen {listen_at};"]
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
            *headers,
            f"root {ngx}/html;",
            "try_files /starting.html =503;",
        ],
    )
    # Assets the login page needs: never gated.
    server += location("^~ " + uri_path(f"{base}/_mlws/static/"),
                       [*ungated_basic, *headers, f"alias {static}/;", "expires 1h;"])

    # The login service: login form and token links, logout, the "from another site" page.
    login_proxy = [
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        f"proxy_set_header {GATEWAY_HEADER} \"\";",
        "proxy_set_header X-Mlws-Elsewhere \"\";",
        # The login service restarting: the starting page, as for any backend.
        "error_page 502 504 =503 @mlws_starting;",
        "limit_req zone=mlws_login burst=20 nodelay;",
        *too_many,
        # A login changes the live sessions and reloads nginx: the next request must come on a
        # new connection, which a worker of the new configuration accepts.
        "keepalive_timeout 0;",
        *headers,
        "proxy_pass http://mlws_login;",
    ]
    server += location("@mlws_login", login_proxy)
    server += location("@mlws_too_many", ["default_type text/plain;", "add_header Retry-After 1 always;", *headers,
                                          'return 429 "too many requests without a valid login: slow down\\n";'])
    server += location("@mlws_elsewhere", [*[line for line in login_proxy if "Elsewhere" not in line and "limit_req" not in line],
                                           "proxy_set_header X-Mlws-Elsewhere 1;"])
    if cfg.auth_mode == "token":
        for path in (f"{base}/_mlws/login", f"{base}/_mlws/logout", f"{base}/logout"):
            server += location("= " + uri_path(path),
                               ['if ($mlws_verdict = refuse) { return 403 "refused: this request came from another site or origin\\n"; }',
                                *login_proxy])
    # Who listens on an arbitrary port: only the workspace user's own listeners are served. Under
    # a hub the login service also checks the hub session (nginx allows one auth_request per
    # location), so the cache key holds the credentials too.
    hub = cfg.auth_mode == "hub"
    server += location(
        "= /_mlws/port-owner",
        [
            "internal;",
            "proxy_http_version 1.1;",
            'proxy_set_header Connection "";',
            "proxy_set_header Cookie $http_cookie;" if hub else 'proxy_set_header Cookie "";',
            "proxy_set_header Authorization $http_authorization;" if hub else 'proxy_set_header Authorization "";',
            f"proxy_set_header {GATEWAY_HEADER} \"\";",
            'proxy_set_header Content-Length "";',
            "proxy_pass_request_body off;",
            "proxy_buffering on;",  # nginx caches only buffered responses
            "proxy_cache mlws_port_owner;",
            "proxy_cache_key $mlws_port$http_cookie$http_authorization;" if hub else "proxy_cache_key $mlws_port;",
            "proxy_cache_valid 204 2s;",
            "proxy_cache_valid any 0;",
            # When the entry expires under load, one request asks again (in the background) and
            # the others keep the answer of two seconds ago instead of all asking at once.
            "proxy_cache_use_stale updating;",
            "proxy_cache_background_update on;",
            "proxy_cache_lock on;",
            "proxy_pass http://mlws_login/_mlws/port-owner?port=$mlws_port;",
        ],
    )
    server += location("@mlws_port_refused", [
        "default_type text/plain;", *headers,
        'return 403 "port $mlws_port: refused: the process listening there belongs to another user; '
        'the gateway serves only ports of the workspace user\\n";',
    ])
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
                "proxy_buffering on;",  # nginx caches only buffered responses
                "proxy_cache mlws_hub_auth;",
                "proxy_cache_key $http_cookie$http_authorization;",
                "proxy_cache_valid 200 10s;",
                "proxy_cache_valid any 0;",
                f"proxy_pass http://{health}{base}/api/me;",
            ],
        )
        # Not logged in to the hub: Jupyter's own page under the base URL starts the hub's OAuth login.
        server += location("@mlws_hub_login", [f"return 302 {base}/;"])

    if cfg.shares_socket:
        server += _share_locations(cfg, [*gate, *error_pages], verdict[0], [*ungated_basic, *headers], location)
    if cfg.ssh_setup_socket:
        server += _ssh_locations(base, [*gate, *error_pages], verdict[0], [*ungated_basic, *headers], location,
                                 cfg.shares_enabled)

    # Named tools.
    for up in cfg.upstreams:
        if up.prefix == "/":
            continue
        prefix = base + up.prefix
        server += location("= " + uri_path(prefix.rstrip("/")), [*gate, *error_pages, f"return 302 {prefix}$mlws_query;"])
        body = [*gate, *error_pages, *headers, *_proxy_headers(None)]
        for header, value in up.headers:
            if not re.match(r"^[A-Za-z0-9-]+$", header):
                raise ConfigValueError(f"tool {up.name}: header name {header!r}: expected letters, digits and -")
            body.append(f"proxy_set_header {header} {nginx_string(value)};")
        if not up.websockets:
            body = [line for line in body if "Upgrade" not in line]
        if not up.available:
            body += ["default_type text/plain;", f'return 503 "{up.name} is not available in this workspace\\n";']
        elif up.strip_prefix:
            body += [f"proxy_pass http://{upstream_name(up.name)}$mlws_rest_{up.name.replace('-', '_')}$mlws_query;"]
        else:
            body += [f"proxy_pass http://{upstream_name(up.name)}$mlws_raw_path$mlws_query;"]
        beside, nested = _sub_locations(up, prefix, body, location)
        server += beside
        server += location("^~ " + uri_path(prefix), body + nested)

    # Any internal port: /tools/<port>/..., never the gateway's own port (a loop), and only a port
    # the workspace user listens on; without the workspace's cookies and Authorization.
    port_re = f"^{regex_literal(urllib.parse.unquote(base))}/tools/(?<mlws_port>[1-9][0-9]{{0,4}})(?<mlws_after>/.*)?$"
    server += location(
        f"~ {nginx_string(port_re)}",
        [
            *(verdict if hub else gate),
            *[line for line in error_pages if "@mlws_hub_login" not in line],
            *(["error_page 401 = @mlws_hub_login;"] if hub else []),
            "error_page 403 = @mlws_port_refused;",
            f'if ($mlws_port = {cfg.port}) {{ return 403 "the gateway port cannot be proxied\\n"; }}',
            f'if ($mlws_after = "") {{ return 302 {base}/tools/$mlws_port/$mlws_query; }}',
            PORT_COOKIES_REFUSED,
            "auth_request /_mlws/port-owner;",
            *headers,
            *_proxy_headers(None),
            "proxy_set_header Cookie $mlws_port_cookies;",
            'proxy_set_header Authorization "";',
            "proxy_pass http://$mlws_port_target$mlws_tool_rest$mlws_query;",
        ],
    )

    # Jupyter: everything else under the base URL.
    jupyter = next((up for up in cfg.upstreams if up.name == cfg.health_tool), None)
    jupyter_secret = cfg.gateway_secret if cfg.auth_mode in ("token", "off") else None
    # Under a hub, Jupyter checks the hub session itself: origin checks only.
    jupyter_gate = gate if cfg.auth_mode == "token" else list(verdict)
    jupyter_body = [*jupyter_gate, *error_pages, *headers,
                    *_proxy_headers(jupyter_secret, auth_kind=cfg.auth_mode == "token"),
                    f"proxy_pass http://{health}$mlws_raw_path$mlws_query;"]
    beside, nested = _sub_locations(jupyter, base + "/", jupyter_body, location) if jupyter else ([], [])
    server += beside
    server += location(uri_path(f"{base}/"), jupyter_body + nested)
    if base:
        server += location("= " + uri_path(base), [f"return 302 {base}/$mlws_query;"])
        # Outside the base URL (path-segment boundary: /foobar is outside /foo): redirect into it.
        server += location("/", [f"return 302 {base}$request_uri;"])

    # For the login service only: is this session live in the configuration nginx now runs? It
    # asks after each change of the sessions map and answers the browser once the answer is right.
    check_server = [
        f"listen unix:{ngx}/check.sock;",
        "access_log off;",
    ]
    if cfg.auth_mode == "token":
        check_server += location("= /session", ["if ($mlws_cookie_ok) { return 204; }", "return 404;"])
    check_server += location("/", ["return 404;"])

    lines = [
        "# Generated by mlws start. Do not edit: it is rewritten at every start.",
        "worker_processes auto;",
        "pcre_jit on;",  # the auth and path maps are regular expressions evaluated per request
        f"pid {ngx}/nginx.pid;",
        "error_log stderr warn;",
        # A reload (a login or logout changed the sessions) lets old workers finish their open
        # connections; websockets of a revoked session end within this time (clients reconnect).
        "worker_shutdown_timeout 10m;",
        "events { worker_connections 4096; }",
        "http {",
        *_indent(http, 1),
        "",
        "    server {",
        *_indent(server, 2),
        "    }",
        "",
        "    server {",
        *_indent(check_server, 2),
        "    }",
    ]
    lines += ["}", ""]
    return "\n".join(lines)


def _service_proxy(upstream: str, *extra: str) -> list[str]:
    """To one of the runtime's own services (an upstream on its unix socket, kept alive), with the
    raw path and query: the client's Host and scheme, never the gateway's secret header."""
    return [
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        f"proxy_set_header {GATEWAY_HEADER} \"\";",
        *extra,
        "error_page 502 504 =503 @mlws_starting;",
        f"proxy_pass http://{upstream}$mlws_raw_path$is_args$args;",
    ]


def _ssh_locations(base: str, gated: list[str], refuse_foreign: str, ungated: list[str], location,
                   shares_enabled: bool) -> list[str]:
    """The SSH setup service (runtime/ssh_setup.py): the setup command behind the login like every
    tool; the setup script, the key enrolment and the host key without one, rate-limited (the
    one-time token in the script's URL is the credential, so the full query is passed on). The
    script's link is a shared link, as in the original: SHARED_LINKS_ENABLED=false refuses it (401)."""
    proxy = _service_proxy("mlws_ssh_setup")
    limited = ["limit_req zone=mlws_ssh burst=10 nodelay;", "error_page 429 @mlws_too_many;"]
    result = location("= " + uri_path(f"{base}/tooling/ssh/setup-command"), [*gated, *SECURITY_HEADERS, *proxy])
    off = ["default_type text/plain;",
           'return 401 "shared links are off in this workspace (SHARED_LINKS_ENABLED=false)\\n";']
    for path in (f"{base}/shared/ssh/setup", f"{base}/shared/ssh/enrol"):
        result += location("= " + uri_path(path), [refuse_foreign, *ungated, *limited, *(proxy if shares_enabled else off)])
    for path in dict.fromkeys(["/publickey", f"{base}/publickey"]):
        result += location("= " + uri_path(path), [*ungated, *limited, *proxy])
    return result


def _share_http(cfg: GatewayConfig, segments_re: str) -> list[str]:
    """The share-link service's upstream, and the per-request values of shared-port requests."""
    return [
        "upstream mlws_shares {", f"    server unix:{safe_path(cfg.shares_socket, 'share-link service socket')};",
        "    keepalive 8;", "}",
        "# The raw rest of a B/shared/tools/<port>/ path, as the client sent it.",
        "map $request_uri $mlws_share_rest {",
        f"    {nginx_string('~^' + segments_re + '/shared/tools/[^/?]+(?<rest>/[^?]*)')} $rest;",
        "    default /;",
        "}",
        "# A browser's navigation with ?token= to a shared port goes to the share service, which",
        "# moves the token into a cookie; other clients' ?token= is checked as it is.",
        'map "$arg_token|$mlws_is_upgrade|$http_sec_fetch_mode|$http_accept" $mlws_share_token_login {',
        '    "~^[^|]+\\|0\\|navigate\\|" 1;',
        '    "~^[^|]+\\|0\\|\\|.*text/html" 1;',
        "    default 0;",
        "}",
    ] + ([
        # ($mlws_share_link is set by the shared-port location's auth_request_set: only then.)
        "# A shared port's websockets go through the share service (runtime/share_relay.py), which ends",
        "# them when their link is revoked or expires; plain requests go to the port itself.",
        "map $mlws_is_upgrade $mlws_share_target { 1 mlws_shares; default $mlws_port_target; }",
        'map $mlws_is_upgrade $mlws_share_relay { 1 /_relay/$mlws_port; default ""; }',
        'map $mlws_is_upgrade $mlws_share_link_header { 1 $mlws_share_link; default ""; }',
    ] if cfg.shares_enabled else [])


def _share_locations(cfg: GatewayConfig, gated: list[str], refuse_foreign: str, ungated: list[str],
                     location) -> list[str]:
    """Share links (runtime/shares.py). The API behind the login; the shared routes without one,
    the link's token being the credential (checked by the share service on every request). A
    shared file is sent by nginx itself from an internal location (X-Accel-Redirect of the share
    service, after its checks), with sendfile and ranges. Under SHARED_LINKS_ENABLED=false every
    shared route answers 401."""
    base = cfg.base_url
    proxy = _service_proxy("mlws_shares", 'proxy_set_header X-Mlws-Share-Token "";')
    # Shared files are any document of the user's: never one of the workspace's origin (opaque
    # origin, no scripts). A shared port is the workspace user's own server, as under /tools/<port>/.
    shared_headers = [line for line in ungated if "frame-ancestors" not in line]
    shared_headers.append('add_header Content-Security-Policy "sandbox allow-downloads" always;')
    off = ['default_type text/plain;', 'return 401 "share links are off in this workspace (SHARED_LINKS_ENABLED=false)\\n";']
    result = location("^~ " + uri_path(f"{base}/tooling/shares"), [*gated, *SECURITY_HEADERS, *proxy])
    link_body = [refuse_foreign, *shared_headers, *proxy] if cfg.shares_enabled else [*ungated, *off]
    result += location("^~ " + uri_path(f"{base}/shared/link/"), link_body)
    result += location("^~ " + uri_path(FILES_LOCATION + "/"), [
        "internal;", "alias /;",
        # The share service resolved every symlink; one appearing since is refused.
        "disable_symlinks on;",
        "sendfile on;", "tcp_nopush on;",
        *shared_headers,
        'add_header Cache-Control "private, no-cache" always;',
    ])
    port_re = f"^{regex_literal(urllib.parse.unquote(base))}/shared/tools/(?<mlws_port>[1-9][0-9]{{0,4}})(?<mlws_after>/.*)?$"
    if not cfg.shares_enabled:
        return result + location(f"~ {nginx_string(port_re)}", [*ungated, *off])
    result += location(f"~ {nginx_string(port_re)}", [
        refuse_foreign,
        f'if ($mlws_port = {cfg.port}) {{ return 403 "the gateway port cannot be shared\\n"; }}',
        f'if ($mlws_after = "") {{ return 302 {base}/shared/tools/$mlws_port/$is_args$args; }}',
        "set $mlws_share_token $arg_token;",
        "error_page 418 = @mlws_share_login;",
        "if ($mlws_share_token_login) { return 418; }",
        "auth_request /_mlws/share-check;",
        "auth_request_set $mlws_share_link $upstream_http_x_mlws_share_link;",
        "error_page 401 = @mlws_share_refused;",
        "error_page 403 = @mlws_port_refused;",
        "error_page 502 504 =503 @mlws_starting;",
        *ungated,
        PORT_COOKIES_REFUSED,
        *_proxy_headers(None),
        "proxy_set_header Cookie $mlws_port_cookies;",
        'proxy_set_header Authorization "";',
        "proxy_set_header X-Mlws-Share-Link $mlws_share_link_header;",
        "proxy_pass http://$mlws_share_target$mlws_share_relay$mlws_share_rest$mlws_query;",
    ])
    result += location("@mlws_share_login", [*ungated, *proxy])
    result += location("@mlws_share_refused", [
        "default_type text/plain;", *ungated,
        'return 401 "this share link is not valid: it was revoked, has expired, or is not a link of this workspace\\n";'])
    result += location("= /_mlws/share-check", [
        "internal;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header X-Mlws-Share-Token $mlws_share_token;",
        f"proxy_set_header {GATEWAY_HEADER} \"\";",
        'proxy_set_header Content-Length "";',
        "proxy_pass_request_body off;",
        "proxy_pass http://mlws_shares/_check/port/$mlws_port;",
    ])
    return result


def _sub_locations(up: Upstream, prefix: str, body: list[str], location) -> tuple[list[str], list[str]]:
    """Sub-paths of one tool: refused ones (`blocked`), and ones that serve the user's files as
    documents (`user_content`), answered with a sandboxing CSP. nginx matches locations against
    the decoded, normalised path, so every spelling of these paths lands here. Returns (locations
    beside the tool's, locations nested in it): a path with `*` (the rest of one segment, e.g.
    "/stable-*/vscode-remote-resource") is a regular expression, which nginx consults only inside
    the tool's own `^~` location."""
    beside: list[str] = []
    nested: list[str] = []
    root = urllib.parse.unquote(prefix.rstrip("/"))
    refusal = ["default_type text/plain;", *SECURITY_HEADERS,
               f'return 403 "refused: {up.name} serves this path for any port or origin; use /tools/<port>/\\n";']
    for sub in up.untyped_html:
        beside += location("= " + uri_path(prefix.rstrip("/") + safe_path(sub, f"sub-path of {up.name}")),
                           [*body, "add_header Content-Type $mlws_html_if_untyped always;"])
    for sub, answer in [(sub, refusal) for sub in up.blocked] + [(sub, [*body, SANDBOX_HEADER]) for sub in up.user_content]:
        if "*" in sub:
            safe_path(sub.replace("*", ""), f"sub-path of {up.name}")
            pattern = "^" + regex_literal(root) + "".join(
                "[^/]*" if part == "*" else regex_literal(part) for part in re.split(r"(\*)", sub) if part)
            nested += location(f"~ {nginx_string(pattern)}", answer)
        else:
            beside += location("^~ " + uri_path(prefix.rstrip("/") + safe_path(sub, f"sub-path of {up.name}")), answer)
    return beside, nested
