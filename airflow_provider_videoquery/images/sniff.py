"""What a file's first bytes say it is: the image type by its magic bytes (never its name), and the
pixel size from the image's header.

Pure: bytes in, facts out. The checks before a create use it on the first bytes of a stored object or
a decoded ``data:`` URI, so a PDF named ``frame.png`` or a 1024x1024 reference for a 1280x720 video is
refused before anything is paid for.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

#: Bytes read from the start of an object to tell its type and, for most files, its pixel size.
HEADER_BYTES = 64 * 1024
#: A JPEG's size sits in its frame header, after any EXIF block; look this far for it at most.
JPEG_SEARCH_BYTES = 1024 * 1024

#: The image types the gateways document, by the name messages use, with their media type.
MEDIA_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
    "heic": "image/heic",
    "avif": "image/avif",
}
#: How messages name each kind the sniffer knows.
LABELS: dict[str, str] = {
    "png": "a PNG image",
    "jpeg": "a JPEG image",
    "webp": "a WebP image",
    "gif": "a GIF image",
    "bmp": "a BMP image",
    "tiff": "a TIFF image",
    "heic": "a HEIC image",
    "avif": "an AVIF image",
    "pdf": "a PDF document",
    "mp4": "a video (MP4/MOV)",
    "html": "an HTML page",
    "zip": "a ZIP archive",
    "svg": "an SVG drawing (text, not pixels)",
    "empty": "empty",
    "unknown": "not a file type the provider recognises",
}

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"}


def _ftyp_kind(head: bytes) -> str | None:
    if head[4:8] != b"ftyp":
        return None
    brand = head[8:12]
    if brand in (b"avif", b"avis"):
        return "avif"
    return "heic" if brand in _HEIF_BRANDS else "mp4"


def _text_kind(head: bytes) -> str | None:
    text = head[:512].lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return "html"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "svg"
    return None


#: (kind, test) in order: the first that matches names the file.
_MAGIC: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("png", lambda h: h.startswith(b"\x89PNG\r\n\x1a\n")),
    ("jpeg", lambda h: h.startswith(b"\xff\xd8\xff")),
    ("webp", lambda h: h[:4] == b"RIFF" and h[8:12] == b"WEBP"),
    ("gif", lambda h: h[:6] in (b"GIF87a", b"GIF89a")),
    ("bmp", lambda h: h[:2] == b"BM" and len(h) >= 26),
    ("tiff", lambda h: h[:4] in (b"II*\x00", b"MM\x00*")),
    ("pdf", lambda h: h.lstrip()[:5] == b"%PDF-"),
    ("zip", lambda h: h[:4] == b"PK\x03\x04"),
)


def sniff(head: bytes) -> str:
    """The kind of file ``head`` (its first bytes) starts: a key of :data:`LABELS`."""
    if not head:
        return "empty"
    for kind, test in _MAGIC:
        if test(head):
            return kind
    return _ftyp_kind(head) or _text_kind(head) or "unknown"


def is_image(kind: str) -> bool:
    return kind in MEDIA_TYPES


@dataclass(frozen=True)
class ImageFacts:
    """What the checks know about one image: its kind, byte size and, when its header says, pixels."""

    kind: str
    size: int
    width: int | None = None
    height: int | None = None

    @property
    def label(self) -> str:
        return LABELS.get(self.kind, LABELS["unknown"])

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES.get(self.kind, "application/octet-stream")

    @property
    def pixels(self) -> str | None:
        return None if self.width is None or self.height is None else f"{self.width}x{self.height}"


def facts(head: bytes, size: int) -> ImageFacts:
    """The facts of a file of ``size`` bytes starting with ``head``."""
    kind = sniff(head)
    width, height = dimensions(kind, head) or (None, None)
    return ImageFacts(kind, size, width, height)


def dimensions(kind: str, head: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of an image of ``kind``; None when ``head`` does not hold it."""
    reader = _DIMENSIONS.get(kind)
    if reader is None:
        return None
    try:
        found = reader(head)
    except (struct.error, IndexError):
        return None
    return found if found and found[0] > 0 and found[1] > 0 else None


def _png(head: bytes) -> tuple[int, int] | None:
    if head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def _gif(head: bytes) -> tuple[int, int] | None:
    width, height = struct.unpack("<HH", head[6:10])
    return int(width), int(height)


def _webp(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return int(width & 0x3FFF), int(height & 0x3FFF)
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


#: JPEG start-of-frame markers (baseline, progressive, lossless, …): they carry the pixel size.
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg(head: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 4 <= len(head):
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", head[at + 2 : at + 4])
        if marker in _SOF:
            height, width = struct.unpack(">HH", head[at + 5 : at + 9])
            return int(width), int(height)
        if marker == 0xDA:  # start of scan: no frame header came before it
            return None
        at += 2 + length
    return None


def _bmp(head: bytes) -> tuple[int, int] | None:
    width, height = struct.unpack("<ii", head[18:26])
    return abs(int(width)), abs(int(height))


_DIMENSIONS: dict[str, Callable[[bytes], tuple[int, int] | None]] = {
    "png": _png,
    "gif": _gif,
    "webp": _webp,
    "jpeg": _jpeg,
    "bmp": _bmp,
}


def needs_more(kind: str, head: bytes, size: int) -> bool:
    """Whether a JPEG's frame header may lie past ``head`` (a long EXIF block): read on to find it."""
    return kind == "jpeg" and dimensions(kind, head) is None and len(head) < min(size, JPEG_SEARCH_BYTES)


__all__ = [
    "HEADER_BYTES",
    "JPEG_SEARCH_BYTES",
    "LABELS",
    "MEDIA_TYPES",
    "ImageFacts",
    "dimensions",
    "facts",
    "is_image",
    "needs_more",
    "sniff",
]
