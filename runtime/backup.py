"""Configuration backup and restore: the user's settings survive a new container.

What: the files and folders of the home listed in COVERED (git identity, Jupyter and JupyterLab
settings and kernels, VS Code's user settings, SSH, the desktop's settings and file-manager
bookmarks, the user's tool-menu entries). Where: `<work folder>/.workspace/backup/`, which the
container keeps because the work folder is the persisted volume.

How a backup stays whole: each backup is written into a new folder `backup-<time>-<pid>` beside
the current one; only when it is complete does the symlink `backup` switch to it (a new symlink
renamed over the old one: rename(2) is atomic), and then the old folder is removed. A crash or
SIGKILL in the middle leaves `backup` pointing at the previous, complete backup; the half-written
folder is removed by the next backup.

Restore copies every backed-up file into the home unless the home's file is newer (a user's edit
since the backup wins), keeping modes and times; `~/.ssh` is kept at 0700.

`python -m runtime.backup --home H --work W [--schedule CRON]` backs up once, then (with a
schedule) at every time the cron expression names; `--restore` restores once.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import signal
import sys
import time

BACKUP_DIR = os.path.join(".workspace", "backup")
# Paths relative to the home; folders are copied whole (minus EXCLUDED names).
COVERED = (
    ".gitconfig",
    ".config/git",
    ".jupyter",
    ".local/share/jupyter/kernels",
    ".local/share/code-server/User/settings.json",
    ".local/share/code-server/User/keybindings.json",
    ".local/share/code-server/User/snippets",
    ".ssh",
    ".config/xfce4",
    ".config/gtk-3.0/bookmarks",
    ".workspace/tools",
    ".filebrowser.db",
)
# Never backed up: sshd's per-session environment file, sockets of an ssh ControlMaster.
EXCLUDED = ("environment",)
PRIVATE_DIRS = (".ssh",)


class BackupError(Exception):
    """A backup or restore could not be done; the message names the path."""


def backup_link(work_dir: str) -> str:
    return os.path.join(work_dir, BACKUP_DIR)


def _copy_tree(source: str, target: str) -> int:
    """Copy a file or folder (symlinks as links, sockets skipped) keeping modes and times."""
    count = 0
    if os.path.islink(source):
        os.symlink(os.readlink(source), target)
        return 1
    if os.path.isfile(source):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)
        return 1
    if not os.path.isdir(source):
        return 0  # a socket, a fifo: nothing to keep
    os.makedirs(target, exist_ok=True)
    for name in sorted(os.listdir(source)):
        if name in EXCLUDED:
            continue
        count += _copy_tree(os.path.join(source, name), os.path.join(target, name))
    shutil.copystat(source, target)
    return count


def remove_partial(work_dir: str) -> None:
    """Folders of backups that never completed (not the one `backup` points at)."""
    parent = os.path.dirname(backup_link(work_dir))
    if not os.path.isdir(parent):
        return
    current = os.path.realpath(backup_link(work_dir))
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if name.startswith("backup-") and os.path.realpath(path) != current:
            shutil.rmtree(path, ignore_errors=True)


def back_up(home: str, work_dir: str) -> tuple[str, int]:
    """Write a new complete backup and switch to it; returns (its folder, files copied)."""
    link = backup_link(work_dir)
    parent = os.path.dirname(link)
    os.makedirs(parent, exist_ok=True)
    remove_partial(work_dir)
    if os.path.isdir(link) and not os.path.islink(link):
        raise BackupError(f"{link}: a folder, expected the symlink mlws switches between backups; move it away")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    folder = os.path.join(parent, f"backup-{stamp}-{os.getpid()}")
    os.makedirs(folder, mode=0o700)
    count = 0
    for relative in COVERED:
        source = os.path.join(home, relative)
        if os.path.lexists(source):
            count += _copy_tree(source, os.path.join(folder, relative))
    _fsync_tree(folder)
    previous = os.path.realpath(link) if os.path.islink(link) else None
    temporary_link = f"{link}.new-{os.getpid()}"
    if os.path.lexists(temporary_link):
        os.unlink(temporary_link)
    os.symlink(os.path.basename(folder), temporary_link)
    os.replace(temporary_link, link)
    _fsync_dir(parent)
    if previous and previous != os.path.realpath(link):
        shutil.rmtree(previous, ignore_errors=True)
    return folder, count


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: str) -> None:
    """The data must be on disk before the switch, or a power cut could leave an empty backup."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(root)


def restore(home: str, work_dir: str) -> int:
    """Copy the backup into the home, never over a newer file; returns the files restored."""
    link = backup_link(work_dir)
    if not os.path.exists(link):
        return 0
    source_root = os.path.realpath(link)
    restored = 0
    for root, dirs, files in os.walk(source_root):
        relative_root = os.path.relpath(root, source_root)
        target_root = os.path.normpath(os.path.join(home, relative_root))
        os.makedirs(target_root, exist_ok=True)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            source = os.path.join(root, name)
            target = os.path.join(target_root, name)
            if os.path.lexists(target) and not os.path.islink(target):
                if os.lstat(target).st_mtime >= os.lstat(source).st_mtime:
                    continue  # the home's copy is as new or newer: the user's edit wins
            if os.path.islink(source):
                if os.path.lexists(target):
                    continue
                os.symlink(os.readlink(source), target)
            else:
                temporary = f"{target}.mlws-restore"
                shutil.copy2(source, temporary)
                os.replace(temporary, target)
            restored += 1
        if relative_root != ".":
            shutil.copystat(root, target_root)
    for private in PRIVATE_DIRS:
        path = os.path.join(home, private)
        if os.path.isdir(path):
            os.chmod(path, 0o700)
    return restored


def run_schedule(home: str, work_dir: str, expression: str) -> None:
    from runtime import cron

    schedule = cron.parse(expression)
    while True:
        try:
            folder, count = back_up(home, work_dir)
            print(f"mlws backup: {count} files to {folder}", flush=True)
        except (OSError, BackupError) as error:
            print(f"mlws backup: failed: {error}", file=sys.stderr, flush=True)
        now = datetime.datetime.now()
        due = schedule.next_after(now)
        time.sleep(max(1.0, (due - now).total_seconds()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.backup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="the workspace user's home")
    parser.add_argument("--work", required=True, help="the work folder (holds .workspace/backup)")
    parser.add_argument("--schedule", help="cron expression: keep running and back up at these times")
    parser.add_argument("--restore", action="store_true", help="restore once instead of backing up")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if args.restore:
            print(f"mlws backup: restored {restore(args.home, args.work)} files", flush=True)
        elif args.schedule:
            run_schedule(args.home, args.work, args.schedule)
        else:
            folder, count = back_up(args.home, args.work)
            print(f"mlws backup: {count} files to {folder}", flush=True)
    except (OSError, BackupError) as error:
        print(f"mlws backup: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
