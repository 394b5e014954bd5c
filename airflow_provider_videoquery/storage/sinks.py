"""Where the bytes of a download go, hashed on the way: a temporary object, or the final S3 key itself.

* ``file://`` and stores without an invisible-until-complete write: a temporary object beside the
  destination (``.<name>.part-<random>``), renamed into place by the caller once verified. A local
  temporary is flushed and fsynced before that rename, and the folder after it (:func:`sync_folder`),
  so a host crash cannot leave an empty file that was reported as stored. Temporaries a killed worker
  left in a local folder are removed by the next download into it once they are older than
  :data:`STALE_PART_AGE` (:func:`remove_stale_parts`), and at once by a batch that holds the lease on
  the names they stand for (its earlier try was their only writer);
* S3: the final key directly. Its multipart upload stays invisible until it is completed and is aborted
  on any failure, so a partial object can never appear — and there is no second full copy (``mv`` on S3
  is a server-side copy plus a delete).

Each block is hashed on a helper thread while it is written and while the next one is received (all
three release the GIL; the caller alternates two buffers): the block costs the longest of hashing and
receiving + writing instead of their sum. On S3 the writes go to
:class:`~.multipart.MultipartUpload`, which keeps several parts uploading while the next one fills; on
other object stores a write may block while a part uploads, so a background thread does the writing
from a small bounded queue and the download goes on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import secrets
import stat
import threading
import time
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import Any, Protocol

from airflow.sdk import ObjectStoragePath
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractBufferedFile

import airflow_provider_videoquery.storage.writeback as writeback
from airflow_provider_videoquery.storage.multipart import MultipartUpload
from airflow_provider_videoquery.storage.paths import object_uri

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: Buffer of the storage file: the multipart part size on S3-like stores (their minimum is 5 MiB).
WRITE_BLOCK_SIZE = 8 * MiB
#: Blocks (of about 1 MiB) waiting for the background writer: the memory bound of an upload's pipeline.
PENDING_BLOCKS = 4
#: Local files are written in slices of this size: on ext4, one 1 MiB ``write()`` measured ~0.5 GB/s
#: where 64 KiB ones reached ~4 GB/s (the copy into the page cache stays in the CPU cache).
LOCAL_WRITE_SIZE = 64 * 1024
#: Protocols whose writes are invisible until closed and cleanly abortable (an S3 multipart upload).
DIRECT_PROTOCOLS = frozenset({"s3", "s3a"})
#: Seconds after its last write when a local ``.part-`` temporary is surely orphaned: a live download
#: writes at least every read timeout (60 s by default) or retry delay (at most 30 s), so an hour-old
#: temporary belongs to a killed worker, never to a concurrent writer.
STALE_PART_AGE = 3600.0
#: Name prefix of the probe file :func:`.checks.check_destination` writes and removes at once.
PROBE_PREFIX = ".videoquery-probe-"
#: The name of a temporary written by :meth:`Sink.beside` (or of a destination check's probe).
PART_NAME = re.compile(rf"(\..+\.part-|{re.escape(PROBE_PREFIX)})[0-9a-f]{{12}}")
#: A folder is searched for stale temporaries at most this often per process: a batch storing 1,000
#: files into one folder lists it once, not 1,000 times (a temporary is stale only after an hour).
SWEEP_EVERY = 600.0
#: Threads hashing the blocks of every sink of the process (:func:`_hashers`).
HASH_THREADS = 8
_hash_pool: ThreadPoolExecutor | None = None
_hash_pool_lock = threading.Lock()
_swept: dict[str, float] = {}
_swept_lock = threading.Lock()


class Sink:
    """One object being written and hashed; ``size`` counts the bytes accepted so far.

    ``temporary`` sinks write beside the destination and must be moved into place; the others write
    the destination itself, which appears only when :meth:`finish` completes.
    """

    def __init__(self, path: ObjectStoragePath, *, temporary: bool) -> None:
        self.path = path
        self.temporary = temporary
        self.size = 0
        self._finished = False
        self._fs = path.fs
        self._hash = hashlib.sha256()
        self._hashing: Future[None] | None = None
        self._out = _output(path)

    @classmethod
    def beside(cls, destination: ObjectStoragePath) -> Sink:
        """A temporary object next to ``destination`` (removing stale ones a killed run left there)."""
        if _sweep_due(object_uri(destination).rpartition("/")[0]):
            remove_stale_parts(destination.parent)
        return cls(destination.with_name(f".{destination.name}.part-{secrets.token_hex(6)}"), temporary=True)

    @classmethod
    def direct(cls, destination: ObjectStoragePath) -> Sink:
        """``destination`` itself; only for :data:`DIRECT_PROTOCOLS`."""
        return cls(destination, temporary=False)

    def write(self, block: memoryview) -> None:
        """Write ``block`` and hash it on the helper thread, which may still be hashing it when this
        returns: the caller keeps ``block`` unchanged until the next :meth:`write`, :meth:`finish` or
        :meth:`discard` returns (two buffers in turn), so it can receive the next block meanwhile.

        The first block is hashed here instead: handing it over costs more than it saves for a file of
        one block, and a longer one overlaps from its second block on."""
        self.wait_hashed()
        if self.size:
            self._hashing = _hashers().submit(self._hash.update, block)
        else:
            self._hash.update(block)  # releases the GIL: the other downloads go on meanwhile
        self._out.write(block)
        self.size += len(block)

    def wait_hashed(self) -> None:
        """Wait for the hash of the last block written (its buffer is then free again)."""
        if self._hashing is not None:
            hashing, self._hashing = self._hashing, None
            hashing.result()

    def finish(self) -> str:
        """Write out everything and close (on S3: complete the upload); return the sha256."""
        self.wait_hashed()
        self._out.close()
        self._finished = True
        return self._hash.hexdigest()

    def discard(self) -> None:
        """Abandon the write and leave nothing behind; never raises."""
        with suppress(Exception):
            self.wait_hashed()  # the caller may reuse the block's buffer once this returns
        if self._finished and not self.temporary:
            return  # already complete at the destination: nothing partial to remove
        try:
            self._out.discard()
        except Exception:
            log.warning("Could not abort the write of %s", object_uri(self.path), exc_info=True)
        if self.temporary:
            self._remove()

    def _remove(self) -> None:
        try:
            with suppress(Exception):
                self._fs.invalidate_cache(self.path.path)
            if self._fs.exists(self.path.path):
                self._fs.rm(self.path.path)
        except Exception:
            log.warning("Could not remove the temporary object %s", object_uri(self.path), exc_info=True)


# -- outputs: where a sink's blocks are written --------------------------------------------------------


class _Output(Protocol):
    def write(self, block: memoryview, /) -> object:
        """Take ``block`` (the caller may reuse it once this returns)."""

    def close(self) -> None:
        """Write out everything: the object is complete."""

    def discard(self) -> None:
        """Abandon the write; nothing is committed."""


def _output(path: ObjectStoragePath) -> _Output:
    """S3: several parts in flight; local files: direct sliced writes; other stores: a writer thread."""
    fs = path.fs
    if path.protocol in DIRECT_PROTOCOLS:
        return MultipartUpload(fs, path.path)
    if isinstance(fs, LocalFileSystem):
        return _LocalFile(fs, path)
    return _BackgroundWriter(fs.open(path.path, "wb", block_size=WRITE_BLOCK_SIZE), object_uri(path))


class _LocalFile:
    """A local file written in :data:`LOCAL_WRITE_SIZE` slices, handed to the kernel for write-out every
    :data:`~.writeback.WRITEBACK_STEP` bytes (:mod:`.writeback`); the caller removes it on discard."""

    def __init__(self, fs: LocalFileSystem, path: ObjectStoragePath) -> None:
        os.makedirs(os.path.dirname(path.path), exist_ok=True)
        # The file itself, unbuffered: each slice is one write() (fsspec's wrapper added a call per
        # slice and a buffer copy, the same bytes in the end).
        self._file: Any = open(path.path, "wb", buffering=0)  # noqa: SIM115 - closed by close/discard
        self._written = 0
        self._unsynced_from = 0

    def write(self, block: memoryview) -> None:
        for start in range(0, len(block), LOCAL_WRITE_SIZE):
            self._file.write(block[start : start + LOCAL_WRITE_SIZE])
        self._written += len(block)
        if self._written - self._unsynced_from >= writeback.WRITEBACK_STEP:
            self._file.flush()
            writeback.start_writeback(
                self._file.fileno(), self._unsynced_from, self._written - self._unsynced_from
            )
            self._unsynced_from = self._written

    def close(self) -> None:
        """Write out and fsync before the caller renames the file into place."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def discard(self) -> None:
        self._file.close()


