"""Image files for the tests, built here byte by byte: a real (decodable) PNG of any size, and the
headers of the other kinds as their formats define them (enough for type and pixel-size sniffing)."""

from __future__ import annotations

import base64
import struct
import zlib


def png(width: int = 64, height: int = 36, seed: int = 0) -> bytes:
    """A valid RGB PNG of ``width`` x ``height`` (a gradient; ``seed`` varies its bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes((x * 7 + seed) % 256 for x in range(width * 3))
    raw = b"".join(b"\x00" + row for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def jpeg(width: int = 64, height: int = 36, exif_bytes: int = 0) -> bytes:
    """A JPEG's markers up to its frame header (SOF0 with the size), after an APP1 block of
    ``exif_bytes`` (split in 64 KB segments, as a long EXIF/XMP block is)."""
    out = b"\xff\xd8" + b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    left = exif_bytes
    while left > 0:
        size = min(left, 65000)
        out += b"\xff\xe1" + struct.pack(">H", size + 2) + b"\x00" * size
        left -= size
    sof = struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return out + b"\xff\xc0" + sof + b"\xff\xda" + struct.pack(">H", 12) + b"\x00" * 10 + b"\xff\xd9"


def webp(width: int = 64, height: int = 36) -> bytes:
    """An extended (VP8X) WebP header of that canvas size."""
    vp8x = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def gif(width: int = 64, height: int = 36) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"\x3b"


PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< >>\n%%EOF\n"


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"
