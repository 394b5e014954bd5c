"""What a wait logs as it polls: every new status at once (a final one in its event's line), progress
within one status at most once a minute (a line per poll of thousands of triggers was a tenth of the
triggerer's CPU)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from airflow_provider_videoquery import waiting
from airflow_provider_videoquery.models import TaskStatus, VideoTask
from airflow_provider_videoquery.waiting import PROGRESS_LOG_EVERY, Watch


class Lines:
    """A logger keeping its info lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: Any) -> None:
        self.lines.append(message % args)

    def warning(self, message: str, *args: Any) -> None:
        pass


def task(status: TaskStatus, raw: str, progress: float | None, url: str | None = None) -> VideoTask:
    return VideoTask(id="sora-2:t", status=status, raw_status=raw, progress=progress, video_url=url)


def test_each_status_at_once_progress_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(waiting, "_monotonic", lambda: clock[0])
    log = Lines()
    now = time.time()
    watch = Watch("sora-2:t", now + 3600, now + 60, now, log)
    polls: list[tuple[float, VideoTask]] = [
        (0, task(TaskStatus.QUEUED, "queued", None)),
        (15, task(TaskStatus.RUNNING, "in_progress", 10.0)),  # a new status: at once
        (30, task(TaskStatus.RUNNING, "in_progress", 20.0)),  # progress only, 15 s later: not yet
        (45, task(TaskStatus.RUNNING, "in_progress", 30.0)),
        (60, task(TaskStatus.RUNNING, "in_progress", 30.0)),  # nothing new
        (76, task(TaskStatus.RUNNING, "in_progress", 45.0)),  # a minute after the last line
        (90, task(TaskStatus.RUNNING, "video_upsampling", 45.0)),  # a new raw status: at once
    ]
    for at, polled in polls:
        clock[0] = 1000.0 + at
        assert watch.after(polled) is None
    assert log.lines == [
        "video task 'sora-2:t': queued (queued)",
        "video task 'sora-2:t': running (in_progress) 10%",
        "video task 'sora-2:t': running (in_progress) 45%",
        "video task 'sora-2:t': running (video_upsampling) 45%",
    ]
    assert PROGRESS_LOG_EVERY == 60.0
    done = task(TaskStatus.SUCCEEDED, "completed", 100.0, "https://cdn.example/v.mp4")
    clock[0] += 1
    assert watch.after(done) is not None
    assert log.lines[4:] == ["Video task 'sora-2:t' succeeded."]  # the event's line says it, once
