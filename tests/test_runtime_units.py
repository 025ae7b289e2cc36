"""Pure parts of the runtime: settings, quoting, manifest checks, rendered configuration (checked
by the real `nginx -t`), and the generator's real manifests in a dry run."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from runtime import login, manifest, nginx, reaper, settings
from runtime.settings import SettingsError, auto_threads, cgroup_cpu_limit, normalise_base_url, parse_settings
from tests.runtime_helpers import DAEMONIZE, REPO, alive, free_port, read_pid, runtime_env, shared_tempdir

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


# --- settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("/", ""), ("", ""), ("  /foo/ ", "/foo"), ("foo", "/foo"), ("/a//b/", "/a/b"),
    ("/my ws/", "/my%20ws"), ("/ä", "/%C3%A4"), ("/a@b&c", "/a%40b%26c"), ("/x%20y", "/x%20y"),
])
def test_base_url_normalisation(raw, expected):
    assert normalise_base_url(raw) == expected


def test_defaults_fix_open_by_default():
    result = parse_settings({}, cpu_count=4)
    assert result.auth_mode == "token" and result.token is None and result.token_generated
    assert result.port == 8080 and result.base_url == "" and not result.ssl_enabled
    assert result.include_tutorials and result.cull_idle_seconds is None


def test_basic_auth_alone_is_the_login():
    result = parse_settings({"WORKSPACE_AUTH_USER": "u", "WORKSPACE_AUTH_PASSWORD": "p"})
    assert result.auth_mode == "off" and not result.warnings


def test_explicit_false_warns_loudly():
    result = parse_settings({"AUTHENTICATE_VIA_JUPYTER": " False "})
    assert result.auth_mode == "off"
    assert any("OPEN" in warning for warning in result.warnings)


def test_fixed_token_and_hub_mode():
    assert parse_settings({"AUTHENTICATE_VIA_JUPYTER": "My-Token-1"}).token == "My-Token-1"
    hub = parse_settings({"AUTHENTICATE_VIA_JUPYTER": "TRUE", "JUPYTERHUB_API_TOKEN": "x",
                          "JUPYTERHUB_SERVICE_PREFIX": "/user/bob/", "WORKSPACE_BASE_URL": "/ignored"})
    assert hub.auth_mode == "hub" and hub.base_url == "/user/bob"


@pytest.mark.parametrize("word, expected", [("true", True), ("On", True), ("TRUE", True), ("off", False), ("False", False)])
def test_ssl_flag_any_case(word, expected):
    assert parse_settings({"WORKSPACE_SSL_ENABLED": word}).ssl_enabled is expected


def test_all_errors_are_collected_with_name_value_and_expectation():
    with pytest.raises(SettingsError) as error:
        parse_settings({"WORKSPACE_PORT": "0", "MAX_NUM_THREADS": "many", "WORKSPACE_SSL_ENABLED": "yesplease",
                        "NB_UMASK": "0o22"})
    problems = error.value.problems
    assert len(problems) == 4
    assert "WORKSPACE_PORT='0': expected a port number 1-65535" in problems
    assert any(p.startswith("MAX_NUM_THREADS='many'") for p in problems)


def test_threads_and_their_variables():
    assert parse_settings({"MAX_NUM_THREADS": "6", "MKL_NUM_THREADS": "1"}).thread_env == {
        name: "6" for name in settings.THREAD_VARIABLES if name != "MKL_NUM_THREADS"
    }
    assert auto_threads(4, None) == 4
    assert auto_threads(16, None) == 15
    assert auto_threads(64, None) == 32
    assert auto_threads(16, 2.0) == 2
    assert auto_threads(16, 1.5) == 2
    assert auto_threads(None, None) == 4


def test_cgroup_quotas_v2_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("300000 100000\n")
    assert cgroup_cpu_limit(str(v2)) == 3.0
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(str(v2)) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(str(v1)) == 0.5
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(str(v1)) is None
    assert parse_settings({}, cpu_count=8, cgroup_limit=0.5).max_num_threads == 1


def test_kernel_culling():
    assert parse_settings({"SHUTDOWN_INACTIVE_KERNELS": "true"}).cull_idle_seconds == 48 * 3600
    assert parse_settings({"SHUTDOWN_INACTIVE_KERNELS": "600"}).cull_idle_seconds == 600
    assert parse_settings({"SHUTDOWN_INACTIVE_KERNELS": "false"}).cull_idle_seconds is None


# --- quoting ----------------------------------------------------------------------------------

def test_nginx_string_escapes_and_refuses_control_characters():
    assert nginx.nginx_string('a"b\\c $x;{}') == '"a\\"b\\\\c $x;{}"'
    for bad in ("a\nb", "a\rb", "a\x00b", "a\tb"):
        with pytest.raises(nginx.ConfigValueError):
            nginx.nginx_string(bad)


def test_regex_literal_matches_only_itself():
    for text in ['to"k en@&$x\\y;{}', "a.b*c+d?", "(x)|[y]^$"]:
        pattern = re.compile("^" + nginx.regex_literal(text) + "$")
        assert pattern.match(text)
        assert not pattern.match(text + "x")
        assert not pattern.match(text.upper() if text.upper() != text else text + "!")


def test_login_helpers():
    assert login.strip_token("/lab?a=1&token=x&b=2") == "/lab?a=1&b=2"
    assert login.strip_token("/lab?token=x") == "/lab"
    assert login.strip_token("/lab?tok%65n=x") == "/lab"
    assert login.safe_next("/base/lab?x", "/base") == "/base/lab?x"
    for bad in ("//evil.example/", "https://evil.example/", "/other/", "/base/\\evil", "/base/x\r\nSet-Cookie: a=b"):
        assert login.safe_next(bad, "/base") == "/base/"


# --- manifest ---------------------------------------------------------------------------------

def write(tmp_path, data) -> str:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    return str(path)


def fixture_manifest() -> dict:
    return json.load(open(os.path.join(REPO, "tests", "fixtures", "runtime-manifest.json")))


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(schema=2), "schema: expected 1"),
    (lambda d: d["tools"][1].update(port="80"), "tools[1] (files).port: expected int"),
    (lambda d: d["tools"][1]["processes"][0].update(command=["x", "{nope}"]), "unknown placeholder {nope}"),
    (lambda d: d["tools"][3].update(health=False), "exactly one tool with \"health\": true"),
    (lambda d: d["tools"][2].update(port=18600), "18600 is also the port of"),
    (lambda d: d["tools"][1]["route"].update(prefix="/tools/x"), "route.prefix: expected a path like"),
])
def test_manifest_errors_name_the_file_and_key(tmp_path, mutate, message):
    data = fixture_manifest()
    mutate(data)
    with pytest.raises(manifest.ManifestError) as error:
        manifest.load_manifest(write(tmp_path, data))
    assert message in str(error.value)
    assert str(tmp_path / "m.json") in str(error.value)


def test_manifest_lookup_order(tmp_path):
    path = write(tmp_path, fixture_manifest())
    assert manifest.find_manifest(path, None, {}) == path
    assert manifest.find_manifest(None, None, {"MLWS_MANIFEST": path}) == path
    (tmp_path / "flv").mkdir()
    shutil.copy(path, tmp_path / "flv" / "test.manifest.json")
    found = manifest.find_manifest(None, "test", {"MLWS_FLAVORS_DIR": str(tmp_path / "flv")})
    assert found == str(tmp_path / "flv" / "test.manifest.json")
    with pytest.raises(manifest.ManifestError, match="manifest not found"):
        manifest.find_manifest(None, "nosuch", {})


# --- rendered configuration, checked by nginx -------------------------------------------------

def gateway_config(tmp_path, **changes) -> nginx.GatewayConfig:
    base = dict(
        runtime_dir=str(tmp_path), static_dir=os.path.join(REPO, "runtime", "static"), listen_address="127.0.0.1",
        port=free_port(), base_url="/a%20b/c", auth_mode="token", cookie_name="mlws_session_1",
        session_secret="ef" * 32, revoked_file=str(tmp_path / "nginx" / "revoked.map"), gateway_secret="cd" * 32,
        token='t"ok en@&$x\\y;{}', htpasswd_file=None, ssl_cert=None, ssl_key=None,
        login_socket=str(tmp_path / "login.sock"), health_tool="jupyter",
        upstreams=(nginx.Upstream("jupyter", 18600, "/", False, True, True),
                   nginx.Upstream("my-tool", 18601, "/tools/my-tool/", True, True, True),
                   nginx.Upstream("gone", 18602, "/tools/gone/", True, True, False)),
    )
    base.update(changes)
    return nginx.GatewayConfig(**base)


@pytest.mark.parametrize("mode", ["token", "off", "hub"])
def test_rendered_nginx_config_is_valid(tmp_path, mode):
    (tmp_path / "nginx" / "tmp").mkdir(parents=True)
    (tmp_path / "nginx" / "revoked.map").write_text(f'"{"ab" * 16}" 1;\n')
    conf = nginx.render_nginx_conf(gateway_config(tmp_path, auth_mode=mode))
    (tmp_path / "nginx" / "nginx.conf").write_text(conf)
    result = subprocess.run([NGINX, "-t", "-p", str(tmp_path / "nginx"), "-c", str(tmp_path / "nginx" / "nginx.conf"), "-e", "stderr"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + conf


def test_rendered_config_refuses_unsafe_values(tmp_path):
    with pytest.raises(nginx.ConfigValueError):
        nginx.render_nginx_conf(gateway_config(tmp_path, token="a\nb"))
    with pytest.raises(nginx.ConfigValueError):
        nginx.render_nginx_conf(gateway_config(tmp_path, runtime_dir="/tmp/x y"))
    with pytest.raises(nginx.ConfigValueError):
        nginx.render_nginx_conf(gateway_config(tmp_path, base_url="/a b"))
    with pytest.raises(nginx.ConfigValueError):
        nginx.render_nginx_conf(gateway_config(tmp_path, gateway_secret="not-hex"))
    with pytest.raises(nginx.ConfigValueError):
        nginx.render_nginx_conf(gateway_config(tmp_path, login_socket="/tmp/a b.sock"))


def test_supervisor_config_holds_no_values_from_the_environment(tmp_path):
    from runtime.supervisor import Program, render_supervisor_conf

    text = render_supervisor_conf(str(tmp_path), "/usr/bin/python3", [Program("jupyter-server", str(tmp_path / "p.json"))])
    assert "command=/usr/bin/python3 -m runtime.launch " in text
    with pytest.raises(ValueError):
        render_supervisor_conf("/tmp/a%b", "/usr/bin/python3", [])
    with pytest.raises(ValueError):
        render_supervisor_conf(str(tmp_path), "/usr/bin/python3", [Program("bad name", str(tmp_path / "p.json"))])


# --- the generator's real manifests -----------------------------------------------------------

REAL_MANIFESTS = sorted(
    name[: -len(".manifest.json")]
    for name in (os.listdir(os.path.join(REPO, "flavors")) if os.path.isdir(os.path.join(REPO, "flavors")) else [])
    if name.endswith(".manifest.json")
)


@pytest.mark.parametrize("flavor", REAL_MANIFESTS or ["minimal"])
def test_real_flavor_manifest_loads_and_renders(flavor):
    folder = shared_tempdir(f"mlws-dry-{flavor}-")
    try:
        env = runtime_env({"AUTHENTICATE_VIA_JUPYTER": "dry-run-token", "MLWS_FLAVORS_DIR": os.path.join(REPO, "flavors")})
        runtime_dir = os.path.join(folder, "run")
        result = subprocess.run(
            [sys.executable, "-m", "runtime", "start", "--flavor", flavor, "--port", str(free_port()), "--bind", "127.0.0.1",
             "--runtime-dir", runtime_dir, "--workspace-dir", os.path.join(folder, "ws"), "--dry-run"],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert f"mlws workspace ({flavor} flavor)" in result.stdout
        nginx_dir = os.path.join(runtime_dir, "nginx")
        check = subprocess.run([NGINX, "-t", "-p", nginx_dir, "-c", os.path.join(nginx_dir, "nginx.conf"), "-e", "stderr"],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        conf = open(os.path.join(runtime_dir, "supervisord.conf")).read()
        assert "[program:jupyter-" in conf and "[program:gateway]" in conf
        assert os.path.isfile(os.path.join(runtime_dir, "jupyter_server_config.py"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_tutorials_go_only_into_an_empty_work_folder():
    folder = shared_tempdir("mlws-tutorials-")
    try:
        busy, empty = os.path.join(folder, "busy"), os.path.join(folder, "empty")
        os.makedirs(busy)
        os.makedirs(empty)
        with open(os.path.join(busy, "mine.txt"), "w") as handle:
            handle.write("user data")
        if os.geteuid() == 0:
            for path in (busy, empty):
                shutil.chown(path, os.environ.get("NB_USER") or "mlws")
        for work in (busy, empty):
            result = subprocess.run(
                [sys.executable, "-m", "runtime", "start", "--manifest", os.path.join(REPO, "tests", "fixtures", "runtime-manifest.json"),
                 "--port", str(free_port()), "--bind", "127.0.0.1", "--runtime-dir", os.path.join(folder, "run"),
                 "--workspace-dir", work, "--dry-run"],
                env=runtime_env({"INCLUDE_TUTORIALS": "true"}), capture_output=True, text=True, timeout=60,
            )
            assert result.returncode == 0, result.stderr
        # Nothing of ours beside the user's file but the workspace's own folder (user environment).
        assert sorted(os.listdir(busy)) == [".workspace", "mine.txt"]
        assert sorted(os.listdir(os.path.join(empty, "tutorials"))) == ["01-welcome.ipynb", "02-numbers-and-plots.ipynb"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- the reaper (runtime/reaper.py) -------------------------------------------------------------

def fake_proc(root, processes: dict[int, tuple[str, int]]) -> str:
    """A /proc-like folder: {pid: (comm, ppid)} as stat files, plus entries the scan must skip."""
    for pid, (comm, ppid) in processes.items():
        os.makedirs(root / str(pid))
        (root / str(pid) / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560\n")
    os.makedirs(root / "self")
    os.makedirs(root / "999")  # vanished between listing and reading: no stat file
    (root / "uptime").write_text("1.0 1.0\n")
    return str(root)


def test_descendant_scan_follows_ppid_recursively(tmp_path):
    proc = fake_proc(tmp_path, {
        1: ("init", 0), 10: ("mlws", 1), 11: ("supervisord", 10), 12: ("nginx", 11),
        13: ("a) S 1 (b", 12),  # a command name with parentheses and spaces must not fool the parser
        20: ("ssh-agent", 10), 21: ("child of agent", 20), 30: ("unrelated", 1),
    })
    assert reaper.parent_table(proc)[13] == 12
    assert sorted(reaper.descendants_of(10, proc)) == [11, 12, 13, 20, 21]
    assert reaper.descendants_of(12, proc) == [13]
    assert reaper.descendants_of(30, proc) == []
    order = reaper.descendants_of(10, proc)
    assert order.index(20) < order.index(21) and order.index(11) < order.index(12) < order.index(13)


def test_descendant_scan_sees_a_real_process_tree():
    shell = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 10
        while len(reaper.descendants_of(shell.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        below_shell = reaper.descendants_of(shell.pid)
        assert len(below_shell) == 2
        assert {shell.pid, *below_shell} <= set(reaper.descendants_of(os.getpid()))
    finally:
        for pid in reaper.descendants_of(shell.pid):
            os.kill(pid, 9)
        shell.kill()
        shell.wait()


def run_reaper(tmp_path, mode: str, then: str) -> tuple[subprocess.Popen, int]:
    """`reaper.run_supervised` in its own interpreter, supervising DAEMONIZE; returns it and the
    daemon's pid."""
    pid_file = str(tmp_path / "daemon.pid")
    code = ("import os, sys; from runtime import reaper; "
            f"sys.exit(reaper.run_supervised([sys.executable, '-c', {DAEMONIZE!r}, {pid_file!r}, {mode!r}, {then!r}],"
            " dict(os.environ), lambda line: print(line, flush=True)))")
    env = dict(os.environ, PYTHONPATH=REPO)
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    return process, read_pid(pid_file)


