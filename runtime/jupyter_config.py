# Jupyter server configuration shipped with the mlws runtime (static; never generated).
#
# `mlws start` runs Jupyter with `--config=<this file>` and MLWS_JUPYTER_SETTINGS pointing at a
# JSON file in the runtime folder (mode 0600) that holds:
#   {"gateway_header": "X-Mlws-Gateway", "gateway_secret": "<hex>", "token": "",
#    "auth_kind_header": "X-Mlws-Auth", "user_name": "<login name>", "mode": "token"}
#
# Why: the gateway (nginx) authenticates every request itself (session cookie or token, checked
# in nginx with no round trip) and then sets the secret header, overwriting any header of that
# name a client sent. Jupyter accepts such a request as the workspace user. Jupyter itself has no
# token at all, so none can appear in a page config (B/lab, B/tree) or its server-info file: the
# permanent token never reaches a page. The gateway also says how it authenticated the request
# (auth-kind header, also always overwritten): "session" (a browser's cookie) keeps Jupyter's
# XSRF and Origin checks on; "token" (`Authorization: token`, or `?token=` on a websocket) marks
# the request token-authenticated, as plain Jupyter does for API clients.
# This file deliberately imports nothing from the `runtime` package: the Jupyter on PATH may live
# in another Python environment than the runtime.
import hmac
import json
import os
import sys

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
        settings = self._settings()
        sent = handler.request.headers.get(settings["gateway_header"], "")
        if sent and hmac.compare_digest(sent.encode(), settings["gateway_secret"].encode()):
            if handler.request.headers.get(settings.get("auth_kind_header") or "X-Mlws-Auth", "") == "token":
                handler._token_authenticated = True
            return self._workspace_user()
        return None


c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)
_settings = _load_settings()
if _settings.get("mode") == "hub":
    # Under JupyterHub the hub authenticates (OAuth, its own cookie): JupyterHub's single-user
    # server extension (JupyterHub >= 2 ships it) must be in Jupyter's environment. Without it
    # Jupyter could not log anyone in: stop with a message that says so (nothing is served).
    import importlib.util

    if importlib.util.find_spec("jupyterhub") is None:
        raise SystemExit(
            "mlws: AUTHENTICATE_VIA_JUPYTER=true: JupyterHub's single-user extension is missing: install "
            "the `jupyterhub` package into the Python environment Jupyter runs in (the image's python set)")
    c.ServerApp.jpserver_extensions.update({"jupyterhub": True})
else:
    c.ServerApp.identity_provider_class = GatewayIdentityProvider
    c.IdentityProvider.token = _settings["token"]
# jupyter-server-proxy (when a user installs it) would serve any port on the workspace's origin
# under B/proxy/<port>/, past the gateway's check of who listens there: B/tools/<port>/ is the way.
c.ServerApp.jpserver_extensions.update({"jupyter_server_proxy": False})
# Jupyter listens on a unix socket in the runtime folder. Tornado binds it with a backlog of
# 128; a full TCP backlog only delays a new connection (the SYN is sent again), but a full unix
# socket backlog refuses it at once (EAGAIN), so a burst of new gateway connections while Jupyter
# is busy gave 502s. A longer backlog (the kernel caps it at net.core.somaxconn) restores TCP's
# behaviour. jupyter_server 2.x calls `bind_unix_socket` imported into its serverapp module.
try:
    import functools

    import jupyter_server.serverapp as _serverapp
    import tornado.netutil

    if getattr(_serverapp, "bind_unix_socket", None) is tornado.netutil.bind_unix_socket:
        _serverapp.bind_unix_socket = functools.partial(tornado.netutil.bind_unix_socket, backlog=4096)
except ImportError:
    pass


# traitlets keeps an application's logger at DEBUG and filters by `log_level` only in the
# handler, so every `self.log.debug(...)` on Jupyter's per-message path (the kernel activity
# watcher logs each iopub message, the websocket relay and the message buffering more) builds a
# LogRecord (time, thread, os.getpid: a real system call) only for the handler to drop it. With
# 16 busy kernels that was ~7% of the server's CPU (py-spy, docs/benchmarks.md). The logger gets
# the handler's level instead, unless the command line asks for debug output (NOTEBOOK_ARGS).
def _debug_requested(argv: list) -> bool:
    for index, arg in enumerate(argv):
        if arg == "--debug":
            return True
        name, has_value, value = arg.partition("=")
        if name.startswith("--") and name.replace("-", "_").lower().endswith("log_level"):
            if not has_value and index + 1 < len(argv):
                value = argv[index + 1]
            if value.strip().upper() in ("DEBUG", "10") or (value.strip().isdigit() and int(value) < 20):
                return True
    return False


if not _debug_requested(sys.argv[1:]):
    c.ServerApp.logging_config = {"loggers": {"ServerApp": {"level": "INFO"}}}
# The Host header is the gateway's public one.
c.ServerApp.allow_remote_access = True
c.ServerApp.trust_xheaders = True
c.ServerApp.open_browser = False
c.ServerApp.disable_check_xsrf = False
