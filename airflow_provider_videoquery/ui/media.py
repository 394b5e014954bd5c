"""Stored bytes over HTTP: one ``Range`` (so a player can seek), streamed from any fsspec filesystem."""

from __future__ import annotations

import mimetypes
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: Bytes read from the store per block while streaming.
BLOCK = 256 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class Unsatisfiable(ValueError):
    """The requested range starts past the end of the object (answer 416)."""


@dataclass(frozen=True)
class Span:
    """Bytes ``start`` to ``end`` inclusive of an object of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


def parse_range(header: str | None, size: int) -> Span | None:
    """The one range ``header`` asks for within ``size`` bytes; None to send the whole object.

    ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` are honoured (``b`` past the end is cut to it); several
    ranges or a malformed header are ignored, as RFC 9110 allows. A start past the end raises
    :class:`Unsatisfiable`.
    """
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last n bytes
        count = int(last)
        if count == 0:
            raise Unsatisfiable(header)
        return Span(max(0, size - count), size - 1, size) if size else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size:
        raise Unsatisfiable(header)
    if end < start:
        return None
    return Span(start, end, size)


def iter_bytes(fs: Any, path: str, start: int, length: int) -> Iterator[bytes]:
    """``length`` bytes of ``path`` from ``start``, block by block (never the whole object in memory)."""
    with fs.open(path, "rb") as handle:
        handle.seek(start)
        left = length
        while left > 0:
            block = handle.read(min(BLOCK, left))
            if not block:
                return
            left -= len(block)
            yield block


def content_type(uri: str, recorded: str | None) -> str:
    """What the stored object is: as recorded when it was stored, else by its name."""
    if recorded:
        return recorded
    guessed, _ = mimetypes.guess_type(posixpath.basename(urlsplit(uri).path))
    return guessed or "application/octet-stream"
