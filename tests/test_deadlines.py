"""Worker-side calls have an overall deadline: a real server on 127.0.0.1 that trickles its answer one byte
every 0.3 s (well under any read timeout) holds neither a query (the sensor's poke, the batch's re-read,
the download operator's poll: the sync ``get_task``) nor a create, nor a download.

Each trickled answer would take 5 minutes or more; the calls end after their total (1 s for a query or a
create: the connection's timeout; 1 s for a download given ``min_deadline=1``). Time is bounded only at
20 s, where the old behaviour would exceed the bound more than tenfold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.exceptions import (
    VideoCreateUncertainError,
    VideoDownloadError,
    VideoQueryTransientError,
)
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.sensors.videoquery import VideoTaskSensor
from airflow_provider_videoquery.storage import DownloadSettings, store_url
from tests.airflow_helpers import listing
from tests.conftest import connection_json
from tests.gateway import Handler, ScriptedGateway, scripted_gateway, wire

pytestmark = pytest.mark.timeout(120)

TASK = "veo3.1-fast:trickled"
ANSWER = json.dumps({"id": TASK, "status": "processing", "pad": "x" * 1000}).encode()
#: Generous against a busy machine; the trickled answers would take 300 s and more.
BOUND = 20.0
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 1000


def trickling(where: str, body: bytes = ANSWER, content_type: str = "application/json") -> object:
    """An answer trickled one byte every 0.3 s: its headers too (``headers``), or only its body."""
    raw = wire(200, body, {"Content-Type": content_type})

    def answer(handler: Handler) -> None:
        if where == "body":
            head, _, rest = raw.partition(b"\r\n\r\n")
            handler.wfile.write(head + b"\r\n\r\n")
            handler.wfile.flush()
            handler.trickle(rest, 0.3)
        else:
            handler.trickle(raw, 0.3)

    return answer


@pytest.fixture(params=["headers", "body"])
def where(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def gateway(where: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedGateway]:
    with scripted_gateway(trickling(where)) as running:  # type: ignore[arg-type]
        monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(running.url, timeout=1))
        yield running


def test_a_trickled_query_ends_at_the_connections_timeout(gateway: ScriptedGateway) -> None:
    hook = VideoQueryHook()
    started = time.monotonic()
    try:
        with pytest.raises(VideoQueryTransientError, match="no complete answer before") as caught:
            hook.get_task(TASK)
    finally:
        hook.close()
    assert time.monotonic() - started < BOUND
    assert "its answers took the 1s the connection's timeout allows a call" in str(caught.value)
    assert gateway.count("GET") == 1  # no time was left for another try


def test_a_trickled_poke_is_not_done_and_does_not_hold_the_worker(gateway: ScriptedGateway) -> None:
    sensor = VideoTaskSensor(task_id="wait", video_task_id=TASK)
    started = time.monotonic()
    assert sensor.poke({}).is_done is False  # a transient failure: the next poke looks again
    assert time.monotonic() - started < BOUND


def test_a_trickled_create_answer_is_uncertain(gateway: ScriptedGateway) -> None:
    hook = VideoQueryHook()
    try:
        with pytest.raises(VideoCreateUncertainError, match="ReadTimeout: no complete answer"):
            hook.create_task("veo3.1-fast", "A fox")
    finally:
        hook.close()
    assert gateway.count("POST") == 1


def test_a_trickled_download_ends_at_its_deadline_and_leaves_nothing(where: str, tmp_path: Path) -> None:
    settings = DownloadSettings(min_deadline=1.0)
    target = ObjectStoragePath(f"file://{tmp_path}/videos/clip.mp4")
    with scripted_gateway(trickling(where, MP4, "video/mp4")) as cdn:  # type: ignore[arg-type]
        started = time.monotonic()
        with pytest.raises(VideoDownloadError, match=r"not complete within 1s") as caught:
            store_url(f"{cdn.url}/clip.mp4", target, settings)
        assert time.monotonic() - started < BOUND
    assert "min_deadline" in str(caught.value)
    assert listing(tmp_path / "videos") == []
