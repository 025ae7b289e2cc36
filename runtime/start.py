"""`mlws start`: environment + manifest -> runtime folder -> supervisord in the foreground.

Order: parse every variable (refuse on any error, nothing started) -> load the manifest -> as root,
prepare folders for the target user and drop privileges -> write the runtime folder (gateway,
login service, Jupyter settings, one JSON per program, supervisor configuration) -> tutorials ->
print the URL (and the generated token, once) -> run supervisord as our child
(runtime/reaper.py: signals forwarded, orphans reaped, nothing left running after it exits).
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import pwd
import secrets
import shutil
import socket
import stat as stat_module
import subprocess
import sys
import time

from runtime import manifest as manifest_mod
from runtime import secret_files
from runtime import nginx as nginx_mod
from runtime.settings import Settings, SettingsError, cgroup_cpu_limit, parse_settings
from runtime.supervisor import Program, render_supervisor_conf

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def own_pythonpath() -> str:
    """The import path of this process, for the runtime's own Python children.

    Those children (supervisord, the login service, the readiness watcher, runtime.launch) run
    `sys.executable -m ...`. In a venv that interpreter finds our packages by itself, but the
    image's entrypoint is a nixpkgs-wrapped application: a bare interpreter whose wrapper adds
    each dependency's site-packages at run time (site.addsitedir), so a child started from
    sys.executable would find neither `runtime` nor `supervisor`. Passing our own sys.path on
    makes both cases work. Tools never get it: runtime.launch gives each its own environment.
    """
    entries = [os.path.dirname(PACKAGE_DIR)] + [p for p in sys.path if p and os.path.isdir(p)]
    return os.pathsep.join(dict.fromkeys(entries))
STATIC_DIR = os.path.join(PACKAGE_DIR, "static")
TUTORIALS_DIR = os.path.join(PACKAGE_DIR, "tutorials")
JUPYTER_CONFIG = os.path.join(PACKAGE_DIR, "jupyter_config.py")
# Helper files tools load from the runtime package ({toolkit}): node-unix-listen.js, tensorboard_unix.py.
TOOLKIT_DIR = os.path.join(PACKAGE_DIR, "toolkit")
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
UNIX_PATH_MAX = 107
SSL_SEARCH_DIRS = ("/resources/ssl", "/run/secrets")
# Secrets of the runtime itself: no tool process needs to see them.
HIDDEN_FROM_TOOLS = ("AUTHENTICATE_VIA_JUPYTER", "WORKSPACE_AUTH_PASSWORD", "MLWS_TOOLS")
SYSTEM_BIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class StartError(Exception):
    """A problem that stops `mlws start` before anything is started; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class StartOptions:
    flavor: str | None = None
    manifest: str | None = None
    port: int | None = None
    tools: tuple[str, ...] | None = None
    runtime_dir: str | None = None
    workspace_dir: str | None = None
    user: str | None = None
    bind: str = "0.0.0.0"
    dry_run: bool = False  # write everything, print the banner, but do not exec supervisord


def log(message: str) -> None:
    print(f"mlws: {message}", file=sys.stderr, flush=True)


# --- users and folders ------------------------------------------------------------------------

