"""Operating-system helpers of start-up: users, privileges, folders, executables, ports, files."""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat as stat_module
import sys

from runtime.startup import StartError

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


# --- users and folders ------------------------------------------------------------------------

def target_user(options, env: dict[str, str]) -> pwd.struct_passwd:
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
