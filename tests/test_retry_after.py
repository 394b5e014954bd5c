"""``Retry-After``: seconds or an HTTP date, honoured up to ``RetryPolicy.max_retry_after`` (5 minutes by
default, raisable), and never past the wait's deadline — the one plan the sync and async hook share."""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Emulator, Fault, Scenario
from airflow_provider_videoquery.exceptions import VideoQueryTransientError
from airflow_provider_videoquery.hooks._http import RetryPolicy
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.models import TaskStatus
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger

pytestmark = pytest.mark.timeout(60)

TASK = "veo3:retry-after-1"
POLICY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The sync hook's sleeps, recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr(time, "sleep", recorded.append)
    return recorded


def rate_limited(emulator: Emulator, retry_after: str, times: int | None = 1) -> None:
    emulator.add_task(TASK, Scenario(family="veo", polls_to_complete=1))
    fault = Fault("http_error", route="query", status=429, times=times, headers={"Retry-After": retry_after})
    emulator.add_fault(fault)


@pytest.mark.parametrize(("retry_after", "waited"), [("120", 120.0), ("100000", 300.0)])
def test_seconds_above_the_backoff_cap_are_honoured_up_to_the_retry_after_cap(
    emulator: Emulator, sleeps: list[float], retry_after: str, waited: float
) -> None:
    rate_limited(emulator, retry_after)
    assert VideoQueryHook(retry_policy=POLICY).get_task(TASK).status is TaskStatus.SUCCEEDED
    assert sleeps == [waited]


def test_the_caller_can_raise_the_cap(emulator: Emulator, sleeps: list[float]) -> None:
    rate_limited(emulator, "900")
    policy = POLICY.model_copy(update={"max_retry_after": 3600.0})
    assert VideoQueryHook(retry_policy=policy).get_task(TASK).status is TaskStatus.SUCCEEDED
    assert sleeps == [900.0]


def test_an_http_date_is_honoured(emulator: Emulator, sleeps: list[float]) -> None:
    rate_limited(emulator, formatdate(time.time() + 60, usegmt=True))
    assert VideoQueryHook(retry_policy=POLICY).get_task(TASK).status is TaskStatus.SUCCEEDED
    [waited] = sleeps
    assert 55 <= waited <= 60


def test_no_sleep_runs_past_the_deadline(emulator: Emulator, sleeps: list[float]) -> None:
    rate_limited(emulator, "120")
    with pytest.raises(VideoQueryTransientError, match=r"in 120s, would pass the deadline.*429"):
        VideoQueryHook(retry_policy=POLICY).get_task(TASK, deadline=time.time() + 30)
    assert sleeps == []
    assert emulator.count(route="query") == 1


async def test_the_trigger_ends_at_its_deadline_instead_of_sleeping_past_it(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *args: Any) -> Any:
        slept.append(delay)
        return await real_sleep(delay if delay <= 1 else 0.01, *args)  # a long one would fail below

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    rate_limited(emulator, "120", times=None)
    now = time.time()
    trigger = VideoTaskTrigger(video_task_id=TASK, deadline=now + 2, poll_interval=0.5, started_at=now)
    event = (await anext(trigger.run())).payload
    assert event["status"] == "timeout"
    assert max(slept) <= 2  # never the 120 s asked for: the deadline comes first
    assert emulator.count(route="query") >= 1
