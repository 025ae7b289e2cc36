"""Per-start secrets of tools that cannot listen on a unix socket (manifest `secret`): the header
the gateway presents to the tool, and the files, in each tool's own format, that tell the tool
what to require. Each format is one small function; a new one is added here and named in the
generator's list of formats (generator/load.py)."""
from __future__ import annotations

import base64
import hashlib
import os
import secrets


def gateway_headers(secret, value: str | None) -> tuple[tuple[str, str], ...]:
    """The request header the gateway sends a tool with a per-start secret (manifest `secret.scheme`)."""
    if secret is None or value is None or secret.scheme is None:
        return ()
    if secret.scheme == "basic":
        return (("Authorization", "Basic " + base64.b64encode(f"{secret.user}:{value}".encode()).decode("ascii")),)
    return ((secret.header, value),)


def xauthority_entry(display: int, cookie: bytes) -> bytes:
    """One Xauthority record (libXau's format: big-endian 16-bit family, then length-prefixed
    address, display number, auth name and data). FamilyWild (0xFFFF) with an empty address
    matches any host name, so the cookie works whatever the container's host name is."""
    def counted(data: bytes) -> bytes:
        return len(data).to_bytes(2, "big") + data
    return (0xFFFF).to_bytes(2, "big") + counted(b"") + counted(str(display).encode()) + \
        counted(b"MIT-MAGIC-COOKIE-1") + counted(cookie)


def glances_password_file(secret: str) -> str:
    """Glances' <user>.pwd content for password `secret` (glances/password.py: the server keeps
    salt$get_hash(get_hash(password), salt), get_hash = pbkdf2_hmac sha256, 100000 rounds, dklen 128,
    hex; a basic-auth password is checked as check_password(stored, get_hash(password)))."""
    def get_hash(text: str, salt: str = "") -> str:
        return hashlib.pbkdf2_hmac("sha256", text.encode(), salt.encode(), 100000, dklen=128).hex()
    salt = secrets.token_hex(16)
    return f"{salt}${get_hash(get_hash(secret), salt)}"


def write(path: str, fmt: str, secret: str, display: int | None) -> None:
    """A per-start secret file (0600, in the private runtime folder), in the format the tool reads."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    if fmt == "xauthority":
        data = xauthority_entry(display or 0, bytes.fromhex(secret[:32]))
    elif fmt == "glances-password":
        data = glances_password_file(secret).encode()
    else:
        data = secret.encode()
    temp = path + ".tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(temp, 0o600)
    os.replace(temp, path)
