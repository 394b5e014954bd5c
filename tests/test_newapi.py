"""new-api's own task route (``route="new-api"``): the hook against the emulator over real HTTP."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Emulator, Fault, Scenario
from airflow_provider_videoquery.exceptions import (
    VideoCreateUncertainError,
    VideoQueryResponseError,
    VideoTaskNotFoundError,
)
from airflow_provider_videoquery.hooks._http import RetryPolicy
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.models import TaskStatus, VideoTask
from airflow_provider_videoquery.routes import Route
from airflow_provider_videoquery.storage import DownloadSettings, resolve_destination, store_url
from tests.conftest import connection_json

pytestmark = pytest.mark.timeout(60)

FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)
TASK = "task_4XzJ1nQp8fKcV0aLm3yR7tBwE2uH6sDo"


def hook() -> VideoQueryHook:
    return VideoQueryHook(route=Route.NEW_API, retry_policy=FAST)


def poll(h: VideoQueryHook, task_id: str, limit: int = 10) -> list[VideoTask]:
    seen = []
    for _ in range(limit):
        seen.append(h.get_task(task_id))
        if seen[-1].is_terminal:
            break
    return seen


def test_create_poll_and_download_over_http(emulator: Emulator, tmp_path: Path) -> None:
    h = hook()
    created = h.create_task("veo3.1-fast", "a cow flying", aspect_ratio="16:9")
    assert created.id.startswith("task_")
    assert created.status is TaskStatus.QUEUED
    assert emulator.count(route="newapi_create", status=200) == 1
    stored_task = emulator.task(created.id)
    assert stored_task is not None
    assert stored_task.body["aspect_ratio"] == "16:9"

    seen = poll(h, created.id)
    assert [t.raw_status for t in seen] == ["QUEUED", "IN_PROGRESS", "SUCCESS"]
    assert seen[1].progress is not None
    assert 0 < seen[1].progress < 100
    done = seen[-1]
    assert done.status is TaskStatus.SUCCEEDED
    assert done.video_url == emulator.video_url_for(created.id)
    assert done.raw["task_id"] == created.id  # raw is the task, out of its envelope
    assert emulator.count(route="newapi_query", task_id=created.id) == 3

    target = resolve_destination(f"file://{tmp_path}/out/", created.id)
    stored = store_url(done.video_url, target, DownloadSettings.for_gateway(h.config))
    expected = emulator.expected_video(created.id)
    assert (tmp_path / "out" / f"{created.id}.mp4").read_bytes() == expected
    assert stored.sha256 == hashlib.sha256(expected).hexdigest()
    h.close()


async def test_async_poll_on_the_new_api_route(emulator: Emulator) -> None:
    emulator.add_task(TASK, Scenario(family="newapi", polls_to_complete=2))
    async with hook() as h:
        first, second = await h.aget_task(TASK), await h.aget_task(TASK)
    assert first.status is TaskStatus.QUEUED
    assert second.status is TaskStatus.SUCCEEDED


def test_route_from_the_connection_extra(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, route="new-api"))
    emulator.add_task(TASK, Scenario(family="newapi", polls_to_complete=1))
    h = VideoQueryHook(retry_policy=FAST)
    assert h.get_task(TASK).status is TaskStatus.SUCCEEDED
    assert emulator.count(route="newapi_query", task_id=TASK) == 1
    h.close()


def test_data_null_then_the_task(emulator: Emulator) -> None:
    emulator.add_task(TASK, Scenario(family="newapi", polls_to_complete=3, newapi_null_polls=2))
    seen = poll(hook(), TASK)
    assert [(t.status, t.raw_status) for t in seen] == [
        (TaskStatus.QUEUED, None),
        (TaskStatus.QUEUED, None),
        (TaskStatus.SUCCEEDED, "SUCCESS"),
    ]


def test_older_new_api_with_the_url_in_fail_reason(emulator: Emulator) -> None:
    emulator.add_task(TASK, Scenario(family="newapi", polls_to_complete=1, newapi_shape="legacy"))
    task = hook().get_task(TASK)
    assert "result_url" not in task.raw
    assert task.status is TaskStatus.SUCCEEDED
    assert task.video_url == emulator.video_url_for(TASK)
    assert task.error is None


@pytest.mark.parametrize("shape", ["task", "legacy", "gemini"])
def test_failure_carries_the_reason(emulator: Emulator, shape: Any) -> None:
    emulator.add_task(
        TASK,
        Scenario(family="newapi", polls_to_complete=1, outcome="failed", newapi_shape=shape,
                 failure_reason="The prompt was blocked by safety filters."),
    )  # fmt: skip
    task = hook().get_task(TASK)
    assert task.status is TaskStatus.FAILED
    assert task.error == "The prompt was blocked by safety filters."
    assert task.video_url is None


def test_gemini_vertex_channel_to_success(emulator: Emulator) -> None:
    emulator.add_task(TASK, Scenario(family="newapi", polls_to_complete=3, newapi_shape="gemini"))
    seen = poll(hook(), TASK)
    assert [t.raw_status for t in seen] == ["queued", "processing", "succeeded"]
    assert seen[-1].video_url == emulator.video_url_for(TASK)


def test_unknown_id_is_not_found(emulator: Emulator) -> None:
    with pytest.raises(VideoTaskNotFoundError, match=r"new-api route.*HTTP 400: task_not_exist"):
        hook().get_task("task_nobody")
    assert emulator.count(route="newapi_query", status=400) == 1


def test_transient_faults_on_the_route_are_retried(emulator: Emulator) -> None:
    emulator.add_task(TASK, Scenario(family="newapi", polls_to_complete=1))
    emulator.add_fault(Fault("http_error", route="newapi_query", status=503, times=2))
    assert hook().get_task(TASK).status is TaskStatus.SUCCEEDED
    assert emulator.count(route="newapi_query", status=503) == 2


def test_an_envelope_that_is_no_success_is_a_response_error(emulator: Emulator) -> None:
    body = '{"code": "get_task_failed", "message": "database is locked", "data": null}'
    emulator.add_fault(Fault("http_error", route="newapi_query", status=200, body=body, times=1))
    with pytest.raises(VideoQueryResponseError, match=r"code='get_task_failed': database is locked"):
        hook().get_task(TASK)


def test_a_create_answer_in_the_envelope_is_unwrapped(emulator: Emulator) -> None:
    emulator.add_task(TASK, Scenario(family="newapi", polls_to_complete=1))
    body = json.dumps({"code": "success", "message": "", "data": {"task_id": TASK, "status": "SUBMITTED"}})
    emulator.add_fault(Fault("http_error", route="newapi_create", status=200, body=body, times=1))
    created = hook().create_task("veo3.1-fast", "a cow flying")
    assert created.id == TASK
    assert created.status is TaskStatus.QUEUED


@pytest.mark.parametrize(
    "body",
    [
        '{"code": "get_channel_failed", "message": "no channel available", "data": null}',
        '{"code": "success", "data": null}',
    ],
)
def test_a_create_answer_without_a_task_is_uncertain(emulator: Emulator, body: str) -> None:
    emulator.add_fault(Fault("http_error", route="newapi_create", status=200, body=body, times=1))
    with pytest.raises(VideoCreateUncertainError, match="Check the gateway's task list"):
        hook().create_task("veo3.1-fast", "a cow flying")
    assert emulator.count(route="newapi_create") == 1  # never sent twice
