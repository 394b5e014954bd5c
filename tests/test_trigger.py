"""VideoTaskTrigger against the real emulator over HTTP: one event per outcome, nothing left open."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSensorTimeout

from airflow_provider_videoquery.emulator import Fault, Scenario
from airflow_provider_videoquery.emulator.scenarios import DEFAULT_FAILURE_REASON
from airflow_provider_videoquery.events import task_from_event
from airflow_provider_videoquery.exceptions import (
    VideoQueryError,
    VideoQueryParameterError,
    VideoTaskFailedError,
)
from airflow_provider_videoquery.hooks import videoquery as hook_module
from airflow_provider_videoquery.hooks.videoquery import _shared_clients
from airflow_provider_videoquery.models import TaskStatus
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from tests.conftest import API_KEY, connection_json

TASK_ID = "veo3.1-fast:1764000000-abcDEF1234"
CLASSPATH = "airflow_provider_videoquery.triggers.videoquery.VideoTaskTrigger"


def make_trigger(
    video_task_id: str = TASK_ID, *, timeout: float = 10.0, grace: float = 5.0, **kwargs: Any
) -> VideoTaskTrigger:
    now = time.time()
    options: dict[str, Any] = {"poll_interval": 0.05, "max_attempts": 2, "retry_delay": 0.01}
    options.update(kwargs)
    return VideoTaskTrigger(
        video_task_id=video_task_id,
        deadline=now + timeout,
        not_found_deadline=now + grace,
        started_at=now,
        **options,
    )


async def only_event(trigger: VideoTaskTrigger) -> dict[str, Any]:
    """The trigger's one event; asserts it yields nothing after it and released the shared client."""
    run = trigger.run()
    event = await anext(run)
    with pytest.raises(StopAsyncIteration):
        await anext(run)
    assert _shared_clients.users() == 0
    payload: dict[str, Any] = event.payload
    json.dumps(payload)  # plain values only: it goes through serde and the metadata DB
    return payload


async def test_success_carries_the_normalized_task(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=3))

    event = await only_event(make_trigger())

    assert event["status"] == "success"
    assert event["video_task_id"] == TASK_ID
    task = task_from_event(event, TASK_ID)
    assert task.status is TaskStatus.SUCCEEDED
    assert task.video_url
    assert emulator.polls(TASK_ID) == 3


async def test_failed_carries_the_gateway_reason(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=2, outcome="failed"))

    event = await only_event(make_trigger())

    assert event["status"] == "failed"
    assert DEFAULT_FAILURE_REASON in event["message"]
    assert TASK_ID in event["message"]
    with pytest.raises(VideoTaskFailedError, match="failed at the gateway"):
        task_from_event(event, TASK_ID)


async def test_deadline_gives_timeout_naming_task_status_and_duration(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=10**6))

    started = time.monotonic()
    event = await only_event(make_trigger(timeout=0.4))

    # Without the deadline the wait would last the million polls; a loaded machine stays far below 60 s.
    assert time.monotonic() - started < 60
    assert event["status"] == "timeout"
    assert TASK_ID in event["message"]
    assert "running" in event["message"]
    assert "within 0s" in event["message"] or "within 1s" in event["message"]
    assert emulator.polls(TASK_ID) >= 2
    with pytest.raises(AirflowSensorTimeout):
        task_from_event(event, TASK_ID)


async def test_deadline_already_passed_still_takes_one_look(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=1))

    event = await only_event(make_trigger(timeout=-5))

    assert event["status"] == "success"


async def test_bad_key_is_an_error_at_once(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, api_key="sk-wrong"))
    emulator.add_task(TASK_ID)

    event = await only_event(make_trigger())

    assert event["status"] == "error"
    assert "API key" in event["message"]
    assert emulator.count(route="query") == 1
    with pytest.raises(VideoQueryError):
        task_from_event(event, TASK_ID)


async def test_unknown_task_is_an_error_once_grace_has_passed(emulator: Any) -> None:
    event = await only_event(make_trigger(grace=1.0))

    assert event["status"] == "error"
    assert "still unknown" in event["message"]
    assert TASK_ID in event["message"]
    assert emulator.count(route="query") >= 2


async def test_unknown_task_within_grace_then_found(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(unknown_for_polls=3, polls_to_complete=1))

    event = await only_event(make_trigger(grace=5))

    assert event["status"] == "success"
    assert emulator.task(TASK_ID).queries == 4


