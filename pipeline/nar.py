"""The NAR hash of a store path, computed from the tar entries an image layer holds for it.

Why: `nix path-info` reports each store path's narHash (the SHA-256 of its Nix archive), so an
SBOM made from an image tarball can carry the very hash Nix knows the path by, and be checked
against `nix path-info --json` or `nix hash path` on any machine with the path.

The NAR format (Eelco Dolstra's thesis, ch. 5.2.1; Nix src/libutil/archive.cc): every string is a
64-bit little-endian length, the bytes, zero padding to a multiple of 8; a node is
  ( type regular [executable ""] contents <bytes> ) | ( type symlink target <t> )
  | ( type directory { entry ( name <n> node <node> ) }* )
with directory entries sorted by name. stream_layered_image.py writes a store path's files as
`sorted(chain([path], path.rglob("*")))`: parents before children, siblings by name, which is
exactly the NAR order, so the hash is computed in one pass over the layer.
"""

from __future__ import annotations

import hashlib
import struct
import tarfile
from typing import IO

_PAD = b"\0" * 8


class NarHasher:
    """Feed one store path's tar entries in layer order, then `hexdigest()`."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._open: list[tuple[str, ...]] = []  # directories not yet closed, outermost first
        self._started = False
        self.size = 0  # bytes of the NAR, as `nix path-info` reports narSize

    def _bytes(self, data: bytes) -> None:
        self._sha.update(data)
        self.size += len(data)

    def _str(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        self._bytes(struct.pack("<Q", len(data)))
        self._bytes(data)
        self._bytes(_PAD[: (-len(data)) % 8])

    def _close_top(self) -> None:
        closed = self._open.pop()
        self._str(")")  # end of the directory node
        if closed:
            self._str(")")  # end of its entry in the parent directory

    def _close_until(self, parent: tuple[str, ...]) -> None:
        """Close the open directories that are not `parent` or one of its ancestors."""
        while self._open and self._open[-1] != parent[: len(self._open[-1])]:
            self._close_top()

    def add(self, parts: tuple[str, ...], member: tarfile.TarInfo, content: IO[bytes] | None) -> None:
        """One entry: `parts` is its path below the store path (() for the store path itself)."""
        if not self._started:
            if parts:
                raise ValueError(f"store path entries start with {'/'.join(parts)!r}, not the path itself")
            self._str("nix-archive-1")
            self._started = True
        else:
            if not parts:
                raise ValueError("the store path itself appears twice")
            self._close_until(parts[:-1])
            if not self._open or self._open[-1] != parts[:-1]:
                raise ValueError(f"{'/'.join(parts)!r} comes before its directory or out of order")
            self._str("entry")
            self._str("(")
            self._str("name")
            self._str(parts[-1])
            self._str("node")
        self._str("(")
        self._str("type")
        if member.isdir():
            self._str("directory")
            self._open.append(parts)
            return
        if member.issym():
            self._str("symlink")
            self._str("target")
            self._str(member.linkname)
        elif member.isfile():
            self._str("regular")
            if member.mode & 0o100:
                self._str("executable")
                self._str("")
            self._str("contents")
            self._bytes(struct.pack("<Q", member.size))
            remaining = member.size
            while remaining and content is not None:
                chunk = content.read(min(remaining, 1 << 20))
                if not chunk:
                    raise ValueError(f"{'/'.join(parts)!r}: file ends before its {member.size} bytes")
                self._bytes(chunk)
                remaining -= len(chunk)
            if remaining:
                raise ValueError(f"{'/'.join(parts)!r}: contents missing")
            self._bytes(_PAD[: (-member.size) % 8])
        else:
            raise ValueError(f"{'/'.join(parts) or 'store path'!r}: a {member.type!r} entry has no NAR form")
        self._str(")")  # end of this node
        if parts:
            self._str(")")  # end of its entry

    def hexdigest(self) -> str:
        if not self._started:
            raise ValueError("no entries for the store path")
        while self._open:
            self._close_top()
        return self._sha.hexdigest()
