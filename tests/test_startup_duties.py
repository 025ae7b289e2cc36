"""Start-up as named steps, and the duties added as steps: the user's software environment (pip
installs that persist), configuration backup and restore, start-up hooks; the cron schedules."""
from __future__ import annotations

import datetime
import importlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types

import pytest

from runtime import backup, cron
from runtime.startup import STEPS_DIR, StartContext, run_step, step_names
from tests.runtime_helpers import REPO, Workspace
from tests.test_runtime_gateway import run_code


# --- the steps ---------------------------------------------------------------------------------

def test_steps_run_in_the_order_docs_runtime_md_states():
    with open(os.path.join(REPO, "docs", "runtime.md"), encoding="utf-8") as handle:
        documented = re.findall(r"^\| `(\d\d_[a-z_]+)` \|", handle.read(), re.MULTILINE)
    assert documented == step_names()
    for name in step_names():
        module = importlib.import_module(f"runtime.steps.{name}")
        assert callable(module.run) and module.__doc__, name
    assert sorted(os.listdir(STEPS_DIR)) != []


def fake_context(home: str, work: str, **settings) -> StartContext:
    user = types.SimpleNamespace(pw_dir=home, pw_name=pwd.getpwuid(os.getuid()).pw_name, pw_uid=os.getuid())
    defaults = {"backup_schedule": "0 * * * *", "hooks_strict": False}
    defaults.update(settings)
    return StartContext(options=types.SimpleNamespace(dry_run=True), settings=types.SimpleNamespace(**defaults),
                        manifest=None, tools=[], user=user, env={"PATH": os.environ["PATH"]},
                        runtime_dir="", workspace_dir=work, path_env=os.environ["PATH"],
                        tool_env={"PATH": os.environ["PATH"], "HOME": home})


# --- cron ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("expression, after, expected", [
    ("0 * * * *", "2026-12-01 23:59:30", "2026-12-02 00:00"),
    ("*/15 * * * *", "2026-12-01 10:14:00", "2026-12-01 10:15"),
    ("30 2 * * mon", "2026-12-01 23:00:00", "2026-12-07 02:30"),
    ("0 0 29 2 *", "2026-03-01 00:00:00", "2028-02-29 00:00"),
    ("5 4 1 * 1-5", "2026-12-01 23:00:00", "2026-12-02 04:05"),  # both day fields: either matches
    ("@daily", "2026-12-01 00:00:00", "2026-12-02 00:00"),
    ("0 12 * * 7", "2026-12-01 00:00:00", "2026-12-06 12:00"),  # 7 is Sunday too
])
def test_cron_next_run(expression, after, expected):
    moment = datetime.datetime.strptime(after, "%Y-%m-%d %H:%M:%S")
    assert cron.parse(expression).next_after(moment).strftime("%Y-%m-%d %H:%M") == expected


@pytest.mark.parametrize("expression, message", [
    ("0 * *", "expected 5 fields"), ("61 * * * *", "minute: '61' is outside 0-59"),
    ("x * * * *", "minute: 'x' is not a number"), ("*/0 * * * *", "step '0' must be a positive number"),
    ("0 0 * 13 *", "month: '13' is outside 1-12"),
])
def test_cron_refuses_bad_expressions(expression, message):
    with pytest.raises(cron.CronError, match=re.escape(message)):
        cron.parse(expression)


