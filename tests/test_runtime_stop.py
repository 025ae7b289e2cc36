"""Nothing of the workspace outlives its stop: a tool's process that daemonizes (fork, setsid,
fork: out of supervisord's process group, like the desktop's ssh-agent) is still stopped when
`mlws start` gets SIGTERM, because the runtime is the subreaper of everything below it
(runtime/reaper.py)."""
from __future__ import annotations

import json
import os

from tests.runtime_helpers import DAEMONIZE, Workspace, alive, read_pid


def add_daemonizing_tool(workspace: Workspace, mode: str) -> str:
    """Add a tool to this workspace's own manifest copy whose process leaves a daemon behind and
    keeps running; returns the file the daemon writes its pid to."""
    with open(workspace.manifest, encoding="utf-8") as handle:
        data = json.load(handle)
    data["tools"].append({
        "name": f"daemonizer-{mode}", "description": "leaves a setsid daemon behind", "health": False,
        "env": {}, "menu": [], "port": None, "route": None,
        "processes": [{"name": "main", "env": {}, "ready": None,
                       "command": ["python3", "-c", DAEMONIZE, "{tool_dir}/daemon.pid", mode, "sleep"]}],
    })
    with open(workspace.manifest, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    return os.path.join(workspace.runtime_dir, "tools", f"daemonizer-{mode}", "daemon.pid")


def test_sigterm_stops_daemons_that_left_their_process_group():
    workspace = Workspace(name="reaper", manifest_tools=())
    pid_files = [add_daemonizing_tool(workspace, mode) for mode in ("polite", "stubborn")]
    try:
        workspace.start()
        daemons = [read_pid(path) for path in pid_files]
        mains = [read_pid(path + ".main") for path in pid_files]
        # Positive control: each daemon runs, in a process group and session other than its tool
        # process's (so supervisord's stopasgroup/killasgroup cannot reach it), re-parented to
        # `mlws start` (the subreaper), not to init.
        for daemon, main in zip(daemons, mains):
            assert alive(daemon) and alive(main)
            assert os.getpgid(daemon) != os.getpgid(main)
            assert os.getsid(daemon) != os.getsid(main)
            with open(f"/proc/{daemon}/stat", encoding="utf-8") as handle:
                stat = handle.read()
            assert int(stat[stat.rfind(")") + 2:].split()[1]) == workspace.process.pid
        took = workspace.stop(timeout=15)
        assert workspace.process.returncode == 0, workspace.text()[-3000:]
        assert [pid for pid in daemons + mains if alive(pid)] == [], workspace.text()[-3000:]
        # supervisord's own stop (up to stopwaitsecs=3) plus the reaper's grace for the stubborn one.
        assert took < 10, f"the stop took {took:.1f}s"
        assert "stopped 2 process(es) left running after supervisord exited (1 with SIGKILL)" in workspace.text()
        print(f"stopped in {took:.2f}s")
    finally:
        workspace.cleanup()
        for path in pid_files:
            for file in (path, path + ".main"):
                try:
                    pid = read_pid(file, timeout=0)
                except (AssertionError, OSError, ValueError):
                    continue
                if alive(pid):
                    os.kill(pid, 9)
