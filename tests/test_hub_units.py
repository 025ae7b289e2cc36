"""Hub mode in small pieces: where the spawner says to listen, Jupyter's own service URL, the
refusal without JupyterHub's extension, and the hub's cookies kept from ports (tests/test_hub_live.py
runs all of it under a real hub)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse

import pytest

from runtime import hub, nginx
from runtime.settings import SettingsError, parse_settings
from tests.conftest import REPO

HUB = {"AUTHENTICATE_VIA_JUPYTER": "true", "JUPYTERHUB_API_TOKEN": "t", "JUPYTERHUB_SERVICE_PREFIX": "/user/ann/"}


@pytest.mark.parametrize("url, bind, port", [
    ("http://127.0.0.1:51234/user/ann/", "127.0.0.1", 51234),
    ("http://0.0.0.0:8888/user/ann/", "0.0.0.0", 8888),
    ("http://:8080/user/ann/", "0.0.0.0", 8080),  # no host: every interface, as JupyterHub reads it
    ("http://[::1]:9000/user/ann/", "::1", 9000),
    ("http://10.1.2.3/user/ann/", "10.1.2.3", 80),
])
def test_the_gateway_listens_where_the_spawner_says(url, bind, port):
    settings = parse_settings({**HUB, "JUPYTERHUB_SERVICE_URL": url, "WORKSPACE_PORT": "8080"})
    assert (settings.hub_bind, settings.port, settings.base_url) == (bind, port, "/user/ann")


def test_an_explicit_port_still_wins():
    settings = parse_settings({**HUB, "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:5000/user/ann/"}, port_override=7000)
    assert settings.port == 7000


def test_without_a_hub_nothing_changes():
    settings = parse_settings({"WORKSPACE_PORT": "8123"})
    assert (settings.hub_bind, settings.port) == (None, 8123)


@pytest.mark.parametrize("url, expected", [
    ("https://127.0.0.1:5000/user/ann/", "expected an http:// URL (the hub's internal TLS"),
    ("http://127.0.0.1:99999/user/ann/", "expected a port number 1-65535"),
    ("http://hub-host:5000/user/ann/", "expected an IP address as host (found 'hub-host')"),
])
def test_bad_service_urls_are_named(url, expected):
    with pytest.raises(SettingsError) as error:
        parse_settings({**HUB, "JUPYTERHUB_SERVICE_URL": url})
    assert any(problem.startswith(f"JUPYTERHUB_SERVICE_URL={url!r}: {expected}") for problem in error.value.problems), \
        error.value.problems


def test_jupyter_gets_the_url_of_its_own_socket():
    url = hub.jupyter_service_url("unix:/home/ann/.mlws/run-5000/sockets/jupyter.sock", "/user/ann")
    assert url == "http+unix://%2Fhome%2Fann%2F.mlws%2Frun-5000%2Fsockets%2Fjupyter.sock/user/ann/"
    parsed = urllib.parse.urlparse(url)
    # What JupyterHub's extension reads from it: no port (it would bind Jupyter there), the prefix.
    assert parsed.scheme not in ("http", "https") and parsed.port is None and parsed.path == "/user/ann/"
    assert hub.jupyter_service_url("127.0.0.1:18600", "/user/ann") == "http://127.0.0.1:18600/user/ann/"
    env = hub.jupyter_environment("tok", "127.0.0.1:18600", "")
    assert env == {"JUPYTERHUB_API_TOKEN": "tok", "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:18600/"}


# Runs runtime/jupyter_config.py as traitlets would, with `jupyterhub` made unimportable (hide).
RUN_CONFIG = """
import runpy, sys
if sys.argv[2] == "hide":
    sys.modules["jupyterhub"] = None  # importlib.util.find_spec("jupyterhub") now answers None
from traitlets.config import Config
config = Config()
runpy.run_path(sys.argv[1], init_globals={"get_config": lambda: config})
print("extensions:", config.ServerApp.jpserver_extensions.get_value({}))
"""


def run_jupyter_config(tmp_path, mode: str, hide: bool) -> subprocess.CompletedProcess:
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"gateway_header": "X-Mlws-Gateway", "gateway_secret": "a" * 64, "token": "",
                                    "auth_kind_header": "X-Mlws-Auth", "user_name": "ann", "mode": mode}))
    return subprocess.run([sys.executable, "-c", RUN_CONFIG, os.path.join(REPO, "runtime", "jupyter_config.py"),
                           "hide" if hide else "keep"],
                          env={**os.environ, "MLWS_JUPYTER_SETTINGS": str(settings)},
                          capture_output=True, text=True, timeout=60)


def test_hub_mode_without_jupyterhubs_extension_stops_jupyter_with_a_message(tmp_path):
    result = run_jupyter_config(tmp_path, "hub", hide=True)
    assert result.returncode != 0
    assert "AUTHENTICATE_VIA_JUPYTER=true: JupyterHub's single-user extension is missing" in result.stderr
    assert "Traceback" not in result.stderr
    # With it, the extension is enabled; token mode never needs it.
    assert "'jupyterhub': True" in run_jupyter_config(tmp_path, "hub", hide=False).stdout
    assert run_jupyter_config(tmp_path, "token", hide=True).returncode == 0


@pytest.mark.parametrize("name", ["jupyterhub-session-id", "jupyterhub-user-ann", "__Host-jupyterhub-user-ann",
                                  "jupyterhub-user-ann-oauth-state", "mlws_session_8080"])
def test_the_hubs_and_the_workspaces_cookies_are_the_workspaces(name):
    import re

    assert re.fullmatch(nginx.WORKSPACE_COOKIE, name)
    assert not re.fullmatch(nginx.WORKSPACE_COOKIE, "_xsrf") and not re.fullmatch(nginx.WORKSPACE_COOKIE, "port_own")
