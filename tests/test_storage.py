"""store_url against the emulator over real HTTP, into real storage (a tmp folder and moto's S3).

Every failure case checks both the outcome and that nothing (no partial file, no temporary) is left
at the destination.
"""

from __future__ import annotations

import hashlib
import random
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.emulator import Fault, Scenario, run_emulator
from airflow_provider_videoquery.exceptions import VideoDownloadError
from airflow_provider_videoquery.hooks._http import RetryPolicy, tls_context
from airflow_provider_videoquery.storage import (
    ContentKind,
    DownloadSettings,
    new_client,
    object_uri,
    resolve_destination,
    safe_file_name,
    store_url,
)
from airflow_provider_videoquery.storage import sinks as storage_sinks
from airflow_provider_videoquery.storage.transport import BlockTransport, RoutedTransport
from tests.conftest import API_KEY
from tests.s3 import MotoS3

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024
TASK = "veo3.1-fast:1764522552-Ab3dE9fGh1"
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2)


def settings_for(emu: Any, **overrides: Any) -> DownloadSettings:
    fields: dict[str, Any] = {
        "trusted_origin": emu.url,
        "trusted_headers": {"Authorization": f"Bearer {API_KEY}"},
        "retry": FAST_RETRY,
        "timeout": httpx.Timeout(5.0),
    }
    return DownloadSettings(**{**fields, **overrides})


def video_task(emu: Any, size: int | None = 2 * MiB, task_id: str = TASK, **scenario: Any) -> str:
    """Register a finished task and return its video URL."""
    emu.add_task(task_id, Scenario(video_size=size, polls_to_complete=1, **scenario))
    url: str = emu.video_url_for(task_id)
    return url


def folder_of(tmp_path: Path) -> Path:
    return tmp_path / "videos"


def target(tmp_path: Path, task_id: str = TASK) -> ObjectStoragePath:
    return resolve_destination(f"file://{folder_of(tmp_path)}/", task_id)


def listing(tmp_path: Path) -> list[str]:
    folder = folder_of(tmp_path)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def existing_file(tmp_path: Path, data: bytes) -> Path:
    """An object already at the task's destination, holding ``data``."""
    folder_of(tmp_path).mkdir()
    existing = folder_of(tmp_path) / safe_file_name(TASK)
    existing.write_bytes(data)
    return existing


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on a free port of 127.0.0.1 for the block; yields the URL of ``/v.mp4``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v.mp4"
    finally:
        server.shutdown()
        server.server_close()


# -- names ------------------------------------------------------------------------------------------


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@pytest.mark.parametrize(("one", "other"), [("a/b", "a_b"), ("видео", "видеа"), ("x:y", "x?y")])
def test_ids_that_sanitise_alike_get_different_names(one: str, other: str) -> None:
    assert safe_file_name(one) != safe_file_name(other)


@pytest.mark.parametrize(
    ("task_id", "name"),
    [
        ("veo3.1-fast:1764522552-Ab3dE9fGh1", "veo3.1-fast_1764522552-Ab3dE9fGh1.mp4"),
        ("sora-2:task_01k6x15vhrff09dkkqjrzwhm60", "sora-2_task_01k6x15vhrff09dkkqjrzwhm60.mp4"),
        ("876203112", "876203112.mp4"),
        # Lossy names carry a short hash of the id, so two ids never share a file.
        ("../../etc/passwd", f"etc_passwd-{short_hash('../../etc/passwd')}.mp4"),
        ("s3://other-bucket/key", f"s3_other-bucket_key-{short_hash('s3://other-bucket/key')}.mp4"),
        ("a/../b..c", f"a___b_c-{short_hash('a/../b..c')}.mp4"),
        ("..", f"{short_hash('..')}.mp4"),
        ("", "video.mp4"),
    ],
)
def test_safe_file_name(task_id: str, name: str) -> None:
    assert safe_file_name(task_id) == name
    assert "/" not in name
    assert ":" not in name
    assert ".." not in name


def test_resolve_destination_folder_and_file(tmp_path: Path) -> None:
    folder = resolve_destination(f"file://{tmp_path}/out/", "grok-video-3:abc/../x")
    assert folder.as_uri() == f"file://{tmp_path}/out/grok-video-3_abc___x-22a9b130ae.mp4"
    exact = resolve_destination(f"file://{tmp_path}/clip.mov", TASK)
    assert exact.as_uri() == f"file://{tmp_path}/clip.mov"
    with pytest.raises(VideoDownloadError, match="empty"):
        resolve_destination("  ", TASK)


