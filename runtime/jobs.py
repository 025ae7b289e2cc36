"""Jobs: run code instead of the workspace (`EXECUTE_CODE`), or inside it (`mlws job CODE`).

The original ML Workspace is also a job runner: with EXECUTE_CODE set, the container runs that
code and exits with its exit code. The code is a script, a folder with `__main__.py`, or a
pip-style git URL (`git+https://host/repo.git@ref#subdirectory=path`). Before it runs, the code's
folder may prepare it, in this order: `environment.yml` (conda; no flavor has a conda-compatible
tool, so it is refused with a clear error rather than skipped), `setup.sh` (bash) and
`requirements.txt` (pip, into the user environment of runtime/userenv.py: the same venv in the
work folder that `pip install` in a terminal uses, layered on the image's Python).

Every step and the job itself run as children of this process through runtime/reaper.py: stop
signals (SIGTERM, SIGINT, ...) are passed on, the exit code is the child's (128 + signal when a
signal ended it) and nothing the job left running outlives it. Exit codes of the runner itself:
1 when the code is missing, cannot be fetched or cannot be prepared (the message names what and
why), 2 for usage errors.
"""
from __future__ import annotations

import dataclasses
import os
import posixpath
import signal
import subprocess
import sys
import tempfile
import urllib.parse

import click

from runtime import reaper, userenv
from runtime.settings import THREAD_VARIABLES, auto_threads, cgroup_cpu_limit
from runtime.startup import StartError, log
from runtime.system import (default_workspace_dir, drop_privileges, ensure_folder, find_executable,
                            target_user, user_environment)

# What the runner does: install and run (the default), only install, or only run.
MODE_ALL = "all"
MODE_REQUIREMENTS_ONLY = "requirements-only"
MODE_CODE_ONLY = "code-only"
MODES = (MODE_ALL, MODE_REQUIREMENTS_ONLY, MODE_CODE_ONLY)
MODE_VARIABLE = "MLWS_JOB_MODE"  # the mode for EXECUTE_CODE where flags cannot be given (an image's env)

GIT_SCHEMES = ("https", "http", "ssh", "file", "git")
OTHER_VCS = ("svn", "hg", "bzr")  # pip knows them; the images have only git
CONDA_TOOLS = ("micromamba", "mamba", "conda")
CONDA_FILE = "environment.yml"
SETUP_FILE = "setup.sh"
REQUIREMENTS_FILE = "requirements.txt"


class JobError(Exception):
    """The code is missing, cannot be fetched or cannot be prepared: exit 1, the message says why."""


class JobUsageError(Exception):
    """A usage error (conflicting flags, a bad MLWS_JOB_MODE): exit 2."""


class JobStopped(BaseException):
    """A stop signal arrived while no step or job was running (during git clone, between steps)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def stop_when_signalled() -> dict:
    """Stop signals outside a running step end the runner cleanly (clone killed, temporary folder
    removed). Without a handler, a runner that is PID 1 of a container would ignore SIGTERM.
    Returns the previous handlers."""

    def stop(signum, _frame):
        raise JobStopped(signum)

    previous = {}
    for signum in reaper.FORWARDED_SIGNALS:
        previous[signum] = signal.signal(signum, stop)
    return previous


@dataclasses.dataclass(frozen=True)
class CodeReference:
    """Where the job's code is: a local path, or a git repository (+ ref and subdirectory)."""

    text: str  # as given, for messages
    path: str | None = None  # local file or folder (absolute)
    clone_url: str | None = None  # what `git clone` gets (the URL without `git+`, ref and fragment)
    ref: str | None = None  # tag, branch or commit after `@`
    subdirectory: str | None = None  # `#subdirectory=` (relative, inside the repository)


@dataclasses.dataclass(frozen=True)
class JobOptions:
    """Who runs the job, where, and what of it (install steps, the code)."""

    code: str
    mode: str = MODE_ALL
    workspace_dir: str | None = None
    user: str | None = None  # as root: the user to drop to (else $NB_USER)
    args: tuple[str, ...] = ()
    relative_to: str | None = None  # folder a relative local path is resolved from (default: work folder)