def target_user(options: StartOptions, env: dict[str, str]) -> pwd.struct_passwd:
    """Root must name the user to run as (--user or NB_USER); others run as themselves."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    name = options.user or env.get("NB_USER")
    if not name:
        raise StartError(
            "running as root: name the user to run the workspace as with --user NAME or NB_USER=NAME "
            "(the workspace never runs its tools as root)"
        )
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise StartError(f"--user/NB_USER {name!r}: no such user on this system") from None
    if entry.pw_uid == 0:
        raise StartError(f"--user/NB_USER {name!r}: expected a non-root user")
    return entry


def default_workspace_dir(user: pwd.struct_passwd) -> str:
    if os.path.isdir("/workspace"):
        return "/workspace"
    return os.path.join(user.pw_dir, "workspace")


def ensure_folder(path: str, user: pwd.struct_passwd, mode: int | None = None) -> None:
    """Create `path` if needed; as root, hand the folder (not its contents) to the user."""
    os.makedirs(path, exist_ok=True)
    if os.geteuid() == 0:
        stat = os.stat(path)
        if stat.st_uid != user.pw_uid:
            os.chown(path, user.pw_uid, user.pw_gid)
    if mode is not None:
        os.chmod(path, mode)


def hand_over_stdio(user: pwd.struct_passwd) -> None:
    """supervisord reopens /dev/fd/1 for the programs' logs; after dropping root that only works
    if the user may open our stdout. A pipe (the container log) is ours to hand over."""
    for fd in (1, 2):
        try:
            if stat_module.S_ISFIFO(os.fstat(fd).st_mode):
                os.fchown(fd, user.pw_uid, -1)
        except OSError:
            pass


def stdout_reopenable() -> bool:
    try:
        os.close(os.open("/proc/self/fd/1", os.O_WRONLY | os.O_APPEND))
        return True
    except OSError:
        return False


def readable_by(path: str, user: pwd.struct_passwd) -> bool:
    """Can `user` read `path`? Asked in a child that becomes the user (root only)."""
    child = os.fork()
    if child == 0:
        try:
            os.setgroups(os.getgrouplist(user.pw_name, user.pw_gid))
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os._exit(0 if os.access(path, os.R_OK) else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status) == 0


def drop_privileges(user: pwd.struct_passwd) -> None:
    groups = os.getgrouplist(user.pw_name, user.pw_gid)
    os.setgroups(groups)
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise StartError("could not drop root privileges")


def user_environment(env: dict[str, str], user: pwd.struct_passwd) -> dict[str, str]:
    result = dict(env)
    result.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
    result.setdefault("SHELL", user.pw_shell or "/bin/bash")
    return result


# --- executables, ports, files ----------------------------------------------------------------

def find_executable(name: str, path_env: str, extra_dirs: tuple[str, ...] = ()) -> str | None:
    if os.sep in name:
        return name if os.access(name, os.X_OK) else None
    search = os.pathsep.join([path_env, *extra_dirs])
    return shutil.which(name, path=search)


def port_is_free(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_private(path: str, text: str, mode: int = 0o600) -> None:
    """Write via a temp file + rename so no reader ever sees half a file; 0600 by default."""
    temp = path + ".tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(temp, mode)
    os.replace(temp, path)


def htpasswd_line(user: str, password: str) -> str:
    """nginx understands {SSHA}: base64(sha1(password + salt) + salt)."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return f"{user}:{{SSHA}}{base64.b64encode(digest + salt).decode('ascii')}\n"


