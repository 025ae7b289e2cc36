"""Environment variables -> Settings: one pure function, every error collected.

`parse_settings(env)` never touches the system except to check that files named by a variable
exist. It returns a `Settings` or raises `SettingsError` listing every invalid variable with its
value and what was expected, so `mlws start` can refuse before starting anything.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import urllib.parse

# Sentinel values of AUTHENTICATE_VIA_JUPYTER (contract section 1).
AUTH_OFF = "false"
AUTH_HUB = "true"
AUTH_GENERATED = "<generated>"

TRUE_WORDS = {"true", "on", "yes", "1"}
FALSE_WORDS = {"false", "off", "no", "0"}

# Thread variables set from MAX_NUM_THREADS, only where the environment does not set them already.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "NUMBA_NUM_THREADS",
    "SPARK_WORKER_CORES",
    "BLIS_NUM_THREADS",
    "TBB_NUM_THREADS",
)

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")

# Kernels idle this long are culled when SHUTDOWN_INACTIVE_KERNELS=true (the original's 48 h).
DEFAULT_CULL_SECONDS = 48 * 3600


# A login (session cookie) lasts this long unless WORKSPACE_SESSION_HOURS says otherwise.
DEFAULT_SESSION_HOURS = 7 * 24


DEFAULT_BACKUP_SCHEDULE = "0 * * * *"  # hourly, as the original


class SettingsError(Exception):
    """Invalid environment: `problems` holds one human-readable line per bad variable."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclasses.dataclass(frozen=True)
class Settings:
    port: int
    base_url: str  # normalised: "" or "/foo" (URL-quoted)
    auth_mode: str  # "off", "token" or "hub"
    token: str | None  # the deployment token (mode "token"); None otherwise
    token_generated: bool
    basic_auth_user: str | None
    basic_auth_password: str | None
    ssl_enabled: bool
    ssl_cert: str | None  # named certificate files (both or neither)
    ssl_key: str | None
    max_num_threads: int
    thread_env: dict[str, str]  # the thread variables to add to every tool's environment
    notebook_args: tuple[str, ...]
    cull_idle_seconds: int | None
    include_tutorials: bool
    nb_umask: int | None
    proxy_env: dict[str, str]
    hub_api_token: str | None
    warnings: tuple[str, ...] = ()
    session_hours: int = DEFAULT_SESSION_HOURS
    backup_schedule: str | None = DEFAULT_BACKUP_SCHEDULE  # CONFIG_BACKUP_ENABLED: cron expression, None = off
    hooks_strict: bool = False  # MLWS_HOOKS_STRICT: a failing start-up hook stops the workspace
    max_workspace_gb: float | None = None  # MAX_WORKSPACE_FOLDER_SIZE
    max_container_gb: float | None = None  # MAX_CONTAINER_SIZE
    # JUPYTERHUB_SERVICE_URL's address: where the hub's spawner wants the gateway (None: not set).
    hub_bind: str | None = None
    shared_links_enabled: bool = True  # SHARED_LINKS_ENABLED: false refuses every share link (401)


def normalise_base_url(raw: str) -> str:
    """Contract section 1: leading "/" added, trailing "/" and whitespace stripped, URL-quoted
    keeping "/" and "%". Root gives ""."""
    value = raw.strip().strip("/")
    value = "/".join(part for part in value.split("/") if part)
    if not value:
        return ""
    return "/" + urllib.parse.quote(value, safe="/%")


def parse_bool(name: str, raw: str, problems: list[str]) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    problems.append(f"{name}={raw!r}: expected true/false (also on/off, yes/no, 1/0; any case)")
    return False


def parse_port(name: str, raw: str, problems: list[str]) -> int:
    text = raw.strip()
    if text.isdigit() and 1 <= int(text) <= 65535:
        return int(text)
    problems.append(f"{name}={raw!r}: expected a port number 1-65535")
    return 0


