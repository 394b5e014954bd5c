"""VideoBatchTrigger: one trigger waits for every live video task of a batch, within one poll budget.

Each task is followed by a :class:`~airflow_provider_videoquery.waiting.Watch` (the same decisions as a
single wait); the trigger adds the budget — at most ``max_in_flight`` queries at once and never more than
``max_polls_per_second`` — and fires once the batch needs the worker again: enough tasks finished to
store them and create the next ones, or a deadline passed. It only polls: creates stay on the worker.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_videoquery.events import EventStatus
from airflow_provider_videoquery.exceptions import VideoQueryAuthError, VideoQueryTransientError
from airflow_provider_videoquery.hooks._http import RetryPolicy
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.models import VideoTask
from airflow_provider_videoquery.waiting import DEFAULT_NOT_FOUND_GRACE, Event, Watch, poll_interval_checked

__all__ = ["VideoBatchTrigger"]

#: Each poll is one request: failures are ridden out by polling the task again later, inside the budget.
_ONE_TRY = RetryPolicy(max_attempts=1)
#: A poll gets this long to answer.
_POLL_BUDGET = 60.0
#: The longest pause of all polling after consecutive transient failures (429, 5xx, timeouts); the
#: pauses double from 1 s (or the poll interval, if shorter).
_MAX_PAUSE = 60.0


class VideoBatchTrigger(BaseTrigger):
    """Poll many video tasks with one budget; fire one event when the batch needs the worker again.

    The kwargs are plain and small: ids with their times, and the budget. The requests live in the
    batch's manifest. The event::

        {"status": "wave", "finished": {video_task_id: {"status", "message", "error_type"}},
         "message": str}

    A succeeded task's entry carries no URL (the triggerer logs every event, and signed URLs must not
    reach a log): the worker reads the task again before it stores the video.

    (``status`` "error" with a ``message`` when the trigger itself could not run).

    :param tasks: ``{video_task_id: [started_at, deadline]}`` in epoch seconds; a task unknown to the
        gateway is given 60 s from ``started_at`` before that is final.
    :param fire_after: fire once this many tasks finished.
    :param fire_hold: fire once a finished task has waited this many seconds for the worker.
    :param wake_at: epoch seconds at which to fire even if nothing finished (e.g. to create more).
    :param progress: counts of the whole batch so far (``total``, ``succeeded``, ``failed``, ``pending``,
        …) for the progress log.
    :param poll_interval: seconds between two polls of one task (at least).
    :param max_in_flight: queries at once.
    :param max_polls_per_second: the total poll rate the gateway sees from this batch.
    :param progress_interval: seconds between progress lines.
    """

    def __init__(
        self,
        tasks: dict[str, list[float]],
        videoquery_conn_id: str = VideoQueryHook.default_conn_name,
        route: str | None = None,
        fire_after: int = 1,
        fire_hold: float = 60.0,
        wake_at: float | None = None,
        progress: dict[str, int] | None = None,
        poll_interval: float = 15.0,
        max_in_flight: int = 8,
        max_polls_per_second: float = 5.0,
        progress_interval: float = 60.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.tasks = {str(k): [float(v[0]), float(v[1])] for k, v in tasks.items()}
        self.videoquery_conn_id = videoquery_conn_id
        self.route = route
        self.fire_after = max(1, int(fire_after))
        self.fire_hold = float(fire_hold)
        self.wake_at = float(wake_at) if wake_at is not None else None
        self.progress = dict(progress or {})
        self.poll_interval = poll_interval_checked(poll_interval, "VideoBatchTrigger")
        self.max_in_flight = max(1, int(max_in_flight))
        self.max_polls_per_second = float(max_polls_per_second)
        self.progress_interval = float(progress_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_provider_videoquery.triggers.batch.VideoBatchTrigger",
            {
                "tasks": self.tasks,
                "videoquery_conn_id": self.videoquery_conn_id,
                "route": self.route,
                "fire_after": self.fire_after,
                "fire_hold": self.fire_hold,
                "wake_at": self.wake_at,
                "progress": self.progress,
                "poll_interval": self.poll_interval,
                "max_in_flight": self.max_in_flight,
                "max_polls_per_second": self.max_polls_per_second,
                "progress_interval": self.progress_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            event = await _Wave(self).run()
        except Exception as err:  # a broken set-up (route, connection): still exactly one event
            message = f"Waiting for the batch stopped on an unexpected error: {type(err).__name__}: {err}"
            event = {"status": EventStatus.ERROR.value, "finished": {}, "message": message}
        yield TriggerEvent(event)  # type: ignore[no-untyped-call]


class _Quiet:
    """A Watch's log for a batch: per-task state changes are not logged (the progress line is)."""

    def __init__(self, log: logging.Logger | Any) -> None:
        self._log = log

    def info(self, *args: Any) -> None:
        pass

    def warning(self, *args: Any) -> None:
        self._log.warning(*args)


