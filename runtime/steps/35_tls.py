"""TLS certificate (named, found, or self-signed once and kept) and the basic-auth password file."""
from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess

from runtime.startup import StartContext, StartError, log
from runtime.system import find_executable, write_private

SSL_SEARCH_DIRS = ("/resources/ssl", "/run/secrets")


def htpasswd_line(user: str, password: str) -> str:
    """nginx understands {SSHA}: base64(sha1(password + salt) + salt)."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return f"{user}:{{SSHA}}{base64.b64encode(digest + salt).decode('ascii')}\n"


def certificate_files(settings, user, openssl_path: str) -> tuple[str, str]:
    if settings.ssl_cert and settings.ssl_key:
        return os.path.abspath(settings.ssl_cert), os.path.abspath(settings.ssl_key)
    for folder in SSL_SEARCH_DIRS:
        cert, key = os.path.join(folder, "cert.crt"), os.path.join(folder, "cert.key")
        if os.path.isfile(cert) and os.path.isfile(key) and os.access(key, os.R_OK):
            return cert, key
    # Generated once and kept with the user's files, so browsers see the same certificate after a restart.
    folder = os.path.join(user.pw_dir, ".mlws", "ssl")
    cert, key = os.path.join(folder, "cert.crt"), os.path.join(folder, "cert.key")
    if not (os.path.isfile(cert) and os.path.isfile(key)):
        if not openssl_path:
            raise StartError("WORKSPACE_SSL_ENABLED: no certificate found and `openssl` is not on PATH to make one")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        result = subprocess.run(
            [openssl_path, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
             "-subj", "/CN=mlws-workspace", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", key + ".tmp", "-out", cert + ".tmp"],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise StartError(f"could not generate a self-signed certificate: {result.stderr.strip()}")
        os.chmod(key + ".tmp", 0o600)
        os.replace(key + ".tmp", key)
        os.replace(cert + ".tmp", cert)
        log(f"generated a self-signed TLS certificate in {folder} (kept for later starts)")
    return cert, key


def run(ctx: StartContext) -> None:
    settings = ctx.settings
    if settings.ssl_enabled:
        ctx.ssl_cert, ctx.ssl_key = certificate_files(settings, ctx.user, find_executable("openssl", ctx.path_env) or "")
    if settings.basic_auth_user and settings.basic_auth_password:
        ctx.htpasswd = ctx.path("nginx", "htpasswd")
        write_private(ctx.htpasswd, htpasswd_line(settings.basic_auth_user, settings.basic_auth_password))