def test_bad_backup_schedule_is_refused_before_anything_starts():
    ws = Workspace(env={"CONFIG_BACKUP_ENABLED": "every hour", "MLWS_HOOKS_STRICT": "maybe"}, name="badbackup")
    try:
        result = subprocess.run(ws.command(), env=ws.env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert "CONFIG_BACKUP_ENABLED='every hour': expected true/false or a cron expression" in result.stderr
        assert "MLWS_HOOKS_STRICT='maybe'" in result.stderr
        assert not os.path.exists(os.path.join(ws.runtime_dir, "supervisord.conf"))
    finally:
        ws.cleanup()


# --- backup and restore --------------------------------------------------------------------------

def make_home(home: str) -> None:
    files = {
        ".gitconfig": "[user]\n\tname = Ada\n",
        ".jupyter/lab/user-settings/@jupyterlab/apputils-extension/themes.jupyterlab-settings": '{"theme": "JupyterLab Dark"}',
        ".local/share/code-server/User/settings.json": '{"editor.fontSize": 17}',
        ".ssh/config": "Host lab\n  HostName lab.example\n",
        ".ssh/id_ed25519": "PRIVATE\n",
        ".ssh/authorized_keys": "ssh-ed25519 AAAA user@laptop\n",
        ".ssh/environment": "SECRET=1\n",
        ".config/xfce4/xfconf/xfce-perchannel-xml/xsettings.xml": "<channel/>",
        ".workspace/tools/mine.json": '{"id": "mine", "name": "Mine", "url_path": "/tools/1234/"}',
    }
    for relative, text in files.items():
        path = os.path.join(home, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    os.chmod(os.path.join(home, ".ssh"), 0o700)
    os.chmod(os.path.join(home, ".ssh", "id_ed25519"), 0o600)


def test_backup_then_restore_into_a_new_home_finds_everything(tmp_path):
    old_home, new_home, work = tmp_path / "old", tmp_path / "new", tmp_path / "work"
    make_home(str(old_home))
    folder, count = backup.back_up(str(old_home), str(work))
    assert count == 8  # everything but ~/.ssh/environment
    assert os.path.realpath(work / ".workspace" / "backup") == folder
    os.makedirs(new_home)
    # The new container's home already has a newer file of its own: it must survive the restore.
    os.makedirs(new_home / ".local/share/code-server/User")
    (new_home / ".local/share/code-server/User/settings.json").write_text('{"editor.fontSize": 12}')
    future = time.time() + 60
    os.utime(new_home / ".local/share/code-server/User/settings.json", (future, future))
    run_step("15_restore_backup", fake_context(str(new_home), str(work)))
    assert (new_home / ".gitconfig").read_text() == "[user]\n\tname = Ada\n"
    assert "JupyterLab Dark" in (new_home / ".jupyter/lab/user-settings/@jupyterlab/apputils-extension/themes.jupyterlab-settings").read_text()
    assert (new_home / ".ssh/config").read_text().startswith("Host lab")
    assert (new_home / ".ssh/authorized_keys").exists() and (new_home / ".workspace/tools/mine.json").exists()
    assert (new_home / ".config/xfce4/xfconf/xfce-perchannel-xml/xsettings.xml").exists()
    assert not (new_home / ".ssh/environment").exists()
    assert os.stat(new_home / ".ssh").st_mode & 0o777 == 0o700
    assert os.stat(new_home / ".ssh/id_ed25519").st_mode & 0o777 == 0o600
    assert (new_home / ".local/share/code-server/User/settings.json").read_text() == '{"editor.fontSize": 12}'


def test_restore_is_off_with_config_backup_disabled(tmp_path):
    make_home(str(tmp_path / "old"))
    backup.back_up(str(tmp_path / "old"), str(tmp_path / "work"))
    os.makedirs(tmp_path / "new")
    run_step("15_restore_backup", fake_context(str(tmp_path / "new"), str(tmp_path / "work"), backup_schedule=None))
    assert os.listdir(tmp_path / "new") == []


def test_a_backup_killed_midway_leaves_the_previous_one_whole(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    make_home(str(home))
    first, _ = backup.back_up(str(home), str(work))
    # A large file makes the next backup take long enough to be killed in the middle.
    big = home / ".jupyter" / "big.bin"
    with open(big, "wb") as handle:
        for _ in range(400):
            handle.write(os.urandom(1 << 20))
    (home / ".gitconfig").write_text("[user]\n\tname = Changed\n")
    process = subprocess.Popen([sys.executable, "-m", "runtime.backup", "--home", str(home), "--work", str(work)],
                               cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    parent = work / ".workspace"
    deadline = time.monotonic() + 30
    partial = []
    while time.monotonic() < deadline and not partial:
        partial = [name for name in os.listdir(parent)
                   if name.startswith("backup-") and str(parent / name) != first and (parent / name / ".jupyter").exists()]
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert partial, "the second backup finished before it could be killed"
    assert os.path.realpath(parent / "backup") == first
    assert (parent / "backup" / ".gitconfig").read_text() == "[user]\n\tname = Ada\n"
    # The next backup removes the half-written folder and switches to a complete one.
    folder, _ = backup.back_up(str(home), str(work))
    assert sorted(os.listdir(parent)) == ["backup", os.path.basename(folder)]
    assert (parent / "backup" / ".gitconfig").read_text() == "[user]\n\tname = Changed\n"
    assert os.path.getsize(parent / "backup" / ".jupyter" / "big.bin") == 400 << 20


# --- start-up hooks --------------------------------------------------------------------------------

def write_hook(path: str, text: str, executable: bool = False) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o755 if executable else 0o644)


def prepared_workspace(name: str, env: dict[str, str] | None = None) -> Workspace:
    ws = Workspace(env=env, name=name)
    os.makedirs(ws.workspace_dir, exist_ok=True)
    order = os.path.join(ws.workspace_dir, "order.log")
    write_hook(os.path.join(ws.workspace_dir, "on_startup.sh"), f'echo on_startup "$(id -un)" >> {order}\n')
    folder = os.path.join(ws.workspace_dir, ".workspace", "startup.d")
    write_hook(os.path.join(folder, "10-env.sh"), f'echo 10-env >> {order}\nexport MLWS_HOOK_VALUE="from a hook"\n')
    write_hook(os.path.join(folder, "20-fails"), f"#!/bin/sh\necho 20-fails >> {order}\nexit 3\n", executable=True)
    write_hook(os.path.join(folder, "30-last.sh"), f"echo 30-last >> {order}\n")
    write_hook(os.path.join(folder, "README.txt"), "not a hook: neither *.sh nor executable\n")
    if os.geteuid() == 0 and ws.env.get("NB_USER"):
        for root, dirs, files in os.walk(ws.folder):
            for item in dirs + files:
                shutil.chown(os.path.join(root, item), ws.env["NB_USER"])
    return ws


def test_hooks_run_in_order_as_the_user_and_a_failure_is_reported():
    ws = prepared_workspace("hooks").start()
    try:
        with open(os.path.join(ws.workspace_dir, "order.log"), encoding="utf-8") as handle:
            lines = handle.read().split()
        user = ws.env.get("NB_USER") or pwd.getpwuid(os.getuid()).pw_name
        assert lines == ["on_startup", user, "10-env", "20-fails", "30-last"]
        assert "start-up hook .workspace/startup.d/20-fails failed with exit code 3" in ws.text()
        # What a sourced hook exports reaches the tools (here: the kernel).
        assert run_code(ws, "import os; print(os.environ.get('MLWS_HOOK_VALUE'))").strip() == "from a hook"
    finally:
        ws.cleanup()


def test_strict_hooks_stop_the_workspace():
    ws = prepared_workspace("stricthooks", {"MLWS_HOOKS_STRICT": "true"})
    try:
        result = subprocess.run(ws.command(), env=ws.env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2
        assert "start-up hook .workspace/startup.d/20-fails failed with exit code 3 (MLWS_HOOKS_STRICT=true)" in result.stderr
        assert "30-last" not in open(os.path.join(ws.workspace_dir, "order.log")).read()
    finally:
        ws.cleanup()


# --- pip installs that work and persist ----------------------------------------------------------

def test_pip_install_in_a_notebook_imports_at_once_and_survives_a_new_container():
    probe = subprocess.run([sys.executable, "-c", "import tabulate"], capture_output=True)
    assert probe.returncode != 0, "tabulate is in the image's environment: choose another package for this test"
    ws = Workspace(name="pip").start()
    try:
        out = run_code(ws, "%pip install -q tabulate\nimport tabulate, sys\nprint(tabulate.__file__)\nprint(sys.prefix)")
        location, prefix = out.strip().splitlines()[-2:]
        assert location.startswith(os.path.join(ws.workspace_dir, ".workspace", "python"))
        # The image's pinned packages stay visible beside the user's.
        assert run_code(ws, "import numpy, jupyter_server; print('ok')").strip() == "ok"
        ws.stop()
        # A new container: the same work folder, a fresh runtime folder.
        shutil.rmtree(ws.runtime_dir)
        ws.process = None
        ws.port = __import__("tests.runtime_helpers", fromlist=["free_port"]).free_port()
        ws.output.clear()
        ws.start()
        assert run_code(ws, "import tabulate; print(tabulate.tabulate([[1, 2]]))").strip().splitlines()[1] == "1  2"
        # A terminal's `pip` is the same environment.
        answer = subprocess.run(["bash", "-c", "command -v pip"], capture_output=True, text=True,
                                env=json.load(open(os.path.join(ws.runtime_dir, "programs", "jupyter-server.json")))["env"])
        assert answer.stdout.strip() == os.path.join(prefix, "bin", "pip")
    finally:
        ws.cleanup()