def _hashers() -> ThreadPoolExecutor:
    """The process's hashing threads. Shared, so a small file does not pay for starting and joining a
    thread of its own; each sink's blocks are still hashed in order (it waits for its previous block's
    hash before submitting the next). Made anew in a forked child, which has none of the threads."""
    global _hash_pool
    with _hash_pool_lock:
        if _hash_pool is None:
            _hash_pool = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="videoquery-sha256")
        return _hash_pool


def _forget_hashers() -> None:
    global _hash_pool, _hash_pool_lock
    _hash_pool, _hash_pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_hashers)


def _sweep_due(key: str) -> bool:
    """Whether the folder ``key`` (its URI) was not searched for stale temporaries in the last
    :data:`SWEEP_EVERY` seconds."""
    now = time.monotonic()
    with _swept_lock:
        last = _swept.get(key)
        if last is not None and now - last < SWEEP_EVERY:
            return False
        if len(_swept) >= 4096:  # a long-lived worker writing into many folders
            _swept.clear()
        _swept[key] = now
        return True


def remove_stale_parts(
    folder: ObjectStoragePath, now: float | None = None, owned: Collection[str] = ()
) -> list[str]:
    """Remove the temporaries (:data:`PART_NAME`) in a local ``folder`` not written to for
    :data:`STALE_PART_AGE` seconds: a killed worker's leftovers. Returns their names; never raises.

    :param owned: file names the caller alone writes (a batch holding its manifest's lease): their
        temporaries are leftovers whatever their age, removed too.
    """
    if not isinstance(folder.fs, LocalFileSystem):
        return []  # elsewhere a temporary is invisible until its write completes
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        names = [name for name in os.listdir(folder.path) if name.startswith(".")]
    except OSError:  # no folder yet (or unreadable: the write will say so)
        return removed
    for name in names:
        if not PART_NAME.fullmatch(name):
            continue
        path = os.path.join(folder.path, name)
        mine = name[1:].rpartition(".part-")[0] in owned
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or (now - info.st_mtime < STALE_PART_AGE and not mine):
                continue
            os.unlink(path)
        except OSError:  # gone meanwhile: another run cleaned up
            continue
        removed.append(name)
        log.info(
            "Removed %s, a temporary file a killed download left (last written %.1f hours ago).",
            path,
            max(0.0, now - info.st_mtime) / 3600,
        )
    return removed


