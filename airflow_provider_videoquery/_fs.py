"""Small facts about fsspec filesystems that the manifest and its lease share."""

from __future__ import annotations

import os
from typing import Any

_LOCAL_PROTOCOLS = frozenset({"file", "local"})


def protocol(fs: Any) -> str:
    """The filesystem's (first) protocol name: ``file``, ``s3``, ``memory``, …"""
    name = fs.protocol
    return str(name[0] if isinstance(name, tuple | list) else name)


def is_local(fs: Any) -> bool:
    return protocol(fs) in _LOCAL_PROTOCOLS


def write_synced(path: str, data: bytes) -> None:
    """Write a local file and flush it to disk (before it is renamed or linked into place)."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