def test_resolve_s3_destination_keeps_the_conn_id_out_of_the_uri() -> None:
    pytest.importorskip("airflow.providers.amazon", reason="S3 needs the [s3] extra")
    s3 = resolve_destination("s3://bucket/videos/", TASK, conn_id="aws_default")
    assert object_uri(s3) == "s3://bucket/videos/veo3.1-fast_1764522552-Ab3dE9fGh1.mp4"
    assert s3.conn_id == "aws_default"


# -- success paths ------------------------------------------------------------------------------------


def test_streams_multi_mb_video_with_matching_sha256(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator, size=12 * MiB + 123)
    stored = store_url(url, target(tmp_path), settings_for(emulator))

    expected = emulator.expected_video(TASK)
    assert stored.sha256 == sha(expected)
    assert stored.size == len(expected)
    assert stored.content_type == "video/mp4"
    assert stored.reused is False
    assert stored.uri == f"file://{folder_of(tmp_path)}/veo3.1-fast_1764522552-Ab3dE9fGh1.mp4"
    assert (folder_of(tmp_path) / stored.path.name).read_bytes() == expected
    assert listing(tmp_path) == [stored.path.name]


def test_real_sample_mp4(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator, size=None)
    stored = store_url(url, target(tmp_path), settings_for(emulator))
    data = (folder_of(tmp_path) / stored.path.name).read_bytes()
    assert data[4:8] == b"ftyp"
    assert data == emulator.expected_video(TASK)


def test_bounded_redirects_are_followed(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator, video_redirects=3)
    stored = store_url(url, target(tmp_path), settings_for(emulator))
    assert stored.sha256 == sha(emulator.expected_video(TASK))
    assert emulator.count(route="video", status=302) == 3


def test_reset_mid_body_resumes_with_range(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator, size=6 * MiB)
    emulator.add_fault(Fault("reset", route="video", times=1, after_bytes=3 * MiB))
    stored = store_url(url, target(tmp_path), settings_for(emulator))

    assert stored.sha256 == sha(emulator.expected_video(TASK))
    assert emulator.count(route="video") == 2
    assert emulator.count(route="video", status=206) == 1  # resumed, not restarted
    assert listing(tmp_path) == [stored.path.name]


def test_truncated_body_is_retried(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator, size=3 * MiB)
    emulator.add_fault(Fault("truncate", route="video", times=1, after_bytes=MiB))
    stored = store_url(url, target(tmp_path), settings_for(emulator))
    assert stored.sha256 == sha(emulator.expected_video(TASK))
    assert listing(tmp_path) == [stored.path.name]


def test_5xx_is_retried(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator)
    emulator.add_fault(Fault("http_error", route="video", status=503, times=2))
    stored = store_url(url, target(tmp_path), settings_for(emulator))
    assert stored.sha256 == sha(emulator.expected_video(TASK))


