"""What each poll means for a wait: the one decision the trigger, the sensor and the operator share.

A :class:`Watch` follows one video task across polls. Each poll's outcome (a task, or the error the
hook raised) goes to :meth:`Watch.after`, which answers with the event that ends the wait, or None to
poll again. The trigger yields that event; the sensor and the operator's worker-side wait hand it to
:func:`~airflow_provider_videoquery.events.task_from_event`, so every path ends the same way.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

from airflow_provider_videoquery.events import (
    EventStatus,
    ensure_not_failed,
    failure_message,
    make_event,
    task_from_event,
)
from airflow_provider_videoquery.exceptions import (
    VideoQueryAuthError,
    VideoQueryError,
    VideoQueryParameterError,
    VideoQueryRequestError,
    VideoQueryResponseError,
    VideoQueryTransientError,
    VideoQueryUnreachableError,
    VideoTaskNotFoundError,
)
from airflow_provider_videoquery.models import TaskStatus, VideoTask, is_elided

#: How long a freshly created task may be unknown to the gateway before that is final.
DEFAULT_NOT_FOUND_GRACE = 60.0
#: A trigger's poll started at or after its deadline still gets this long to answer (one last look).
LAST_POLL_BUDGET = 30.0
#: A deferral's own timeout trails the trigger's deadline by this much, so the trigger's last poll ends
#: first and its timeout event (which says what the task was doing) wins over the scheduler's bare
#: "Trigger timeout".
DEFER_MARGIN = LAST_POLL_BUDGET + 90.0

#: A wait logs every new status at once (a final one in its event's line), and progress within one
#: status at most this often: a line for each poll of thousands of triggers cost the triggerer about a
#: tenth of its CPU.
PROGRESS_LOG_EVERY = 60.0
_monotonic = time.monotonic  # the throttle's clock (tests replace it)

#: How long a trigger waits for a gateway that has not answered once in this wait, while nothing is
#: reachable at its address (refused, unknown host, TLS to a plain port), before the wait ends …
DEFAULT_UNREACHABLE_TIMEOUT = 180.0
#: … and the most it may be set to: a wrong address should not keep a task deferred for long.
MAX_UNREACHABLE_TIMEOUT = 300.0


#: The shortest pause between two polls of one task: a smaller ``poll_interval`` (0 included) is raised
#: to it, so a wait never polls in a tight loop on the triggerer's event loop (or on a worker).
#: Gateways refresh a task about every 15 s: anything under 5 s gains nothing.
MIN_POLL_INTERVAL = 0.01


def poll_interval_checked(value: float, owner: str) -> float:
    """``value`` as seconds between polls, at least :data:`MIN_POLL_INTERVAL`; a ValueError naming
    ``owner`` when it is negative or not a finite number."""
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            f"{owner}: poll_interval must be a finite number of seconds >= 0, got {value!r}; gateways "
            "refresh a task about every 15 s, so 10-30 s is usual."
        )
    return max(seconds, MIN_POLL_INTERVAL)


def unreachable_timeout_checked(value: float) -> float:
    """``value`` as seconds, or a ValueError when outside [0, MAX_UNREACHABLE_TIMEOUT]."""
    if not 0 <= float(value) <= MAX_UNREACHABLE_TIMEOUT:
        raise ValueError(
            f"unreachable_timeout must be between 0 and {MAX_UNREACHABLE_TIMEOUT:.0f} seconds, got "
            f"{value!r}: a gateway that never answers is a wrong address, not an outage."
        )
    return float(value)


#: Failures a wait rides out: the next poll may well succeed.
_FOR_NOW = (VideoQueryTransientError, VideoQueryResponseError, TimeoutError)
#: Failures that end a wait with an event naming their type.
_FINAL = (VideoQueryAuthError, VideoQueryRequestError)

Event = dict[str, Any]


def require_task_id(video_task_id: object, owner: str) -> str:
    """The id to wait for; a blank one (an empty param, an XCom that was never pushed) fails at once.

    Without this a blank id would be polled as "not known yet" for the whole grace period.
    """
    if isinstance(video_task_id, str) and video_task_id.strip() and video_task_id.strip() != "None":
        return video_task_id
    raise VideoQueryParameterError(
        f"{owner}: video_task_id is {video_task_id!r}, which names no video task. Pass the id the "
        "gateway's create call returned, e.g. \"{{ ti.xcom_pull(task_ids='create') }}\" or a DAG run "
        'conf such as {"video_task_id": "sora-2:task_01k…"}; check that the template renders it.'
    )


def refreshed(task: VideoTask, outcome: VideoTask | Exception, log: logging.Logger | Any) -> VideoTask:
    """The finished task to use on the worker, given one fresh query's ``outcome`` after a trigger fired.

    The fresh answer wins (its signed URLs are new, and events leave signed URLs out). If that query
    failed only for now, the event's own URL is used when it carries one; otherwise the error stands
    (a transient one is retried by Airflow, and the rerun reads the task again).
    """
    if isinstance(outcome, VideoTask):
        ensure_not_failed(outcome)
        if outcome.status is TaskStatus.SUCCEEDED:
            return outcome
        outcome = VideoQueryResponseError(
            f"the gateway now reports {outcome.summary()} without a video URL, after reporting success"
        )
    if isinstance(outcome, _FOR_NOW) and task.video_url and not is_elided(task.video_url):
        log.warning(
            "Re-reading video task %r after it succeeded failed for now (%s); using the URL from the "
            "trigger's event.",
            task.id,
            str(outcome) or "no answer in time",
        )
        return task
    if isinstance(outcome, _FOR_NOW):
        raise VideoQueryTransientError(
            f"Video task {task.id!r} succeeded, but re-reading it for its signed video URL failed for now "
            f"({str(outcome) or 'no answer in time'}). The trigger's event does not carry signed URLs; "
            "a retry of this Airflow task reads it again (set retries if it has none)."
        ) from outcome
    raise outcome


class Watch:
    """One wait for one video task: deadlines, the last state seen, and what to log.

    :param deadline: epoch seconds after which the wait ends with a ``timeout`` event.
    :param not_found_deadline: epoch seconds until which "unknown task" means "not known yet".
    :param started_at: epoch seconds the wait began (for messages).
    :param unreachable_timeout: seconds nothing may be reachable at the gateway's address, while it has
        not answered once in this wait, before the wait ends with :class:`VideoQueryUnreachableError`
        (0, the default: at once — a worker's first look). A gateway that answered before is riding
        out an outage: its wait goes on until the deadline.
    """

    def __init__(
        self,
        video_task_id: str,
        deadline: float,
        not_found_deadline: float,
        started_at: float,
        log: logging.Logger | Any,
        unreachable_timeout: float = 0.0,
    ) -> None:
        self.video_task_id = video_task_id
        self.deadline = deadline
        self.not_found_deadline = not_found_deadline
        self.started_at = started_at
        self.log = log
        self.last: VideoTask | None = None
        #: What the last status line said (status, raw status, progress) and when progress alone may
        #: be logged again (monotonic seconds).
        self._seen: tuple[TaskStatus, str | None, float | None, float] | None = None
        self._told_unknown = False
        self.unreachable_timeout = unreachable_timeout
        #: Whether the gateway has answered anything (even an error) in this wait.
        self.answered = False
        self._unreachable_since: float | None = None

    def after(self, outcome: VideoTask | Exception) -> Event | None:
        """The event that ends the wait after this poll, or None to poll again."""
        if isinstance(outcome, VideoQueryUnreachableError):
            return self._after_unreachable(outcome)
        if not isinstance(outcome, TimeoutError):
            self.answered, self._unreachable_since = True, None
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

    def finished(self, event: Event) -> VideoTask:
        """The task a final event stands for, or raise what it calls for; on success the task as last
        polled, whole (the event itself leaves signed URLs out)."""
        task = task_from_event(event, self.video_task_id)
        last = self.last
        return last if last is not None and last.status is TaskStatus.SUCCEEDED else task

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
        seen, now = self._seen, _monotonic()
        # A final status is said by the event's own line, which follows at once.
        if not task.status.is_terminal and (
            seen is None
            or (task.status, task.raw_status) != seen[:2]
            or (task.progress != seen[2] and now >= seen[3])
        ):
            self._seen = (task.status, task.raw_status, task.progress, now + PROGRESS_LOG_EVERY)
            self.log.info("%s", task.summary())
        if task.status is TaskStatus.SUCCEEDED:
            return self._event(EventStatus.SUCCESS, f"Video task {task.id!r} succeeded.", task)
        if task.status is TaskStatus.FAILED:
            return self._event(EventStatus.FAILED, failure_message(task), task)
        return None

    def _after_unreachable(self, err: VideoQueryUnreachableError) -> Event | None:
        """Ride out an outage of a gateway that answered before; end a wait at an address where
        nothing has answered once ``unreachable_timeout`` has passed."""
        now = time.time()
        since = self._unreachable_since = self._unreachable_since or now
        if not self.answered and now - since >= self.unreachable_timeout:
            gave_up = f" Gave up after {now - since:.0f}s without any answer." if now > since else ""
            return self._event(EventStatus.ERROR, f"{err}{gave_up}", error=VideoQueryUnreachableError)
        self.log.warning(
            "Polling video task %r: the gateway is unreachable for now (%s); %s",
            self.video_task_id,
            err,
            "it answered before, so polling again until the deadline."
            if self.answered
            else f"giving up {self.unreachable_timeout - (now - since):.0f}s from now unless it answers.",
        )
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