async def test_transient_faults_are_ridden_out(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=2))
    emulator.add_fault(Fault(kind="http_error", status=503, route="query", times=5))
    emulator.add_fault(Fault(kind="malformed_json", route="query", times=2))
    emulator.add_fault(Fault(kind="reset", route="query", times=2, after_bytes=5))

    event = await only_event(make_trigger())

    assert event["status"] == "success"
    assert emulator.count(route="query", status=503) == 5


async def test_unexpected_exception_is_an_error_event(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator.add_task(TASK_ID)

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("parser exploded")

    monkeypatch.setattr(hook_module, "parse_task", explode)

    event = await only_event(make_trigger())

    assert event["status"] == "error"
    assert "RuntimeError: parser exploded" in event["message"]


async def test_bad_route_is_an_error_event(emulator: Any) -> None:
    event = await only_event(make_trigger(route="carrier-pigeon"))

    assert event["status"] == "error"
    assert "carrier-pigeon" in event["message"]


@pytest.mark.parametrize("where", ["sleeping", "mid-request"])
async def test_cancellation_releases_the_client_and_propagates(emulator: Any, where: str) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=10**6))
    if where == "mid-request":
        emulator.add_fault(Fault(kind="slow_headers", route="query", skip=1, delay=10))
    trigger = make_trigger(timeout=60, poll_interval=0.05 if where == "mid-request" else 30)

    async def first_event() -> Any:
        return await anext(trigger.run())

    waiter = asyncio.create_task(first_event())
    for _ in range(500):
        if emulator.count(route="query") >= 1:
            break
        await asyncio.sleep(0.01)
    # The first answer is in; then the trigger sleeps 30 s, or its second query hangs for 10 s.
    await asyncio.sleep(0.3)
    assert not waiter.done()
    assert _shared_clients.users() == 1

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert _shared_clients.users() == 0


async def test_serialize_round_trips_through_serde_without_secrets(emulator: Any) -> None:
    from importlib import import_module

    try:
        from airflow.sdk.serde import deserialize, serialize
    except ImportError:  # Airflow < 3.2
        from airflow.serialization.serde import deserialize, serialize  # type: ignore[no-redef]

    trigger = make_trigger(route="vidu-native", videoquery_conn_id="my_gateway")
    classpath, kwargs = trigger.serialize()

    assert classpath == CLASSPATH
    encoded = serialize(kwargs)
    assert API_KEY not in json.dumps(encoded)
    decoded = deserialize(encoded)
    assert isinstance(decoded, dict)
    module, _, name = classpath.rpartition(".")
    restored = getattr(import_module(module), name)(**decoded)
    assert restored.serialize() == (classpath, kwargs)
    assert all(isinstance(v, str | int | float | type(None)) for v in kwargs.values())


async def test_defaults_round_trip_too() -> None:
    trigger = VideoTaskTrigger(video_task_id=TASK_ID, deadline=time.time() + 60)
    classpath, kwargs = trigger.serialize()
    assert VideoTaskTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert kwargs["not_found_deadline"] == kwargs["started_at"] + 60


async def test_run_never_touches_sync_connection_apis(
    emulator: Any, sync_connection_apis_raise: None
) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=2))
    trigger = make_trigger()

    event = await only_event(trigger)

    assert event["status"] == "success", event["message"]


async def test_run_never_submits(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=2))

    await only_event(make_trigger())

    assert {r.method for r in emulator.requests} == {"GET"}


@pytest.mark.parametrize("blank", ["", "   ", "\n", "None", None])
def test_a_blank_task_id_is_refused_at_once(blank: Any) -> None:
    with pytest.raises(VideoQueryParameterError, match="video_task_id is") as refused:
        VideoTaskTrigger(video_task_id=blank, deadline=time.time() + 60)
    assert isinstance(refused.value, AirflowFailException)  # not retried: the DAG must change


async def test_the_event_and_the_log_hold_no_signed_url(
    emulator: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    signed = f"{emulator.url}/videos/_sample.mp4?se=2026-12-06&sig=SIGNATURE-Zx81"
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=2, video_url=signed, family="sora"))
    caplog.set_level(logging.DEBUG)

    event = await only_event(make_trigger())

    assert event["status"] == "success"
    assert "raw" not in event["task"]
    assert "SIGNATURE" not in json.dumps(event)
    logged = caplog.text + "".join(capsys.readouterr())  # stdlib and structlog lines
    assert "SIGNATURE" not in logged
    assert "succeeded" in logged  # the wait was logged, only not the URL