def test_image_kind_takes_the_suffix_of_what_arrived(emulator: Any, tmp_path: Path) -> None:
    video_task(emulator)
    thumb_url = f"{emulator.url}/thumbnails/{emulator.task(TASK).video_name}.jpg"
    dest = ObjectStoragePath(f"file://{folder_of(tmp_path)}/clip.thumbnail.png")
    stored = store_url(
        thumb_url, dest, settings_for(emulator), kind=ContentKind.IMAGE, suffix_from_content=True
    )
    assert stored.path.name == "clip.thumbnail.jpg"
    assert (folder_of(tmp_path) / "clip.thumbnail.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    assert listing(tmp_path) == ["clip.thumbnail.jpg"]


# -- failures: clear error, nothing left behind -------------------------------------------------------


def test_truncated_every_time_fails_and_leaves_nothing(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator, size=3 * MiB)
    emulator.add_fault(Fault("truncate", route="video", after_bytes=MiB))
    with pytest.raises(VideoDownloadError, match="still failed after 3 attempts"):
        store_url(url, target(tmp_path), settings_for(emulator))
    assert listing(tmp_path) == []


def test_html_body_with_200_is_refused(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator)
    emulator.add_fault(Fault("html_video", route="video"))
    with pytest.raises(VideoDownloadError, match=r"'text/html' instead of a video.*error page"):
        store_url(url, target(tmp_path), settings_for(emulator))
    assert listing(tmp_path) == []


def test_body_without_mp4_signature_is_refused(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator)
    body = '{"error": {"message": "quota exceeded"}}'
    emulator.add_fault(
        Fault("http_error", route="video", status=200, body=body, content_type="application/octet-stream")
    )
    with pytest.raises(VideoDownloadError, match=r"not an MP4 \('ftyp' at byte 4\).*quota exceeded"):
        store_url(url, target(tmp_path), settings_for(emulator))
    assert listing(tmp_path) == []


@pytest.mark.parametrize("status", [403, 404, 410])
def test_expired_url_fails_clearly(emulator: Any, tmp_path: Path, status: int) -> None:
    url = video_task(emulator)
    emulator.add_fault(Fault("http_error", route="video", status=status))
    with pytest.raises(VideoDownloadError, match=rf"HTTP {status}.*probably expired.*create a new task"):
        store_url(url, target(tmp_path), settings_for(emulator))
    assert emulator.count(route="video") == 1  # not retried
    assert listing(tmp_path) == []


def test_redirect_to_non_http_scheme_is_refused(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator)
    emulator.add_fault(Fault("redirect_scheme", route="video", location="file:///etc/passwd"))
    with pytest.raises(VideoDownloadError, match=r"refusing to fetch 'file:///etc/passwd'.*only http\(s\)"):
        store_url(url, target(tmp_path), settings_for(emulator))
    assert listing(tmp_path) == []


def test_non_http_video_url_is_refused(emulator: Any, tmp_path: Path) -> None:
    with pytest.raises(VideoDownloadError, match="only http"):
        store_url("ftp://127.0.0.1/x.mp4", target(tmp_path), settings_for(emulator))
    assert listing(tmp_path) == []


def test_redirect_loop_is_bounded(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator)
    emulator.add_fault(Fault("redirect_loop", route="video"))
    with pytest.raises(VideoDownloadError, match="more than 5 redirects"):
        store_url(url, target(tmp_path), settings_for(emulator))
    assert emulator.count(route="video") == 6
    assert listing(tmp_path) == []


def test_over_max_bytes_by_content_length(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator, size=2 * MiB)
    with pytest.raises(VideoDownloadError, match=r"announces 2097152 bytes, above max_bytes=1000000"):
        store_url(url, target(tmp_path), settings_for(emulator, max_bytes=1_000_000))
    assert listing(tmp_path) == []


def test_over_max_bytes_while_streaming(tmp_path: Path) -> None:
    """No Content-Length up front (chunked): the limit is enforced on the bytes as they arrive."""

    def body() -> Iterator[bytes]:
        yield b"\x00\x00\x00\x20ftypisom" + b"\x00" * (MiB - 12)
        yield b"\x00" * MiB
        yield b"\x00" * MiB

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "video/mp4"}, stream=_Stream(body()))

    settings = DownloadSettings(max_bytes=int(2.5 * MiB), retry=FAST_RETRY)
    client = httpx.Client(transport=httpx.MockTransport(handler), follow_redirects=False)
    with pytest.raises(VideoDownloadError, match=r"more than max_bytes=2621440 bytes arrived"):
        store_url("https://cdn.example.com/v.mp4", target(tmp_path), settings, client=client)
    assert listing(tmp_path) == []


