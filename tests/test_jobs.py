"""Jobs (runtime/jobs.py): `mlws start` with EXECUTE_CODE, and `mlws job CODE`, run for real.

Every test runs the real runner in a subprocess (`python -m runtime start` / `python -m runtime
job`, as the image's entrypoint does), with its own work folder; run as root (CI) it drops to the
unprivileged test user like `mlws start` does. The user environment (a venv under
<work>/.workspace/python/) is made by the runner; requirements.txt installs `tqdm` into it from the
configured package index (pip.conf: the local mirror), so the test first checks that the image's
Python (this venv) does not have it. Git repositories are made by the tests and cloned through
git+file:// URLs.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.runtime_helpers import REPO, runtime_env, shared_tempdir, unprivileged_user

RUN_TIMEOUT = 240
EXTRA_PACKAGE = "tqdm"  # small, pure Python, not a dependency of mlws


def job_user() -> pwd.struct_passwd:
    name = unprivileged_user()
    return pwd.getpwnam(name) if name else pwd.getpwuid(os.geteuid())


def hand_to_job_user(path: str) -> None:
    """As root, the job runs as the test user: give it what the test made (git refuses to read a
    repository owned by someone else: safe.directory)."""
    if os.geteuid() != 0:
        return
    user = job_user()
    for folder, dirs, files in os.walk(path):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.lchown(name, user.pw_uid, user.pw_gid)


@pytest.fixture
def work():
    folder = shared_tempdir("mlws-job-work-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def code_dir():
    folder = shared_tempdir("mlws-job-code-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def write(path: str, text: str, mode: int = 0o644) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(textwrap.dedent(text))
    os.chmod(path, mode)
    return path


def job_env(work: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = runtime_env({"WORKSPACE_DIR": work})
    env.update(extra or {})
    return env


def start_job(work: str, code: str, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`mlws start` with EXECUTE_CODE=code, as the image runs it."""
    env = job_env(work, {"EXECUTE_CODE": code, **(extra or {})})
    return subprocess.run([sys.executable, "-m", "runtime", "start", *args], env=env, cwd="/",
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)


def run_job_command(work: str, *args: str, cwd: str = "/", module: str = "runtime") -> subprocess.CompletedProcess:
    """`mlws job ARGS` (module "generator" is the `mlws` entry point, "runtime" the bare runtime)."""
    return subprocess.run([sys.executable, "-m", module, "job", *args], env=job_env(work), cwd=cwd,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)


def user_site(work: str) -> str:
    found = glob.glob(os.path.join(work, ".workspace", "python", "cpython-*", "lib", "python*", "site-packages"))
    assert len(found) == 1, f"expected one user environment under {work}/.workspace/python, found {found}"
    return found[0]


def read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


PROBE_JOB = """\
import os, sys
print("cwd=" + os.getcwd())
print("python=" + sys.executable)
print("uid=%d" % os.getuid())
print("args=" + ",".join(sys.argv[1:]))
"""


# --- code forms -------------------------------------------------------------------------------

def test_python_script_runs_from_the_work_folder_with_the_user_environment_as_the_workspace_user(work, code_dir):
    script = write(os.path.join(code_dir, "probe.py"), PROBE_JOB)
    result = start_job(work, script)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert lines["cwd"] == work
    assert lines["python"].startswith(os.path.join(work, ".workspace", "python", "cpython-"))
    assert int(lines["uid"]) == job_user().pw_uid
    assert "job: exited with code 0" in result.stderr


def test_shell_script_runs_with_bash_and_its_exit_code_is_the_exit_code(work, code_dir):
    # Not executable, and bash-only syntax: it must be run with bash, not exec'd or run by sh.
    script = write(os.path.join(code_dir, "job.sh"), """\
        if [[ -n "$BASH_VERSION" ]]; then echo "bash $BASH_VERSION in $PWD"; fi
        exit 7
    """)
    result = start_job(work, script)
    assert result.returncode == 7, result.stderr
    assert f"in {work}" in result.stdout and result.stdout.startswith("bash ")
    assert "job: exited with code 7" in result.stderr


def test_other_executable_is_executed_and_a_non_executable_one_is_refused(work, code_dir):
    runnable = write(os.path.join(code_dir, "runme"), "#!/bin/sh\necho executed as \"$0\"\nexit 3\n", 0o755)
    result = start_job(work, runnable)
    assert result.returncode == 3, result.stderr
    assert f"executed as {runnable}" in result.stdout

    plain = write(os.path.join(code_dir, "notes.txt"), "just text\n")
    result = start_job(work, plain)
    assert result.returncode == 1
    assert f"code {plain}: not a .py or .sh script and not executable" in result.stderr


