"""The trigger's event payload: one builder, one reader, shared by the sensor and the operators.

An event is a plain dict (it goes through ``airflow.sdk.serde`` and the metadata DB)::

    {"status": "success" | "failed" | "timeout" | "error", "message": str,
     "video_task_id": str, "task": <VideoTask.for_event() as a JSON dict> | None,
     "error_type": <name of the VideoQueryError subclass behind an "error"> | None}

The triggerer logs every event, so it carries only what the worker needs: the task without the raw
answer, and without URLs that are signed (the worker re-queries the task for those). Events of earlier
versions (a task with ``raw`` and signed URLs) are still read.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from airflow.providers.common.compat.sdk import AirflowSensorTimeout

from airflow_provider_videoquery.exceptions import (
    VideoQueryAuthError,
    VideoQueryError,
    VideoQueryRequestError,
    VideoQueryUnreachableError,
    VideoTaskFailedError,
    VideoTaskNotFoundError,
)
from airflow_provider_videoquery.models import TaskStatus, VideoTask


class EventStatus(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    ERROR = "error"


#: Errors an event may name; anything else is raised as the base VideoQueryError.
_ERROR_TYPES: dict[str, type[VideoQueryError]] = {
    cls.__name__: cls
    for cls in (
        VideoQueryAuthError,
        VideoTaskNotFoundError,
        VideoQueryRequestError,
        VideoQueryUnreachableError,
    )
}


def make_event(
    status: EventStatus,
    message: str,
    video_task_id: str,
    task: VideoTask | None = None,
    error: type[VideoQueryError] | None = None,
) -> dict[str, Any]:
    return {
        "status": status.value,
        "message": message,
        "video_task_id": video_task_id,
        "task": task.for_event().model_dump(mode="json") if task is not None else None,
        "error_type": error.__name__ if error is not None else None,
    }


def failure_message(task: VideoTask) -> str:
    """What a user reads when the gateway failed the task: which task, what it said, what to do."""
    return (
        f"Video task {task.id!r} failed at the gateway (status {task.raw_status!r}): {task.error}. "
        "This is final for this task; change the prompt or inputs and create a new one."
    )


def ensure_not_failed(task: VideoTask) -> VideoTask:
    """Raise the non-retried failure for a failed task; return any other task unchanged."""
    if task.status is TaskStatus.FAILED:
        raise VideoTaskFailedError(failure_message(task))
    return task


def task_from_event(event: dict[str, Any] | None, video_task_id: str) -> VideoTask:
    """Validate an event and return the finished task, or raise what the outcome calls for.

    success -> the task (signed URLs left out: re-query it); failed -> :class:`VideoTaskFailedError`
    (not retried); timeout -> ``AirflowSensorTimeout`` (so ``soft_fail`` works); error -> the error type
    the event names (a refused key is :class:`VideoQueryAuthError`, not retried), or
    :class:`VideoQueryError` for a malformed event.
    """
    if not isinstance(event, dict) or event.get("status") not in {s.value for s in EventStatus}:
        raise VideoQueryError(
            f"Waiting for video task {video_task_id!r} ended with an unexpected event ({_shape(event)}); "
            "this is a bug in the provider or a trigger from another version."
        )
    status, message = EventStatus(event["status"]), str(event.get("message") or "")
    if status is EventStatus.TIMEOUT:
        raise AirflowSensorTimeout(message)
    if status is EventStatus.ERROR:
        raise _ERROR_TYPES.get(str(event.get("error_type")), VideoQueryError)(message)
    task_data = event.get("task")
    if not isinstance(task_data, dict):
        raise VideoQueryError(f"The {status.value} event for video task {video_task_id!r} carries no task.")
    task = VideoTask.model_validate(task_data)
    if status is EventStatus.FAILED:
        raise VideoTaskFailedError(message or failure_message(task))
    if task.status is not TaskStatus.SUCCEEDED:
        raise VideoQueryError(
            f"The success event for video task {video_task_id!r} holds a task that is {task.status.value}; "
            "this is a bug."
        )
    return task


def _shape(event: object) -> str:
    """What an unusable event looked like, without its values (they may hold signed URLs)."""
    if isinstance(event, dict):
        return f"a dict with status {event.get('status')!r} and keys {sorted(map(str, event))}"
    return f"a {type(event).__name__}"