class _Stream(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks


def test_host_not_in_allow_list_is_refused(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator)
    settings = settings_for(emulator, trusted_origin=None, allowed_hosts=("cdn.example.com",))
    with pytest.raises(VideoDownloadError, match=r"host '127.0.0.1' is not in .*allowed_download_hosts"):
        store_url(url, target(tmp_path), settings)
    assert emulator.count(route="video") == 0
    allowed = settings_for(emulator, trusted_origin=None, allowed_hosts=("127.0.0.1",))
    assert store_url(url, target(tmp_path), allowed).size == 2 * MiB


def test_allow_list_is_checked_at_every_hop(emulator: Any, tmp_path: Path) -> None:
    video_task(emulator)
    with run_emulator(api_key=None) as cdn:
        cdn.add_task("cdn-task", Scenario(video_size=MiB, polls_to_complete=1))
        # The gateway's own file URL redirects to the CDN (another origin).
        emulator.add_fault(Fault("redirect_scheme", route="video", location=cdn.video_url_for("cdn-task")))
        url = emulator.video_url_for(TASK)
        settings = settings_for(emulator, allowed_hosts=("cdn.example.com",))
        with pytest.raises(VideoDownloadError, match="is not in the connection's allowed_download_hosts"):
            store_url(url, target(tmp_path), settings)
    assert listing(tmp_path) == []


# -- the API key reaches the gateway only -------------------------------------------------------------


def test_api_key_goes_to_the_gateway_origin_only(emulator: Any, tmp_path: Path) -> None:
    with run_emulator(api_key=None) as cdn:
        cdn.add_task("cdn-task", Scenario(video_size=MiB, polls_to_complete=1))
        cdn_url = cdn.video_url_for("cdn-task")
        # OpenAI-style: the gateway serves /v1/videos/{id}/content itself (needs the key) and
        # redirects to the CDN's signed URL.
        emulator.add_task("video_abc123", Scenario(family="openai", polls_to_complete=1, video_url=cdn_url))
        assert emulator.state.advance("video_abc123") is not None  # the task is done
        content_url = f"{emulator.url}/v1/videos/video_abc123/content"

        seen: list[tuple[str, str | None]] = []
        settings = settings_for(emulator)
        client = new_client(settings)
        client.event_hooks["request"].append(
            lambda request: seen.append((str(request.url), request.headers.get("authorization")))
        )
        with client:
            stored = store_url(content_url, target(tmp_path), settings, client=client)

    assert stored.sha256 == sha(cdn.expected_video("cdn-task"))
    assert seen == [(content_url, f"Bearer {API_KEY}"), (cdn_url, None)]


# -- existing destinations ----------------------------------------------------------------------------


def test_rerun_with_identical_object_is_idempotent(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator)
    first = store_url(url, target(tmp_path), settings_for(emulator))
    path = folder_of(tmp_path) / first.path.name
    mtime = path.stat().st_mtime_ns

    again = store_url(url, target(tmp_path), settings_for(emulator))

    assert again.reused is True
    assert again.uri == first.uri
    assert again.sha256 == first.sha256
    assert path.stat().st_mtime_ns == mtime
    assert listing(tmp_path) == [first.path.name]


def test_conflicting_object_same_size_fails_and_is_untouched(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator)
    existing = existing_file(tmp_path, b"x" * (2 * MiB))
    with pytest.raises(
        VideoDownloadError, match=r"already exists and differs.*another sha256.*overwrite=True"
    ):
        store_url(url, target(tmp_path), settings_for(emulator))
    assert existing.read_bytes() == b"x" * (2 * MiB)
    assert listing(tmp_path) == [existing.name]


def test_conflicting_object_other_size_fails_before_downloading(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator)
    existing = existing_file(tmp_path, b"old")
    with pytest.raises(VideoDownloadError, match=r"holds 3 bytes, the download has 2097152.*overwrite=True"):
        store_url(url, target(tmp_path), settings_for(emulator))
    assert existing.read_bytes() == b"old"
    assert listing(tmp_path) == [existing.name]


def test_overwrite_replaces_a_different_object(emulator: Any, tmp_path: Path) -> None:
    url = video_task(emulator)
    existing = existing_file(tmp_path, b"old")
    stored = store_url(url, target(tmp_path), settings_for(emulator), overwrite=True)
    assert existing.read_bytes() == emulator.expected_video(TASK)
    assert stored.reused is False
    assert listing(tmp_path) == [existing.name]


# -- S3 (moto server) ---------------------------------------------------------------------------------


def s3_target(bucket: str, task_id: str = TASK) -> ObjectStoragePath:
    return resolve_destination(f"s3://{bucket}/videos/", task_id, conn_id="aws_default")


KEY = f"videos/{safe_file_name(TASK)}"


def test_s3_streams_multi_mb_video(emulator: Any, moto_server: MotoS3, s3_bucket: str) -> None:
    url = video_task(emulator, size=11 * MiB + 7)
    stored = store_url(url, s3_target(s3_bucket), settings_for(emulator))

    expected = emulator.expected_video(TASK)
    assert stored.uri == f"s3://{s3_bucket}/{KEY}"
    assert stored.sha256 == sha(expected)
    assert moto_server.keys(s3_bucket) == [KEY]
    assert moto_server.read(s3_bucket, KEY) == expected
    assert moto_server.uploads(s3_bucket) == []


def test_s3_reset_is_retried(emulator: Any, moto_server: MotoS3, s3_bucket: str) -> None:
    url = video_task(emulator, size=3 * MiB)
    emulator.add_fault(Fault("reset", route="video", times=1, after_bytes=MiB))
    stored = store_url(url, s3_target(s3_bucket), settings_for(emulator))
    assert stored.sha256 == sha(emulator.expected_video(TASK))
    assert moto_server.keys(s3_bucket) == [KEY]


@pytest.mark.parametrize(
    "fault",
    [
        Fault("truncate", route="video", after_bytes=9 * MiB),
        Fault("html_video", route="video"),
        Fault("http_error", route="video", status=410),
        Fault("redirect_loop", route="video"),
    ],
    ids=["truncated", "html", "expired", "redirect-loop"],
)
def test_s3_failures_leave_no_object(
    emulator: Any, moto_server: MotoS3, s3_bucket: str, fault: Fault
) -> None:
    url = video_task(emulator, size=10 * MiB)
    emulator.add_fault(fault)
    with pytest.raises(VideoDownloadError):
        store_url(url, s3_target(s3_bucket), settings_for(emulator))
    assert moto_server.keys(s3_bucket) == []
    assert moto_server.uploads(s3_bucket) == []


def test_s3_rerun_conflict_and_overwrite(emulator: Any, moto_server: MotoS3, s3_bucket: str) -> None:
    url = video_task(emulator)
    first = store_url(url, s3_target(s3_bucket), settings_for(emulator))
    again = store_url(url, s3_target(s3_bucket), settings_for(emulator))
    assert again.reused is True
    assert again.uri == first.uri

    moto_server.client().put_object(Bucket=s3_bucket, Key=KEY, Body=b"y" * (2 * MiB))
    with pytest.raises(VideoDownloadError, match="overwrite=True"):
        store_url(url, s3_target(s3_bucket), settings_for(emulator))
    assert moto_server.read(s3_bucket, KEY) == b"y" * (2 * MiB)

    replaced = store_url(url, s3_target(s3_bucket), settings_for(emulator), overwrite=True)
    assert replaced.reused is False
    assert moto_server.read(s3_bucket, KEY) == emulator.expected_video(TASK)
    assert moto_server.keys(s3_bucket) == [KEY]


def test_s3_writes_the_final_key_directly(
    emulator: Any, moto_server: MotoS3, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No temporary key and no copy: the multipart upload of the final key is the only write."""
    url = video_task(emulator, size=20 * MiB)
    written: list[str] = []
    original = storage_sinks.Sink.__init__

    def spy(self: Any, path: ObjectStoragePath, *, temporary: bool) -> None:
        written.append(f"{path.path} temporary={temporary}")
        original(self, path, temporary=temporary)

    monkeypatch.setattr(storage_sinks.Sink, "__init__", spy)
    stored = store_url(url, s3_target(s3_bucket), settings_for(emulator))
    assert written == [f"{s3_bucket}/{KEY} temporary=False"]
    assert stored.sha256 == sha(emulator.expected_video(TASK))
    assert moto_server.keys(s3_bucket) == [KEY]
    assert moto_server.uploads(s3_bucket) == []


def test_s3_failed_overwrite_keeps_the_old_object(emulator: Any, moto_server: MotoS3, s3_bucket: str) -> None:
    """overwrite=True writes the final key directly; a failure aborts the upload, the old object stays."""
    url = video_task(emulator, size=20 * MiB)
    moto_server.client().put_object(Bucket=s3_bucket, Key=KEY, Body=b"old")
    emulator.add_fault(Fault("truncate", route="video", after_bytes=17 * MiB))
    with pytest.raises(VideoDownloadError, match="still failed after 3 attempts"):
        store_url(url, s3_target(s3_bucket), settings_for(emulator), overwrite=True)
    assert moto_server.keys(s3_bucket) == [KEY]
    assert moto_server.read(s3_bucket, KEY) == b"old"
    assert moto_server.uploads(s3_bucket) == []


def test_download_client_reads_in_blocks_unless_a_proxy_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = DownloadSettings()
    cdn = httpx.URL("https://cdn.example.com/video.mp4")
    with new_client(settings) as client:
        assert isinstance(client._transport, RoutedTransport)
        assert isinstance(client._transport.transport_for(cdn), BlockTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.com:3128")
    with new_client(settings) as client:
        assert isinstance(client._transport, RoutedTransport)
        assert not isinstance(client._transport.transport_for(cdn), BlockTransport)  # httpx's own


def test_plain_http_downloads_load_no_certificates(
    emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TLS context (the CA bundle, ~50 ms) is made at the first https request, never for http."""
    made: list[Any] = []
    real = httpx.create_ssl_context

    def create(*args: Any, **kwargs: Any) -> Any:
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(httpx, "create_ssl_context", create)
    tls_context.cache_clear()
    store_url(video_task(emulator), target(tmp_path), settings_for(emulator))
    assert made == []
    transport = BlockTransport(verify_ssl=False)
    assert transport.tls_context() is transport.tls_context()
    assert BlockTransport(verify_ssl=False).tls_context() is transport.tls_context()  # once per process
    assert made == [{"verify": False}]
    tls_context.cache_clear()


def test_chunked_body_without_length_is_read_in_blocks(tmp_path: Path) -> None:
    """The block transport also decodes chunked bodies (no Content-Length: no size known up front)."""
    body = b"\x00\x00\x00\x20ftypisom" + bytes(range(256)) * (12 * 1024)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), 100_000):
                piece = body[start : start + 100_000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Handler) as url:
        stored = store_url(url, target(tmp_path), DownloadSettings(retry=FAST_RETRY))
    assert stored.size == len(body)
    assert stored.sha256 == sha(body)
    assert (folder_of(tmp_path) / stored.path.name).read_bytes() == body


