"""Start one supervised program from a JSON file: `python -m runtime.launch <program.json>`.

The supervisor configuration only ever contains this command and runtime-made paths; the real
argv and environment live in the JSON file (mode 0600), so quotes, newlines, `%` or `;` in any
value never meet supervisor's ini syntax. Keys: argv (list, argv[0] an absolute path), env (the
complete environment), cwd, umask (int or null), stale_sockets (optional list of unix socket
paths the program binds and does not remove itself: a run killed by SIGKILL leaves them behind
and the next bind would fail, so they are removed first).

Before it starts the program, it kills what is left of the program's previous run. supervisord
puts each program in its own process group; when a program dies by SIGKILL its children stay
behind in that group (nginx's workers, a tool's helper processes) and can keep holding the port,
so the restarted program could not bind it. The group of each run is recorded next to the JSON
file (`<program>.pgid`). Processes that left the group (a Jupyter kernel has a session of its
own; a daemon calls setsid) are found by the run's mark instead: every program gets
`MLWS_RUN=<program>:<pid>` in its environment, which its descendants inherit. They are re-parented
to `mlws start` (runtime/reaper.py), not to init, so they would otherwise live until the workspace
stops: a kernel that was still starting when Jupyter died never notices (ipykernel's parent
poller gives up when the parent changed before it started, and waits for init otherwise).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time


def own_processes(file: str, mode: str = "rb"):
    """(pid, contents of /proc/<pid>/<file>) for each process of this user (those that vanish
    while we look are skipped)."""
    uid = os.getuid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/{file}", mode) as handle:
                yield int(entry), handle.read()
        except OSError:
            continue


def processes_in_group(pgid: int) -> list[int]:
    """PIDs of this user's processes whose process group is pgid."""
    found = []
    for pid, stat in own_processes("stat"):
        # Fields after the command name, which is in parentheses and may contain anything.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            found.append(pid)
    return found


def processes_marked(mark: str) -> list[int]:
    """PIDs of this user's processes whose environment holds exactly `mark` ("NAME=VALUE")."""
    wanted = mark.encode()
    return [pid for pid, environ in own_processes("environ") if wanted in environ.split(b"\0")]


def run_mark(program: str, pid: int) -> str:
    return f"MLWS_RUN={program}:{pid}"


def reap_previous_run(record: str, wait_seconds: float = 3.0, program: str = "") -> list[int]:
    """Kill what is left of the previous run recorded in `record` (its process group, and every
    process carrying its run mark); return those still not gone."""
    try:
        with open(record, encoding="utf-8") as handle:
            previous = int(handle.read().strip())
    except (OSError, ValueError):
        return []
    own_group = os.getpgrp()
    if previous == own_group:
        return []
    leftovers = [pid for pid in processes_in_group(previous) if pid != os.getpid()]
    if program:
        leftovers += [pid for pid in processes_marked(run_mark(program, previous))
                      if pid != os.getpid() and pid not in leftovers]
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait_seconds
    while leftovers and time.monotonic() < deadline:
        # Killed orphans are reaped by their new parent (mlws start, or init); wait until they
        # are gone so the ports they held are free again.
        leftovers = [pid for pid in leftovers if os.path.exists(f"/proc/{pid}")
                     and not _is_zombie(pid)]
        time.sleep(0.05)
    return leftovers


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2:].split()[:1] == ["Z"]


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    record = os.path.splitext(argv[1])[0] + ".pgid"
    program = os.path.splitext(os.path.basename(argv[1]))[0]
    reap_previous_run(record, program=program)
    if os.getpgrp() == os.getpid():
        # Only a group of our own is worth recording (supervisord gives each program one).
        with open(record, "w", encoding="utf-8") as handle:
            handle.write(f"{os.getpgrp()}\n")
    for path in spec.get("stale_sockets") or []:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    if spec.get("umask") is not None:
        os.umask(int(spec["umask"]))
    if spec.get("cwd"):
        os.chdir(spec["cwd"])
    # The run's mark (our pid is the program's after exec, and the group's recorded above).
    env = {**spec["env"], "MLWS_RUN": run_mark(program, os.getpid()).split("=", 1)[1]}
    os.execve(spec["argv"][0], spec["argv"], env)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
