"""Early write-out of a local file being downloaded, so the fsync before its rename finds little left.

Without a hint the kernel starts writing a new file's pages out only after ~30 s, or at ``fsync``: the
fsync before the rename then waited for the whole file (~0.4 s per GiB here) and the writes themselves
slowed as dirty pages piled up. :func:`start_writeback` hands each finished stretch of the file to the
kernel for write-out (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``: it starts the write and returns;
it promises nothing, the fsync stays what makes the file durable). Elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable

#: Bytes written between two write-out hints: small against the page cache, large against a call.
WRITEBACK_STEP = 32 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Ask the kernel to start writing ``length`` bytes of ``fd`` from ``offset`` out; never blocks
    for the write nor raises. False where the system has no such call (or refused it)."""
    call = _sync_file_range()
    return call is not None and call(fd, offset, length, _SYNC_FILE_RANGE_WRITE) == 0


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    result: Callable[[int, int, int, int], int] = function
    return result