# --- the code reference -----------------------------------------------------------------------

def parse_code_reference(text: str, relative_to: str) -> CodeReference:
    """A local path (relative ones from `relative_to`) or a pip-style git URL."""
    value = text.strip()
    if not value:
        raise JobError("no code given: EXECUTE_CODE (or `mlws job CODE`) must name a script, a folder "
                       "with __main__.py or a git+https:// / git+ssh:// / git+file:// URL")
    scheme, sep, _ = value.partition("://")
    if not sep:
        return CodeReference(text=value, path=os.path.abspath(os.path.join(relative_to, os.path.expanduser(value))))
    vcs, plus, transport = scheme.partition("+")
    if plus and vcs.lower() in OTHER_VCS:
        raise JobError(f"{value!r}: {vcs}+ URLs are not supported (this image has git only); "
                       "use a git+https://, git+ssh:// or git+file:// URL")
    if not plus or vcs.lower() != "git" or transport.lower() not in GIT_SCHEMES:
        raise JobError(f"{value!r}: unknown URL scheme {scheme!r}; expected a local path or a pip-style git URL "
                       "(git+https://host/repo.git[@ref][#subdirectory=path], also git+ssh:// and git+file://)")
    return parse_git_url(value, transport.lower())


def parse_git_url(value: str, transport: str) -> CodeReference:
    """`git+<transport>://host/path[@ref][#subdirectory=sub]`, as pip reads it: the ref follows
    the last `@` of the path (an `@` in the host part is the ssh user)."""
    parts = urllib.parse.urlsplit(value[len("git+"):])
    path, at, ref = parts.path.rpartition("@")
    if not at:
        path, ref = parts.path, ""
    if at and (not ref or ref.startswith("-")):
        raise JobError(f"{value!r}: {'empty ref' if not ref else f'ref {ref!r}'} after '@'; expected a tag, branch or commit")
    if not path.strip("/"):
        raise JobError(f"{value!r}: no repository path in the URL")
    fragment = urllib.parse.parse_qs(parts.fragment, keep_blank_values=True)
    subdirectory = (fragment.get("subdirectory") or [None])[-1]
    if subdirectory is not None:
        subdirectory = check_subdirectory(value, subdirectory)
    clone_url = urllib.parse.urlunsplit((transport, parts.netloc, path, "", ""))
    return CodeReference(text=value, clone_url=clone_url, ref=ref or None, subdirectory=subdirectory)


def check_subdirectory(value: str, subdirectory: str) -> str:
    normal = posixpath.normpath(subdirectory.strip())
    if not subdirectory.strip() or normal.startswith("/") or normal == ".." or normal.startswith("../"):
        raise JobError(f"{value!r}: subdirectory={subdirectory!r}: expected a relative path inside the repository")
    return normal


# --- fetching ---------------------------------------------------------------------------------

def git_environment(env: dict[str, str]) -> dict[str, str]:
    """Never wait for a password nobody can type (a container has no terminal)."""
    result = dict(env)
    result["GIT_TERMINAL_PROMPT"] = "0"
    result.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return result