def test_ipv6_literal_url_on_the_default_port_is_fetched(tmp_path: Path) -> None:
    """A video URL on an IPv6 literal without a port (``http://[::1]/…``) reaches that host on port
    80: http.client alone would read ``::1`` as host ``:`` port 1."""
    body = b"\x00\x00\x00\x20ftypisom" + bytes(range(256)) * 64

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    try:
        server = _IPv6Server(("::1", 80), Handler)
    except OSError as err:  # not root, port 80 taken, or no IPv6 loopback
        pytest.skip(f"cannot serve on [::1]:80 here: {err}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        stored = store_url("http://[::1]/v.mp4", target(tmp_path), DownloadSettings(retry=FAST_RETRY))
    finally:
        server.shutdown()
        server.server_close()
    assert stored.sha256 == sha(body)


class _WatchedSha256:
    """sha256 that sleeps inside ``update`` and records whether its input changed meanwhile: the
    caller must not reuse a block's buffer while the sink is still hashing it."""

    changed: list[int] = []

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, data: memoryview) -> None:
        before = bytes(data)
        threading.Event().wait(0.002)  # let the downloading thread run ahead if it can
        if bytes(data) != before:
            self.changed.append(len(before))
        self._hash.update(before)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def test_pipelined_hash_covers_exactly_the_bytes_written_across_a_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks are hashed while the next one is received: with a body whose blocks all differ (the
    emulator's repeat every 64 KiB) and a body cut mid-way then resumed with Range, the digest and the
    file are still exactly the body, and no buffer changed while it was being hashed."""
    body = random.Random(7).randbytes(5 * MiB + 12_345)
    body = body[:4] + b"ftyp" + body[8:]
    ranges: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            ranges.append(self.headers.get("Range"))
            start = int(self.headers["Range"][6:-1]) if self.headers.get("Range") else 0
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", '"v1"')
            self.send_header("Content-Length", str(len(body) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            stop = len(body) if len(ranges) > 1 else 2 * MiB + 777  # the first answer is cut short
            self.wfile.write(body[start:stop])
            self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    _WatchedSha256.changed = []
    monkeypatch.setattr(storage_sinks, "hashlib", SimpleNamespace(sha256=_WatchedSha256))
    with serving(Handler) as url:
        stored = store_url(url, target(tmp_path), DownloadSettings(retry=FAST_RETRY))
    assert ranges == [None, f"bytes={2 * MiB + 777}-"]  # resumed where the first answer stopped
    assert _WatchedSha256.changed == []
    assert stored.sha256 == sha(body)
    assert (folder_of(tmp_path) / stored.path.name).read_bytes() == body
    assert listing(tmp_path) == [stored.path.name]


def test_sink_write_may_return_before_its_block_is_hashed(tmp_path: Path) -> None:
    """The contract of Sink.write: a block stays untouched until the next write (or finish) returns;
    then its buffer may be refilled, and the digest is still that of every byte written."""
    blocks = [random.Random(n).randbytes(MiB - n) for n in range(5)]
    buffers = [memoryview(bytearray(MiB)), memoryview(bytearray(MiB))]
    sink = storage_sinks.Sink.beside(target(tmp_path))
    try:
        for n, block in enumerate(blocks):
            buffer = buffers[n % 2]
            buffer[: len(block)] = block  # refills the buffer of block n - 2
            sink.write(buffer[: len(block)])
        digest = sink.finish()
        buffers[0][:] = bytes(MiB)
        buffers[1][:] = bytes(MiB)
        assert digest == sha(b"".join(blocks))
        assert Path(sink.path.path).read_bytes() == b"".join(blocks)
        assert sink.size == sum(map(len, blocks))
    finally:
        sink.discard()
    assert listing(tmp_path) == []