@pytest.mark.parametrize("mode, then, expected", [("polite", "3", 3), ("stubborn", "0", 0)])
def test_reaper_stops_the_daemon_left_behind_and_returns_the_exit_code(tmp_path, mode, then, expected):
    process, daemon = run_reaper(tmp_path, mode, then)
    try:
        began = time.monotonic()
        assert process.wait(10) == expected
        took = time.monotonic() - began
        assert not alive(daemon), "the daemon outlived the reaper"
        output = process.stdout.read()
        assert "stopped 1 process(es) left running" in output
        if mode == "stubborn":  # ignored SIGTERM: killed after the grace period, not before
            assert "with SIGKILL" in output and reaper.GRACE_SECONDS - 0.5 < took < reaper.GRACE_SECONDS + 3
        else:
            assert took < 2
    finally:
        process.kill()
        if alive(daemon):
            os.kill(daemon, 9)


def test_reaper_forwards_sigterm_and_reports_death_by_signal(tmp_path):
    process, daemon = run_reaper(tmp_path, "polite", "sleep")
    try:
        supervised = read_pid(str(tmp_path / "daemon.pid.main"))
        # Positive control: the daemon runs, outside the supervised process's group and session,
        # re-parented to the reaper (the subreaper), not to init.
        assert alive(daemon) and alive(supervised)
        assert os.getpgid(daemon) != os.getpgid(supervised) and os.getsid(daemon) != os.getsid(supervised)
        assert reaper.parent_table()[daemon] == process.pid
        process.send_signal(15)
        assert process.wait(10) == 128 + 15  # the supervised process died by the forwarded SIGTERM
        assert not alive(daemon) and not alive(supervised)
    finally:
        process.kill()
        if alive(daemon):
            os.kill(daemon, 9)


def test_a_restarted_program_finds_what_its_previous_run_left_by_its_mark(tmp_path):
    """Processes that left the program's group (a kernel's own session) carry the run's mark."""
    from runtime import launch

    mark = launch.run_mark("jupyter-server", 424242)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True,
                             env={**os.environ, "MLWS_RUN": mark.split("=", 1)[1]})
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             env={**os.environ, "MLWS_RUN": "jupyter-server:4242420"})
    try:
        deadline = time.monotonic() + 5
        while child.pid not in launch.processes_marked(mark) and time.monotonic() < deadline:
            time.sleep(0.05)
        found = launch.processes_marked(mark)
        assert child.pid in found and other.pid not in found
        record = tmp_path / "jupyter-server.pgid"
        record.write_text("424242\n")
        assert launch.reap_previous_run(str(record), program="jupyter-server") == []
        assert child.wait(5) == -signal.SIGKILL and other.poll() is None
    finally:
        for process in (child, other):
            if process.poll() is None:
                process.kill()