def run_git(git: str, args: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run([git, *args], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        # git's first lines say what went wrong ("fatal: ... does not appear to be a git repository").
        detail = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        raise JobError(f"{what} (git exited with {result.returncode}: "
                       f"{' '.join(detail[:2]) or 'no output'})")


def fetch(reference: CodeReference, scratch_dir: str, env: dict[str, str]) -> str:
    """The local path of the code: the given path, or the clone's (sub)folder in `scratch_dir`."""
    if reference.clone_url is None:
        if not os.path.exists(reference.path):
            raise JobError(f"code {reference.text!r}: no such file or folder ({reference.path})")
        return reference.path
    git = find_executable("git", env.get("PATH", os.defpath))
    if git is None:
        raise JobError(f"cannot fetch {reference.text!r}: git is not on PATH")
    target = os.path.join(scratch_dir, "code")
    log(f"job: fetching {reference.text} (git clone)")
    genv = git_environment(env)
    run_git(git, ["clone", "--quiet", "--no-checkout", "--", reference.clone_url, target], genv,
            f"cannot fetch {reference.text!r}: cloning {reference.clone_url} failed")
    checkout = reference.ref or "HEAD"
    run_git(git, ["-C", target, "checkout", "--quiet", checkout, "--"], genv,
            f"cannot fetch {reference.text!r}: no ref {checkout!r} in {reference.clone_url}")
    if reference.subdirectory is None:
        return target
    code = os.path.join(target, reference.subdirectory)
    if not os.path.exists(code):
        raise JobError(f"cannot fetch {reference.text!r}: subdirectory {reference.subdirectory!r} is not in "
                       f"{reference.clone_url} at {checkout}")
    return code


# --- what runs --------------------------------------------------------------------------------

def code_folder(code: str) -> str:
    """The folder the install files are looked for in (and setup.sh and pip run from)."""
    return code if os.path.isdir(code) else os.path.dirname(code)


def entry_command(code: str, python: str, bash: str) -> list[str]:
    """argv that runs the code: .py with Python, .sh with bash, a folder's __main__.py with
    Python, any other file executed as it is."""
    if os.path.isdir(code):
        if not os.path.isfile(os.path.join(code, "__main__.py")):
            raise JobError(f"code folder {code}: no __main__.py in it (a folder job runs its __main__.py)")
        return [python, code]
    if code.endswith(".py"):
        return [python, code]
    if code.endswith(".sh"):
        return [bash, code]
    if os.access(code, os.X_OK):
        return [code]
    raise JobError(f"code {code}: not a .py or .sh script and not executable (chmod +x it, or name it .py/.sh)")


def install_steps(folder: str, python: str, bash: str, path_env: str) -> list[tuple[str, list[str]]]:
    """(name, argv) of each install file present in `folder`, in the original's order."""
    steps = []
    if os.path.isfile(os.path.join(folder, CONDA_FILE)):
        found = [tool for tool in CONDA_TOOLS if find_executable(tool, path_env)]
        raise JobError(
            f"{os.path.join(folder, CONDA_FILE)}: conda environments are not supported by this image "
            + ("(its flavor has no conda-compatible tool such as micromamba)" if not found else
               f"(found {found[0]} on PATH, but mlws runs environment.yml only in a flavor that ships one)")
            + f"; list the packages in {REQUIREMENTS_FILE} instead, or run with --code-only to skip installs")
    if os.path.isfile(os.path.join(folder, SETUP_FILE)):
        steps.append((SETUP_FILE, [bash, os.path.join(folder, SETUP_FILE)]))
    if os.path.isfile(os.path.join(folder, REQUIREMENTS_FILE)):
        steps.append((REQUIREMENTS_FILE, [python, "-m", "pip", "install", "--requirement",
                                          os.path.join(folder, REQUIREMENTS_FILE)]))
    return steps


def run_child(argv: list[str], env: dict[str, str], cwd: str) -> int:
    """Run argv in `cwd` until it exits, stop signals passed on; its exit code (128 + signal)."""
    sys.stdout.flush()
    sys.stderr.flush()
    previous_dir = os.getcwd()
    # run_supervised leaves the stop signals ignored when it returns; between two steps they must
    # act again (a container stopped then must stop), so the handlers are put back.
    previous_handlers = {signum: signal.getsignal(signum) for signum in reaper.FORWARDED_SIGNALS}
    os.chdir(cwd)
    try:
        return reaper.run_supervised(argv, env, log)
    finally:
        os.chdir(previous_dir)
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)


# --- environment ------------------------------------------------------------------------------

def thread_environment(env: dict[str, str]) -> dict[str, str]:
    """MAX_NUM_THREADS as the workspace applies it (runtime/settings.py), only where unset."""
    raw = env.get("MAX_NUM_THREADS", "auto").strip()
    if raw.lower() in ("", "auto"):
        threads = auto_threads(os.cpu_count(), cgroup_cpu_limit())
    elif raw.isdigit() and int(raw) > 0:
        threads = int(raw)
    else:
        raise JobUsageError(f"MAX_NUM_THREADS={raw!r}: expected \"auto\" or a positive integer")
    return {name: str(threads) for name in THREAD_VARIABLES if not env.get(name)}


def image_path(env: dict[str, str], workspace_dir: str) -> str:
    """PATH without user environments' folders (this work folder's, and an active VIRTUAL_ENV).
    Inside a running workspace (`mlws job` in a terminal) they come first: the image's `python3`
    is the base, and the job's PATH gets the environment's folders once (userenv.tool_environment)."""
    own = os.path.join(os.path.abspath(workspace_dir), os.path.dirname(userenv.ENV_FOLDER)) + os.sep
    virtual_env = env.get("VIRTUAL_ENV")
    kept = [entry for entry in env.get("PATH", os.defpath).split(os.pathsep)
            if not os.path.abspath(entry or ".").startswith(own)
            and not (virtual_env and os.path.abspath(entry or ".") == os.path.join(virtual_env, "bin"))]
    return os.pathsep.join(kept)


def job_environment(env: dict[str, str], workspace_dir: str) -> tuple[dict[str, str], str]:
    """The job's environment (the user environment's python and pip first on PATH) and its python."""
    path_env = image_path(env, workspace_dir)
    base_python = find_executable("python3", path_env)
    if base_python is None:
        raise JobError("no `python3` on PATH: the job needs the image's Python")
    try:
        paths = userenv.ensure(workspace_dir, base_python)
    except (userenv.UserEnvError, OSError) as error:
        raise JobError(f"cannot prepare the Python environment for the job: {error}") from error
    result = dict(env)
    result.update(thread_environment(env))
    result.update(userenv.tool_environment(paths, path_env))
    return result, paths.python


def resolve_mode(requirements_only: bool, code_only: bool, env: dict[str, str]) -> str:
    if requirements_only and code_only:
        raise JobUsageError("--requirements-only and --code-only exclude each other: give one")
    if requirements_only:
        return MODE_REQUIREMENTS_ONLY
    if code_only:
        return MODE_CODE_ONLY
    raw = env.get(MODE_VARIABLE, "").strip().lower() or MODE_ALL
    if raw not in MODES:
        raise JobUsageError(f"{MODE_VARIABLE}={env.get(MODE_VARIABLE)!r}: expected one of {', '.join(MODES)}")
    return raw


# --- the runner -------------------------------------------------------------------------------

def become_user(options: JobOptions, env: dict[str, str]) -> tuple[dict[str, str], str]:
    """As root: drop to the workspace user (like `mlws start`). The environment and work folder."""
    user = target_user(options, env)
    workspace_dir = os.path.abspath(options.workspace_dir or env.get("WORKSPACE_DIR") or default_workspace_dir(user))
    if os.geteuid() == 0:
        ensure_folder(workspace_dir, user)
        drop_privileges(user)
        log(f"job: running as user {user.pw_name} (uid {user.pw_uid})")
    os.makedirs(workspace_dir, exist_ok=True)
    if not os.access(workspace_dir, os.W_OK):
        raise JobError(f"work folder {workspace_dir}: not writable by {user.pw_name}")
    return user_environment(env, user), workspace_dir


def run_job(options: JobOptions, environ: dict[str, str] | None = None) -> int:
    """Fetch, prepare and run the job; its exit code (1/2 for the runner's own errors)."""
    env = dict(os.environ if environ is None else environ)
    previous_handlers = stop_when_signalled()
    try:
        env, workspace_dir = become_user(options, env)
        reference = parse_code_reference(options.code, options.relative_to or workspace_dir)
        with tempfile.TemporaryDirectory(prefix="mlws-job-") as scratch:
            return prepare_and_run(reference, options, env, workspace_dir, scratch)
    except (JobUsageError, StartError) as error:
        log(f"error: {error}")
        return 2
    except JobError as error:
        log(f"error: {error}")
        log("job: not run")
        return 1
    except JobStopped as stopped:
        log(f"job: stopped by {signal.Signals(stopped.signum).name} before the job ran to its end")
        return 128 + stopped.signum
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)


