"""The deployment files `mlws deploy` generates from the spec, loaded into the real spawners.

* Zero to JupyterHub values (`mlws deploy helm-values`): loaded the way the chart's hub
  configuration loads them into KubeSpawner (PyPI jupyterhub-kubespawner), and each profile's pod
  manifest rendered with no cluster (KubeSpawner builds the manifest locally; a kubeconfig naming
  an unreachable server satisfies its client set-up): image by digest, command, ports,
  environment, the /workspace volume, resources and the GPU limit.
* A jupyterhub_config.py for DockerSpawner (`mlws deploy dockerspawner-config`): loaded with
  traitlets as JupyterHub loads it, the chosen profile applied by its pre-spawn hook, and the
  container created through the real docker client library against a stand-in of the Docker
  Engine API on a unix socket (no daemon runs here), which records the create request as the
  daemon would receive it.
* A new flavor in the spec is a new profile in both, with no other change.
"""
from __future__ import annotations

import asyncio
import http.server
import json
import os
import re
import socketserver
import threading
import types

import pytest
import yaml

from runtime.settings import parse_settings
from tests.conftest import REPO

DIGESTS = {name: "sha256:" + format(index, "x") * 64 for index, name in
           enumerate(("minimal", "full", "gpu", "r", "spark"), start=10)}
REGISTRY = "registry.example.org/mlws-ci"
USER = "alice"
HUB_TOKEN = "token-the-hub-made-for-this-spawn"


def flavors_of(root=REPO) -> dict:
    from generator.cli import build

    _, flavors, _ = build(root)
    return flavors


def digest_args(digests: dict[str, str]) -> list[str]:
    return [arg for name, digest in digests.items() for arg in ("--digest", f"{name}={digest}")]


# --- Kubernetes: Zero to JupyterHub values into KubeSpawner ----------------------------------------

def z2jh_kubespawner_config(values: dict):
    """The chart's hub configuration for the keys the generated values use (see deploy/helm.py
    for the file and commit of the chart this mapping was read from)."""
    from traitlets.config import Config

    single = values["singleuser"]
    c = Config()
    c.KubeSpawner.image = f"{single['image']['name']}:{single['image']['tag']}"
    c.KubeSpawner.image_pull_policy = single["image"]["pullPolicy"]
    c.Spawner.cmd = single["cmd"]
    c.Spawner.default_url = single["defaultUrl"]
    c.KubeSpawner.uid = single["uid"]
    c.KubeSpawner.fs_gid = single["fsGid"]
    c.KubeSpawner.environment = single["extraEnv"]
    c.KubeSpawner.start_timeout = single["startTimeout"]
    c.KubeSpawner.profile_list = single["profileList"]
    storage = single["storage"]
    assert storage["type"] == "dynamic"
    c.KubeSpawner.pvc_name_template = storage["dynamic"]["pvcNameTemplate"]
    c.KubeSpawner.storage_pvc_ensure = True
    c.KubeSpawner.storage_capacity = storage["capacity"]
    c.KubeSpawner.storage_access_modes = storage["dynamic"]["storageAccessModes"]
    c.KubeSpawner.volumes = [{"name": storage["dynamic"]["volumeNameTemplate"],
                              "persistentVolumeClaim": {"claimName": storage["dynamic"]["pvcNameTemplate"]}}]
    c.KubeSpawner.volume_mounts = [{"mountPath": storage["homeMountPath"], "name": storage["dynamic"]["volumeNameTemplate"]}]
    for section, traits in values["hub"]["config"].items():  # hub.config: passed to traitlets as is
        for trait, value in traits.items():
            setattr(c[section], trait, value)
    return c


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    """KubeSpawner loads a kubeconfig when it is made; this one names a server nobody contacts."""
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "none",
        "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "none", "user": {"token": "unused"}}],
        "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def hub_objects():
    user = types.SimpleNamespace(name=USER, id=7, url=f"/user/{USER}/", escaped_name=USER, state=None,
                                 settings={}, spawners={})
    hub = types.SimpleNamespace(public_host="", url="http://hub:8081/hub/", base_url="/hub/",
                                api_url="http://hub:8081/hub/api")
    return user, hub


async def pod_for(config, profile: str) -> dict:
    from kubespawner import KubeSpawner

    user, hub = hub_objects()
    spawner = KubeSpawner(config=config, user=user, hub=hub, _mock=True)
    spawner.api_token = HUB_TOKEN  # JupyterHub makes one per spawn
    spawner.user_options = {"profile": profile}
    await spawner.load_user_options()
    pod = await spawner.get_pod_manifest()
    return spawner.api.api_client.sanitize_for_serialization(pod)


