"""VideoDownloadOperator end to end on the worker side: the emulator over HTTP, real storage, the real
trigger run inline for the deferred path."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSensorTimeout, TaskDeferred
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_videoquery.emulator import Fault, Scenario
from airflow_provider_videoquery.events import EventStatus, make_event
from airflow_provider_videoquery.exceptions import (
    VideoDownloadError,
    VideoQueryParameterError,
    VideoQueryTransientError,
    VideoTaskFailedError,
)
from airflow_provider_videoquery.hooks._http import RetryPolicy
from airflow_provider_videoquery.models import TaskStatus, VideoTask
from airflow_provider_videoquery.operators.videoquery import VideoDownloadOperator
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from tests.airflow_helpers import first_event, listing, make_context
from tests.s3 import MotoS3

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024
TASK = "veo3.1-fast:1764522552-Ab3dE9fGh1"
NAME = "veo3.1-fast_1764522552-Ab3dE9fGh1.mp4"


def task_context() -> dict[str, Any]:
    return make_context(outlet_events=OutletEventAccessors())


def make_operator(tmp_path: Path, **kwargs: Any) -> VideoDownloadOperator:
    fields: dict[str, Any] = {
        "task_id": "download",
        "video_task_id": TASK,
        "destination": f"file://{tmp_path}/out/",
        "poll_interval": 0.05,
        "timeout": 20,
        "download_retry_delay": 0.05,
    }
    return VideoDownloadOperator(**{**fields, **kwargs})


def run_trigger(trigger: VideoTaskTrigger) -> dict[str, Any]:
    return asyncio.run(first_event(trigger))


def test_templated_fields() -> None:
    assert set(VideoDownloadOperator.template_fields) == {"video_task_id", "destination"}


def test_finished_task_is_downloaded_into_folder(emulator: Any, tmp_path: Path) -> None:
    emulator.add_task(TASK, Scenario(video_size=3 * MiB, polls_to_complete=1))
    context = task_context()

    uri = make_operator(tmp_path).execute(context)

    expected = emulator.expected_video(TASK)
    assert uri == f"file://{tmp_path}/out/{NAME}"
    assert (tmp_path / "out" / NAME).read_bytes() == expected
    assert listing(tmp_path / "out") == [NAME]
    video = context["ti"].xcom["video"]
    assert video == {
        "uri": uri,
        "video_url": emulator.video_url_for(TASK),
        "bytes": len(expected),
        "sha256": hashlib.sha256(expected).hexdigest(),
        "content_type": "video/mp4",
        "video_task_id": TASK,
        "thumbnail": None,
        # No upstream VideoCreateOperator recorded this id: what was asked is not known here.
        "prompt": None,
        "model": None,
        "created_at": None,
        "stored_at": video["stored_at"],
        "conn_id": None,
    }
    assert datetime.fromisoformat(video["stored_at"]).tzinfo is not None


def test_unfinished_task_defers_then_downloads(emulator: Any, tmp_path: Path) -> None:
    emulator.add_task(TASK, Scenario(polls_to_complete=3))
    operator = make_operator(tmp_path)

    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(task_context())

    trigger = deferred.value.trigger
    assert isinstance(trigger, VideoTaskTrigger)
    assert deferred.value.method_name == "execute_complete"
    assert trigger.video_task_id == TASK
    assert trigger.poll_interval == 0.05
    assert listing(tmp_path / "out") == []

    event = run_trigger(trigger)
    context = task_context()
    uri = operator.execute_complete(context, event)

    assert uri == f"file://{tmp_path}/out/{NAME}"
    assert (tmp_path / "out" / NAME).read_bytes()[4:8] == b"ftyp"
    assert context["ti"].xcom["video"]["uri"] == uri


def test_not_deferrable_polls_on_the_worker(emulator: Any, tmp_path: Path) -> None:
    emulator.add_task(TASK, Scenario(polls_to_complete=4))
    uri = make_operator(tmp_path, deferrable=False).execute(task_context())
    assert uri.endswith(NAME)
    assert emulator.polls(TASK) == 4


def test_not_deferrable_times_out(emulator: Any, tmp_path: Path) -> None:
    emulator.add_task(TASK, Scenario(polls_to_complete=1000))
    with pytest.raises(AirflowSensorTimeout, match=r"did not finish within 0s.*Raise the timeout"):
        make_operator(tmp_path, deferrable=False, timeout=0.3).execute(task_context())


def test_not_deferrable_never_sleeps_a_retry_after_past_its_timeout(
    emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 429 asking for 2 minutes while the wait has 1 s left: the worker's wait ends at its timeout
    instead of sleeping the gateway's Retry-After (the hook is given the wait's deadline)."""
    emulator.add_task(TASK, Scenario(polls_to_complete=1000))
    emulator.add_fault(
        Fault("http_error", route="query", status=429, skip=1, times=None, headers={"Retry-After": "120"})
    )
    slept: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        real_sleep(min(seconds, 0.05))

    monkeypatch.setattr(time, "sleep", sleep)
    with pytest.raises(AirflowSensorTimeout, match="did not finish"):
        make_operator(tmp_path, deferrable=False, timeout=1.0, poll_interval=0.2).execute(task_context())
    assert slept
    assert max(slept) <= 1.0, slept


