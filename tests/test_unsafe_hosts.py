"""Hosts a download must never reach, and bodies it must never quote.

Every test runs under a socket guard: a connect to anything but loopback, and a DNS lookup of anything
but ``localhost`` or a numeric address, is recorded and stopped before a packet leaves. Host names are
answered from the guard's own table, so "a name that resolves to the metadata service" is real
resolution code seeing a made-up answer.
"""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Emulator, Scenario
from airflow_provider_videoquery.exceptions import VideoDownloadError
from airflow_provider_videoquery.storage import store_url
from airflow_provider_videoquery.storage.hosts import blocked_address
from tests.airflow_helpers import listing, make_context
from tests.socket_guard import OffMachine, SocketGuard, guard_sockets
from tests.test_storage import listing as videos_listing
from tests.test_storage import serving as serving_v_mp4
from tests.test_storage import settings_for, target

pytestmark = pytest.mark.timeout(60)

TASK = "veo3.1-fast:1764522552-Hosts01"
SECRET = "AKIAMETADATA0SECRET7Token=Fwo//yUnSafeCredentialValue"


@pytest.fixture(autouse=True)
def guard(monkeypatch: pytest.MonkeyPatch) -> SocketGuard:
    return guard_sockets(monkeypatch)


def test_the_guard_stops_what_would_leave(guard: SocketGuard) -> None:
    """The guard itself: the proof of the tests below rests on it."""
    with pytest.raises(OffMachine), socket.create_connection(("192.0.2.1", 80), timeout=1):
        pass
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("example.com", 80)
    assert guard.connects == [("192.0.2.1", 80)]
    assert guard.lookups == ["example.com"]


# -- link-local and metadata addresses: refused before connecting ---------------------------------------


BLOCKED_URLS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://169.254.170.2/v2/credentials",  # ECS task credentials
    "http://169.254.169.254./latest/meta-data/",
    "http://2852039166/latest/meta-data/",  # 169.254.169.254 as one number
    "http://0xa9.0xfe.0xa9.0xfe/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[fe80::1]/video.mp4",
    "http://[fe80::a9fe:a9fe%25eth0]:8080/video.mp4",
    "https://[fd00:ec2::254]/latest/meta-data/",  # AWS's IPv6 metadata address
    "http://100.100.100.200/latest/meta-data/",  # Alibaba Cloud's
]


@pytest.mark.parametrize("url", BLOCKED_URLS)
def test_link_local_and_metadata_addresses_are_refused_before_connecting(
    emulator: Emulator, tmp_path: Path, guard: SocketGuard, url: str
) -> None:
    with pytest.raises(VideoDownloadError, match=r"refusing to connect to .*allowed_download_hosts") as err:
        store_url(url, target(tmp_path), settings_for(emulator))
    assert "link-local and cloud-metadata addresses" in str(err.value)
    assert guard.connects == []
    assert guard.lookups == []
    assert videos_listing(tmp_path) == []


@pytest.mark.parametrize(
    ("name", "address"),
    [
        ("metadata.google.internal", "169.254.169.254"),
        ("imds.test", "fe80::a9fe:a9fe"),
        ("m.test", "::ffff:169.254.169.254"),
    ],
)
def test_names_that_resolve_to_link_local_are_refused_before_connecting(
    emulator: Emulator, tmp_path: Path, guard: SocketGuard, name: str, address: str
) -> None:
    guard.names[name] = address
    with pytest.raises(VideoDownloadError, match=rf"refusing to connect to '{name}'"):
        store_url(f"http://{name}/computeMetadata/v1/", target(tmp_path), settings_for(emulator))
    assert guard.connects == []


class _RedirectToMetadata(BaseHTTPRequestHandler):
    """A CDN that answers every GET with a redirect to the metadata service."""

    location = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(302)
        self.send_header("Location", self.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    "location",
    ["http://169.254.169.254/latest/meta-data/iam/security-credentials/", "http://metadata.test/v1/"],
)
def test_a_redirect_to_the_metadata_service_is_refused(
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    guard: SocketGuard,
    location: str,
) -> None:
    """Through the operator: the gateway names a CDN URL on 127.0.0.1, which redirects to the metadata
    service (a literal address, or a name resolving to it). The first hop is fetched, the second refused."""
    guard.names["metadata.test"] = "169.254.169.254"
    monkeypatch.setattr(_RedirectToMetadata, "location", location)
    monkeypatch.setattr(_RedirectToMetadata, "seen", [])
    with serving_v_mp4(_RedirectToMetadata) as cdn_url:
        emulator.add_task(TASK, Scenario(polls_to_complete=1, video_url=cdn_url))
        with pytest.raises(VideoDownloadError, match=r"refusing to connect to .*link-local") as err:
            download(tmp_path)
    assert TASK in str(err.value)
    assert _RedirectToMetadata.seen == ["/v.mp4"]
    assert guard.connects == []
    assert listing(tmp_path / "out") == []


