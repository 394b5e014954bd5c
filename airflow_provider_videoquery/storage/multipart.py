"""An S3 multipart upload with a few parts in flight: how the S3 sink writes.

s3fs's file object uploads one part at a time and its writer waits for each. Here every full part is
handed to s3fs's own async client on fsspec's event loop while the next one fills, and the writer waits
only when :data:`PARTS_IN_FLIGHT` parts are already uploading. Memory is bounded: the parts in flight
plus the one filling, their buffers reused.

The object appears only when :meth:`MultipartUpload.close` completes the upload (smaller objects, the
empty one included, are one ``put_object``); any failure, and :meth:`MultipartUpload.discard`, aborts it,
so nothing partial is ever visible. Every request gets the filesystem's ``s3_additional_kwargs`` (SSE,
KMS key, ...) and requester-pays setting where the operation accepts them, merged by s3fs itself as for
its own file (``call_s3``; for parts, the same merge on its client); an ACL among them is passed as s3fs
passes it. Uploads carry a CRC32 checksum as boto3's do (see :meth:`MultipartUpload._default_checksum`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from s3fs import S3FileSystem

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: The size of every part but the last (S3's minimum is 5 MiB).
PART_SIZE = 8 * MiB
#: Parts uploading at once. 256 MiB into moto on 2 cores: 2 → 136 MB/s at 44 MiB peak RSS, 3 → 142 at
#: 54, 4 → 145 at 62 (the budget is 64): 3 keeps a part's worth of headroom for 2 % less.
PARTS_IN_FLIGHT = 3
#: The checksum of an upload when the client computes checksums whenever supported (botocore's default)
#: and the filesystem's extra arguments choose none: boto3's uploads choose it too.
DEFAULT_CHECKSUM_ALGORITHM = "CRC32"
#: S3 refuses part numbers above this: with 8 MiB parts, objects up to ~78 GiB.
MAX_PARTS = 10_000

_Future = concurrent.futures.Future


class MultipartUpload:
    """One S3 object written front to back: ``write`` any number of times, then ``close`` or ``discard``.

    ``fs`` is the ``s3fs.S3FileSystem`` of ``path`` (``ObjectStoragePath.fs``); ``path`` is
    ``bucket/key``. A failed ``write`` or ``close`` aborts the upload before it raises.
    """

    def __init__(
        self,
        fs: S3FileSystem,
        path: str,
        *,
        part_size: int = PART_SIZE,
        parts_in_flight: int = PARTS_IN_FLIGHT,
    ) -> None:
        if part_size < 5 * MiB:
            raise ValueError(f"S3 parts are at least 5 MiB, not {part_size} bytes")
        if parts_in_flight < 1:
            raise ValueError(f"parts_in_flight must be at least 1, not {parts_in_flight}")
        self.bucket, self.key, _ = fs.split_path(path)
        self.size = 0
        self.closed = False
        self._fs = fs
        self._path = path
        self._part_size = part_size
        self._parts_in_flight = parts_in_flight
        extra = fs.s3_additional_kwargs
        acl = extra.get("ACL") or extra.get("acl")
        self._acl: dict[str, Any] = {"ACL": acl} if acl else {}
        self._buffer = bytearray(part_size)
        self._filled = 0
        self._spare: list[bytearray] = []
        self._in_flight: dict[_Future[dict[str, Any]], bytearray] = {}
        self._parts: list[dict[str, Any]] = []
        self._upload_id: str | None = None
        self._checksum: dict[str, str] = {}
        self._checksum_key: str | None = None
        # Touched only on the event loop: the part uploads running there, and whether to start no more.
        self._tasks: set[asyncio.Task[Any]] = set()
        self._aborting = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Copy ``data`` into the part being filled (``data`` may be reused once this returns).

        Blocks only while a full part waits for one of those in flight to finish.
        """
        if self.closed:
            raise ValueError(f"The upload of s3://{self._path} is already closed")
        view = memoryview(data).cast("B")
        written = view.nbytes
        try:
            while view:
                take = min(len(view), self._part_size - self._filled)
                self._buffer[self._filled : self._filled + take] = view[:take]
                self._filled += take
                view = view[take:]
                if self._filled == self._part_size:
                    self._send()
        except BaseException:
            self._abort()
            raise
        self.size += written
        return written

    def close(self) -> None:
        """Upload the rest and complete the upload: the object appears now."""
        if self.closed:
            return
        try:
            del self._buffer[self._filled :]
            if self._upload_id is None:  # smaller than one part (or empty): one plain PUT
                self._call("put_object", Body=self._buffer, **self._acl)
            else:
                if self._filled:
                    self._send()
                while self._in_flight:
                    self._collect(block=True)
                parts = sorted(self._parts, key=lambda part: int(part["PartNumber"]))
                self._call(
                    "complete_multipart_upload", UploadId=self._upload_id, MultipartUpload={"Parts": parts}
                )
                self._upload_id = None
        except BaseException:
            self._abort()
            raise
        self.closed = True
        self._buffer = bytearray()
        self._spare.clear()
        self._fs.invalidate_cache(self._path)  # s3fs's listings of the parents may now be stale

    def discard(self) -> None:
        """Stop the parts in flight and abort the upload; never raises (a failed abort is logged)."""
        self._abort()

    # -- internals --------------------------------------------------------------------------------

    def _call(self, method: str, **kwargs: Any) -> Any:
        return self._fs.call_s3(method, Bucket=self.bucket, Key=self.key, **kwargs)

    def _default_checksum(self) -> dict[str, str]:
        """A checksum for the whole upload, chosen as boto3 chooses it.

        S3 then verifies every part and records a checksum of the object. Without one, moto computes a
        CRC64 of the whole object in Python on completion (~2 s for 256 MiB). Not when the client sends
        checksums only where required (a setting some S3-compatible stores need), nor when the
        filesystem's extra arguments already choose an algorithm.
        """
        if "ChecksumAlgorithm" in self._fs.s3_additional_kwargs:
            return {}
        config = self._fs.s3.meta.config
        if getattr(config, "request_checksum_calculation", None) != "when_supported":
            return {}
        return {"ChecksumAlgorithm": DEFAULT_CHECKSUM_ALGORITHM}

    def _send(self) -> None:
        """Start uploading the filled buffer as the next part, once fewer than the limit are in flight."""
        if self._upload_id is None:
            checksum = self._default_checksum()
            created = self._call("create_multipart_upload", **self._acl, **checksum)
            self._upload_id = created["UploadId"]
            algorithm = created.get("ChecksumAlgorithm") or checksum.get("ChecksumAlgorithm")
            self._checksum = {"ChecksumAlgorithm": algorithm} if algorithm else {}
            self._checksum_key = f"Checksum{algorithm}" if algorithm else None  # sent back on completion
        number = len(self._parts) + len(self._in_flight) + 1
        if number > MAX_PARTS:
            raise OSError(
                f"s3://{self._path} would need more than {MAX_PARTS} parts of {self._part_size} bytes, "
                "the most S3 accepts in one upload."
            )
        while len(self._in_flight) >= self._parts_in_flight:
            self._collect(block=True)
        body = self._buffer
        future = asyncio.run_coroutine_threadsafe(self._upload_part(number, body), self._fs.loop)
        self._in_flight[future] = body
        self._buffer = self._spare.pop() if self._spare else bytearray(self._part_size)
        self._filled = 0
        self._collect(block=False)  # raise a failed part early

    def _collect(self, *, block: bool) -> None:
        """Record the finished parts (waiting for one if ``block``) and raise the first failure."""
        done, _ = concurrent.futures.wait(
            self._in_flight, timeout=None if block else 0, return_when=concurrent.futures.FIRST_COMPLETED
        )
        for future in done:
            body = self._in_flight.pop(future)
            self._parts.append(future.result())
            self._spare.append(body)

    async def _upload_part(self, number: int, body: bytearray) -> dict[str, Any]:
        task = asyncio.current_task()
        if self._aborting or task is None:
            raise asyncio.CancelledError
        self._tasks.add(task)
        try:
            # Not call_s3: its retries would resend a file body from where the failed attempt left it.
            # botocore's own retries (connection errors, 5xx, SlowDown) rewind the body first.
            client = await self._fs.get_s3(self.bucket)
            params = self._fs._get_s3_method_kwargs(
                client.upload_part,
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                PartNumber=number,
                **self._checksum,
            )
            answer = await client.upload_part(**params, Body=_PartBody(body))
        except Exception as err:
            from s3fs.errors import translate_boto_error

            raise translate_boto_error(err) from err
        finally:
            self._tasks.discard(task)
        part = {"PartNumber": number, "ETag": answer["ETag"]}
        if self._checksum_key and self._checksum_key in answer:
            part[self._checksum_key] = answer[self._checksum_key]
        return part

    def _abort(self) -> None:
        self.closed = True
        self._aborting = True
        self._buffer = bytearray()
        self._spare.clear()
        upload_id, self._upload_id = self._upload_id, None
        self._in_flight.clear()
        if upload_id is None:
            return  # nothing was created, or the upload is complete
        try:
            asyncio.run_coroutine_threadsafe(self._cancel_and_abort(upload_id), self._fs.loop).result()
        except Exception:
            log.warning(
                "Could not abort the multipart upload %s of s3://%s: its parts stay stored (never "
                "visible) until it is aborted; an AbortIncompleteMultipartUpload lifecycle rule on the "
                "bucket cleans such uploads up.",
                upload_id,
                self._path,
                exc_info=True,
            )

    async def _cancel_and_abort(self, upload_id: str) -> None:
        """On the loop: cancel the part uploads, wait until they stopped, then abort (no part lands after)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._fs._call_s3(
            "abort_multipart_upload", Bucket=self.bucket, Key=self.key, UploadId=upload_id
        )


class _PartBody:
    """A part's bytes for botocore and aiohttp: a seekable file to size, hash and rewind, sent as views.

    Given bytes, aiohttp (on Python 3.11) copies a body up to three times while sending it (joined with
    the headers, sliced, buffered in the transport); given a file, it reads 256 KiB at a time through a
    thread pool. Not being an ``io.IOBase``, this is sent as an async iterable: zero-copy 1 MiB views of
    the part from the current position (which botocore rewinds before a retry), each awaited until sent.
    """

    CHUNK = 1024 * 1024

    def __init__(self, data: bytearray) -> None:
        self._data = memoryview(data)
        self._position = 0

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        start = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: len(self._data)}[whence]
        self._position = max(0, start + offset)
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._position + size
        chunk = self._data[self._position : end].tobytes()
        self._position += len(chunk)
        return chunk

    async def __aiter__(self) -> AsyncIterator[memoryview]:
        while self._position < len(self._data):
            chunk = self._data[self._position : self._position + self.CHUNK]
            self._position += len(chunk)
            yield chunk
