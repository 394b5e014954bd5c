"""Inline (``data:``) videos: stored like downloaded ones, and kept out of events, XCom and logs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred
from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.emulator import Emulator, Scenario, generated_bytes
from airflow_provider_videoquery.exceptions import VideoDownloadError
from airflow_provider_videoquery.models import display_url
from airflow_provider_videoquery.operators.videoquery import VideoDownloadOperator
from airflow_provider_videoquery.storage import (
    CHUNK_SIZE,
    ContentKind,
    DownloadSettings,
    resolve_destination,
    store_url,
)
from airflow_provider_videoquery.storage.inline import InlineData
from tests.airflow_helpers import first_event, listing, make_context
from tests.s3 import MotoS3

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024
TASK = "task_4XzJ1nQp8fKcV0aLm3yR7tBwE2uH6sDo"
NAME = f"{TASK}.mp4"
SETTINGS = DownloadSettings()


def data_uri(payload: bytes, media_type: str = "video/mp4", pad: bool = True) -> str:
    text = base64.b64encode(payload).decode()
    return f"data:{media_type};base64,{text if pad else text.rstrip('=')}"


def target(tmp_path: Path) -> ObjectStoragePath:
    return resolve_destination(f"file://{tmp_path}/out/", TASK)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- store_url with a data: URI -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [3 * MiB + 1, 3 * MiB + 2, 3 * MiB + 3, 100])
@pytest.mark.parametrize("pad", [True, False])
def test_stored_exactly_like_a_download(tmp_path: Path, size: int, pad: bool) -> None:
    video = generated_bytes(size)
    uri = data_uri(video, pad=pad)
    stored = store_url(uri, target(tmp_path), SETTINGS, what="the video of task 't'")
    assert (tmp_path / "out" / NAME).read_bytes() == video
    assert stored.size == size
    assert stored.sha256 == sha(video)
    assert stored.content_type == "video/mp4"
    assert stored.uri == f"file://{tmp_path}/out/{NAME}"
    assert stored.source_url == display_url(uri)  # never the base64 text of a large one
    assert len(stored.source_url or "") < 300
    assert listing(tmp_path / "out") == [NAME]  # no temporary object left beside it


def test_decoded_in_bounded_blocks_with_the_size_known_first() -> None:
    video = generated_bytes(5 * MiB + 5)
    data = InlineData.parse(data_uri(video), ContentKind.VIDEO, "v")
    assert data.size == len(video)
    blocks = list(data.blocks("v"))
    assert max(len(b) for b in blocks) <= CHUNK_SIZE
    assert len(blocks) == 6
    assert b"".join(blocks) == video


def test_too_large_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*_: Any) -> Any:
        raise AssertionError("decoding started")

    monkeypatch.setattr(InlineData, "blocks", never)
    video = generated_bytes(2 * MiB)
    with pytest.raises(VideoDownloadError, match=rf"holds {2 * MiB} bytes, above max_bytes={MiB}"):
        store_url(data_uri(video), target(tmp_path), DownloadSettings(max_bytes=MiB))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("uri", "said"),
    [
        (data_uri(b"<html>oops</html>", "text/html"), r"inline 'text/html' file .* not video/mp4"),
        (data_uri(generated_bytes(64), "video/webm"), r"inline 'video/webm' file"),
        ("data:,hello", r"inline 'text/plain' file"),
        ("data:video/mp4,%00%00%00%18ftyp", r"not base64-encoded"),
        ("data:video/mp4;base64,AAAAGGZ0eXA*", r"not valid base64"),
        ("data:video/mp4;base64,AAAAGGZ0e", r"cut short"),
        (data_uri(b"<!DOCTYPE html><html>error page</html>"), r"is not an MP4"),
    ],
)
def test_what_is_not_an_mp4_is_refused_and_nothing_stays(tmp_path: Path, uri: str, said: str) -> None:
    with pytest.raises(VideoDownloadError, match=said) as refused:
        store_url(uri, target(tmp_path), SETTINGS, what="the video of task 't'")
    assert "the video of task 't'" in str(refused.value)
    assert listing(tmp_path / "out") == []


def test_invalid_base64_deep_inside_leaves_nothing(tmp_path: Path) -> None:
    uri = data_uri(generated_bytes(3 * MiB))
    broken = uri[: 2 * MiB] + "!!!!" + uri[2 * MiB + 4 :]
    with pytest.raises(VideoDownloadError, match="not valid base64"):
        store_url(broken, target(tmp_path), SETTINGS)
    assert listing(tmp_path / "out") == []


def test_identical_object_is_kept_a_different_one_conflicts(tmp_path: Path) -> None:
    video = generated_bytes(MiB + 17)
    store_url(data_uri(video), target(tmp_path), SETTINGS)
    again = store_url(data_uri(video), target(tmp_path), SETTINGS)
    assert again.reused is True
    with pytest.raises(VideoDownloadError, match="already exists and differs"):
        store_url(data_uri(generated_bytes(MiB + 18)), target(tmp_path), SETTINGS)
    assert (tmp_path / "out" / NAME).read_bytes() == video


def test_inline_thumbnail_takes_its_type(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    dest = resolve_destination(f"file://{tmp_path}/out/x.thumbnail.jpg", TASK)
    stored = store_url(
        data_uri(png, "image/png"), dest, SETTINGS, kind=ContentKind.IMAGE, suffix_from_content=True
    )
    assert stored.uri.endswith("/x.thumbnail.png")
    assert (tmp_path / "out" / "x.thumbnail.png").read_bytes() == png


def test_into_s3(moto_server: MotoS3, s3_bucket: str) -> None:
    video = generated_bytes(6 * MiB + 3)
    dest = resolve_destination(f"s3://{s3_bucket}/inline/", TASK, conn_id="aws_default")
    stored = store_url(data_uri(video), dest, SETTINGS)
    assert stored.uri == f"s3://{s3_bucket}/inline/{NAME}"
    assert moto_server.read(s3_bucket, f"inline/{NAME}") == video
    assert moto_server.uploads(s3_bucket) == []


# -- the operator: the new-api route's inline video, deferred and on the worker ------------------------


def operator(tmp_path: Path, **kwargs: Any) -> VideoDownloadOperator:
    fields: dict[str, Any] = {
        "task_id": "download",
        "video_task_id": TASK,
        "destination": f"file://{tmp_path}/out/",
        "route": "new-api",
        "poll_interval": 0.05,
        "timeout": 20,
    }
    return VideoDownloadOperator(**{**fields, **kwargs})


def inline_task(emulator: Emulator, size: int, polls: int) -> bytes:
    emulator.add_task(
        TASK, Scenario(family="newapi", polls_to_complete=polls, inline_video=True, video_size=size)
    )
    return emulator.expected_video(TASK)


def test_deferred_inline_video_event_is_small_and_the_worker_stores_it(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    video = inline_task(emulator, 2 * MiB + 1, polls=2)
    op = operator(tmp_path)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(make_context())
    event = asyncio.run(first_event(deferred.value.trigger))

    assert event["status"] == "success"
    assert len(json.dumps(event)) < 5000  # not the 2.8 MB of base64
    assert event["task"]["video_url"] == f"data:video/mp4;base64,…({len(video)} bytes)"

    context = make_context()
    uri = op.execute_complete(context, event)
    assert (tmp_path / "out" / NAME).read_bytes() == video
    xcom = context["ti"].xcom["video"]
    assert xcom["uri"] == uri
    assert xcom["video_url"] == f"data:video/mp4;base64,…({len(video)} bytes)"
    assert xcom["sha256"] == sha(video)
    assert emulator.count(route="video") == 0  # nothing was fetched: the file was in the answer
    # poke, trigger, and the worker's one query for the video the event left out
    assert emulator.count(route="newapi_query", task_id=TASK) == 3
    base64_start = base64.b64encode(video[:48]).decode()
    assert base64_start not in caplog.text


def test_inline_video_on_the_worker(emulator: Emulator, tmp_path: Path) -> None:
    video = inline_task(emulator, 300_000, polls=1)
    context = make_context()
    operator(tmp_path, deferrable=False).execute(context)
    assert (tmp_path / "out" / NAME).read_bytes() == video
    assert context["ti"].xcom["video"]["video_url"] == display_url(data_uri(video))


def test_too_large_inline_video_from_the_gateway(emulator: Emulator, tmp_path: Path) -> None:
    inline_task(emulator, 2 * MiB, polls=1)
    with pytest.raises(VideoDownloadError, match="above max_bytes"):
        operator(tmp_path, max_bytes=MiB, deferrable=False).execute(make_context())
    assert listing(tmp_path / "out") == []


def test_sensor_xcom_carries_the_inline_video_short(emulator: Emulator) -> None:
    from airflow_provider_videoquery.sensors.videoquery import VideoTaskSensor

    video = inline_task(emulator, 400_000, polls=1)
    sensor = VideoTaskSensor(task_id="wait", video_task_id=TASK, route="new-api", deferrable=False)
    result = sensor.poke(make_context())
    assert result.is_done
    assert result.xcom_value["video_url"] == f"data:video/mp4;base64,…({len(video)} bytes)"
    assert len(json.dumps(result.xcom_value)) < 5000