def test_helm_values_render_a_pod_for_every_flavor(mlws, tmp_path, kubeconfig):
    output = tmp_path / "values.yaml"
    result = mlws("deploy", "helm-values", "--registry", REGISTRY, *digest_args(DIGESTS), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert "placeholder" not in result.stderr
    values = yaml.safe_load(output.read_text())
    flavors = flavors_of()
    profiles = {entry["slug"]: entry for entry in values["singleuser"]["profileList"]}
    assert set(profiles) == set(flavors)
    assert [entry["slug"] for entry in values["singleuser"]["profileList"]][0] == "minimal"
    assert profiles["minimal"]["default"] is True
    config = z2jh_kubespawner_config(values)
    for name, flavor in flavors.items():
        pod = asyncio.run(pod_for(config, name))
        (container,) = pod["spec"]["containers"]
        # The image by digest from the CI's registry.
        assert container["image"] == f"{REGISTRY}/{flavor.image}@{DIGESTS[name]}"
        # The image's own entrypoint, `mlws start`, runs unchanged: no command, no arguments.
        assert "command" not in container and "args" not in container
        assert container["ports"] == [{"containerPort": 8080, "name": "notebook-port"}]
        env = {item["name"]: item["value"] for item in container["env"]}
        assert env["AUTHENTICATE_VIA_JUPYTER"] == "true"
        assert env["JUPYTERHUB_USER"] == USER
        # The runtime binds where KubeSpawner says: the same variables, read by its settings.
        settings = parse_settings({**env, "WORKSPACE_PORT": "8080"})
        assert (settings.auth_mode, settings.port, settings.hub_bind) == ("hub", 8080, "0.0.0.0")
        assert settings.hub_api_token == HUB_TOKEN
        # /workspace is the user's persistent volume.
        assert container["volumeMounts"] == [{"mountPath": "/workspace", "name": f"volume-{USER}"}]
        assert pod["spec"]["volumes"] == [{"name": f"volume-{USER}", "persistentVolumeClaim": {"claimName": f"claim-{USER}"}}]
        assert pod["spec"]["securityContext"]["fsGroup"] == 1000
        assert container["securityContext"]["runAsUser"] == 1000
        limits, requests_ = container["resources"]["limits"], container["resources"]["requests"]
        assert set(limits) >= {"cpu", "memory"} and set(requests_) >= {"cpu", "memory"}
        gpu = flavor.cuda is not None and flavor.cuda.enable
        if gpu:
            assert limits["nvidia.com/gpu"] == "1" and requests_["nvidia.com/gpu"] == "1"
            assert pod["spec"]["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
        else:
            assert "nvidia.com/gpu" not in limits
            assert not pod["spec"].get("nodeSelector")
    # A stopping pod gets time to stop cleanly (KubeSpawner's default is 1 s before SIGKILL).
    assert config.KubeSpawner.delete_grace_period == 20
    # The default server (no profile chosen) is the default profile's image, also by digest.
    assert config.KubeSpawner.image == f"{REGISTRY}/ml-workspace-minimal:0.1.0@{DIGESTS['minimal']}"


def test_a_pod_has_the_flavors_resources(kubeconfig):
    from deploy import helm
    from deploy.profiles import build_profiles

    values = helm.helm_values(build_profiles(flavors_of(), REGISTRY, DIGESTS), "0.1.0")
    config = z2jh_kubespawner_config(values)
    minimal = asyncio.run(pod_for(config, "minimal"))["spec"]["containers"][0]["resources"]
    gpu = asyncio.run(pod_for(config, "gpu"))["spec"]["containers"][0]["resources"]
    # KubeSpawner writes JupyterHub's byte strings ("4G") as bytes.
    assert minimal == {"limits": {"cpu": 2.0, "memory": 4 * 1024 ** 3}, "requests": {"cpu": 0.5, "memory": 1024 ** 3}}
    assert gpu["limits"] == {"cpu": 8.0, "memory": 32 * 1024 ** 3, "nvidia.com/gpu": "1"}
    assert gpu["requests"] == {"cpu": 2.0, "memory": 8 * 1024 ** 3, "nvidia.com/gpu": "1"}


# --- Docker: the DockerSpawner config into DockerSpawner -----------------------------------------

class DockerAPIStandIn(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The two Docker Engine API calls DockerSpawner makes to create a container: GET /version
    (the client's API version negotiation) and POST /containers/create, which it records."""

    daemon_threads = True

    def __init__(self, path: str):
        self.created: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def address_string(self):
                return "docker.sock"

            def log_message(self, *args):
                pass

            def _json(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                if self.path.endswith("/version"):
                    self._json(200, {"ApiVersion": "1.43", "Version": "24.0.0", "MinAPIVersion": "1.12"})
                else:
                    self._json(404, {"message": f"stand-in: {self.path} not served"})

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if re.match(r"^/v[0-9.]+/containers/create\?", self.path):
                    outer.created.append({"path": self.path, "body": body})
                    self._json(201, {"Id": "c0ffee" * 10 + "0000", "Warnings": []})
                else:
                    self._json(404, {"message": f"stand-in: {self.path} not served"})

        super().__init__(path, Handler)


@pytest.fixture(scope="module")
def docker_api_server(tmp_path_factory):
    """One stand-in for the module: DockerSpawner keeps one docker client per process."""
    path = str(tmp_path_factory.mktemp("docker") / "docker.sock")
    server = DockerAPIStandIn(path)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    saved = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = f"unix://{path}"
    yield server
    if saved is None:
        os.environ.pop("DOCKER_HOST", None)
    else:
        os.environ["DOCKER_HOST"] = saved
    server.shutdown()
    server.server_close()


@pytest.fixture
def docker_api(docker_api_server):
    docker_api_server.created.clear()
    return docker_api_server


def load_hub_config(path):
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader(os.path.basename(path), os.path.dirname(path)).load_config()


async def container_for(config, profile: str):
    from dockerspawner import DockerSpawner

    user, hub = hub_objects()
    spawner = DockerSpawner(config=config, user=user, hub=hub)
    spawner.api_token = HUB_TOKEN  # JupyterHub makes one per spawn
    spawner.user_options = {"profile": profile}
    spawner.run_pre_spawn_hook()  # what JupyterHub calls before Spawner.start
    await spawner.create_object()
    return spawner


def test_dockerspawner_config_creates_the_container_of_every_flavor(mlws, tmp_path, docker_api):
    output = tmp_path / "jupyterhub_config.py"
    result = mlws("deploy", "dockerspawner-config", "--registry", REGISTRY, *digest_args(DIGESTS), "-o", str(output))
    assert result.returncode == 0, result.stderr
    config = load_hub_config(str(output))
    assert config.JupyterHub.spawner_class == "dockerspawner.DockerSpawner"
    flavors = flavors_of()
    form = config.Spawner.options_form(None)
    assert all(f'value="{name}"' in form for name in flavors)
    assert config.Spawner.options_from_form({"profile": ["gpu"]}) == {"profile": "gpu"}
    for name, flavor in flavors.items():
        asyncio.run(container_for(config, name))
        request = docker_api.created[-1]
        body = request["body"]
        assert f"name=jupyter-{USER}" in request["path"]
        assert body["Image"] == f"{REGISTRY}/{flavor.image}@{DIGESTS[name]}"
        # The image's command in full: it has an entrypoint (mlws start) and no CMD to append to.
        assert body["Entrypoint"] == ["mlws"] and body["Cmd"] == ["start"]
        env = dict(item.split("=", 1) for item in body["Env"])
        assert env["AUTHENTICATE_VIA_JUPYTER"] == "true"
        settings = parse_settings({**env, "WORKSPACE_PORT": "8080"})
        assert (settings.auth_mode, settings.port, settings.hub_bind) == ("hub", 8080, "0.0.0.0")
        assert list(body["ExposedPorts"]) == ["8080/tcp"]
        host = body["HostConfig"]
        assert host["Binds"] == [f"mlws-workspace-{USER}:/workspace:rw"]
        assert host["NetworkMode"] == "mlws" and host["AutoRemove"] is True
        gpu = flavor.cuda is not None and flavor.cuda.enable
        assert host["Memory"] == {False: 4 if flavor.extends is None else 8, True: 32}[gpu] * 1024 ** 3
        assert host["CpuQuota"] == int({False: 2 if flavor.extends is None else 4, True: 8}[gpu] * host["CpuPeriod"])
        if gpu:
            assert host["DeviceRequests"] == [{"Driver": "", "Count": 1, "DeviceIDs": [],
                                                "Capabilities": [["gpu"]], "Options": {}}]
        else:
            assert not host.get("DeviceRequests")
    assert len(docker_api.created) == len(flavors)


def test_dockerspawner_config_refuses_an_unknown_profile(mlws, tmp_path, docker_api):
    output = tmp_path / "jupyterhub_config.py"
    assert mlws("deploy", "dockerspawner-config", "-o", str(output)).returncode == 0
    with pytest.raises(ValueError, match="unknown workspace profile 'nope'"):
        asyncio.run(container_for(load_hub_config(str(output)), "nope"))
    assert not docker_api.created


# --- from the spec, with clear errors ----------------------------------------------------------------

def test_a_new_flavor_is_a_new_profile(mlws, repo_copy, tmp_path, kubeconfig, docker_api):
    (repo_copy / "spec" / "flavors" / "nlp.toml").write_text(
        'description = "minimal plus NLTK"\nextends = "minimal"\nimage = "ml-workspace-nlp"\npython = ["nltk"]\n')
    digest = "sha256:" + "e" * 64
    values_file, config_file = tmp_path / "values.yaml", tmp_path / "jupyterhub_config.py"
    for command, output in (("helm-values", values_file), ("dockerspawner-config", config_file)):
        result = mlws("deploy", command, "--root", str(repo_copy), "--registry", REGISTRY,
                      "--digest", f"nlp={digest}", "-o", str(output))
        assert result.returncode == 0, result.stderr
    values = yaml.safe_load(values_file.read_text())
    assert "nlp" in [entry["slug"] for entry in values["singleuser"]["profileList"]]
    pod = asyncio.run(pod_for(z2jh_kubespawner_config(values), "nlp"))
    assert pod["spec"]["containers"][0]["image"] == f"{REGISTRY}/ml-workspace-nlp@{digest}"
    asyncio.run(container_for(load_hub_config(str(config_file)), "nlp"))
    assert docker_api.created[-1]["body"]["Image"] == f"{REGISTRY}/ml-workspace-nlp@{digest}"


def test_missing_digests_leave_a_placeholder_no_registry_accepts(mlws):
    result = mlws("deploy", "helm-values")
    assert result.returncode == 0
    assert "placeholders left" in result.stderr and "pass --registry" in result.stderr
    assert "@sha256:REPLACE-WITH-THE-DIGEST-CI-PUSHED" in result.stdout
    assert not re.search(r"@sha256:[0-9a-f]{64}", result.stdout)


@pytest.mark.parametrize("args, expected", [
    (["--digest", "gpu=sha256:123"], "--digest gpu='sha256:123': expected sha256: and 64 lower-case hex digits"),
    (["--digest", "nope=sha256:" + "a" * 64], "--digest nope=...: no flavor 'nope'"),
    (["--digest", "gpu"], "--digest 'gpu': expected FLAVOR=sha256:<64 hex digits>"),
    (["--registry", "https://ghcr.io/x/"], "--registry 'https://ghcr.io/x/': expected a registry and path"),
    (["--default-flavor", "huge"], "--default-flavor 'huge': no such flavor"),
    (["--storage", "ten"], "--storage 'ten': expected a Kubernetes quantity"),
])
def test_bad_parameters_are_usage_errors(mlws, tmp_path, args, expected):
    output = tmp_path / "values.yaml"
    result = mlws("deploy", "helm-values", *args, "-o", str(output))
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists()  # nothing half-written


def test_bad_digests_file_is_a_usage_error(mlws, tmp_path):
    digests = tmp_path / "digests.json"
    digests.write_text("[1, 2]")
    result = mlws("deploy", "dockerspawner-config", "--digests-file", str(digests))
    assert result.returncode == 2 and "--digests-file" in result.stderr and "expected a JSON object" in result.stderr
    digests.write_text(json.dumps({"gpu": "sha256:" + "b" * 64}))
    result = mlws("deploy", "dockerspawner-config", "--digests-file", str(digests), "--registry", REGISTRY)
    assert result.returncode == 0 and f"{REGISTRY}/ml-workspace-gpu@sha256:{'b' * 64}" in result.stdout


def test_digests_from_the_pipelines_push_output(mlws, tmp_path):
    """`mlws image push --digest-file` / `mlws image index` print <registry>/<image>@<digest>."""
    pushed = tmp_path / "pushed.txt"
    pushed.write_text(f"{REGISTRY}/ml-workspace@{DIGESTS['full']}\n{REGISTRY}/ml-workspace-gpu@{DIGESTS['gpu']}\n")
    result = mlws("deploy", "helm-values", "--digests-file", str(pushed))
    assert result.returncode == 0, result.stderr
    images = {entry["slug"]: entry["kubespawner_override"]["image"]
              for entry in yaml.safe_load(result.stdout)["singleuser"]["profileList"]}
    assert images["full"] == f"{REGISTRY}/ml-workspace@{DIGESTS['full']}"
    assert images["gpu"] == f"{REGISTRY}/ml-workspace-gpu@{DIGESTS['gpu']}"
    assert images["minimal"].endswith("@sha256:REPLACE-WITH-THE-DIGEST-CI-PUSHED")
    assert "no digest for minimal, r, spark" in result.stderr
    pushed.write_text(f"{REGISTRY}/ml-workspace@{DIGESTS['full']}\nother.example/x/ml-workspace-gpu@{DIGESTS['gpu']}\n")
    result = mlws("deploy", "helm-values", "--digests-file", str(pushed))
    assert result.returncode == 2 and "expected the images of one registry" in result.stderr
    pushed.write_text(f"{REGISTRY}/not-ours@{DIGESTS['full']}\n")
    result = mlws("deploy", "helm-values", "--digests-file", str(pushed))
    assert result.returncode == 2 and "line 1" in result.stderr and "with an image of the spec" in result.stderr