def parse_service_url(raw: str, problems: list[str]) -> tuple[str | None, int | None]:
    """JUPYTERHUB_SERVICE_URL (set by every JupyterHub spawner, e.g. http://127.0.0.1:51234/user/x/):
    the address and port the single-user server must listen on. Returns (None, None) when unset."""
    text = raw.strip()
    if not text:
        return None, None
    parsed = urllib.parse.urlsplit(text)
    try:
        port = parsed.port or 80
    except ValueError:
        port = 0
    host = parsed.hostname if parsed.hostname is not None else ""
    if parsed.scheme != "http":
        problems.append(f"JUPYTERHUB_SERVICE_URL={raw!r}: expected an http:// URL (the hub's internal TLS, "
                        "JupyterHub.internal_ssl, is not supported: the gateway serves plain HTTP to the hub's proxy)")
    elif not 1 <= port <= 65535:
        problems.append(f"JUPYTERHUB_SERVICE_URL={raw!r}: expected a port number 1-65535")
    elif host and not all(ch in "0123456789abcdefABCDEF:." for ch in host):
        problems.append(f"JUPYTERHUB_SERVICE_URL={raw!r}: expected an IP address as host (found {host!r})")
    # An empty host means every interface (JupyterHub's own reading of it).
    return (host or "0.0.0.0"), port


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """CPU quota of this container in CPUs, from cgroup v2 (cpu.max) or v1 (cfs quota/period)."""
    try:
        with open(os.path.join(root, "cpu.max")) as handle:
            quota, _, period = handle.read().strip().partition(" ")
        if quota != "max" and int(period or "100000") > 0:
            return int(quota) / int(period or "100000")
        return None
    except (OSError, ValueError):
        pass
    for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        try:
            with open(os.path.join(root, folder, "cpu.cfs_quota_us")) as handle:
                quota_us = int(handle.read().strip())
            with open(os.path.join(root, folder, "cpu.cfs_period_us")) as handle:
                period_us = int(handle.read().strip())
        except (OSError, ValueError):
            continue
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    return None


def auto_threads(cpu_count: int | None, cgroup_limit: float | None) -> int:
    """The original's rule, with cgroup v2 too: CPUs, lowered to the quota; >8 minus one; cap 32."""
    count = cpu_count or 4
    if cgroup_limit is not None:
        count = min(count, max(1, int(cgroup_limit + 0.999)))  # a 1.5-CPU quota gives 2 threads
    if count > 8:
        count -= 1
    return max(1, min(count, 32))


def parse_backup_schedule(raw: str, problems: list[str]) -> str | None:
    """CONFIG_BACKUP_ENABLED: on (default, hourly), off, or a cron expression for the schedule."""
    from runtime import cron

    text = raw.strip()
    if not text or text.lower() in ("true", "on", "yes", "1"):
        return DEFAULT_BACKUP_SCHEDULE
    if text.lower() in ("false", "off", "no", "0"):
        return None
    try:
        cron.parse(text)
    except cron.CronError as error:
        problems.append(f"CONFIG_BACKUP_ENABLED={raw!r}: expected true/false or a cron expression "
                        f"such as \"0 * * * *\" ({error})")
        return None
    return text


def parse_gigabytes(name: str, raw: str, problems: list[str]) -> float | None:
    text = raw.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        problems.append(f"{name}={raw!r}: expected a size in GB greater than 0, such as 50 or 2.5")
        return None
    return value


