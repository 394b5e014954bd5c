"""What each poll means for a wait: the one decision the trigger, the sensor and the operator share.

A :class:`Watch` follows one video task across polls. Each poll's outcome (a task, or the error the
hook raised) goes to :meth:`Watch.after`, which answers with the event that ends the wait, or None to
poll again. The trigger yields that event; the sensor and the operator's worker-side wait hand it to
:func:`~airflow_provider_videoquery.events.task_from_event`, so every path ends the same way.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from airflow_provider_videoquery.events import EventStatus, failure_message, make_event
from airflow_provider_videoquery.exceptions import (
    VideoQueryAuthError,
    VideoQueryError,
    VideoQueryRequestError,
    VideoQueryResponseError,
    VideoQueryTransientError,
    VideoTaskNotFoundError,
)
from airflow_provider_videoquery.models import TaskStatus, VideoTask

#: How long a freshly created task may be unknown to the gateway before that is final.
DEFAULT_NOT_FOUND_GRACE = 60.0

#: Failures a wait rides out: the next poll may well succeed.
_FOR_NOW = (VideoQueryTransientError, VideoQueryResponseError, TimeoutError)
#: Failures that end a wait with an event naming their type.
_FINAL = (VideoQueryAuthError, VideoQueryRequestError)

Event = dict[str, Any]


class Watch:
    """One wait for one video task: deadlines, the last state seen, and what to log.

    :param deadline: epoch seconds after which the wait ends with a ``timeout`` event.
    :param not_found_deadline: epoch seconds until which "unknown task" means "not known yet".
    :param started_at: epoch seconds the wait began (for messages).
    """

    def __init__(
        self,
        video_task_id: str,
        deadline: float,
        not_found_deadline: float,
        started_at: float,
        log: logging.Logger | Any,
    ) -> None:
        self.video_task_id = video_task_id
        self.deadline = deadline
        self.not_found_deadline = not_found_deadline
        self.started_at = started_at
        self.log = log
        self.last: VideoTask | None = None
        self._seen: tuple[TaskStatus, str | None, float | None] | None = None
        self._told_unknown = False

    def after(self, outcome: VideoTask | Exception) -> Event | None:
        """The event that ends the wait after this poll, or None to poll again."""
        if isinstance(outcome, VideoTask):
            return self._after_task(outcome)
        if isinstance(outcome, VideoTaskNotFoundError):
            return self._after_unknown(outcome)
        if isinstance(outcome, _FOR_NOW):
            self.log.warning(
                "Polling video task %r failed for now (%s); polling again until the deadline.",
                self.video_task_id,
                str(outcome) or "no answer in time",
            )
            return None
        return self.stopped(outcome)

    def stopped(self, err: Exception) -> Event:
        """The error event for a failure no further poll can mend."""
        if isinstance(err, _FINAL):
            return self._event(EventStatus.ERROR, str(err), error=type(err))
        return self._event(
            EventStatus.ERROR,
            f"Waiting for video task {self.video_task_id!r} stopped on an unexpected error: "
            f"{type(err).__name__}: {err}",
        )

    def expired(self, now: float | None = None) -> Event | None:
        """The timeout event once the deadline has passed, else None."""
        if (now if now is not None else time.time()) < self.deadline:
            return None
        waited = self.deadline - self.started_at
        until = datetime.fromtimestamp(self.deadline, tz=UTC).isoformat(timespec="seconds")
        last = self.last
        state = f"its last status was {last.summary()}" if last else "the gateway never reported a status"
        return self._event(
            EventStatus.TIMEOUT,
            f"Video task {self.video_task_id!r} did not finish within {waited:.0f}s (deadline {until}); "
            f"{state}. Raise the timeout if the model is slow, or check the task at the gateway.",
            last,
        )

    def _after_task(self, task: VideoTask) -> Event | None:
        self.last = task
        if (task.status, task.raw_status, task.progress) != self._seen:
            self._seen = (task.status, task.raw_status, task.progress)
            self.log.info("%s", task.summary())
        if task.status is TaskStatus.SUCCEEDED:
            return self._event(EventStatus.SUCCESS, f"Video task {task.id!r} succeeded.", task)
        if task.status is TaskStatus.FAILED:
            return self._event(EventStatus.FAILED, failure_message(task), task)
        return None

    def _after_unknown(self, err: VideoTaskNotFoundError) -> Event | None:
        if time.time() >= self.not_found_deadline:
            grace = self.not_found_deadline - self.started_at
            return self._event(
                EventStatus.ERROR,
                f"Video task {self.video_task_id!r} is still unknown to the gateway after the "
                f"{grace:.0f}s grace period: {err}",
                error=VideoTaskNotFoundError,
            )
        if not self._told_unknown:
            self._told_unknown = True
            self.log.info(
                "Video task %r is not known to the gateway yet; it may just have been created.",
                self.video_task_id,
            )
        return None

    def _event(
        self,
        status: EventStatus,
        message: str,
        task: VideoTask | None = None,
        error: type[VideoQueryError] | None = None,
    ) -> Event:
        (self.log.info if status is EventStatus.SUCCESS else self.log.warning)("%s", message)
        return make_event(status, message, self.video_task_id, task, error)
