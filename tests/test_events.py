"""The trigger event contract: what each outcome turns into on the worker, and whether it is retried."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSensorTimeout

from airflow_provider_videoquery.emulator import Emulator
from airflow_provider_videoquery.events import EventStatus, make_event, task_from_event
from airflow_provider_videoquery.exceptions import (
    VideoQueryAuthError,
    VideoQueryError,
    VideoQueryRequestError,
    VideoTaskFailedError,
    VideoTaskNotFoundError,
)
from airflow_provider_videoquery.models import TaskStatus, VideoTask, parse_task
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from tests.airflow_helpers import first_event
from tests.conftest import FIXTURES, connection_json

ID = "sora-2:task_01kevents"


def through_the_db(event: dict[str, Any]) -> dict[str, Any]:
    """Events are stored as JSON: only what survives that counts."""
    restored: dict[str, Any] = json.loads(json.dumps(event))
    return restored


@pytest.mark.parametrize(
    ("error", "raised", "retried"),
    [
        (VideoQueryAuthError, VideoQueryAuthError, False),
        (VideoTaskNotFoundError, VideoTaskNotFoundError, True),
        (VideoQueryRequestError, VideoQueryRequestError, True),
        (None, VideoQueryError, True),
    ],
)
def test_error_events_raise_the_named_type(
    error: type[VideoQueryError] | None, raised: type[Exception], retried: bool
) -> None:
    event = through_the_db(make_event(EventStatus.ERROR, "what the gateway said", ID, error=error))
    with pytest.raises(raised, match="what the gateway said") as caught:
        task_from_event(event, ID)
    assert type(caught.value) is raised
    assert isinstance(caught.value, AirflowFailException) is not retried


def test_an_unknown_error_type_is_not_trusted() -> None:
    event = make_event(EventStatus.ERROR, "boom", ID)
    event["error_type"] = "SystemExit"
    with pytest.raises(VideoQueryError) as caught:
        task_from_event(event, ID)
    assert type(caught.value) is VideoQueryError


def test_success_failed_and_timeout() -> None:
    done = parse_task({"status": "completed", "video_url": "http://127.0.0.1/v.mp4"}, ID)
    restored = task_from_event(through_the_db(make_event(EventStatus.SUCCESS, "ok", ID, done)), ID)
    assert restored == done.model_copy(update={"raw": {}})
    failed = parse_task({"status": "failed", "error": "unsafe prompt"}, ID)
    with pytest.raises(VideoTaskFailedError, match="unsafe prompt"):
        task_from_event(through_the_db(make_event(EventStatus.FAILED, "unsafe prompt", ID, failed)), ID)
    with pytest.raises(AirflowSensorTimeout, match="1 h"):
        task_from_event(make_event(EventStatus.TIMEOUT, "waited 1 h", ID), ID)


@pytest.mark.parametrize("event", [None, {}, {"status": "maybe"}, {"status": "success", "task": None}])
def test_malformed_events_are_a_clear_error(event: dict[str, Any] | None) -> None:
    with pytest.raises(VideoQueryError, match=ID):
        task_from_event(event, ID)


async def test_a_refused_key_ends_the_wait_without_retries(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, api_key="sk-nope-123")
    )
    emulator.add_task(ID)
    trigger = VideoTaskTrigger(video_task_id=ID, deadline=9e9, poll_interval=0.01)
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1
    assert events[0]["error_type"] == "VideoQueryAuthError"
    with pytest.raises(AirflowFailException, match="401"):
        task_from_event(events[0], ID)
    assert "sk-nope-123" not in json.dumps(events[0])
    assert emulator.count(route="query") == 1


def sora_completed() -> VideoTask:
    payload = json.loads((FIXTURES / "seeds" / "002_sora2_completed.json").read_text(encoding="utf-8"))
    return parse_task(payload, ID)


def test_a_success_event_carries_no_raw_answer_and_no_signed_url() -> None:
    done = sora_completed()
    assert done.video_url is not None
    assert "?" in done.video_url  # the seed's URLs are signed

    text = json.dumps(make_event(EventStatus.SUCCESS, "ok", ID, done))

    assert "raw" not in json.loads(text)["task"]
    assert "?" not in text  # nothing the triggerer's "Trigger fired event" line could leak
    assert "sig=" not in text
    assert len(text) < 1500  # the raw answer alone is ~8 KB
    task = task_from_event(json.loads(text), ID)
    assert task.status is TaskStatus.SUCCEEDED
    assert task.video_url is None  # the worker reads the task again for it


def test_an_event_from_the_previous_version_is_still_read() -> None:
    done = sora_completed()
    # What 0.x triggers yielded: the whole task, raw answer and signed URLs included.
    old = through_the_db(
        {
            "status": "success",
            "message": "ok",
            "video_task_id": ID,
            "task": {**done.model_dump(mode="json"), "raw": done.raw},
            "error_type": None,
        }
    )

    task = task_from_event(old, ID)

    assert task.video_url == done.video_url
    assert task.raw == done.raw


def test_an_unusable_event_is_described_without_its_values() -> None:
    event = {"status": "sucess", "task": {"video_url": "https://cdn.example/v.mp4?sig=SECRET"}}
    with pytest.raises(VideoQueryError, match="keys") as caught:
        task_from_event(event, ID)
    assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize("progress", ["NaN", "Infinity", '"NaN"'])
async def test_a_nan_progress_from_the_gateway_never_reaches_an_event(
    progress: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real server answers ``"progress": NaN`` (Python's json reads it): the event stays strict JSON."""
    from tests.gateway import Handler, scripted_gateway

    body = f'{{"id": "{ID}", "status": "failed", "fail_reason": "moderation", "progress": {progress}}}'

    def answer(handler: Handler) -> None:
        handler.send(200, body)

    with scripted_gateway(answer) as gateway:
        monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(gateway.url, timeout=5))
        event = await first_event(VideoTaskTrigger(video_task_id=ID, deadline=9e9, poll_interval=0.05))

    assert event["status"] == EventStatus.FAILED.value
    assert event["task"]["progress"] is None
    json.dumps(event, allow_nan=False)  # what Airflow stores must be JSON