def certificate_files(settings: Settings, user: pwd.struct_passwd, openssl_path: str) -> tuple[str, str]:
    if settings.ssl_cert and settings.ssl_key:
        return os.path.abspath(settings.ssl_cert), os.path.abspath(settings.ssl_key)
    for folder in SSL_SEARCH_DIRS:
        cert, key = os.path.join(folder, "cert.crt"), os.path.join(folder, "cert.key")
        if os.path.isfile(cert) and os.path.isfile(key) and os.access(key, os.R_OK):
            return cert, key
    # Generated once and kept with the user's files, so browsers see the same certificate after a restart.
    folder = os.path.join(user.pw_dir, ".mlws", "ssl")
    cert, key = os.path.join(folder, "cert.crt"), os.path.join(folder, "cert.key")
    if not (os.path.isfile(cert) and os.path.isfile(key)):
        if not openssl_path:
            raise StartError("WORKSPACE_SSL_ENABLED: no certificate found and `openssl` is not on PATH to make one")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        result = subprocess.run(
            [openssl_path, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
             "-subj", "/CN=mlws-workspace", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", key + ".tmp", "-out", cert + ".tmp"],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise StartError(f"could not generate a self-signed certificate: {result.stderr.strip()}")
        os.chmod(key + ".tmp", 0o600)
        os.replace(key + ".tmp", key)
        os.replace(cert + ".tmp", cert)
        log(f"generated a self-signed TLS certificate in {folder} (kept for later starts)")
    return cert, key


def ensure_ssh_host_keys(argv: list[str], path_env: str) -> None:
    """sshd does not start without its host keys, and a fresh workspace has none: make each key the
    manifest names (`-o HostKey=PATH`) that does not exist yet. They live in the tool's folder, which
    is kept across starts, so clients see the same host key after a restart."""
    if os.path.basename(argv[0]) != "sshd":
        return
    for key in [arg.split("=", 1)[1] for arg in argv if arg.startswith("HostKey=")]:
        if os.path.exists(key):
            continue
        keygen = find_executable("ssh-keygen", path_env)
        if not keygen:
            raise StartError(f"sshd's host key {key} does not exist and `ssh-keygen` is not on PATH to make it")
        kind = next((k for k in ("rsa", "ecdsa", "ed25519") if k in os.path.basename(key)), "ed25519")
        result = subprocess.run([keygen, "-q", "-t", kind, "-N", "", "-C", "mlws-workspace", "-f", key],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if result.returncode != 0:
            raise StartError(f"could not make sshd's host key {key}: {result.stderr.strip()}")
        log(f"generated the SSH host key {key} (kept for later starts)")


def tool_socket_path(runtime_dir: str, tool_name: str) -> str:
    """<runtime-dir>/sockets/<tool>.sock, refused when longer than a unix socket address allows."""
    path = os.path.join(runtime_dir, "sockets", f"{tool_name}.sock")
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise StartError(
            f"--runtime-dir {runtime_dir}: too long for the tools' unix sockets ({path} is "
            f"{len(os.fsencode(path))} bytes, at most {UNIX_PATH_MAX}); choose a shorter runtime folder"
        )
    if any(ch.isspace() or ch == "," for ch in path):
        # Netdata's "bind to" splits its value at spaces and commas.
        raise StartError(f"--runtime-dir {runtime_dir}: no spaces or commas (the tools' socket paths)")
    return path


def copy_tutorials(workspace_dir: str) -> bool:
    """Copy our tutorial notebooks only into an empty workspace (never over a user's files)."""
    if os.listdir(workspace_dir):
        return False
    target = os.path.join(workspace_dir, "tutorials")
    shutil.copytree(TUTORIALS_DIR, target)
    return True


# --- the plan ---------------------------------------------------------------------------------

def select_tools(manifest: manifest_mod.Manifest, wanted: tuple[str, ...] | None) -> list[manifest_mod.Tool]:
    if not wanted:
        return list(manifest.tools)
    known = {tool.name for tool in manifest.tools}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise StartError(
            f"--tools/MLWS_TOOLS: unknown tool(s) {', '.join(unknown)}; the {manifest.flavor or 'chosen'} "
            f"flavor has: {', '.join(sorted(known))}"
        )
    # Jupyter (the health tool) is always part of the workspace.
    return [tool for tool in manifest.tools if tool.name in wanted or tool.health]


def run_start(options: StartOptions, environ: dict[str, str] | None = None) -> int:
    env = dict(os.environ if environ is None else environ)
    try:
        settings = parse_settings(env, port_override=options.port, cgroup_limit=cgroup_cpu_limit())
    except SettingsError as error:
        for problem in error.problems:
            log(f"error: {problem}")
        log("nothing was started: fix the variables above and start again")
        return 2
    try:
        path = manifest_mod.find_manifest(options.manifest, options.flavor, env)
        manifest = manifest_mod.load_manifest(path)
        tools = select_tools(manifest, options.tools)
        user = target_user(options, env)
        return _start(options, settings, manifest, tools, user, env)
    except (StartError, manifest_mod.ManifestError, nginx_mod.ConfigValueError) as error:
        log(f"error: {error}")
        log("nothing was started")
        return 2


def _start(options, settings: Settings, manifest, tools, user, env) -> int:
    for warning in settings.warnings:
        log(f"WARNING: {warning}")
    runtime_dir = os.path.abspath(options.runtime_dir or os.path.join(user.pw_dir, ".mlws", f"run-{settings.port}"))
    workspace_dir = os.path.abspath(options.workspace_dir or env.get("WORKSPACE_DIR") or default_workspace_dir(user))
    nginx_mod.safe_path(runtime_dir, "--runtime-dir")

    if os.geteuid() == 0:
        if not readable_by(os.path.join(PACKAGE_DIR, "launch.py"), user):
            raise StartError(
                f"the runtime package in {PACKAGE_DIR} is not readable by user {user.pw_name}: install mlws "
                "where that user can read it (not under /root), e.g. in a venv under /opt"
            )
        ensure_folder(workspace_dir, user)
        if runtime_dir.startswith(user.pw_dir + "/"):
            ensure_folder(os.path.join(user.pw_dir, ".mlws"), user, 0o700)
        ensure_folder(runtime_dir, user, 0o700)
        hand_over_stdio(user)
        drop_privileges(user)
        log(f"running as user {user.pw_name} (uid {user.pw_uid})")
    env = user_environment(env, user)
    os.makedirs(workspace_dir, exist_ok=True)
    os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
    if os.stat(runtime_dir).st_uid != os.getuid():
        raise StartError(f"--runtime-dir {runtime_dir}: owned by another user; expected a folder of {user.pw_name}")
    os.chmod(runtime_dir, 0o700)
    if not os.access(workspace_dir, os.W_OK):
        raise StartError(f"workspace folder {workspace_dir}: not writable by {user.pw_name}")

    path_env = env.get("PATH", os.defpath)
    nginx_bin = find_executable("nginx", path_env, SYSTEM_BIN_DIRS)
    if not nginx_bin:
        raise StartError("nginx is not on PATH (nor in /usr/sbin): the gateway needs it")

    # Which tools can run here: a missing executable skips the tool (Jupyter's is an error).
    resolved: dict[tuple[str, str], str] = {}
    packages: dict[tuple[str, str], str] = {}
    available: dict[str, bool] = {}
    for tool in tools:
        ok = True
        for process in tool.processes:
            exe = find_executable(process.command[0], path_env)
            if exe:
                resolved[(tool.name, process.name)] = exe
            else:
                ok = False
                if tool.health:
                    raise StartError(f"tool {tool.name}: `{process.command[0]}` is not on PATH; Jupyter is required")
                log(f"WARNING: tool {tool.name} skipped: `{process.command[0]}` is not on PATH")
        # {package:PROGRAM}: the folder of the package that really holds PROGRAM (nixpkgs' store
        # path, or the stand-in's prefix); a missing program makes the tool unavailable too.
        texts = [*tool.env.values()]
        for process in tool.processes:
            texts += [*process.command, *process.env.values()]
        for program in sorted({p for text in texts for p in manifest_mod.package_programs(text)}):
            found = find_executable(program, path_env)
            if found:
                packages[(tool.name, program)] = os.path.dirname(os.path.dirname(os.path.realpath(found)))
            else:
                ok = False
                log(f"WARNING: tool {tool.name} skipped: `{program}` (whose package it uses) is not on PATH")
        available[tool.name] = ok

    # Ports: the gateway's and every internal one must be free (a dry run starts nothing: no check).
    if not options.dry_run and not port_is_free(options.bind, settings.port):
        raise StartError(f"port {settings.port} on {options.bind} is in use (WORKSPACE_PORT / --port)")
    for tool in tools:
        if (tool.port and available[tool.name] and tool.processes and not options.dry_run
                and not port_is_free("127.0.0.1", tool.port)):
            raise StartError(f"tool {tool.name}: internal port {tool.port} on 127.0.0.1 is in use")
        if tool.port == settings.port:
            raise StartError(f"tool {tool.name}: its internal port {tool.port} is the gateway's port")

    token = settings.token or (secrets.token_hex(24) if settings.auth_mode == "token" else None)
    gateway_secret = secrets.token_hex(32)
    cookie_name = f"mlws_session_{settings.port}"

    # Fresh generated files each start.
    for sub in ("programs", "nginx", "logs", "jupyter", "sockets"):
        shutil.rmtree(os.path.join(runtime_dir, sub), ignore_errors=True)
    for sub in ("programs", "logs", "jupyter", "nginx", "nginx/html", "nginx/tmp", "tools", "sockets"):
        os.makedirs(os.path.join(runtime_dir, sub), mode=0o700, exist_ok=True)
        os.chmod(os.path.join(runtime_dir, sub), 0o700)
    shutil.copy(os.path.join(STATIC_DIR, "starting.html"), os.path.join(runtime_dir, "nginx/html/starting.html"))
    # Sessions live for one start (a new secret each start): the login service signs one cookie
    # per login and lists revoked ones in a map that nginx includes (see runtime/login.py).
    session_secret = secrets.token_hex(32)
    revoked_file = os.path.join(runtime_dir, "nginx", "revoked.map")
    write_private(revoked_file, "")
    login_socket = os.path.join(runtime_dir, "login.sock")

    ssl_cert = ssl_key = None
    if settings.ssl_enabled:
        ssl_cert, ssl_key = certificate_files(settings, user, find_executable("openssl", path_env) or "")
    htpasswd = None
    if settings.basic_auth_user and settings.basic_auth_password:
        htpasswd = os.path.join(runtime_dir, "nginx", "htpasswd")
        write_private(htpasswd, htpasswd_line(settings.basic_auth_user, settings.basic_auth_password))

    health_tool = manifest.health_tool
    # Backends are reachable by the workspace user only: a tool with "socket": true listens on
    # <runtime-dir>/sockets/<tool>.sock (the folder is 0700, so other users get EACCES); a tool
    # that can only listen on TCP gets a per-start secret it requires and the gateway presents.
    tool_sockets = {tool.name: tool_socket_path(runtime_dir, tool.name) for tool in tools if tool.socket}
    tool_secrets = {tool.name: secrets.token_hex(32) for tool in tools if tool.secret}
    upstreams = []
    for tool in tools:
        if tool.route is None or (tool.port is None and not tool.socket):
            continue
        upstreams.append(
            nginx_mod.Upstream(tool.name, tool.port, tool.route.prefix, tool.route.strip_prefix,
                               tool.route.websockets, available[tool.name] and bool(tool.processes),
                               address=f"unix:{tool_sockets[tool.name]}" if tool.socket else "",
                               headers=secret_files.gateway_headers(tool.secret, tool_secrets.get(tool.name)),
                               user_content=tool.route.user_content, blocked=tool.route.blocked,
                               untyped_html=tool.route.untyped_html)
        )
    gateway = nginx_mod.GatewayConfig(
        runtime_dir=runtime_dir,
        static_dir=STATIC_DIR,
        listen_address=options.bind,
        port=settings.port,
        base_url=settings.base_url,
        auth_mode=settings.auth_mode,
        cookie_name=cookie_name,
        session_secret=session_secret,
        revoked_file=revoked_file,
        gateway_secret=gateway_secret,
        token=token,
        htpasswd_file=htpasswd,
        ssl_cert=ssl_cert,
        ssl_key=ssl_key,
        login_socket=login_socket,
        health_tool=health_tool.name,
        upstreams=tuple(upstreams),
    )
    nginx_conf = os.path.join(runtime_dir, "nginx", "nginx.conf")
    write_private(nginx_conf, nginx_mod.render_nginx_conf(gateway))

    # Environment common to every tool: the user's, minus the runtime's secrets, plus manifest env,
    # thread variables (only where unset) and the proxy variables (already in env: kept).
    tool_env_base = {k: v for k, v in env.items() if k not in HIDDEN_FROM_TOOLS}
    tool_env_base.update(manifest.env)
    tool_env_base.update(settings.thread_env)
    tool_env_base.update(settings.proxy_env)
    tool_env_base["WORKSPACE_BASE_URL"] = settings.base_url or "/"
    tool_env_base["MLWS_RUNTIME_DIR"] = runtime_dir

    programs: list[Program] = []

    def add_program(name: str, argv: list[str], program_env: dict[str, str], priority: int, cwd: str,
                    oneshot: bool = False, stale_sockets: tuple[str, ...] = ()) -> None:
        spec_file = os.path.join(runtime_dir, "programs", f"{name}.json")
        spec = {"argv": argv, "env": program_env, "cwd": cwd, "umask": settings.nb_umask,
                "stale_sockets": list(stale_sockets)}
        write_private(spec_file, json.dumps(spec, indent=2, sort_keys=True) + "\n")
        programs.append(Program(name, spec_file, priority, oneshot))

    add_program(
        "gateway",
        [nginx_bin, "-p", os.path.join(runtime_dir, "nginx"), "-c", nginx_conf, "-e", "stderr", "-g", "daemon off;"],
        {"PATH": path_env, "HOME": user.pw_dir},
        100,
        runtime_dir,
        # nginx does not remove its unix socket when it is killed, and refuses to bind it again.
        stale_sockets=(os.path.join(runtime_dir, "nginx", "check.sock"),),
    )
    # The login service runs in every mode: besides logins and sessions (token mode) it tells
    # the gateway who listens on an arbitrary port and renders the "from another site" page.
    login_settings = os.path.join(runtime_dir, "login.json")
    write_private(login_settings, json.dumps({
        "socket": login_socket, "base_url": settings.base_url, "cookie_name": cookie_name,
        "token": token if settings.auth_mode == "token" else None, "secure": bool(ssl_cert),
        "session_secret": session_secret,
        "revoked_map": revoked_file, "revoked_json": os.path.join(runtime_dir, "nginx", "revoked.json"),
        "nginx_pid": os.path.join(runtime_dir, "nginx", "nginx.pid"),
        "check_socket": os.path.join(runtime_dir, "nginx", "check.sock"),
        "session_seconds": settings.session_hours * 3600,
        # Under a hub, /tools/<port>/ also needs the hub session, which Jupyter checks.
        "hub_jupyter": next(up.server for up in gateway.upstreams if up.name == health_tool.name)
        if settings.auth_mode == "hub" else None,
    }))
    login_env = {"PATH": path_env, "HOME": user.pw_dir, "PYTHONPATH": own_pythonpath()}
    add_program("login", [sys.executable, "-m", "runtime.login", login_settings], login_env, 100, runtime_dir)

    jupyter_settings = os.path.join(runtime_dir, "jupyter", "settings.json")
    write_private(jupyter_settings, json.dumps({
        "gateway_header": nginx_mod.GATEWAY_HEADER,
        "gateway_secret": gateway_secret,
        # Jupyter behind the gateway needs no token: it trusts the gateway's header, so no token
        # can reach a page config (B/lab) or Jupyter's server-info file. Under a hub, the hub's.
        "token": "",
        "auth_kind_header": nginx_mod.AUTH_KIND_HEADER,
        "user_name": user.pw_name,
        "mode": settings.auth_mode,
    }))

    jupyter_config = os.path.join(runtime_dir, "jupyter_server_config.py")
    shutil.copyfile(JUPYTER_CONFIG, jupyter_config)
    os.chmod(jupyter_config, 0o600)

    for tool in tools:
        if not available[tool.name]:
            continue
        tool_dir = os.path.join(runtime_dir, "tools", tool.name)
        os.makedirs(tool_dir, mode=0o700, exist_ok=True)
        values = {
            "port": str(tool.port or ""),
            "base_url": settings.base_url,
            "prefix": settings.base_url + (tool.route.prefix if tool.route else f"/tools/{tool.name}/"),
            "workspace": workspace_dir,
            "home": user.pw_dir,
            "runtime_dir": runtime_dir,
            "tool_dir": tool_dir,
            "user": user.pw_name,
            "socket": tool_sockets.get(tool.name, ""),
            "secret": tool_secrets.get(tool.name, ""),
            "toolkit": TOOLKIT_DIR,
            **{f"package:{program}": folder for (name, program), folder in packages.items() if name == tool.name},
        }
        if tool.secret is not None:
            for secret_file in tool.secret.files:
                secret_files.write(manifest_mod.substitute(secret_file.path, values), secret_file.format,
                                  tool_secrets[tool.name], secret_file.display)
        for process in tool.processes:
            argv = [manifest_mod.substitute(arg, values) for arg in process.command]
            argv[0] = resolved[(tool.name, process.name)]
            if not options.dry_run:
                ensure_ssh_host_keys(argv, path_env)
            program_env = dict(tool_env_base)
            program_env.update({k: manifest_mod.substitute(v, values) for k, v in tool.env.items()})
            program_env.update({k: manifest_mod.substitute(v, values) for k, v in process.env.items()})
            if tool.health:
                # The manifest may name {runtime_dir}/jupyter_server_config.py itself; either way
                # Jupyter loads our static file (copied there, so the user can always read it).
                if not any(arg.startswith("--config=") for arg in argv):
                    argv.append(f"--config={jupyter_config}")
                program_env["MLWS_JUPYTER_SETTINGS"] = jupyter_settings
                if settings.auth_mode == "hub":
                    program_env["JUPYTERHUB_API_TOKEN"] = settings.hub_api_token or ""
                if settings.cull_idle_seconds:
                    argv += [
                        f"--MappingKernelManager.cull_idle_timeout={settings.cull_idle_seconds}",
                        f"--MappingKernelManager.cull_interval={min(60, settings.cull_idle_seconds)}",
                        "--MappingKernelManager.cull_connected=False",
                        "--MappingKernelManager.cull_busy=False",
                    ]
                argv += list(settings.notebook_args)
            else:
                program_env.pop("JUPYTERHUB_API_TOKEN", None)
            add_program(f"{tool.name}-{process.name}", argv, program_env, 300, workspace_dir)

    # The manifest's readiness checks, watched by a one-shot program that reports when all pass.
    checks = []
    for tool in tools:
        if not available[tool.name]:
            continue
        for process in tool.processes:
            ready = process.ready or {}
            name = f"{tool.name}-{process.name}"
            if "tcp" in ready:
                checks.append({"name": name, "tcp": ready["tcp"]})
            elif "socket" in ready:
                checks.append({"name": name, "socket": manifest_mod.substitute(ready["socket"], {
                    "socket": tool_sockets.get(tool.name, ""), "runtime_dir": runtime_dir,
                    "tool_dir": os.path.join(runtime_dir, "tools", tool.name)})})
            elif "http" in ready and (tool.port or tool.socket):
                # A backend that sees full paths (no prefix stripping) lives under the base URL.
                under_base = tool.route is not None and not tool.route.strip_prefix
                check = {"name": name, "path": (settings.base_url if under_base else "") + ready["http"],
                         "headers": dict(secret_files.gateway_headers(tool.secret, tool_secrets.get(tool.name)))}
                if tool.socket:
                    check["unix"] = tool_sockets[tool.name]
                else:
                    check["port"] = tool.port
                checks.append(check)
    ready_file = os.path.join(runtime_dir, "ready.json")
    write_private(ready_file, json.dumps({"checks": checks, "timeout": 600, "url": public_url(settings, options)}))
    add_program("ready", [sys.executable, "-m", "runtime.ready", ready_file],
                {"PATH": path_env, "HOME": user.pw_dir, "PYTHONPATH": own_pythonpath()}, 900, runtime_dir,
                oneshot=True)

    menu = []
    for tool in tools:
        for entry in tool.menu:
            item = dict(entry)
            item["url_path"] = settings.base_url + str(entry.get("url_path", "")) if entry.get("url_path") else ""
            item["available"] = available[tool.name]
            menu.append(item)
    write_private(os.path.join(runtime_dir, "tools-menu.json"), json.dumps(menu, indent=2) + "\n", 0o644)

    supervisor_conf = os.path.join(runtime_dir, "supervisord.conf")
    log_to_stdout = stdout_reopenable()
    if not log_to_stdout:
        log(f"stdout cannot be reopened by {user.pw_name}: program logs go to {runtime_dir}/logs/")
    write_private(supervisor_conf, render_supervisor_conf(runtime_dir, sys.executable, programs, log_to_stdout))

    if settings.include_tutorials and copy_tutorials(workspace_dir):
        log(f"copied tutorial notebooks into {workspace_dir}/tutorials")

    print_banner(settings, options, token, manifest, tools, available)
    if options.dry_run:
        return 0

    supervisord_argv = supervisor_command(path_env)
    supervisord_env = dict(tool_env_base)
    supervisord_env["PYTHONPATH"] = own_pythonpath()
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(runtime_dir)
    wake_supervisord_when_ready(os.path.join(runtime_dir, "supervisord.pid"),
                                os.path.join(runtime_dir, "supervisor.sock"))
    # Not an exec: we stay supervisord's parent and the subreaper of everything below it, so a
    # process that daemonized out of its program's group is still stopped when the workspace stops.
    from runtime import reaper

    return reaper.run_supervised([*supervisord_argv, "-c", supervisor_conf], supervisord_env, log)


def wake_supervisord_when_ready(pid_file: str, control_socket: str, limit_seconds: float = 10.0) -> None:
    """Save a second of start-up: poke supervisord as soon as it enters its main loop.

    supervisord starts its programs only after the first turn of its loop, which waits up to 1 s
    in poll() for activity on its sockets (a signal does not cut that short: Python retries the
    call). It writes its pid file just before that loop, so a forked helper waits for the pid
    file, then connects once to the control socket: poll() returns at once and the programs are
    spawned. If anything goes wrong the helper just exits and supervisord starts them 1 s later.
    The helper is forked from the runtime before it spawns supervisord, so it is the runtime's
    child: runtime/reaper.py reaps it with every other child.
    """
    for stale in (pid_file, control_socket):
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    if os.fork():
        return
    try:
        deadline = time.monotonic() + limit_seconds
        while not os.path.exists(pid_file) and time.monotonic() < deadline:
            time.sleep(0.005)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(1)
            connection.connect(control_socket)
    except OSError:
        pass
    finally:
        os._exit(0)


def supervisor_command(path_env: str) -> list[str]:
    try:
        import supervisor.supervisord  # noqa: F401 (only checking it is there)

        return [sys.executable, "-m", "supervisor.supervisord"]
    except ImportError:
        found = find_executable("supervisord", path_env)
        if not found:
            raise StartError("supervisord is not installed (pip install supervisor)") from None
        return [found]


def public_url(settings: Settings, options: StartOptions) -> str:
    scheme = "https" if settings.ssl_enabled else "http"
    host = "localhost" if options.bind in ("0.0.0.0", "::", "127.0.0.1") else options.bind
    return f"{scheme}://{host}:{settings.port}{settings.base_url}/"


def print_banner(settings: Settings, options: StartOptions, token, manifest, tools, available) -> None:
    url = public_url(settings, options)
    lines = ["", "=" * 72, f"  mlws workspace ({manifest.flavor or 'custom'} flavor)"]
    if settings.auth_mode == "token":
        lines.append(f"  Open the workspace: {url}?token={urllib_quote(token)}")
        lines.append(f"  Token: {token}" + ("   (generated for this start)" if settings.token_generated else ""))
        lines.append(f"  API clients: send the header  Authorization: token {token}")
    elif settings.auth_mode == "hub":
        lines.append(f"  JupyterHub single-user server at {url} (log in through the hub)")
    else:
        lines.append(f"  Open the workspace: {url}")
        if settings.basic_auth_user:
            lines.append(f"  Basic authentication as user {settings.basic_auth_user}")
        else:
            lines.append("  WARNING: no authentication (AUTHENTICATE_VIA_JUPYTER=false)")
    named = [t for t in tools if t.route and t.route.prefix != "/"]
    if named:
        lines.append("  Tools: " + ", ".join(
            settings.base_url + t.route.prefix + ("" if available[t.name] else " (unavailable)") for t in named
        ))
    lines += ["=" * 72, ""]
    print("\n".join(lines), flush=True)


def urllib_quote(value: str) -> str:
    import urllib.parse

    return urllib.parse.quote(value, safe="")