def sync_folder(path: ObjectStoragePath) -> None:
    """fsync the local folder holding ``path``, so a rename into it survives a host crash."""
    if not isinstance(path.fs, LocalFileSystem):
        return
    descriptor = os.open(os.path.dirname(path.path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class _BackgroundWriter:
    """Writes blocks to a store's file on its own thread; at most :data:`PENDING_BLOCKS` wait in between.

    A failed write is raised on the caller's next :meth:`write` or :meth:`close`.
    """

    def __init__(self, file: Any, name: str) -> None:
        self._file = file
        self._queue: queue.Queue[bytes | None] = queue.Queue(PENDING_BLOCKS)
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"videoquery-writer {name}", daemon=True)
        self._thread.start()

    def write(self, block: memoryview) -> None:
        self._raise_error()
        self._queue.put(bytes(block))

    def close(self) -> None:
        """Wait until every queued block is written, then close the file (committing it)."""
        self._join()
        self._raise_error()
        self._file.close()

    def discard(self) -> None:
        """Drop what is still queued, wait for the write in progress, and abort the file."""
        self._stopped = True
        with suppress(Exception):
            self._join()
        if isinstance(self._file, AbstractBufferedFile):
            try:
                self._file.discard()  # abort a multipart upload: nothing was committed
            finally:
                self._file.closed = True  # and never let close() (or __del__) commit a part
        else:
            self._file.close()

    def _join(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            if self._error is None and not self._stopped:
                try:
                    self._file.write(block)
                except BaseException as err:  # handed to the downloading thread
                    self._error = err