def test_unfinished_without_wait_fails_clearly(emulator: Any, tmp_path: Path) -> None:
    emulator.add_task(TASK, Scenario(polls_to_complete=3))
    with pytest.raises(VideoDownloadError, match=r"Cannot download yet.*wait_for_completion=True"):
        make_operator(tmp_path, wait_for_completion=False).execute(task_context())
    assert listing(tmp_path / "out") == []


def test_remote_failure_is_not_retried(emulator: Any, tmp_path: Path) -> None:
    emulator.add_task(TASK, Scenario(polls_to_complete=1, outcome="failed"))
    with pytest.raises(VideoTaskFailedError, match="failed at the gateway") as failed:
        make_operator(tmp_path).execute(task_context())
    assert isinstance(failed.value, AirflowFailException)


def test_failed_event_is_not_retried(emulator: Any, tmp_path: Path) -> None:
    emulator.add_task(TASK, Scenario(polls_to_complete=2, outcome="failed"))
    operator = make_operator(tmp_path)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(task_context())
    event = run_trigger(deferred.value.trigger)
    assert event["status"] == EventStatus.FAILED.value
    with pytest.raises(VideoTaskFailedError):
        operator.execute_complete(task_context(), event)


def test_timeout_event_raises_sensor_timeout(tmp_path: Path) -> None:
    event = make_event(EventStatus.TIMEOUT, "Video task did not finish", TASK)
    with pytest.raises(AirflowSensorTimeout):
        make_operator(tmp_path).execute_complete(task_context(), event)


def test_rerun_is_idempotent_and_conflict_fails(emulator: Any, tmp_path: Path) -> None:
    emulator.add_task(TASK, Scenario(video_size=MiB, polls_to_complete=1))
    first = make_operator(tmp_path).execute(task_context())
    again = make_operator(tmp_path).execute(task_context())
    assert again == first

    (tmp_path / "out" / NAME).write_bytes(b"edited by someone")
    with pytest.raises(VideoDownloadError, match="overwrite=True"):
        make_operator(tmp_path).execute(task_context())
    assert (tmp_path / "out" / NAME).read_bytes() == b"edited by someone"
    make_operator(tmp_path, overwrite=True).execute(task_context())
    assert (tmp_path / "out" / NAME).read_bytes() == emulator.expected_video(TASK)
    assert listing(tmp_path / "out") == [NAME]


def test_reset_mid_body_is_retried(emulator: Any, tmp_path: Path) -> None:
    emulator.add_task(TASK, Scenario(video_size=4 * MiB, polls_to_complete=1))
    emulator.add_fault(Fault("reset", route="video", times=1, after_bytes=2 * MiB))
    make_operator(tmp_path).execute(task_context())
    assert (tmp_path / "out" / NAME).read_bytes() == emulator.expected_video(TASK)


def test_exact_file_destination_and_max_bytes(emulator: Any, tmp_path: Path) -> None:
    emulator.add_task(TASK, Scenario(video_size=2 * MiB, polls_to_complete=1))
    destination = f"file://{tmp_path}/out/clip.mp4"
    with pytest.raises(VideoDownloadError, match="above max_bytes"):
        make_operator(tmp_path, destination=destination, max_bytes=MiB).execute(task_context())
    assert listing(tmp_path / "out") == []
    assert make_operator(tmp_path, destination=destination).execute(task_context()) == destination


