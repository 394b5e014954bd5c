"""VideoTaskSensor: wait for a video task to finish; deferrable by default."""

from __future__ import annotations

import time
from collections.abc import Sequence
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
from airflow_provider_videoquery.waiting import DEFAULT_NOT_FOUND_GRACE, Watch


class VideoTaskSensor(BaseSensorOperator):
    """Wait until a video task succeeds; push the normalized task (a JSON dict) as the return value.

    A gateway failure raises :class:`~airflow_provider_videoquery.exceptions.VideoTaskFailedError`
    (not retried); running past ``timeout`` raises ``AirflowSensorTimeout`` (so ``soft_fail`` works).
    With ``deferrable=True`` (the default) it pokes once on the worker, then frees the worker slot and
    waits in the triggerer.

    :param video_task_id: the id the gateway's create call returned (templated).
    :param videoquery_conn_id: the ``videoquery`` connection.
    :param route: ``unified``, ``vidu-native``, ``openai`` or ``new-api``; default: the connection's route.
    :param poke_interval: seconds between polls; gateways refresh about every 15 s, so 10-30 s.
    :param timeout: seconds to wait in total before giving up.
    :param not_found_grace: seconds an unknown task id is tolerated (a gateway may not know a task
        it has just created).
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
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.video_task_id = video_task_id
        self.videoquery_conn_id = videoquery_conn_id
        self.route = route
        self.not_found_grace = not_found_grace
        self.deferrable = deferrable
        self._first_poke_at: float | None = None
        self._watch_state: Watch | None = None

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
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
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: validate its event and return the finished task."""
        task = task_from_event(event, self.video_task_id)
        self.log.info("%s", task.summary())
        return task.model_dump(mode="json")

    def poke(self, context: Context) -> PokeReturnValue:
        """Query once: done with the task as XCom, not done yet, or raise what the outcome calls for."""
        if self._first_poke_at is None:
            self._first_poke_at = time.time()
        hook = VideoQueryHook(self.videoquery_conn_id, route=self.route)
        outcome: VideoTask | Exception
        try:
            outcome = hook.get_task(self.video_task_id)
        except Exception as err:
            outcome = err
        finally:
            hook.close()
        event = self._watch(context).after(outcome)
        if event is None:
            return PokeReturnValue(is_done=False)
        task = task_from_event(event, self.video_task_id)
        return PokeReturnValue(is_done=True, xcom_value=task.model_dump(mode="json"))

    def _watch(self, context: Context) -> Watch:
        """The wait's state across pokes; its grace period counts from the first try (reschedule too)."""
        started = self._first_poke_at or time.time()
        if self.reschedule:
            first_try = context["ti"].get_first_reschedule_date(context)
            if first_try is not None:
                started = first_try.timestamp()
        if self._watch_state is None:
            self._watch_state = Watch(self.video_task_id, float("inf"), 0.0, started, self.log)
        self._watch_state.not_found_deadline = started + self.not_found_grace
        return self._watch_state
