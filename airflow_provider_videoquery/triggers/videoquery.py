"""VideoTaskTrigger: wait in the triggerer until a video task finishes, then fire one event.

The trigger only polls (a restarted triggerer re-runs ``run()`` from the kwargs, so it must never
submit anything), resolves its connection with async lookups only, and shares the hook module's one
HTTP client per event loop with every other trigger in the process.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_videoquery.hooks._http import RetryPolicy
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.models import VideoTask
from airflow_provider_videoquery.waiting import (
    DEFAULT_NOT_FOUND_GRACE,
    DEFAULT_UNREACHABLE_TIMEOUT,
    LAST_POLL_BUDGET,
    Event,
    Watch,
    poll_interval_checked,
    require_task_id,
    unreachable_timeout_checked,
)

__all__ = ["VideoTaskTrigger"]

#: Jitter added to each sleep, as a fraction of the poll interval, so thousands of triggers spread out.
_JITTER = 0.1


class VideoTaskTrigger(BaseTrigger):
    """Poll a video task until it succeeds, fails, or the deadline passes; yield exactly one event.

    Every argument is a plain value: the trigger is stored in the metadata DB and rebuilt from
    :meth:`serialize` after a triggerer restart, so both deadlines are absolute epoch seconds (a
    restart does not extend them) and the API key stays in the connection.

    :param video_task_id: the id the gateway's create call returned; a blank one raises
        :class:`~airflow_provider_videoquery.exceptions.VideoQueryParameterError`.
    :param deadline: epoch seconds after which the wait ends with a ``timeout`` event.
    :param videoquery_conn_id: the ``videoquery`` connection to poll with.
    :param route: ``unified``, ``vidu-native``, ``openai`` or ``new-api``; default: the connection's route.
    :param poll_interval: seconds between polls (gateways refresh about every 15 s); at least
        ``waiting.MIN_POLL_INTERVAL`` (0.01 s: a smaller value, 0 included, is raised to it).
    :param not_found_deadline: epoch seconds until which "unknown task" means "not known yet";
        default: ``started_at`` + 60 s.
    :param started_at: epoch seconds the wait began (for messages); default: now.
    :param max_attempts: tries per poll for transient failures; default: the hook's policy.
    :param retry_delay: base backoff in seconds between those tries; default: the hook's policy.
    :param unreachable_timeout: seconds nothing may be reachable at the gateway's address (refused,
        unknown host, TLS to a plain-HTTP port) before the wait ends, as long as the gateway has not
        answered once in this wait (3 minutes by default, at most 5); a gateway that answered before
        is ridden out until the deadline.
    """

    def __init__(
        self,
        video_task_id: str,
        deadline: float,
        videoquery_conn_id: str = VideoQueryHook.default_conn_name,
        route: str | None = None,
        poll_interval: float = 15.0,
        not_found_deadline: float | None = None,
        started_at: float | None = None,
        max_attempts: int | None = None,
        retry_delay: float | None = None,
        unreachable_timeout: float = DEFAULT_UNREACHABLE_TIMEOUT,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.video_task_id = require_task_id(video_task_id, "VideoTaskTrigger")
        self.deadline = float(deadline)
        self.videoquery_conn_id = videoquery_conn_id
        self.route = route
        self.poll_interval = poll_interval_checked(poll_interval, "VideoTaskTrigger")
        self.started_at = float(started_at) if started_at is not None else time.time()
        self.not_found_deadline = (
            float(not_found_deadline)
            if not_found_deadline is not None
            else self.started_at + DEFAULT_NOT_FOUND_GRACE
        )
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.unreachable_timeout = unreachable_timeout_checked(unreachable_timeout)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_provider_videoquery.triggers.videoquery.VideoTaskTrigger",
            {
                "video_task_id": self.video_task_id,
                "deadline": self.deadline,
                "videoquery_conn_id": self.videoquery_conn_id,
                "route": self.route,
                "poll_interval": self.poll_interval,
                "not_found_deadline": self.not_found_deadline,
                "started_at": self.started_at,
                "max_attempts": self.max_attempts,
                "retry_delay": self.retry_delay,
                "unreachable_timeout": self.unreachable_timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # The hook is closed before the event leaves: nothing stays open while the triggerer
        # decides what to do with the generator.
        event = await self._wait()
        yield TriggerEvent(event)  # type: ignore[no-untyped-call]

    async def _wait(self) -> Event:
        """Poll until the watch says the wait is over; CancelledError propagates after cleanup."""
        watch = Watch(
            self.video_task_id,
            self.deadline,
            self.not_found_deadline,
            self.started_at,
            self.log,
            unreachable_timeout=self.unreachable_timeout,
        )
        try:
            async with VideoQueryHook(
                self.videoquery_conn_id, route=self.route, retry_policy=self._retry_policy()
            ) as hook:
                return await self._poll(hook, watch)
        except Exception as err:  # a broken set-up (route, connection): still exactly one event
            return watch.stopped(err)

    async def _poll(self, hook: VideoQueryHook, watch: Watch) -> Event:
        while True:
            budget = max(self.deadline - time.time(), LAST_POLL_BUDGET)
            outcome: VideoTask | Exception
            try:
                # asyncio.timeout runs the poll in this task: no extra task per poll, unlike wait_for.
                async with asyncio.timeout(budget):
                    outcome = await hook.aget_task(self.video_task_id, deadline=self.deadline)
            except Exception as err:
                outcome = err
            event = watch.after(outcome) or watch.expired()
            if event is not None:
                return event
            jitter = random.uniform(0, _JITTER * self.poll_interval)
            await asyncio.sleep(min(self.deadline - time.time(), self.poll_interval + jitter))

    def _retry_policy(self) -> RetryPolicy | None:
        fields: dict[str, Any] = {}
        if self.max_attempts is not None:
            fields["max_attempts"] = self.max_attempts
        if self.retry_delay is not None:
            fields["base_delay"] = self.retry_delay
        return RetryPolicy(**fields) if fields else None