def test_thumbnail_is_stored_next_to_the_video(emulator: Any, tmp_path: Path) -> None:
    grok = "grok-video-3:0b3c2f6e-8f0e-4f5e-9a57-5d9f2a1c7e11"
    emulator.add_task(grok, Scenario(polls_to_complete=1))
    context = task_context()
    make_operator(tmp_path, video_task_id=grok, include_thumbnail=True).execute(context)

    name = "grok-video-3_0b3c2f6e-8f0e-4f5e-9a57-5d9f2a1c7e11"
    assert listing(tmp_path / "out") == [f"{name}.mp4", f"{name}.thumbnail.jpg"]
    assert (tmp_path / "out" / f"{name}.thumbnail.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    assert context["ti"].xcom["video"]["thumbnail"] == f"file://{tmp_path}/out/{name}.thumbnail.jpg"


def test_missing_thumbnail_stores_the_video_only(emulator: Any, tmp_path: Path) -> None:
    emulator.add_task(TASK, Scenario(polls_to_complete=1, family="veo"))
    context = task_context()
    make_operator(tmp_path, include_thumbnail=True).execute(context)
    assert listing(tmp_path / "out") == [NAME]
    assert context["ti"].xcom["video"]["thumbnail"] is None


def test_openai_route_content_needs_the_key(emulator: Any, tmp_path: Path) -> None:
    video_id = "video_68d7512d07848190b3e45da0ecbebcde"
    emulator.add_task(video_id, Scenario(family="openai", polls_to_complete=1, video_size=MiB))
    uri = make_operator(tmp_path, video_task_id=video_id, route="openai").execute(task_context())
    assert (tmp_path / "out" / f"{video_id}.mp4").read_bytes() == emulator.expected_video(video_id)
    assert uri.endswith(f"{video_id}.mp4")


def test_outlets_get_asset_events(emulator: Any, tmp_path: Path) -> None:
    emulator.add_task(TASK, Scenario(polls_to_complete=1))
    asset = Asset("videos", uri=f"file://{tmp_path}/out/")
    alias = AssetAlias("generated-videos")
    context = task_context()

    uri = make_operator(tmp_path, outlets=[asset, alias]).execute(context)

    events = context["outlet_events"]
    assert events[asset].extra["uri"] == uri
    assert events[asset].extra["sha256"] == context["ti"].xcom["video"]["sha256"]
    (alias_event,) = events[alias].asset_alias_events
    assert alias_event.dest_asset_key.uri == uri
    assert alias_event.extra["video_task_id"] == TASK


def test_s3_destination(emulator: Any, moto_server: MotoS3, s3_bucket: str, tmp_path: Path) -> None:
    emulator.add_task(TASK, Scenario(video_size=6 * MiB, polls_to_complete=1))
    operator = make_operator(
        tmp_path, destination=f"s3://{s3_bucket}/generated/", destination_conn_id="aws_default"
    )
    context = task_context()

    uri = operator.execute(context)

    assert uri == f"s3://{s3_bucket}/generated/{NAME}"  # no connection id in the URI
    assert moto_server.keys(s3_bucket) == [f"generated/{NAME}"]
    assert moto_server.read(s3_bucket, f"generated/{NAME}") == emulator.expected_video(TASK)
    assert context["ti"].xcom["video"]["uri"] == uri


def test_s3_html_body_leaves_nothing(
    emulator: Any, moto_server: MotoS3, s3_bucket: str, tmp_path: Path
) -> None:
    emulator.add_task(TASK, Scenario(polls_to_complete=1))
    emulator.add_fault(Fault("html_video", route="video"))
    operator = make_operator(
        tmp_path, destination=f"s3://{s3_bucket}/generated/", destination_conn_id="aws_default"
    )
    with pytest.raises(VideoDownloadError, match="text/html"):
        operator.execute(task_context())
    assert moto_server.keys(s3_bucket) == []


# -- after the trigger: a fresh URL, a fallback, and nothing signed in the event or the log --------------


def deferred_event(operator: VideoDownloadOperator) -> dict[str, Any]:
    """Run the operator until it defers, then its trigger until it fires; the event as stored."""
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(task_context())
    event = run_trigger(deferred.value.trigger)
    restored: dict[str, Any] = json.loads(json.dumps(event))
    return restored


def test_signed_url_stays_out_of_the_event_and_the_logs(
    emulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    signed = f"{emulator.url}/videos/_sample.mp4?se=2026-12-06&sig=SIGNATURE-Zx81"
    emulator.add_task(TASK, Scenario(polls_to_complete=3, video_url=signed))
    caplog.set_level(logging.DEBUG)
    operator = make_operator(tmp_path)

    event = deferred_event(operator)
    assert "SIGNATURE" not in json.dumps(event)
    context = task_context()
    uri = operator.execute_complete(context, event)

    assert (tmp_path / "out" / NAME).read_bytes()[4:8] == b"ftyp"
    assert uri.endswith(NAME)
    assert emulator.polls(TASK) == 4  # the first look, two trigger polls, the fresh read
    assert context["ti"].xcom["video"]["video_url"] == signed  # XCom keeps what a user may need
    logged = caplog.text + "".join(capsys.readouterr())
    assert f"{emulator.url}/videos/_sample.mp4" in logged  # "Stored … from <URL without its query>"
    assert "SIGNATURE" not in logged


def test_the_download_uses_the_url_the_gateway_gives_now(emulator: Any, tmp_path: Path) -> None:
    emulator.add_task(TASK, Scenario(polls_to_complete=1, video_size=MiB))
    # An event of the previous version, carrying a URL that has expired since the trigger fired.
    stale = VideoTask(
        id=TASK,
        status=TaskStatus.SUCCEEDED,
        raw_status="completed",
        video_url=f"{emulator.url}/videos/expired-link.mp4",
        raw={"status": "completed", "video_url": f"{emulator.url}/videos/expired-link.mp4"},
    )
    event = {
        **make_event(EventStatus.SUCCESS, "ok", TASK),
        "task": {**stale.model_dump(mode="json"), "raw": stale.raw},
    }

    uri = make_operator(tmp_path).execute_complete(task_context(), event)

    assert (tmp_path / "out" / NAME).read_bytes() == emulator.expected_video(TASK)
    assert uri.endswith(NAME)
    assert emulator.count(route="video", status=404) == 0


def test_a_failed_fresh_read_falls_back_to_the_events_url(
    emulator: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(RetryPolicy, "delay", lambda *args, **kwargs: 0.0)  # the retries, without sleeps
    emulator.add_task(TASK, Scenario(polls_to_complete=2, video_size=MiB))
    operator = make_operator(tmp_path)
    event = deferred_event(operator)
    assert event["task"]["video_url"] == emulator.video_url_for(TASK)  # plain: carried
    emulator.add_fault(Fault(kind="http_error", status=503, route="query", times=100))

    operator.execute_complete(task_context(), event)

    assert (tmp_path / "out" / NAME).read_bytes() == emulator.expected_video(TASK)
    assert "using the URL from the trigger's event" in caplog.text + "".join(capsys.readouterr())


def test_a_failed_fresh_read_without_a_carried_url_is_retried(
    emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RetryPolicy, "delay", lambda *args, **kwargs: 0.0)
    signed = f"{emulator.url}/videos/_sample.mp4?sig=SIGNATURE-Zx81"
    emulator.add_task(TASK, Scenario(polls_to_complete=2, video_url=signed))
    operator = make_operator(tmp_path)
    event = deferred_event(operator)
    emulator.add_fault(Fault(kind="http_error", status=503, route="query", times=100))

    with pytest.raises(VideoQueryTransientError, match=r"succeeded, but re-reading it") as caught:
        operator.execute_complete(task_context(), event)

    assert not isinstance(caught.value, AirflowFailException)  # Airflow's retry reads it again
    assert "SIGNATURE" not in str(caught.value)
    assert listing(tmp_path / "out") == []


@pytest.mark.parametrize("blank", ["", " ", "None"])
def test_a_blank_task_id_fails_at_once(emulator: Any, tmp_path: Path, blank: str) -> None:
    with pytest.raises(VideoQueryParameterError, match=r"VideoDownloadOperator 'download': video_task_id is"):
        make_operator(tmp_path, video_task_id=blank).execute(task_context())
    assert emulator.requests == []
    assert listing(tmp_path / "out") == []


@pytest.mark.parametrize("polls", [1, 3])
def test_a_signed_url_is_downloaded_when_waiting_on_the_worker(
    emulator: Any, tmp_path: Path, polls: int
) -> None:
    signed = f"{emulator.url}/videos/_sample.mp4?se=2026-12-06&sig=SIGNATURE-Zx81"
    emulator.add_task(TASK, Scenario(polls_to_complete=polls, video_url=signed))
    context = task_context()

    make_operator(tmp_path, deferrable=False).execute(context)

    assert (tmp_path / "out" / NAME).read_bytes()[4:8] == b"ftyp"
    assert context["ti"].xcom["video"]["video_url"] == signed
    assert emulator.polls(TASK) == polls  # the poll that saw it finish gave the URL