def test_folder_with_main_runs_and_a_relative_path_is_from_the_work_folder(work):
    write(os.path.join(work, "myjob", "__main__.py"), "import helper\nhelper.hello()\n")
    write(os.path.join(work, "myjob", "helper.py"), "def hello():\n    print('hello from the folder job')\n")
    hand_to_job_user(work)
    result = start_job(work, "myjob")
    assert result.returncode == 0, result.stderr
    assert "hello from the folder job" in result.stdout


def test_folder_without_main_and_missing_code_exit_1_naming_them(work, code_dir):
    os.makedirs(os.path.join(code_dir, "empty"))
    result = start_job(work, os.path.join(code_dir, "empty"))
    assert result.returncode == 1
    assert f"code folder {code_dir}/empty: no __main__.py in it" in result.stderr

    missing = os.path.join(code_dir, "nothing-here.py")
    result = start_job(work, missing)
    assert result.returncode == 1
    assert f"code {missing!r}: no such file or folder" in result.stderr
    assert "job: not run" in result.stderr


# --- git URLs ---------------------------------------------------------------------------------

def git(repo: str, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.org")
    return subprocess.run(["git", "-C", repo, *args], env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def repo():
    """A repository with a job at its root and one in jobs/hello: commit `one` (tag v1), then
    branch `feature`, then commit `two` on the default branch."""
    folder = shared_tempdir("mlws-job-repo-")
    path = os.path.join(folder, "project")
    os.makedirs(path)
    git(path, "init", "--quiet", "--initial-branch=main")

    def commit(version: str) -> str:
        write(os.path.join(path, "__main__.py"), f"print('root job {version}')\n")
        write(os.path.join(path, "jobs", "hello", "__main__.py"), f"print('hello job {version}')\n")
        git(path, "add", "-A")
        git(path, "commit", "--quiet", "-m", version)
        return git(path, "rev-parse", "HEAD")

    first = commit("one")
    git(path, "tag", "v1")
    git(path, "checkout", "--quiet", "-b", "feature")
    commit("feature")
    git(path, "checkout", "--quiet", "main")
    commit("two")
    hand_to_job_user(folder)
    yield {"path": path, "first": first}
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("ref, expected", [
    ("", "two"),
    ("@v1", "one"),
    ("@feature", "feature"),
    ("@FIRST", "one"),
])
def test_git_url_with_ref_and_subdirectory(work, repo, ref, expected):
    ref = ref.replace("FIRST", repo["first"])
    url = f"git+file://{repo['path']}{ref}#subdirectory=jobs/hello"
    result = start_job(work, url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"hello job {expected}"
    assert f"job: fetching {url} (git clone)" in result.stderr


def test_git_url_without_subdirectory_runs_the_repository_root_and_cleans_up(work, repo):
    before = set(glob.glob("/tmp/mlws-job-*"))
    result = start_job(work, f"git+file://{repo['path']}@v1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "root job one"
    assert set(glob.glob("/tmp/mlws-job-*")) - before == set(), "the clone's temporary folder was left behind"


@pytest.mark.parametrize("url, message", [
    ("ftp://example.org/job.py", "unknown URL scheme 'ftp'"),
    ("git+gopher://example.org/repo", "unknown URL scheme 'git+gopher'"),
    ("svn+https://example.org/repo", "svn+ URLs are not supported (this image has git only)"),
    ("git+file://REPO-missing", "cloning file://REPO-missing failed"),
    ("git+file://REPO@no-such-tag", "no ref 'no-such-tag' in file://REPO"),
    ("git+file://REPO@", "empty ref after '@'"),
    ("git+file://REPO@--upload-pack=evil", "ref '--upload-pack=evil' after '@'; expected a tag, branch or commit"),
    ("git+file://REPO@v1#subdirectory=jobs/missing", "subdirectory 'jobs/missing' is not in file://REPO at v1"),
    ("git+file://REPO#subdirectory=../etc", "subdirectory='../etc': expected a relative path inside"),
])
def test_bad_urls_exit_1_naming_the_url_and_the_problem(work, repo, url, message):
    url, message = url.replace("REPO", repo["path"]), message.replace("REPO", repo["path"])
    result = start_job(work, url)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert repr(url) in result.stderr
    assert "Traceback" not in result.stderr


# --- install files ----------------------------------------------------------------------------

def assert_extra_package_not_in_the_image_python() -> None:
    probe = subprocess.run([sys.executable, "-c", f"import {EXTRA_PACKAGE}"], capture_output=True)
    assert probe.returncode != 0, (f"{EXTRA_PACKAGE} is importable from {sys.executable}: the requirements.txt test "
                                   "needs a package the image's Python does not have")


INSTALL_JOB = f"""\
import {EXTRA_PACKAGE}
print("job imported {EXTRA_PACKAGE} from " + {EXTRA_PACKAGE}.__file__)
open("job-ran", "w").close()
"""

# setup.sh records where it ran, with which python, and whether requirements.txt was installed yet.
SETUP_SH = f"""\
echo "setup.sh ran in $PWD with $(command -v python)" >> "$WORKSPACE_DIR/order"
if python -c "import {EXTRA_PACKAGE}" 2>/dev/null; then echo "{EXTRA_PACKAGE} already there" >> "$WORKSPACE_DIR/order"; fi
"""


def make_install_job(folder: str) -> str:
    write(os.path.join(folder, "__main__.py"), INSTALL_JOB)
    write(os.path.join(folder, "setup.sh"), SETUP_SH)
    write(os.path.join(folder, "requirements.txt"), f"{EXTRA_PACKAGE}\n")
    return folder


def test_setup_sh_runs_before_requirements_txt_which_installs_into_the_user_environment(work, code_dir):
    assert_extra_package_not_in_the_image_python()
    make_install_job(code_dir)
    result = start_job(work, code_dir)
    assert result.returncode == 0, result.stderr
    order = read(os.path.join(work, "order")).splitlines()
    user_python = os.path.dirname(os.path.dirname(os.path.dirname(user_site(work))))
    assert order == [f"setup.sh ran in {code_dir} with {user_python}/bin/python"], order
    assert os.path.isdir(os.path.join(user_site(work), EXTRA_PACKAGE))
    assert f"job imported {EXTRA_PACKAGE} from {user_site(work)}/{EXTRA_PACKAGE}/__init__.py" in result.stdout
    steps = [line for line in result.stderr.splitlines() if line.startswith("mlws: job: ")]
    assert [s.split(" (")[0] for s in steps if "(in " in s] == ["mlws: job: setup.sh", "mlws: job: requirements.txt"]


def test_environment_yml_is_refused_clearly_before_anything_runs(work, code_dir):
    make_install_job(code_dir)
    write(os.path.join(code_dir, "environment.yml"), "name: job\ndependencies:\n  - python\n")
    result = start_job(work, code_dir)
    assert result.returncode == 1
    assert f"{code_dir}/environment.yml: conda environments are not supported by this image" in result.stderr
    assert "no conda-compatible tool such as micromamba" in result.stderr
    assert not os.path.exists(os.path.join(work, "order")), "setup.sh ran although environment.yml comes first"
    assert not os.path.exists(os.path.join(work, "job-ran"))

    # --code-only skips every install file, environment.yml too.
    write(os.path.join(code_dir, "__main__.py"), "print('ran without installs')\n")
    result = start_job(work, code_dir, "--code-only")
    assert result.returncode == 0, result.stderr
    assert "ran without installs" in result.stdout


def test_failing_install_steps_exit_1_naming_the_file(work, code_dir):
    make_install_job(code_dir)
    write(os.path.join(code_dir, "setup.sh"), "echo broken setup; exit 4\n")
    result = start_job(work, code_dir)
    assert result.returncode == 1
    assert f"{code_dir}/setup.sh failed with exit code 4" in result.stderr
    assert not os.path.exists(os.path.join(work, "job-ran"))

    os.unlink(os.path.join(code_dir, "setup.sh"))
    write(os.path.join(code_dir, "requirements.txt"), "this is not a requirement !!\n")
    result = start_job(work, code_dir)
    assert result.returncode == 1
    assert f"{code_dir}/requirements.txt failed with exit code" in result.stderr
    assert not os.path.exists(os.path.join(work, "job-ran"))


# --- flags --------------------------------------------------------------------------------------

def test_requirements_only_installs_and_exits_without_running(work, code_dir):
    make_install_job(code_dir)
    result = start_job(work, code_dir, "--requirements-only")
    assert result.returncode == 0, result.stderr
    assert os.path.exists(os.path.join(work, "order"))
    assert os.path.isdir(os.path.join(user_site(work), EXTRA_PACKAGE))
    assert not os.path.exists(os.path.join(work, "job-ran"))
    assert "--requirements-only: the code is not run" in result.stderr


def test_code_only_skips_the_installs(work, code_dir):
    make_install_job(code_dir)
    write(os.path.join(code_dir, "__main__.py"), "open('job-ran', 'w').close()\n")
    result = start_job(work, code_dir, "--code-only")
    assert result.returncode == 0, result.stderr
    assert os.path.exists(os.path.join(work, "job-ran"))
    assert not os.path.exists(os.path.join(work, "order"))
    assert not os.path.exists(os.path.join(user_site(work), EXTRA_PACKAGE))


def test_mode_variable_for_images_and_usage_errors_exit_2(work, code_dir):
    make_install_job(code_dir)
    result = start_job(work, code_dir, extra={"MLWS_JOB_MODE": "requirements-only"})
    assert result.returncode == 0, result.stderr
    assert os.path.exists(os.path.join(work, "order")) and not os.path.exists(os.path.join(work, "job-ran"))

    result = start_job(work, code_dir, extra={"MLWS_JOB_MODE": "sometimes"})
    assert result.returncode == 2
    assert "MLWS_JOB_MODE='sometimes': expected one of all, requirements-only, code-only" in result.stderr

    result = start_job(work, code_dir, "--code-only", "--requirements-only")
    assert result.returncode == 2
    assert "--requirements-only and --code-only exclude each other" in result.stderr

    result = start_job(work, "", "--code-only")
    assert result.returncode == 2
    assert "--requirements-only/--code-only apply to jobs: set EXECUTE_CODE" in result.stderr

    result = run_job_command(work, code_dir, "--code-only", "--requirements-only")
    assert result.returncode == 2
    assert "exclude each other" in result.stderr and "Traceback" not in result.stderr


# --- signals ------------------------------------------------------------------------------------

# The job waits for the signal with sigtimedwait, not a Python handler around time.sleep: a
# handler only runs between bytecodes, so a signal arriving just before the sleep's system call
# began would wait for the whole sleep (1-4 times in 40 runs here), a flaw of the job, not of the
# runner under test.
SIGNAL_JOB = """\
import signal, sys
stops = {signal.SIGTERM, signal.SIGINT}
signal.pthread_sigmask(signal.SIG_BLOCK, stops)
print("ready", flush=True)
info = signal.sigtimedwait(stops, 120)
if info is None:
    sys.exit(0)
with open("got-signal", "w") as handle:
    handle.write(signal.Signals(info.si_signo).name)
sys.exit(42)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_reach_the_job_and_its_exit_code_is_the_exit_code(work, code_dir, signum):
    script = write(os.path.join(code_dir, "wait.py"), SIGNAL_JOB)
    env = job_env(work, {"EXECUTE_CODE": script})
    process = subprocess.Popen([sys.executable, "-m", "runtime", "start"], env=env, cwd="/",
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        while True:  # the job's output streams: "ready" arrives while it still runs
            line = process.stdout.readline()
            assert line, f"the runner ended before the job was ready: {''.join(seen)}"
            seen.append(line)
            if line.strip() == "ready":
                break
        assert process.poll() is None
        process.send_signal(signum)
        rest = process.communicate(timeout=30)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 42, "".join(seen) + rest
    assert read(os.path.join(work, "got-signal")) == signum.name
    assert "job: exited with code 42" in rest


def wait_for(path: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert process.poll() is None, f"the runner ended early: {process.communicate()}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def stopped_when(marker: str, env: dict) -> tuple[subprocess.Popen, str]:
    """`mlws start` as a job runner, sent SIGTERM once `marker` appears; (the ended process, its stderr)."""
    process = subprocess.Popen([sys.executable, "-m", "runtime", "start"], env=env, cwd="/",
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(marker, process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process, stderr


def test_a_stop_signal_during_setup_sh_reaches_it_and_the_job_does_not_run(work, code_dir):
    write(os.path.join(code_dir, "__main__.py"), "open('job-ran', 'w').close()\n")
    write(os.path.join(code_dir, "setup.sh"), """\
        trap 'echo TERM > "$WORKSPACE_DIR/setup-got"; exit 9' TERM
        touch "$WORKSPACE_DIR/setup-started"
        while true; do sleep 0.1; done
    """)
    process, stderr = stopped_when(os.path.join(work, "setup-started"), job_env(work, {"EXECUTE_CODE": code_dir}))
    assert process.returncode == 1, stderr
    assert read(os.path.join(work, "setup-got")).strip() == "TERM"
    assert f"{code_dir}/setup.sh failed with exit code 9" in stderr
    assert not os.path.exists(os.path.join(work, "job-ran"))


def test_a_stop_signal_while_fetching_stops_the_runner_cleanly(work, code_dir):
    """SIGTERM while git clone waits for the server (an ssh that never answers): the runner ends
    with 128 + 15, says so, and leaves no clone behind."""
    fake_ssh = write(os.path.join(code_dir, "slow-ssh"), f"""\
        #!/bin/sh
        touch "{work}/ssh-started"
        sleep 5
    """, 0o755)
    before = set(glob.glob("/tmp/mlws-job-*"))
    env = job_env(work, {"EXECUTE_CODE": "git+ssh://git@example.org/repo.git@v1", "GIT_SSH_COMMAND": fake_ssh})
    process, stderr = stopped_when(os.path.join(work, "ssh-started"), env)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "job: stopped by SIGTERM before the job ran to its end" in stderr
    assert "Traceback" not in stderr
    assert set(glob.glob("/tmp/mlws-job-*")) - before == set()


def test_as_root_a_user_is_required(work, code_dir):
    script = write(os.path.join(code_dir, "probe.py"), PROBE_JOB)
    env = job_env(work, {"EXECUTE_CODE": script})
    env.pop("NB_USER", None)
    result = subprocess.run([sys.executable, "-m", "runtime", "start"], env=env, cwd="/",
                            capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if os.geteuid() == 0:
        assert result.returncode == 2
        assert "running as root: name the user to run the workspace as with --user NAME or NB_USER=NAME" in result.stderr
    else:  # anyone else runs the job as themselves
        assert result.returncode == 0, result.stderr
        assert f"uid={os.geteuid()}" in result.stdout


# --- the command inside a running workspace ------------------------------------------------------

def test_job_command_takes_paths_from_the_current_folder_and_passes_arguments(work, code_dir):
    write(os.path.join(code_dir, "probe.py"), PROBE_JOB)
    result = run_job_command(work, "probe.py", "one", "--", "--two", cwd=code_dir, module="generator")
    assert result.returncode == 0, result.stderr
    assert "args=one,--two" in result.stdout
    assert f"cwd={work}" in result.stdout

    result = run_job_command(work, "missing.py", cwd=code_dir)
    assert result.returncode == 1
    assert f"code 'missing.py': no such file or folder ({code_dir}/missing.py)" in result.stderr


def test_job_command_inside_a_workspace_keeps_the_user_environment_based_on_the_image_python(work, code_dir):
    """In a workspace terminal the user environment is already first on PATH (VIRTUAL_ENV set):
    its own python3 must not become the base of a new one."""
    script = write(os.path.join(code_dir, "probe.py"), PROBE_JOB)
    assert start_job(work, script).returncode == 0
    root = os.path.dirname(os.path.dirname(os.path.dirname(user_site(work))))
    config_before = read(os.path.join(root, "pyvenv.cfg"))
    env = job_env(work)
    env.update(PATH=os.pathsep.join([os.path.join(root, "bin"), env["PATH"]]), VIRTUAL_ENV=root)
    result = subprocess.run([sys.executable, "-m", "runtime", "job", script], env=env, cwd="/",
                            capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert f"python={root}/bin/python" in result.stdout
    config_after = read(os.path.join(root, "pyvenv.cfg"))
    home = [line for line in config_before.splitlines() if line.startswith("home = ")]
    assert home and home[0] in config_after.splitlines(), (config_before, config_after)
    assert f"command = {root}" not in config_after, "the user environment was rebuilt from its own python"


def test_help_explains_the_job_command_and_the_start_flags():
    env = runtime_env()
    shown = subprocess.run([sys.executable, "-m", "generator", "job", "--help"], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    for text in ("git+https://host/repo.git[@ref][#subdirectory=path]", "setup.sh", "requirements.txt",
                 "environment.yml", "--requirements-only", "--code-only"):
        assert text in shown.stdout
    shown = subprocess.run([sys.executable, "-m", "runtime", "start", "--help"], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert "EXECUTE_CODE" in shown.stdout and "MLWS_JOB_MODE" in shown.stdout


# --- the original's example job -----------------------------------------------------------------

def test_the_original_example_job_runs_with_execute_code_and_exits_0(work, code_dir):
    """A folder with __main__.py printing a tqdm progress bar, a requirements.txt (tqdm) and a
    setup.sh, as in the original's documentation."""
    assert_extra_package_not_in_the_image_python()
    write(os.path.join(code_dir, "__main__.py"), """\
        import time
        from tqdm import tqdm

        for step in tqdm(range(20), desc="training", ascii=True):
            time.sleep(0.01)
        print("example job finished")
    """)
    write(os.path.join(code_dir, "requirements.txt"), "tqdm\n")
    write(os.path.join(code_dir, "setup.sh"), "echo 'setting up the example job'\n")
    result = start_job(work, code_dir)
    assert result.returncode == 0, result.stderr
    assert "setting up the example job" in result.stdout
    assert "example job finished" in result.stdout
    assert "training: 100%|##########| 20/20" in result.stderr  # tqdm writes its bar to stderr
