"""``poll_interval=0`` cannot make a wait poll in a tight loop: it is raised to ``MIN_POLL_INTERVAL``
(0.01 s), for the single trigger, the batch trigger (a guard at construction) and the download
operator's own wait; a negative or non-finite value is refused with a message naming its owner."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Emulator, Scenario
from airflow_provider_videoquery.operators.videoquery import VideoDownloadOperator
from airflow_provider_videoquery.triggers.batch import VideoBatchTrigger
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from airflow_provider_videoquery.waiting import MIN_POLL_INTERVAL
from tests.airflow_helpers import first_event

pytestmark = pytest.mark.timeout(60)

TASK = "veo3:never-done"


def make(kind: str, poll_interval: float) -> Any:
    if kind == "trigger":
        return VideoTaskTrigger(video_task_id=TASK, deadline=9e9, poll_interval=poll_interval)
    if kind == "batch":
        return VideoBatchTrigger(tasks={TASK: [0.0, 9e9]}, poll_interval=poll_interval)
    return VideoDownloadOperator(
        task_id="download", video_task_id=TASK, destination="/tmp/x/", poll_interval=poll_interval
    )


@pytest.mark.parametrize("kind", ["trigger", "batch", "download"])
def test_zero_is_raised_to_the_floor_and_serialized_so(kind: str) -> None:
    made = make(kind, 0)
    assert made.poll_interval == MIN_POLL_INTERVAL
    if kind != "download":
        assert made.serialize()[1]["poll_interval"] == MIN_POLL_INTERVAL  # a restarted trigger too


@pytest.mark.parametrize("kind", ["trigger", "batch", "download"])
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_a_negative_or_non_finite_interval_is_refused(kind: str, value: float) -> None:
    with pytest.raises(ValueError, match="poll_interval must be a finite number of seconds >= 0"):
        make(kind, value)


def test_a_trigger_with_poll_interval_zero_sleeps_between_polls(emulator: Emulator) -> None:
    """One second of waiting for a task that never finishes: at most one poll per 0.01 s (before: a poll
    every round trip, hundreds a second)."""
    emulator.add_task(TASK, Scenario(family="veo", polls_to_complete=10**6))
    now = time.time()
    trigger = VideoTaskTrigger(video_task_id=TASK, deadline=now + 1.0, poll_interval=0, started_at=now)

    event = asyncio.run(first_event(trigger))

    assert event["status"] == "timeout"
    assert emulator.count(route="query") <= 1.0 / MIN_POLL_INTERVAL + 2
