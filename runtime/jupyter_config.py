# Jupyter server configuration shipped with the mlws runtime (static; never generated).
#
# `mlws start` runs Jupyter with `--config=<this file>` and MLWS_JUPYTER_SETTINGS pointing at a
# JSON file in the runtime folder (mode 0600) that holds:
#   {"gateway_header": "X-Mlws-Gateway", "gateway_secret": "<hex>", "token": "<token>",
#    "user_name": "<login name>"}
#
# Why: the gateway (nginx) authenticates every request itself (session cookie or token, checked
# in nginx with no round trip) and then sets the secret header, overwriting any header of that
# name a client sent. Jupyter accepts such a request as the workspace user WITHOUT marking it
# token-authenticated, so Jupyter's XSRF and Origin checks stay on for browsers. Requests with
# `Authorization: token <token>` (API clients) keep Jupyter's normal token authentication.
# This file deliberately imports nothing from the `runtime` package: the Jupyter on PATH may live
# in another Python environment than the runtime.
import hmac
import json
import os

from jupyter_server.auth.identity import IdentityProvider, User


def _load_settings():
    with open(os.environ["MLWS_JUPYTER_SETTINGS"], encoding="utf-8") as handle:
        return json.load(handle)


class GatewayIdentityProvider(IdentityProvider):
    """Trusts the gateway's secret header; keeps token authentication for API clients."""

    _mlws = None

    def _settings(self):
        if GatewayIdentityProvider._mlws is None:
            GatewayIdentityProvider._mlws = _load_settings()
        return GatewayIdentityProvider._mlws

    def _workspace_user(self):
        name = self._settings().get("user_name") or "workspace"
        return User(username=name, name=name, display_name=name, initials=name[:1].upper())

    async def get_user(self, handler):
        known = getattr(handler, "_jupyter_current_user", None)
        if known:
            return known
        # An explicit token wins (Jupyter's own rule): API clients stay token-authenticated.
        token_user = await self.get_user_token(handler)
        if token_user is not None:
            handler._token_authenticated = True
            return token_user
        settings = self._settings()
        sent = handler.request.headers.get(settings["gateway_header"], "")
        if sent and hmac.compare_digest(sent.encode(), settings["gateway_secret"].encode()):
            return self._workspace_user()
        return None


c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)
_settings = _load_settings()
if _settings.get("mode") == "hub":
    # Under JupyterHub the hub authenticates (OAuth, its own cookie): load JupyterHub's
    # single-user server extension when it is installed (JupyterHub >= 2 ships it).
    import importlib.util

    if importlib.util.find_spec("jupyterhub") is not None:
        c.ServerApp.jpserver_extensions.update({"jupyterhub": True})
else:
    c.ServerApp.identity_provider_class = GatewayIdentityProvider
    c.IdentityProvider.token = _settings["token"]
# Jupyter listens on 127.0.0.1 only; the Host header is the gateway's public one.
c.ServerApp.allow_remote_access = True
c.ServerApp.trust_xheaders = True
c.ServerApp.open_browser = False
c.ServerApp.disable_check_xsrf = False
