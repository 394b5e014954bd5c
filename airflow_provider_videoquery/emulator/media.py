"""Video bytes the emulator serves: the real tiny MP4 shipped in ``assets/`` or generated MP4-looking
bytes of any size, produced chunk by chunk for any byte range (never held whole in memory)."""

from __future__ import annotations

import base64
import functools
import random
import struct
from collections.abc import Iterator
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
SAMPLE_MP4 = ASSETS / "sample.mp4"
THUMBNAIL_JPG = ASSETS / "thumb.jpg"

CHUNK_SIZE = 64 * 1024
_PATTERN_SEED = 20240601


@functools.cache
def sample_mp4() -> bytes:
    """The real, playable 2 s 160x90 H.264 MP4 (a few KB)."""
    return SAMPLE_MP4.read_bytes()


@functools.cache
def thumbnail_jpg() -> bytes:
    return THUMBNAIL_JPG.read_bytes()


@functools.cache
def _pattern() -> bytes:
    """CHUNK_SIZE deterministic pseudo-random bytes, stored twice so any window of CHUNK_SIZE bytes
    starting inside the first copy is one slice."""
    block = random.Random(_PATTERN_SEED).randbytes(CHUNK_SIZE)
    return block + block


def generated_header(total: int) -> bytes:
    """``ftyp`` box + ``mdat`` box header for a generated file of ``total`` bytes (cut to ``total``)."""
    ftyp = struct.pack(">I4s4sI", 32, b"ftyp", b"isom", 0x200) + b"isomiso2avc1mp41"
    payload_start = len(ftyp) + 8
    mdat_size = total - len(ftyp)
    if mdat_size <= 0xFFFFFFFF:
        mdat = struct.pack(">I4s", max(mdat_size, 8), b"mdat")
    else:  # 64-bit "largesize" box header
        mdat = struct.pack(">I4sQ", 1, b"mdat", mdat_size)
        payload_start += 8
    header = ftyp + mdat
    assert len(header) == payload_start
    return header[:total]


def iter_generated(total: int, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Bytes ``[start, end)`` of the generated file of ``total`` bytes, in chunks of ≤ CHUNK_SIZE."""
    end = total if end is None else min(end, total)
    if start < 0 or start > end:
        raise ValueError(f"bad range [{start}, {end}) for {total} bytes")
    header = generated_header(total)
    pos = start
    if pos < len(header):
        piece = header[pos:end]
        if piece:
            yield piece
        pos += len(piece)
    pattern = _pattern()
    hlen = len(header)
    while pos < end:
        off = (pos - hlen) % CHUNK_SIZE
        n = min(CHUNK_SIZE, end - pos)
        yield pattern[off : off + n]
        pos += n


def generated_bytes(total: int, start: int = 0, end: int | None = None) -> bytes:
    """Whole-range convenience for tests (small sizes only)."""
    return b"".join(iter_generated(total, start, end))


def video_length(size: int | None) -> int:
    """Length of the video served for a scenario's ``video_size``."""
    return len(sample_mp4()) if size is None else size


def iter_video(size: int | None, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Bytes ``[start, end)`` of the video for a scenario's ``video_size`` (None = sample.mp4)."""
    if size is None:
        data = sample_mp4()
        stop = len(data) if end is None else min(end, len(data))
        for pos in range(start, stop, CHUNK_SIZE):
            yield data[pos : min(pos + CHUNK_SIZE, stop)]
        return
    yield from iter_generated(size, start, end)


def video_bytes(size: int | None) -> bytes:
    """The whole video for a scenario's ``video_size`` (tests: compare with a download)."""
    return b"".join(iter_video(size))


def video_data_uri(size: int | None) -> str:
    """The video as an inline ``data:video/mp4;base64,…`` URI, as some gateways report a finished one."""
    return "data:video/mp4;base64," + base64.b64encode(video_bytes(size)).decode("ascii")
