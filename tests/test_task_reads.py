"""Many tasks re-read at once on a worker (``VideoQueryHook.read_tasks``, what a batch does before it
stores a wave): every task read once, failures handed back to be read again the usual way, nothing left
running or open when the caller stops early; and the batch's store falls back to its own read."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.emulator import Emulator, Fault, Scenario
from airflow_provider_videoquery.exceptions import VideoQueryTransientError, VideoTaskNotFoundError
from airflow_provider_videoquery.hooks._http import RetryPolicy
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.manifest import Entry
from airflow_provider_videoquery.models import TaskStatus, VideoTask
from airflow_provider_videoquery.operators.batch import VideoBatchOperator
from airflow_provider_videoquery.storage import DownloadSettings, new_client

pytestmark = pytest.mark.timeout(60)

ONE_TRY = RetryPolicy(max_attempts=1)


def _reader_threads() -> int:
    return sum(t.name == "videoquery-reads" for t in threading.enumerate())


def test_every_task_is_read_once_and_failures_come_back_as_errors(emulator: Emulator) -> None:
    ids = [f"veo3:read-{n}" for n in range(30)]
    for task_id in ids:
        emulator.add_task(task_id, Scenario(family="veo", polls_to_complete=1))
    emulator.add_fault(Fault("http_error", route="query", task_id=ids[3], status=503))

    hook = VideoQueryHook(retry_policy=ONE_TRY)
    with hook.read_tasks([*ids, ids[0], "veo3:no-such-task"], concurrency=4) as reads:
        outcomes = dict(reads)

    assert sorted(outcomes) == sorted([*ids, "veo3:no-such-task"])  # each once, the repeat too
    assert isinstance(outcomes[ids[3]], VideoQueryTransientError)
    assert isinstance(outcomes["veo3:no-such-task"], VideoTaskNotFoundError)
    done = [o for i, o in outcomes.items() if i not in (ids[3], "veo3:no-such-task")]
    assert all(isinstance(o, VideoTask) and o.status is TaskStatus.SUCCEEDED for o in done)
    assert emulator.count(route="query") == 31  # one request per task: no lookup, no second read
    assert _reader_threads() == 0


def test_leaving_early_stops_the_reads(emulator: Emulator) -> None:
    ids = [f"veo3:early-{n}" for n in range(40)]
    for task_id in ids:
        emulator.add_task(task_id, Scenario(family="veo", polls_to_complete=1))
    emulator.add_fault(Fault("slow_headers", route="query", delay=0.3))

    with VideoQueryHook().read_tasks(ids, concurrency=2) as reads:
        first = next(iter(reads))
    assert first[0] in ids
    assert _reader_threads() == 0  # joined on leaving: no read runs on
    assert emulator.count(route="query") < len(ids)


def test_the_batch_reads_a_task_again_when_its_read_ahead_failed(emulator: Emulator, tmp_path: Path) -> None:
    emulator.add_task("veo3:fallback", Scenario(family="veo", polls_to_complete=1))
    operator = VideoBatchOperator(
        task_id="batch", requests=[{"key": "clip", "model": "veo3", "prompt": "p"}], destination=str(tmp_path)
    )
    entry = Entry(key="clip", request={"model": "veo3", "prompt": "p"}, video_task_id="veo3:fallback")
    settings = DownloadSettings.for_gateway(operator.hook.config)
    failed = httpx.ConnectError("the read ahead failed")
    with new_client(settings) as client:
        stored = operator._store_one(entry, settings, client, failed)
    assert ObjectStoragePath(stored.uri).exists()
    assert emulator.count(route="query", task_id="veo3:fallback") == 1  # read here, once