def prepare_and_run(reference: CodeReference, options: JobOptions, env: dict[str, str],
                    workspace_dir: str, scratch: str) -> int:
    code = fetch(reference, scratch, env)
    folder = code_folder(code)
    bash = find_executable("bash", env.get("PATH", os.defpath)) or "/bin/bash"
    if options.mode != MODE_REQUIREMENTS_ONLY:
        entry_command(code, "python", bash)  # a code that cannot run fails before anything is installed
    env, python = job_environment(env, workspace_dir)
    if options.mode != MODE_CODE_ONLY:
        for name, step in install_steps(folder, python, bash, env.get("PATH", os.defpath)):
            log(f"job: {name} (in {folder})")
            status = run_child(step, env, folder)
            if status != 0:
                raise JobError(f"{os.path.join(folder, name)} failed with exit code {status}")
    if options.mode == MODE_REQUIREMENTS_ONLY:
        log("job: install steps done (--requirements-only: the code is not run)")
        return 0
    argv = entry_command(code, python, bash) + list(options.args)
    log(f"job: running {' '.join(argv)} (from {workspace_dir})")
    status = run_child(argv, env, workspace_dir)
    log(f"job: exited with code {status}")
    return status


def run_execute_code(code: str, workspace_dir: str | None, user: str | None,
                     requirements_only: bool, code_only: bool) -> int:
    """`mlws start` with EXECUTE_CODE set: the job instead of the workspace."""
    try:
        mode = resolve_mode(requirements_only, code_only, os.environ)
    except JobUsageError as error:
        log(f"error: {error}")
        return 2
    if not code.strip():
        log("error: --requirements-only/--code-only apply to jobs: set EXECUTE_CODE, or use `mlws job CODE`")
        return 2
    return run_job(JobOptions(code=code, mode=mode, workspace_dir=workspace_dir, user=user))


