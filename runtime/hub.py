"""Under JupyterHub (AUTHENTICATE_VIA_JUPYTER=true): what Jupyter, the hub's single-user server,
must be told that differs from what the hub told the workspace.

The spawner's JUPYTERHUB_SERVICE_URL (http://127.0.0.1:51234/user/x/) is where the hub expects the
single-user server: that is the gateway's port (runtime/settings.py reads it). JupyterHub's
server extension in Jupyter reads the same variable to choose Jupyter's ip and port, with a higher
priority than the command line, and Jupyter then refuses to start because it listens on a unix
socket ("Options --port and --sock are mutually exclusive"). So Jupyter gets the URL of where it
really listens: its socket, spelled the way jupyter_server spells socket URLs
(`http+unix://<percent-encoded path>/<prefix>`; the extension takes no port from a scheme
other than http/https), or its loopback TCP port for a manifest that gives Jupyter one.
"""
from __future__ import annotations

import urllib.parse

# The hub's API token for this server, under its current and its legacy name (JupyterHub sets
# both): it acts as the user towards the hub, so only Jupyter, the single-user server, gets it.
HUB_SECRETS = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")


def jupyter_service_url(jupyter_address: str, base_url: str) -> str:
    """Jupyter's own service URL. `jupyter_address` as nginx spells it: "unix:/path" or "127.0.0.1:PORT"."""
    if jupyter_address.startswith("unix:"):
        netloc = urllib.parse.quote(jupyter_address[len("unix:"):], safe="")
        return f"http+unix://{netloc}{base_url}/"
    return f"http://{jupyter_address}{base_url}/"


def jupyter_environment(hub_api_token: str, jupyter_address: str, base_url: str) -> dict[str, str]:
    """The variables Jupyter gets on top of the workspace's under a hub."""
    return {
        "JUPYTERHUB_API_TOKEN": hub_api_token,
        "JUPYTERHUB_SERVICE_URL": jupyter_service_url(jupyter_address, base_url),
    }
