"""Nix store path names and hashes.

A store path is /nix/store/<32 chars of Nix base32>-<name>; `name` is "<pname>-<version>" where
the version starts at the first dash followed by a character that is not a letter, the rule of
Nix's own `builtins.parseDrvName` (DrvName in src/libstore/names.cc).
"""

from __future__ import annotations

import base64
import re

STORE_DIR = "/nix/store"
NIX32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"  # Nix's base32: no e, o, u, t
_STORE_BASENAME = re.compile(r"^[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+$")


def is_store_basename(name: str) -> bool:
    return bool(_STORE_BASENAME.match(name))


def split_name(basename: str) -> tuple[str, str]:
    """'abc...-python3.12-numpy-2.0.1' -> ('python3.12-numpy', '2.0.1'); no version -> ''."""
    name = basename[33:] if is_store_basename(basename) else basename
    for index in range(len(name) - 1):
        if name[index] == "-" and not name[index + 1].isalpha():
            return name[:index], name[index + 1:]
    return name, ""


def nix32_decode(text: str) -> bytes:
    """Decode Nix's base32 (least significant digit last, bits packed little-endian)."""
    size = len(text) * 5 // 8
    out = bytearray(size)
    for n, char in enumerate(reversed(text)):
        digit = NIX32_ALPHABET.find(char)
        if digit < 0:
            raise ValueError(f"{char!r} is not a Nix base32 digit")
        bit = n * 5
        index, shift = divmod(bit, 8)
        out[index] |= (digit << shift) & 0xFF
        carry = digit >> (8 - shift)
        if carry:
            if index + 1 >= size:
                raise ValueError("Nix base32 value too long")
            out[index + 1] |= carry
    return bytes(out)


def sha256_hex(nar_hash: str) -> str:
    """A Nix hash as hex: 'sha256-<base64>' (SRI, newer Nix), 'sha256:<nix32|hex|base64>'."""
    if nar_hash.startswith("sha256-"):
        raw = base64.b64decode(nar_hash[len("sha256-"):], validate=True)
    elif nar_hash.startswith("sha256:"):
        value = nar_hash[len("sha256:"):]
        if len(value) == 64 and re.fullmatch(r"[0-9a-f]{64}", value):
            return value
        raw = nix32_decode(value) if len(value) == 52 else base64.b64decode(value, validate=True)
    else:
        raise ValueError(f"not a sha256 hash: {nar_hash!r} (expected sha256-<base64> or sha256:<digits>)")
    if len(raw) != 32:
        raise ValueError(f"not a sha256 hash: {nar_hash!r} decodes to {len(raw)} bytes, not 32")
    return raw.hex()
