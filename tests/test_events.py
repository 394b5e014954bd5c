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
from airflow_provider_videoquery.models import parse_task
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from tests.conftest import connection_json

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
    assert task_from_event(through_the_db(make_event(EventStatus.SUCCESS, "ok", ID, done)), ID) == done
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