def download(tmp_path: Path, **kwargs: Any) -> str:
    from airflow_provider_videoquery.operators.videoquery import VideoDownloadOperator

    operator = VideoDownloadOperator(
        task_id="download",
        video_task_id=TASK,
        destination=f"file://{tmp_path}/out/",
        deferrable=False,
        poll_interval=0.05,
        timeout=10,
        download_attempts=2,
        download_retry_delay=0.01,
        **kwargs,
    )
    uri: str = operator.execute(make_context())  # type: ignore[arg-type]
    return uri


def test_a_name_in_allowed_download_hosts_may_reach_a_blocked_address(
    emulator: Emulator, tmp_path: Path, guard: SocketGuard
) -> None:
    """Named exactly, the check lets it through: the guard then sees the connect (and stops it)."""
    guard.names["videos.internal.test"] = "169.254.10.20"
    url = "http://videos.internal.test:8080/v.mp4"
    wildcard = settings_for(emulator, allowed_hosts=("*.internal.test",))
    with pytest.raises(VideoDownloadError, match="refusing to connect"):
        store_url(url, target(tmp_path), wildcard)  # a wildcard never allows a blocked address
    assert guard.connects == []

    for allowed in (("videos.internal.test",), ("*.internal.test", "169.254.10.20")):
        with pytest.raises(OffMachine):
            store_url(url, target(tmp_path), settings_for(emulator, allowed_hosts=allowed))
    assert guard.connects == [("169.254.10.20", 8080)] * 2


def test_loopback_and_private_addresses_are_allowed(guard: SocketGuard) -> None:
    """Self-hosted gateways and their file servers live there (the emulator on 127.0.0.1 everywhere)."""
    guard.names.update({"files.lan.test": "10.1.2.3", "nas.test": "192.168.1.20", "v6.test": "fd12::1"})
    for host in (
        "127.0.0.1",
        "localhost",
        "[::1]",
        "10.0.0.8",
        "172.16.5.4",
        "files.lan.test",
        "nas.test",
        "v6.test",
    ):
        assert blocked_address(host.strip("[]"), 80) is None, host
    assert blocked_address("unresolvable.test", 80) is None  # left to the connection (or a proxy)


# -- bodies from hosts other than the gateway are never quoted ---------------------------------------


class _SecretCDN(BaseHTTPRequestHandler):
    """Another origin answering a secret-looking body (what a metadata service would return)."""

    status = 200
    content_type = "text/plain"

    def do_GET(self) -> None:
        body = f'{{"Code": "Success", "AccessKeyId": "{SECRET}"}}'.encode()
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


ANSWERS = [
    pytest.param(403, "application/json", r"HTTP 403", id="403-json"),
    pytest.param(503, "text/plain", r"still failed after 3 attempts", id="503-retried"),
    pytest.param(200, "text/plain", r"'text/plain' instead of a video", id="200-text"),
    pytest.param(200, "application/octet-stream", r"not an MP4", id="200-not-mp4"),
    pytest.param(418, "application/octet-stream", r"answered HTTP 418", id="418"),
]


@contextmanager
def secret_cdn(monkeypatch: pytest.MonkeyPatch, status: int, content_type: str) -> Iterator[str]:
    """A server on 127.0.0.1 answering ``status`` with a secret; yields its ``/v.mp4`` URL."""
    monkeypatch.setattr(_SecretCDN, "status", status)
    monkeypatch.setattr(_SecretCDN, "content_type", content_type)
    with serving_v_mp4(_SecretCDN) as url:
        yield url


def everything_said(err: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    """The exception with its whole chain and traceback, and every log record as formatted."""
    return "".join(traceback.format_exception(err)) + "\n".join(
        caplog.handler.format(record) for record in caplog.records
    )


@pytest.mark.parametrize(("status", "content_type", "message"), ANSWERS)
def test_another_hosts_body_is_never_quoted(
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    status: int,
    content_type: str,
    message: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    with secret_cdn(monkeypatch, status, content_type) as url:
        elsewhere = url.replace("127.0.0.1", "localhost")  # another origin than the gateway's
        with pytest.raises(VideoDownloadError, match=message) as err:
            store_url(elsewhere, target(tmp_path), settings_for(emulator))
    said = everything_said(err.value, caplog)
    assert "came from 'localhost', not the gateway" in said
    assert SECRET not in said
    assert videos_listing(tmp_path) == []


@pytest.mark.parametrize(("status", "content_type", "message"), ANSWERS)
def test_the_gateways_own_body_is_still_quoted(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    status: int,
    content_type: str,
    message: str,
) -> None:
    """The same answers from the gateway's own origin keep their preview: it is the gateway's own."""
    caplog.set_level(logging.DEBUG)
    with secret_cdn(monkeypatch, status, content_type) as url:
        gateway = SimpleNamespace(url=url.rsplit("/", 1)[0])
        with pytest.raises(VideoDownloadError, match=message) as err:
            store_url(url, target(tmp_path), settings_for(gateway))
    assert SECRET in everything_said(err.value, caplog)
