"""MultipartUpload (and the S3 Sink on it) against moto's real S3 API: bytes, parts in flight, aborts.

Only a failing ``upload_part`` is injected (a real server does not fail one part on demand); every
other outcome, an upload vanishing on the server included, is produced by the server itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.emulator import Fault, Scenario
from airflow_provider_videoquery.exceptions import VideoDownloadError
from airflow_provider_videoquery.storage import resolve_destination, safe_file_name, store_url
from airflow_provider_videoquery.storage.multipart import PART_SIZE, MultipartUpload
from airflow_provider_videoquery.storage.sinks import Sink
from tests import s3
from tests.s3 import MotoS3
from tests.test_storage import settings_for

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024
KEY = "videos/clip.mp4"
TASK = "veo3.1-fast:1764522552-Mp7aRt0Up1"


def s3_path(bucket: str, key: str = KEY) -> ObjectStoragePath:
    return ObjectStoragePath(f"s3://{bucket}/{key}", conn_id="aws_default")


def upload(path: ObjectStoragePath, **kwargs: Any) -> MultipartUpload:
    return MultipartUpload(path.fs, path.path, **kwargs)


def write_in_blocks(target: Any, data: bytes, block: int = MiB + 13) -> None:
    """Uneven blocks, so parts never line up with writes, from two buffers in turn, like a download's."""
    buffers = [bytearray(block), bytearray(block)]
    for index, start in enumerate(range(0, len(data), block)):
        piece, buffer = data[start : start + block], buffers[index % 2]
        buffer[: len(piece)] = piece
        target.write(memoryview(buffer)[: len(piece)])


def write_and_close(writer: MultipartUpload, data: bytes) -> None:
    write_in_blocks(writer, data)
    writer.close()


class PartSpy:
    """Wraps the S3 client's ``upload_part``: counts the calls, the most at once, and can fail one part."""

    def __init__(self, fs: Any, monkeypatch: pytest.MonkeyPatch, fail_part: int | None = None) -> None:
        self.calls = 0
        self.running = 0
        self.most = 0
        self._fail_part = fail_part
        client = fs.s3
        self._upload_part: Callable[..., Any] = client.upload_part

        async def upload_part(**kwargs: Any) -> Any:  # s3fs filters arguments by the method's name
            return await self._spy(**kwargs)

        monkeypatch.setattr(client, "upload_part", upload_part)

    async def _spy(self, **kwargs: Any) -> Any:
        self.calls += 1
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.05)  # long enough that the next parts start meanwhile
            if kwargs["PartNumber"] == self._fail_part:
                raise OSError(f"injected failure of part {self._fail_part}")
            return await self._upload_part(**kwargs)
        finally:
            self.running -= 1


@pytest.fixture
def clean_bucket(moto_server: MotoS3, s3_bucket: str) -> Iterator[str]:
    """The bucket; afterwards no multipart upload may be left open in it, whatever the test did."""
    yield s3_bucket
    assert moto_server.uploads(s3_bucket) == []