# --- the command ------------------------------------------------------------------------------

@click.command("job")
@click.argument("code")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--requirements-only", is_flag=True, help="Run the install steps (setup.sh, requirements.txt) and exit.")
@click.option("--code-only", is_flag=True, help="Skip the install steps; only run the code.")
@click.option("--workspace-dir", type=click.Path(file_okay=False),
              help="Work folder the job runs from (default $WORKSPACE_DIR, else /workspace if it exists, else ~/workspace).")
@click.option("--user", help="User to run as when started as root (default $NB_USER). Required as root.")
def job(code, args, requirements_only, code_only, workspace_dir, user):
    """Run CODE as a job, the way EXECUTE_CODE runs it (see docs/runtime.md, "Jobs").

    CODE is a script (.py runs with Python, .sh with bash, other files are executed), a folder
    with __main__.py, or a pip-style git URL: git+https://host/repo.git[@ref][#subdirectory=path]
    (also git+ssh:// and git+file://), cloned into a temporary folder. A relative path is taken
    from the current folder. ARGS after CODE (put `--` before options meant for the job) are passed
    to it.

    Before running, from the code's folder, in this order: environment.yml (refused: no flavor has
    a conda-compatible tool), setup.sh (bash), requirements.txt (pip, into the user environment in
    <work folder>/.workspace/python, which the job then runs with). The job runs from the work
    folder; stop signals are passed on to it and its exit code is this command's. Exit 1 when the
    code is missing, cannot be fetched or an install step fails; 2 for usage errors.
    """
    try:
        mode = resolve_mode(requirements_only, code_only, {})
    except JobUsageError as error:
        raise click.UsageError(str(error)) from None
    options = JobOptions(code=code, mode=mode, workspace_dir=workspace_dir, user=user, args=tuple(args),
                         relative_to=os.getcwd())
    sys.exit(run_job(options))
