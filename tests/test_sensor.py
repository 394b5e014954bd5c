"""VideoTaskSensor against the emulator: poke once, defer, resume; and the non-deferrable modes."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    AirflowSkipException,
    PokeReturnValue,
    TaskDeferred,
)

try:
    from airflow.sdk.exceptions import AirflowRescheduleException
except ImportError:  # Airflow < 3.2
    from airflow.exceptions import AirflowRescheduleException  # type: ignore[no-redef]

from airflow_provider_videoquery.emulator import Fault, Scenario
from airflow_provider_videoquery.events import EventStatus, make_event
from airflow_provider_videoquery.exceptions import (
    VideoQueryAuthError,
    VideoQueryError,
    VideoTaskFailedError,
    VideoTaskNotFoundError,
)
from airflow_provider_videoquery.models import TaskStatus, VideoTask
from airflow_provider_videoquery.sensors.videoquery import VideoTaskSensor
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from tests.conftest import connection_json

TASK_ID = "grok-video-3:0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"


class FakeTI:
    """Just enough of a task instance for reschedule mode."""

    def __init__(self, first_reschedule: Any = None) -> None:
        self.first_reschedule = first_reschedule

    def get_first_reschedule_date(self, context: Any) -> Any:
        return self.first_reschedule


def make_sensor(**kwargs: Any) -> VideoTaskSensor:
    options: dict[str, Any] = {"task_id": "wait", "video_task_id": TASK_ID, "poke_interval": 0.05}
    options.update(kwargs)
    return VideoTaskSensor(**options)


def succeeded_task() -> VideoTask:
    return VideoTask(
        id=TASK_ID, status=TaskStatus.SUCCEEDED, raw_status="completed", video_url="http://x/v.mp4"
    )


def test_defaults_and_template_fields() -> None:
    sensor = VideoTaskSensor(task_id="wait", video_task_id=TASK_ID)
    assert sensor.deferrable is True
    assert sensor.poke_interval == 15
    assert sensor.videoquery_conn_id == "videoquery_default"
    assert "video_task_id" in sensor.template_fields


def test_poke_returns_the_normalized_task_when_done(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=1))

    result = make_sensor().poke({})

    assert isinstance(result, PokeReturnValue)
    assert result.is_done
    assert isinstance(result.xcom_value, dict)
    assert result.xcom_value["id"] == TASK_ID
    assert result.xcom_value["status"] == "succeeded"
    assert result.xcom_value["video_url"]


def test_poke_not_done_while_running_and_on_transient_trouble(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=5))
    sensor = make_sensor()
    assert not sensor.poke({})
    emulator.add_fault(Fault(kind="malformed_json", route="query", times=1))
    assert not sensor.poke({})


def test_poke_raises_the_non_retried_failure(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=1, outcome="failed"))

    with pytest.raises(VideoTaskFailedError, match="failed at the gateway"):
        make_sensor().poke({})


def test_poke_tolerates_an_unknown_task_only_within_grace(emulator: Any) -> None:
    # The grace counts from the first poke's start, so it must outlast that poke on a cold, busy machine.
    sensor = make_sensor(not_found_grace=1.5)
    assert not sensor.poke({})
    time.sleep(1.55)
    with pytest.raises(VideoTaskNotFoundError):
        sensor.poke({})


def test_poke_bad_key_raises(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, api_key="sk-wrong"))
    with pytest.raises(VideoQueryAuthError):
        make_sensor().poke({})


def test_deferrable_returns_at_once_when_already_done(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=1))

    value = make_sensor().execute({})

    assert value["status"] == "succeeded"


def test_deferrable_defers_with_its_own_timeout_and_an_absolute_deadline(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=3))
    sensor = make_sensor(timeout=600, poke_interval=20, route="unified", videoquery_conn_id="gw")
    emulator_conn = connection_json(emulator.url)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_GW", emulator_conn)
        before = time.time()
        with pytest.raises(TaskDeferred) as deferred:
            sensor.execute({})

    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout == timedelta(seconds=600)
    trigger = deferred.value.trigger
    assert isinstance(trigger, VideoTaskTrigger)
    _, kwargs = trigger.serialize()
    assert kwargs["video_task_id"] == TASK_ID
    assert kwargs["videoquery_conn_id"] == "gw"
    assert kwargs["route"] == "unified"
    assert kwargs["poll_interval"] == 20
    assert before + 600 <= kwargs["deadline"] <= time.time() + 600
    assert kwargs["not_found_deadline"] <= time.time() + 60


def test_deferrable_failed_on_first_poke_with_soft_fail_skips(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=1, outcome="failed"))

    with pytest.raises(AirflowSkipException):
        make_sensor(soft_fail=True).execute({})


def test_execute_complete_maps_each_outcome() -> None:
    sensor = make_sensor()
    done = succeeded_task()

    value = sensor.execute_complete({}, make_event(EventStatus.SUCCESS, "ok", TASK_ID, done))
    assert value == done.model_dump(mode="json")

    failed = VideoTask(id=TASK_ID, status=TaskStatus.FAILED, raw_status="failed", error="unsafe prompt")
    with pytest.raises(VideoTaskFailedError):
        sensor.execute_complete({}, make_event(EventStatus.FAILED, "unsafe prompt", TASK_ID, failed))
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete({}, make_event(EventStatus.TIMEOUT, "too slow", TASK_ID))
    with pytest.raises(VideoQueryError, match="bad key"):
        sensor.execute_complete({}, make_event(EventStatus.ERROR, "bad key", TASK_ID))
    with pytest.raises(VideoQueryError):
        sensor.execute_complete({}, None)


def test_non_deferrable_poke_mode_waits_and_returns_the_task(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=3))

    value = make_sensor(deferrable=False, timeout=10).execute({})

    assert value["status"] == "succeeded"
    assert emulator.polls(TASK_ID) == 3


def test_non_deferrable_poke_mode_times_out(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=10**6))

    with pytest.raises(AirflowSensorTimeout):
        make_sensor(deferrable=False, timeout=0.2).execute({})


def test_non_deferrable_poke_mode_failure_is_final(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=2, outcome="failed"))

    with pytest.raises(VideoTaskFailedError):
        make_sensor(deferrable=False, timeout=10).execute({})


def test_reschedule_mode_reschedules_then_returns(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=2))
    context: Any = {"ti": FakeTI()}

    with pytest.raises(AirflowRescheduleException):
        make_sensor(deferrable=False, mode="reschedule", timeout=60).execute(context)
    value = make_sensor(deferrable=False, mode="reschedule", timeout=60).execute(context)

    assert value["status"] == "succeeded"


def test_reschedule_mode_measures_grace_from_the_first_try(emulator: Any) -> None:
    from airflow.sdk import timezone

    context: Any = {"ti": FakeTI(timezone.utcnow() - timedelta(minutes=5))}

    with pytest.raises(VideoTaskNotFoundError):
        make_sensor(deferrable=False, mode="reschedule", timeout=3600).execute(context)