def parse_settings(
    env: dict[str, str],
    *,
    port_override: int | None = None,
    cpu_count: int | None = None,
    cgroup_limit: float | None = None,
) -> Settings:
    problems: list[str] = []
    warnings: list[str] = []

    hub_bind, hub_port = parse_service_url(env.get("JUPYTERHUB_SERVICE_URL", ""), problems)
    if port_override is not None:
        port = port_override
    elif hub_port is not None:
        port = hub_port  # the spawner chose it: it wins over the image's WORKSPACE_PORT
    else:
        port = parse_port("WORKSPACE_PORT", env.get("WORKSPACE_PORT", "8080"), problems)

    hub_api_token = env.get("JUPYTERHUB_API_TOKEN") or None
    base_source = "JUPYTERHUB_SERVICE_PREFIX" if env.get("JUPYTERHUB_SERVICE_PREFIX") else "WORKSPACE_BASE_URL"
    base_raw = env.get(base_source, "/")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in base_raw.strip()):
        problems.append(f"{base_source}={base_raw!r}: expected a URL path without control characters")
        base_url = ""
    elif "?" in base_raw or "#" in base_raw:
        problems.append(f"{base_source}={base_raw!r}: expected a URL path without '?' or '#'")
        base_url = ""
    else:
        base_url = normalise_base_url(base_raw)
        if any(part in (".", "..") for part in base_url.split("/")):
            problems.append(f"{base_source}={base_raw!r}: expected a URL path without '.' or '..' segments")

    basic_user = env.get("WORKSPACE_AUTH_USER") or None
    basic_password = env.get("WORKSPACE_AUTH_PASSWORD") or None
    if bool(basic_user) != bool(basic_password):
        missing = "WORKSPACE_AUTH_PASSWORD" if basic_user else "WORKSPACE_AUTH_USER"
        problems.append(f"{missing} is not set: basic authentication needs both WORKSPACE_AUTH_USER and WORKSPACE_AUTH_PASSWORD")
    if basic_user and (":" in basic_user or any(ord(ch) < 32 for ch in basic_user)):
        problems.append(f"WORKSPACE_AUTH_USER={basic_user!r}: expected a user name without ':' or control characters")
    if basic_password and any(ord(ch) < 32 for ch in basic_password):
        problems.append("WORKSPACE_AUTH_PASSWORD: expected a password without control characters (value not shown)")

    # Default: a generated token, unless basic authentication is the login already.
    auth_default = AUTH_OFF if basic_user and basic_password else AUTH_GENERATED
    auth_raw = env.get("AUTHENTICATE_VIA_JUPYTER", auth_default)
    auth_word = auth_raw.strip()
    token: str | None = None
    token_generated = False
    if auth_word.lower() == AUTH_OFF:
        auth_mode = "off"
        if not (basic_user and basic_password):
            warnings.append(
                "AUTHENTICATE_VIA_JUPYTER=false and no basic authentication: the workspace is OPEN to "
                "anyone who can reach its port (a terminal and every internal port included)."
            )
    elif auth_word.lower() == AUTH_HUB:
        auth_mode = "hub"
        if not hub_api_token:
            problems.append(
                "AUTHENTICATE_VIA_JUPYTER=true: expected JUPYTERHUB_API_TOKEN to be set "
                "(\"true\" means JupyterHub authenticates; use <generated> or a token otherwise)"
            )
    elif auth_word.lower() in (AUTH_GENERATED, ""):
        auth_mode = "token"
        token_generated = True
    else:
        auth_mode = "token"
        token = auth_word
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in token):
            problems.append("AUTHENTICATE_VIA_JUPYTER: expected a token without control characters such as newlines (value not shown)")
        elif len(token) < 8:
            warnings.append("AUTHENTICATE_VIA_JUPYTER: the token is shorter than 8 characters; anyone may guess it")

    ssl_raw = env.get("WORKSPACE_SSL_ENABLED", "false")
    ssl_enabled = parse_bool("WORKSPACE_SSL_ENABLED", ssl_raw, problems)
    ssl_cert = env.get("WORKSPACE_SSL_CERT") or None
    ssl_key = env.get("WORKSPACE_SSL_KEY") or None
    if bool(ssl_cert) != bool(ssl_key):
        problems.append("WORKSPACE_SSL_CERT and WORKSPACE_SSL_KEY: expected both or neither to be set")
    for name, path in (("WORKSPACE_SSL_CERT", ssl_cert), ("WORKSPACE_SSL_KEY", ssl_key)):
        if path and not os.path.isfile(path):
            problems.append(f"{name}={path!r}: expected an existing file (it was named but is missing)")

    threads_raw = env.get("MAX_NUM_THREADS", "auto").strip()
    if threads_raw.lower() == "auto" or threads_raw == "":
        threads = auto_threads(cpu_count if cpu_count is not None else os.cpu_count(), cgroup_limit)
    elif threads_raw.isdigit() and int(threads_raw) > 0:
        threads = int(threads_raw)
    else:
        problems.append(f"MAX_NUM_THREADS={threads_raw!r}: expected \"auto\" or a positive integer")
        threads = 1
    thread_env = {name: str(threads) for name in THREAD_VARIABLES if not env.get(name)}

    notebook_args: tuple[str, ...] = ()
    try:
        notebook_args = tuple(shlex.split(env.get("NOTEBOOK_ARGS", "")))
    except ValueError as error:
        problems.append(f"NOTEBOOK_ARGS={env.get('NOTEBOOK_ARGS')!r}: expected shell-style arguments ({error})")

    cull_raw = env.get("SHUTDOWN_INACTIVE_KERNELS", "false").strip()
    cull: int | None = None
    if cull_raw.isdigit():
        cull = int(cull_raw) or None
    elif cull_raw.lower() in TRUE_WORDS:
        cull = DEFAULT_CULL_SECONDS
    elif cull_raw.lower() not in FALSE_WORDS and cull_raw != "":
        problems.append(f"SHUTDOWN_INACTIVE_KERNELS={cull_raw!r}: expected true/false or a number of seconds")

    include_tutorials = parse_bool("INCLUDE_TUTORIALS", env.get("INCLUDE_TUTORIALS", "true"), problems)

    umask_raw = env.get("NB_UMASK", "").strip()
    nb_umask: int | None = None
    if umask_raw:
        if len(umask_raw) <= 4 and all(ch in "01234567" for ch in umask_raw):
            nb_umask = int(umask_raw, 8)
        else:
            problems.append(f"NB_UMASK={umask_raw!r}: expected an octal umask such as 022 or 0002")

    proxy_env = {name: env[name] for name in PROXY_VARIABLES if env.get(name)}

    session_raw = env.get("WORKSPACE_SESSION_HOURS", "").strip()
    session_hours = DEFAULT_SESSION_HOURS
    if session_raw:
        if session_raw.isdigit() and 1 <= int(session_raw) <= 24 * 366:
            session_hours = int(session_raw)
        else:
            problems.append(f"WORKSPACE_SESSION_HOURS={session_raw!r}: expected a whole number of hours from 1 to 8784")

    backup_schedule = parse_backup_schedule(env.get("CONFIG_BACKUP_ENABLED", ""), problems)
    hooks_strict = parse_bool("MLWS_HOOKS_STRICT", env.get("MLWS_HOOKS_STRICT", "false"), problems)
    max_workspace_gb = parse_gigabytes("MAX_WORKSPACE_FOLDER_SIZE", env.get("MAX_WORKSPACE_FOLDER_SIZE", ""), problems)
    max_container_gb = parse_gigabytes("MAX_CONTAINER_SIZE", env.get("MAX_CONTAINER_SIZE", ""), problems)
    shared_links_enabled = parse_bool("SHARED_LINKS_ENABLED", env.get("SHARED_LINKS_ENABLED", "").strip() or "true",
                                      problems)

    if problems:
        raise SettingsError(problems)
    return Settings(
        port=port,
        base_url=base_url,
        auth_mode=auth_mode,
        token=token,
        token_generated=token_generated,
        basic_auth_user=basic_user,
        basic_auth_password=basic_password,
        ssl_enabled=ssl_enabled,
        ssl_cert=ssl_cert,
        ssl_key=ssl_key,
        max_num_threads=threads,
        thread_env=thread_env,
        notebook_args=notebook_args,
        cull_idle_seconds=cull,
        include_tutorials=include_tutorials,
        nb_umask=nb_umask,
        proxy_env=proxy_env,
        hub_api_token=hub_api_token,
        warnings=tuple(warnings),
        session_hours=session_hours,
        backup_schedule=backup_schedule,
        hooks_strict=hooks_strict,
        max_workspace_gb=max_workspace_gb,
        max_container_gb=max_container_gb,
        hub_bind=hub_bind,
        shared_links_enabled=shared_links_enabled,
    )
