"""VideoTaskSensor against the emulator: poke once, defer, resume; and the non-deferrable modes."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowFailException,
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
    VideoQueryParameterError,
    VideoQueryTransientError,
    VideoTaskFailedError,
    VideoTaskNotFoundError,
)
from airflow_provider_videoquery.hooks._http import RetryPolicy
from airflow_provider_videoquery.models import TaskStatus, VideoTask
from airflow_provider_videoquery.sensors.videoquery import VideoTaskSensor
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from airflow_provider_videoquery.waiting import DEFER_MARGIN, LAST_POLL_BUDGET
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
    # The deferral outlasts the trigger's deadline and its last poll, so the trigger's event wins.
    assert deferred.value.timeout == timedelta(seconds=600 + DEFER_MARGIN)
    assert DEFER_MARGIN > LAST_POLL_BUDGET + 60
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


def test_execute_complete_maps_each_outcome(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=1))
    sensor = make_sensor()
    done = succeeded_task()

    value = sensor.execute_complete({}, make_event(EventStatus.SUCCESS, "ok", TASK_ID, done))
    assert value["status"] == "succeeded"
    assert value["video_url"] == emulator.video_url_for(TASK_ID)  # read again: the fresh URL

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


@pytest.mark.parametrize("deferrable", [True, False])
@pytest.mark.parametrize("blank", ["", "  ", "None"])
def test_a_blank_task_id_fails_at_once(emulator: Any, blank: str, deferrable: bool) -> None:
    sensor = make_sensor(video_task_id=blank, deferrable=deferrable, soft_fail=True)

    with pytest.raises(VideoQueryParameterError, match=r"VideoTaskSensor 'wait': video_task_id is"):
        sensor.execute({})

    assert emulator.requests == []  # no 60 s of "not known yet"


def test_execute_complete_reads_the_task_again_for_its_signed_url(emulator: Any) -> None:
    signed = f"{emulator.url}/videos/_sample.mp4?se=2026-12-06&sig=SIGNATURE-Zx81"
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=1, video_url=signed))
    done = succeeded_task().model_copy(update={"video_url": signed})
    event = make_event(EventStatus.SUCCESS, "ok", TASK_ID, done)
    assert event["task"]["video_url"] is None  # signed: not in the event

    value = make_sensor().execute_complete({}, json.loads(json.dumps(event)))

    assert value["video_url"] == signed
    assert "raw" not in value
    assert emulator.polls(TASK_ID) == 1


def test_execute_complete_falls_back_to_the_events_url_when_the_gateway_is_unwell(
    emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RetryPolicy, "delay", lambda *args, **kwargs: 0.0)  # the retries, without sleeps
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=1))
    emulator.add_fault(Fault(kind="http_error", status=503, route="query", times=100))
    plain = succeeded_task()
    signed = plain.model_copy(update={"video_url": "http://x/v.mp4?sig=abc"})

    value = make_sensor().execute_complete({}, make_event(EventStatus.SUCCESS, "ok", TASK_ID, plain))
    assert value["video_url"] == plain.video_url

    with pytest.raises(VideoQueryTransientError, match="re-reading it for its signed video URL") as caught:
        make_sensor().execute_complete({}, make_event(EventStatus.SUCCESS, "ok", TASK_ID, signed))
    assert not isinstance(caught.value, AirflowFailException)  # Airflow's retry reads it again


@pytest.mark.parametrize("deferrable", [True, False])
def test_a_task_done_at_the_first_poke_keeps_its_signed_url_in_xcom(emulator: Any, deferrable: bool) -> None:
    signed = f"{emulator.url}/videos/_sample.mp4?se=2026-12-06&sig=SIGNATURE-Zx81"
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=1, video_url=signed))

    value = make_sensor(deferrable=deferrable).execute({})

    assert value["video_url"] == signed
    assert "raw" not in value


def test_soft_fail_in_poke_mode_skips_with_the_gateways_reason(emulator: Any) -> None:
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=1, outcome="failed"))

    with pytest.raises(AirflowSkipException, match=r"soft_fail.*Reason: .*failed at the gateway"):
        make_sensor(deferrable=False, soft_fail=True).execute({})


def test_resuming_with_soft_fail_skips_with_the_triggers_reason() -> None:
    event = make_event(EventStatus.TIMEOUT, f"Video task {TASK_ID!r} did not finish within 5s", TASK_ID)

    with pytest.raises(AirflowSkipException, match=r"soft_fail.*Reason: .*did not finish within 5s"):
        make_sensor(soft_fail=True).resume_execution("execute_complete", {"event": event}, {})
