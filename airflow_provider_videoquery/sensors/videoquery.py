"""VideoTaskSensor: wait for a video task to finish; deferrable by default."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSkipException,
    BaseSensorOperator,
    Context,
    PokeReturnValue,
)

from airflow_provider_videoquery.events import task_from_event
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.models import VideoTask
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from airflow_provider_videoquery.waiting import (
    DEFAULT_NOT_FOUND_GRACE,
    DEFAULT_UNREACHABLE_TIMEOUT,
    DEFER_MARGIN,
    Watch,
    refreshed,
    require_task_id,
    unreachable_timeout_checked,
)


class VideoTaskSensor(BaseSensorOperator):
    """Wait until a video task succeeds; push the normalized task (JSON, no ``raw``) as the return value.

    A gateway failure raises :class:`~airflow_provider_videoquery.exceptions.VideoTaskFailedError`
    (not retried); running past ``timeout`` raises ``AirflowSensorTimeout``; with ``soft_fail=True``
    either ends SKIPPED, the skip naming the reason. With ``deferrable=True`` (the default) it pokes once
    on the worker, then frees the worker slot and waits in the triggerer; when the trigger reports
    success it reads the task once more for fresh URLs. A blank ``video_task_id`` fails at once.

    :param video_task_id: the id the gateway's create call returned (templated).
    :param videoquery_conn_id: the ``videoquery`` connection.
    :param route: ``unified``, ``vidu-native``, ``openai`` or ``new-api``; default: the connection's route.
    :param poke_interval: seconds between polls; gateways refresh about every 15 s, so 10-30 s.
    :param timeout: seconds to wait in total before giving up.
    :param not_found_grace: seconds an unknown task id is tolerated (a gateway may not know a task
        it has just created).
    :param unreachable_timeout: seconds the triggerer keeps polling an address where nothing answers
        (refused, unknown host, TLS to a plain-HTTP port) before failing (default 180, at most 300). The
        worker's first poke fails at once after its retries; a gateway that answered before is ridden
        out until ``timeout``.
    :param deferrable: wait in the triggerer instead of a worker slot.
    """

    template_fields: Sequence[str] = ("video_task_id",)
    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
        video_task_id: str,
        videoquery_conn_id: str = VideoQueryHook.default_conn_name,
        route: str | None = None,
        poke_interval: timedelta | float = 15.0,
        timeout: timedelta | float = 3600.0,
        not_found_grace: float = DEFAULT_NOT_FOUND_GRACE,
        unreachable_timeout: float = DEFAULT_UNREACHABLE_TIMEOUT,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.video_task_id = video_task_id
        self.videoquery_conn_id = videoquery_conn_id
        self.route = route
        self.not_found_grace = not_found_grace
        self.unreachable_timeout = unreachable_timeout_checked(unreachable_timeout)
        self.deferrable = deferrable
        self._first_poke_at: float | None = None
        self._watch_state: Watch | None = None

    def execute(self, context: Context) -> Any:
        require_task_id(self.video_task_id, f"VideoTaskSensor {self.task_id!r}")
        if not self.deferrable:
            with _skip_names_its_reason():
                return super().execute(context)
        try:
            result = self.poke(context)
        except AirflowFailException as err:
            if self.soft_fail or self.never_fail:
                raise AirflowSkipException(f"Skipping: {err}") from err
            raise
        if result:
            return result.xcom_value
        now = time.time()
        started = self._first_poke_at or now
        self.defer(
            trigger=VideoTaskTrigger(
                video_task_id=self.video_task_id,
                deadline=now + self.timeout,
                videoquery_conn_id=self.videoquery_conn_id,
                route=self.route,
                poll_interval=self.poke_interval,
                not_found_deadline=started + self.not_found_grace,
                started_at=now,
                unreachable_timeout=self.unreachable_timeout,
            ),
            method_name="execute_complete",
            # The trigger ends the wait itself at the deadline (its last poll may run up to
            # LAST_POLL_BUDGET past it); the margin lets its timeout event, which says what the task
            # was doing, arrive before the scheduler's bare deferral timeout.
            timeout=timedelta(seconds=self.timeout + DEFER_MARGIN),
        )

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """As the base sensor (``soft_fail`` skips on failure), but the skip keeps the trigger's reason."""
        with _skip_names_its_reason():
            return super().resume_execution(next_method, next_kwargs, context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: validate its event, read the task once more, return it."""
        task = refreshed(task_from_event(event, self.video_task_id), self._query(), self.log)
        self.log.info("%s", task.summary())
        return task.for_xcom()

    def poke(self, context: Context) -> PokeReturnValue:
        """Query once: done with the task as XCom, not done yet, or raise what the outcome calls for."""
        if self._first_poke_at is None:
            self._first_poke_at = time.time()
        watch = self._watch(context)
        event = watch.after(self._query())
        if event is None:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=watch.finished(event).for_xcom())

    def _query(self) -> VideoTask | Exception:
        hook = VideoQueryHook(self.videoquery_conn_id, route=self.route)
        try:
            return hook.get_task(self.video_task_id)
        except Exception as err:
            return err
        finally:
            hook.close()

    def _watch(self, context: Context) -> Watch:
        """The wait's state across pokes; its grace period counts from the first try (reschedule too)."""
        started, rescheduled = self._first_poke_at or time.time(), False
        if self.reschedule:
            first_try = context["ti"].get_first_reschedule_date(context)
            if first_try is not None:
                started, rescheduled = first_try.timestamp(), True
        if self._watch_state is None:
            self._watch_state = Watch(self.video_task_id, float("inf"), 0.0, started, self.log)
            # an earlier try's poke reached the gateway (else it would have failed): ride outages out
            self._watch_state.answered = rescheduled
        self._watch_state.not_found_deadline = started + self.not_found_grace
        return self._watch_state


@contextmanager
def _skip_names_its_reason() -> Iterator[None]:
    """Airflow turns a failure into a bare "Skipping due to soft_fail is set to True."; add the reason."""
    try:
        yield
    except AirflowSkipException as skip:
        reason = str(skip.__cause__ or "")
        if not reason or reason in str(skip):
            raise
        raise AirflowSkipException(f"{skip} Reason: {reason}") from skip.__cause__
