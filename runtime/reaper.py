"""`mlws start` stays the parent of everything the workspace runs, and takes it all down at the end.

supervisord stops its programs by process group (stopasgroup/killasgroup). A process that
daemonizes (forks, setsid, forks again: the desktop session's ssh-agent, gpg-agent and dbus-daemon,
a user's `nohup … &` in a Jupyter terminal, gpg-agent started by `git commit -S`) leaves that group,
and its parent exits, so without help it is re-parented to init and outlives the workspace.

So the runtime does not exec supervisord: it marks itself a child subreaper (Linux prctl
PR_SET_CHILD_SUBREAPER), so every orphan below it is re-parented to it instead of to init, runs
supervisord as its child, forwards the stop signals to it, reaps every zombie (it may be PID 1 of a
container, where nobody else would), and once supervisord has exited, terminates whatever is left
below it: SIGTERM, a short grace period, SIGKILL. It exits with supervisord's exit code.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
# The signals a container runtime, a terminal or an operator sends to stop or poke supervisord
# (it reopens its logs on SIGUSR2 and reloads on SIGHUP): all passed on unchanged.
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
GRACE_SECONDS = 2.0  # after SIGTERM, before SIGKILL: the whole stop must stay within a few seconds


def set_child_subreaper() -> bool:
    """Make orphaned descendants ours instead of init's. False where prctl is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def parent_table(proc: str = "/proc") -> dict[int, int]:
    """{pid: ppid} of every process visible in `proc` (threads are not listed there)."""
    table = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "stat"), encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ")".
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1].isdigit():
            table[int(entry)] = int(fields[1])
    return table


def descendants_of(pid: int, proc: str = "/proc") -> list[int]:
    """Every process below `pid` (children, their children, …), parents before their children."""
    children: dict[int, list[int]] = {}
    for child, parent in parent_table(proc).items():
        children.setdefault(parent, []).append(child)
    found, queue = [], list(children.get(pid, ()))
    while queue:
        current = queue.pop(0)
        if current in found or current == pid:
            continue
        found.append(current)
        queue.extend(children.get(current, ()))
    return found


def is_zombie(pid: int, proc: str = "/proc") -> bool:
    try:
        with open(os.path.join(proc, str(pid), "stat"), encoding="utf-8", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return True  # gone counts as dead
    return stat[stat.rfind(")") + 2:].split()[:1] == ["Z"]


def reap_zombies() -> None:
    """Collect every child that has exited, without waiting."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def living_descendants() -> list[int]:
    reap_zombies()
    return [pid for pid in descendants_of(os.getpid()) if not is_zombie(pid)]


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def stop_descendants(grace_seconds: float = GRACE_SECONDS) -> tuple[list[int], list[int]]:
    """SIGTERM everything below us, wait up to `grace_seconds`, SIGKILL the rest; return the pids
    sent SIGTERM and those that had to be killed. Rescanned each round: a dying daemon's children
    become ours too."""
    deadline = time.monotonic() + grace_seconds
    signalled: set[int] = set()
    while True:
        left = living_descendants()
        if not left:
            return sorted(signalled), []
        fresh = [pid for pid in left if pid not in signalled]
        signal_all(fresh, signal.SIGTERM)
        signalled.update(fresh)
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    killed = []
    kill_deadline = time.monotonic() + 2.0
    while time.monotonic() < kill_deadline:
        left = living_descendants()
        if not left:
            break
        signal_all(left, signal.SIGKILL)
        killed.extend(pid for pid in left if pid not in killed)
        time.sleep(0.02)
    reap_zombies()
    return sorted(signalled), killed


def exit_code(status: int) -> int:
    """A wait status as a shell would report it: the exit code, or 128 + the killing signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _reap(child: int):
    """Reap every exited child without waiting; the wait status of `child` if it is among them."""
    found = None
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found if found is not None else 0  # no child at all: cannot happen, never spin
        if pid == 0:
            return found
        if pid == child:
            found = wait_status


def run_supervised(argv: list[str], env: dict[str, str], log=None) -> int:
    """Run argv (supervisord) as our child until it exits, then stop every descendant left.

    Returns the child's exit code (128 + signal if a signal ended it).

    The stop signals and SIGCHLD stay blocked while the child runs, and are taken one at a time
    with sigwaitinfo(): a signal is then never lost. (With Python signal handlers around a
    blocking waitpid(), a signal arriving just before the wait4 system call began ran its C
    handler only, the Python handler waited for wait4 to return, and the child never got the
    signal: a `docker stop` then ended with SIGKILL. Seen 1-4 times in 40 immediate SIGTERMs.)
    """
    set_child_subreaper()
    waited = (*FORWARDED_SIGNALS, signal.SIGCHLD)
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        # The child starts with an empty signal mask, whatever ours is.
        child = os.posix_spawn(argv[0], argv, env, setsigmask=())
        status = None
        while status is None:
            status = _reap(child)  # every exited child: orphans re-parented to us are reaped too
            if status is not None:
                break
            info = signal.sigwaitinfo(waited)
            if info.si_signo != signal.SIGCHLD:
                try:
                    os.kill(child, info.si_signo)
                except ProcessLookupError:
                    pass
        # supervisord is gone and nothing may outlive it; a repeated stop signal changes nothing now.
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    code = exit_code(status)
    began = time.monotonic()
    terminated, killed = stop_descendants()
    if log and terminated:
        log(f"stopped {len(terminated)} process(es) left running after supervisord exited"
            + (f" ({len(killed)} with SIGKILL)" if killed else "") + f" in {time.monotonic() - began:.1f} s")
    return code
