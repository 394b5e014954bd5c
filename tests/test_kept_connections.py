"""Downloads keep their connections alive per host (a batch of small videos paid a TCP, and on a CDN a
TLS, handshake per file): a connection is reused only after its answer was read whole, one the server
closed meanwhile is replaced without a second request or a retry, and a half-read error page's
connection is never reused. Against a real HTTP/1.1 server on 127.0.0.1 that records each request's
client port (one port: one connection)."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.exceptions import VideoDownloadError
from airflow_provider_videoquery.storage import DownloadSettings, new_client, store_url, transport
from tests.gateway import Handler, scripted_gateway

pytestmark = pytest.mark.timeout(60)

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64
SETTINGS = DownloadSettings(trusted_origin=None)


def target(tmp_path: Path, n: int) -> ObjectStoragePath:
    return ObjectStoragePath(f"file://{tmp_path}/v{n}.mp4")


def test_one_connection_carries_a_batch_of_downloads(tmp_path: Path) -> None:
    ports: list[int] = []

    def video(handler: Handler) -> None:
        ports.append(handler.client_address[1])
        handler.send(200, VIDEO, {"Content-Type": "video/mp4"})

    with scripted_gateway(video) as server, new_client(SETTINGS) as client:
        for n in range(5):
            stored = store_url(f"{server.url}/v{n}.mp4", target(tmp_path, n), SETTINGS, client=client)
            assert stored.size == len(VIDEO)
    assert len(ports) == 5
    assert len(set(ports)) == 1


@pytest.mark.parametrize("noticed", [True, False], ids=["seen-closed-before-reuse", "fails-on-reuse"])
def test_a_connection_the_server_closed_is_replaced_without_a_second_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, noticed: bool
) -> None:
    if not noticed:  # the close arrives after the idle check: the send on the kept connection fails
        monkeypatch.setattr(transport, "_quiet", lambda sock: True)
    ports: list[int] = []

    def video_then_hang_up(handler: Handler) -> None:
        ports.append(handler.client_address[1])
        handler.send(200, VIDEO, {"Content-Type": "video/mp4"})  # no "Connection: close" said
        handler.close_connection = True

    with scripted_gateway(video_then_hang_up) as server, new_client(SETTINGS) as client:
        for n in range(3):
            store_url(f"{server.url}/v{n}.mp4", target(tmp_path, n), SETTINGS, client=client)
        assert server.count("GET") == 3  # no request was sent twice
    assert len(set(ports)) == 3


def test_a_half_read_error_page_closes_its_connection(tmp_path: Path) -> None:
    ports: list[int] = []

    def missing_then_video(handler: Handler) -> None:
        ports.append(handler.client_address[1])
        if handler.path.startswith("/gone"):
            handler.send(404, b"<html>" + b"x" * 100_000, {"Content-Type": "text/html"})
        else:
            handler.send(200, VIDEO, {"Content-Type": "video/mp4"})

    with scripted_gateway(missing_then_video) as server, new_client(SETTINGS) as client:
        with pytest.raises(VideoDownloadError, match="HTTP 404"):
            store_url(f"{server.url}/gone.mp4", target(tmp_path, 0), SETTINGS, client=client)
        store_url(f"{server.url}/v1.mp4", target(tmp_path, 1), SETTINGS, client=client)
    assert len(set(ports)) == 2  # the 404's body was not read to its end: its connection went
