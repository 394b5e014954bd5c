"""Video bytes the emulator serves: the real tiny MP4 shipped in ``assets/`` or generated MP4-looking
bytes of any size, produced chunk by chunk for any byte range (never held whole in memory).

Generated bodies are a short header then one pseudo-random pattern repeated, so they can also be sent
with ``sendfile()`` from one small file of repeated patterns (:func:`generated_spans`): the kernel
copies the bytes and the emulator's Python stays out of the way of the client being measured.
"""

from __future__ import annotations

import atexit
import functools
import random
import shutil
import struct
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

ASSETS = Path(__file__).resolve().parent / "assets"
SAMPLE_MP4 = ASSETS / "sample.mp4"
THUMBNAIL_JPG = ASSETS / "thumb.jpg"

CHUNK_SIZE = 64 * 1024
_PATTERN_SEED = 20240601
#: Copies of the pattern in :func:`open_pattern_file` (16 MiB): any span of up to all but one copy of it
#: starts inside the first copy.
PATTERN_COPIES = 256
SPAN_SIZE = (PATTERN_COPIES - 1) * CHUNK_SIZE
_pattern_lock = threading.Lock()


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


def generated_spans(total: int, start: int, end: int) -> tuple[bytes, Iterator[tuple[int, int]]]:
    """Bytes ``[start, end)`` of the generated file of ``total`` bytes as the part of its header they
    hold, then ``(offset, count)`` spans of :func:`open_pattern_file` (each at most :data:`SPAN_SIZE`)."""
    if start < 0 or start > end or end > total:
        raise ValueError(f"bad range [{start}, {end}) for {total} bytes")
    header = generated_header(total)
    head = header[start:end]
    return head, _spans(start + len(head) - len(header), end - len(header))


def _spans(pos: int, stop: int) -> Iterator[tuple[int, int]]:
    while pos < stop:
        count = min(SPAN_SIZE, stop - pos)
        yield pos % CHUNK_SIZE, count
        pos += count


def open_pattern_file() -> BinaryIO:
    """The pattern :data:`PATTERN_COPIES` times in a file written once per process (16 MiB in a temporary
    directory removed at exit), opened anew for each caller: readers must not share a position."""
    with _pattern_lock:
        path = _pattern_path()
        if not path.exists():  # a temp cleaner took it: write it again
            _pattern_path.cache_clear()
            path = _pattern_path()
    return path.open("rb")


@functools.cache
def _pattern_path() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="videoquery-emulator-"))
    atexit.register(shutil.rmtree, directory, True)
    path = directory / "pattern.bin"
    path.write_bytes(_pattern()[:CHUNK_SIZE] * PATTERN_COPIES)
    return path


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