class _Wave:
    """One run of the trigger: the schedule, the budget and the tally."""

    def __init__(self, trigger: VideoBatchTrigger) -> None:
        self.t = trigger
        self.log = trigger.log
        quiet = _Quiet(trigger.log)
        self.watches = {
            task_id: Watch(task_id, deadline, started + DEFAULT_NOT_FOUND_GRACE, started, quiet)
            for task_id, (started, deadline) in trigger.tasks.items()
        }
        self.finished: dict[str, dict[str, Any]] = {}
        self.first_finished_at: float | None = None
        self.started = time.monotonic()
        self.done = asyncio.Event()
        self.running = 0
        self.next_slot = 0.0
        self.paused_until = 0.0
        self.failures_in_a_row = 0
        self.refused = False
        now = time.time()
        # The first polls spread over what the budget allows for one round.
        spread = min(trigger.poll_interval, len(self.watches) / max(trigger.max_polls_per_second, 0.001))
        self.schedule = [(now + random.uniform(0, spread), task_id) for task_id in self.watches]
        heapq.heapify(self.schedule)

    async def run(self) -> Event:
        if not self.watches and self.t.wake_at is None:
            return self._event("Nothing to wait for.")
        async with VideoQueryHook(
            self.t.videoquery_conn_id, route=self.t.route, retry_policy=_ONE_TRY
        ) as hook:
            await hook.aconfig()
            workers = [asyncio.create_task(self._worker(hook)) for _ in range(self.t.max_in_flight)]
            reporter = asyncio.create_task(self._report())
            try:
                await self._until_fired()
            finally:
                for job in (*workers, reporter):
                    job.cancel()
                await asyncio.gather(*workers, reporter, return_exceptions=True)
        self._log_progress()
        return self._event(self._why())

    async def _until_fired(self) -> None:
        while not self._should_fire():
            timeout = self._seconds_to_next_check()
            try:
                async with asyncio.timeout(timeout):
                    await self.done.wait()
            except TimeoutError:
                pass
            self.done.clear()

    def _should_fire(self) -> bool:
        now = time.time()
        if len(self.finished) == len(self.watches) and (self.watches or self._woken(now)):
            return True
        if self.refused:  # every poll would fail the same way
            return True
        if len(self.finished) >= self.t.fire_after:
            return True
        if self.first_finished_at is not None and now - self.first_finished_at >= self.t.fire_hold:
            return True
        return self._woken(now)

    def _woken(self, now: float) -> bool:
        return self.t.wake_at is not None and now >= self.t.wake_at

    def _seconds_to_next_check(self) -> float:
        now, limits = time.time(), [self.t.poll_interval]
        if self.first_finished_at is not None:
            limits.append(self.first_finished_at + self.t.fire_hold - now)
        if self.t.wake_at is not None:
            limits.append(self.t.wake_at - now)
        return max(0.01, min(limits))

    def _why(self) -> str:
        if len(self.finished) == len(self.watches) and self.watches:
            return f"All {len(self.watches)} live task(s) finished."
        if self.finished:
            return f"{len(self.finished)} of {len(self.watches)} live task(s) finished."
        return "Woken to create more tasks."

    def _event(self, message: str) -> Event:
        return {"status": "wave", "finished": self.finished, "message": message}

    # -- polling -------------------------------------------------------------------------------------

    async def _worker(self, hook: VideoQueryHook) -> None:
        while True:
            if not self.schedule:
                await asyncio.sleep(min(self.t.poll_interval, 1.0))
                continue
            due, task_id = heapq.heappop(self.schedule)
            await asyncio.sleep(max(0.0, due - time.time()))
            await self._take_slot()
            self.running += 1
            try:
                outcome = await self._poll(hook, task_id)
            finally:
                self.running -= 1
            self._after(task_id, outcome)

    async def _take_slot(self) -> None:
        """Wait for the next poll the rate cap (and any pause after failures) allows."""
        now = time.monotonic()
        spacing = 1.0 / self.t.max_polls_per_second if self.t.max_polls_per_second > 0 else 0.0
        slot = max(now, self.next_slot, self.paused_until)
        self.next_slot = slot + spacing
        await asyncio.sleep(slot - now)

    async def _poll(self, hook: VideoQueryHook, task_id: str) -> VideoTask | Exception:
        try:
            async with asyncio.timeout(_POLL_BUDGET):
                task = await hook.aget_task(task_id)
        except Exception as err:
            if isinstance(err, VideoQueryTransientError | TimeoutError):
                self.failures_in_a_row += 1
                base = min(1.0, self.t.poll_interval)
                pause = min(_MAX_PAUSE, base * 2.0 ** min(self.failures_in_a_row - 1, 6))
                self.paused_until = max(self.paused_until, time.monotonic() + pause)
            return err
        self.failures_in_a_row = 0
        return task

    def _after(self, task_id: str, outcome: VideoTask | Exception) -> None:
        watch = self.watches[task_id]
        event = watch.after(outcome) or watch.expired()
        if event is None:
            if watch.last is not None and watch.last.raw:
                # Thousands wait at once: keep what a timeout message needs, not the whole answer.
                watch.last = watch.last.model_copy(update={"raw": {}})
            due = time.time() + self.t.poll_interval * random.uniform(1.0, 1.1)
            heapq.heappush(self.schedule, (min(due, max(watch.deadline, time.time())), task_id))
            return
        # Small, and no URL: the worker re-reads a succeeded task for its signed URL.
        succeeded = event["status"] == EventStatus.SUCCESS.value
        self.finished[task_id] = {
            "status": event["status"],
            "message": None if succeeded else event["message"],
            "error_type": event.get("error_type"),
        }
        self.refused = self.refused or event.get("error_type") == VideoQueryAuthError.__name__
        self.watches[task_id].last = None  # nothing more is read from it
        if self.first_finished_at is None:
            self.first_finished_at = time.time()
        self.done.set()

    # -- progress ------------------------------------------------------------------------------------

    async def _report(self) -> None:
        self._log_progress()
        while True:
            await asyncio.sleep(self.t.progress_interval)
            self._log_progress()

    def _log_progress(self) -> None:
        counts = self.t.progress
        finished = list(self.finished.values())
        succeeded = sum(1 for f in finished if f["status"] == EventStatus.SUCCESS.value)
        done_now = len(finished)
        running = len(self.watches) - done_now
        pending = counts.get("pending", 0)
        elapsed = time.monotonic() - self.started
        eta = "unknown yet"
        if done_now:
            left = running + pending
            eta = f"~{_duration(left * elapsed / done_now)}" if left else "none left"
        self.log.info(
            "Batch: %d request(s): created %d, running %d, succeeded %d (stored %d), failed %d, "
            "not created yet %d; %d poll(s) in flight; time left %s.",
            counts.get("total", len(self.watches)),
            counts.get("created", len(self.watches)),
            running,
            counts.get("succeeded", 0) + succeeded,
            counts.get("succeeded", 0),
            counts.get("failed", 0) + done_now - succeeded,
            pending,
            self.running,
            eta,
        )


def _duration(seconds: float) -> str:
    seconds = math.ceil(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