def test_parts_upload_concurrently_and_arrive_byte_exact(
    moto_server: MotoS3, clean_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = s3_path(clean_bucket)
    data = os.urandom(4 * PART_SIZE + 3 * MiB + 5)  # 5 parts, the last one short
    spy = PartSpy(path.fs, monkeypatch)
    writer = upload(path, parts_in_flight=3)
    write_and_close(writer, data)

    assert writer.size == len(data)
    assert moto_server.read(clean_bucket, KEY) == data
    head = moto_server.client().head_object(Bucket=clean_bucket, Key=KEY, ChecksumMode="ENABLED")
    assert "ChecksumCRC32" in head  # as boto3 uploads: S3 checked each part's CRC32
    assert spy.calls == 5
    assert 2 <= spy.most <= 3  # concurrent, and never more than asked for


@pytest.mark.parametrize("size", [0, 1, 5 * MiB, PART_SIZE, 2 * PART_SIZE], ids=lambda s: f"{s}B")
def test_sizes_at_the_edges(moto_server: MotoS3, clean_bucket: str, size: int) -> None:
    """Empty and sub-part objects are one PUT; exact multiples of the part size have no empty last part."""
    data = os.urandom(size)
    write_and_close(upload(s3_path(clean_bucket)), data)
    assert moto_server.keys(clean_bucket) == [KEY]
    assert moto_server.read(clean_bucket, KEY) == data


def test_a_failed_part_aborts_the_upload(
    moto_server: MotoS3, clean_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = s3_path(clean_bucket)
    spy = PartSpy(path.fs, monkeypatch, fail_part=2)
    writer = upload(path)
    with pytest.raises(OSError, match="injected failure of part 2"):
        write_and_close(writer, os.urandom(6 * PART_SIZE))
    assert spy.calls < 6  # the failure surfaced while writing, not only at the end
    assert moto_server.keys(clean_bucket) == []
    writer.discard()  # what the sink does next: nothing left to abort, and it does not raise


def test_an_upload_gone_on_the_server_fails_and_discard_only_warns(
    moto_server: MotoS3, clean_bucket: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone aborts the upload meanwhile (or a lifecycle rule does): the next part fails.

    S3 answers 404 NoSuchUpload; moto 5.2 answers 500 (a KeyError inside it), which s3fs retries first.
    """
    path = s3_path(clean_bucket)
    monkeypatch.setattr(path.fs, "retries", 1)  # no backoff over moto's 500s
    writer = upload(path)
    write_in_blocks(writer, os.urandom(PART_SIZE + MiB))
    client = moto_server.client()
    for open_upload in client.list_multipart_uploads(Bucket=clean_bucket)["Uploads"]:
        client.abort_multipart_upload(Bucket=clean_bucket, Key=KEY, UploadId=open_upload["UploadId"])
    gone = r"NoSuchUpload|Internal Server Error"
    with caplog.at_level(logging.WARNING), pytest.raises(OSError, match=gone):
        write_and_close(writer, os.urandom(4 * PART_SIZE))
    assert moto_server.keys(clean_bucket) == []
    assert "Could not abort the multipart upload" in caplog.text


def test_discard_mid_upload_leaves_nothing(
    moto_server: MotoS3, clean_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = s3_path(clean_bucket)
    PartSpy(path.fs, monkeypatch)  # parts are still in flight when discard() comes
    writer = upload(path)
    write_in_blocks(writer, os.urandom(3 * PART_SIZE + MiB))
    writer.discard()
    writer.discard()
    assert moto_server.keys(clean_bucket) == []
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"more")


def test_the_filesystems_extra_arguments_reach_every_request(moto_server: MotoS3, clean_bucket: str) -> None:
    """s3fs's ``s3_additional_kwargs`` (SSE, a checksum) apply to the multipart and the one-PUT path alike."""
    import s3fs

    fs = s3fs.S3FileSystem(
        key=s3.ACCESS_KEY,
        secret=s3.SECRET_KEY,
        endpoint_url=moto_server.endpoint_url,
        client_kwargs={"region_name": s3.REGION},
        s3_additional_kwargs={"ServerSideEncryption": "AES256", "ChecksumAlgorithm": "SHA256"},
        skip_instance_cache=True,
    )
    client = moto_server.client()
    for key, size in (("big.mp4", 2 * PART_SIZE + 1), ("small.mp4", MiB)):
        data = os.urandom(size)
        write_and_close(MultipartUpload(fs, f"{clean_bucket}/{key}"), data)
        head = client.head_object(Bucket=clean_bucket, Key=key, ChecksumMode="ENABLED")
        assert head["ServerSideEncryption"] == "AES256"
        assert "ChecksumSHA256" in head
        assert moto_server.read(clean_bucket, key) == data


def test_a_part_body_rewinds_for_botocore_retries() -> None:
    """botocore sizes and hashes a file body from its position, then rewinds with ``seek(0)`` to resend."""
    from airflow_provider_videoquery.storage.multipart import _PartBody

    data = bytearray(os.urandom(3 * MiB + 1))
    body = _PartBody(data)
    assert body.seek(0, os.SEEK_END) == len(data)
    body.seek(0)
    first = b"".join(iter(lambda: body.read(256 * 1024), b""))
    body.seek(0)
    assert first == body.read() == data
    assert body.read(5) == b""
    body.seek(-4, os.SEEK_END)
    assert asyncio.run(_collect_chunks(body)) == data[-4:]


async def _collect_chunks(body: Any) -> bytes:
    """What aiohttp sends: the views from the current position."""
    return b"".join([bytes(chunk) async for chunk in body])


# -- through the sink and store_url -----------------------------------------------------------------


def test_sink_hashes_what_it_uploads(moto_server: MotoS3, clean_bucket: str) -> None:
    for key, size in (("empty.mp4", 0), ("parts.mp4", 3 * PART_SIZE + 7)):
        data = os.urandom(size)
        sink = Sink.direct(s3_path(clean_bucket, key))
        write_in_blocks(sink, data)
        assert sink.finish() == hashlib.sha256(data).hexdigest()
        assert sink.size == size
        assert moto_server.read(clean_bucket, key) == data


def test_store_url_uploads_many_parts(emulator: Any, moto_server: MotoS3, clean_bucket: str) -> None:
    emulator.add_task(TASK, Scenario(video_size=4 * PART_SIZE + 5, polls_to_complete=1))
    destination = resolve_destination(f"s3://{clean_bucket}/videos/", TASK, conn_id="aws_default")
    stored = store_url(emulator.video_url_for(TASK), destination, settings_for(emulator))

    expected = emulator.expected_video(TASK)
    key = f"videos/{safe_file_name(TASK)}"
    assert stored.sha256 == hashlib.sha256(expected).hexdigest()
    assert moto_server.keys(clean_bucket) == [key]
    assert moto_server.read(clean_bucket, key) == expected


def test_store_url_failing_after_several_parts_leaves_nothing(
    emulator: Any, moto_server: MotoS3, clean_bucket: str
) -> None:
    emulator.add_task(TASK, Scenario(video_size=4 * PART_SIZE, polls_to_complete=1))
    emulator.add_fault(Fault("truncate", route="video", after_bytes=3 * PART_SIZE + MiB))
    destination = resolve_destination(f"s3://{clean_bucket}/videos/", TASK, conn_id="aws_default")
    with pytest.raises(VideoDownloadError):
        store_url(emulator.video_url_for(TASK), destination, settings_for(emulator))
    assert moto_server.keys(clean_bucket) == []
