"""Two runs of a batch over one manifest at the same time (a scheduled run and a manual one): each video
is paid for once and no id is lost, on a local disk and on S3 (moto on 127.0.0.1). The runs are real
operator runs in two threads against the emulator; the manifest's lease keeps them apart."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Emulator, Scenario
from tests.batch_helpers import batch_context, drive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

REQUESTS = [{"key": f"clip-{n:02d}", "model": "sora-2", "prompt": f"take {n}"} for n in range(24)]


def _operator(destination: str, **kwargs: Any) -> Any:
    from airflow_provider_videoquery.operators.batch import VideoBatchOperator

    options: dict[str, Any] = {
        "max_active": 10,
        "creates_per_second": 0,
        "poll_interval": 0.05,
        "max_polls_per_second": 1000,
        "destination_conn_id": "aws_default" if destination.startswith("s3://") else None,
    }
    options.update(kwargs)
    return VideoBatchOperator(task_id="batch", requests=REQUESTS, destination=destination, **options)


def _run_both(destination: str, started: Callable[[], bool], together: bool, **kwargs: Any) -> dict[str, Any]:
    """Run ``scheduled__1`` and ``manual__1`` at once; ``together``: released at one instant, else the
    second once the first holds the lease (``started``). Each run's return value or exception."""
    outcomes: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def run(run_id: str, first: bool) -> None:
        if together:
            barrier.wait()
        elif not first:
            for _ in range(2000):
                if started():
                    break
                time.sleep(0.01)
        try:
            outcomes[run_id] = drive(_operator(destination, **kwargs), batch_context(run_id))
        except Exception as err:
            outcomes[run_id] = err

    threads = [
        threading.Thread(target=run, args=("scheduled__1", True)),
        threading.Thread(target=run, args=("manual__1", False)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=200)
    return outcomes


def _check_paid_once(emulator: Emulator, lines: dict[str, dict[str, Any]]) -> None:
    assert emulator.count(route="create") == len(REQUESTS)
    assert sorted(lines) == [r["key"] for r in REQUESTS]
    assert {line["status"] for line in lines.values()} == {"succeeded"}
    ids = [line["video_task_id"] for line in lines.values()]
    assert len(set(ids)) == len(REQUESTS)  # every id paid for is recorded, none twice


def _local_lines(folder: Path) -> dict[str, dict[str, Any]]:
    return {e["key"]: e for e in map(json.loads, (folder / "manifest.jsonl").read_text().splitlines())}


@pytest.mark.parametrize("wait", [0.0, 120.0])
def test_two_runs_at_once_on_a_local_disk_pay_once(emulator: Emulator, tmp_path: Path, wait: float) -> None:
    emulator.set_default(Scenario(polls_to_complete=2, video_size=512))
    lease_dir = tmp_path / "manifest.jsonl.lease"

    outcomes = _run_both(str(tmp_path), lease_dir.exists, together=True, wait_for_manifest=wait)

    _check_paid_once(emulator, _local_lines(tmp_path))
    results = list(outcomes.values())
    uri = f"file://{tmp_path}/manifest.jsonl"
    if wait:  # the second waited for the first, then found everything done
        assert results == [uri, uri]
    else:  # the second was refused at once, naming the manifest and the run holding it
        [refused] = [r for r in results if isinstance(r, Exception)]
        assert [r for r in results if not isinstance(r, Exception)] == [uri]
        message = str(refused)
        assert f"the manifest {uri} is in use by DAG 'videoquery_batch_test', run '" in message
        assert "this run created nothing" in message


@pytest.mark.parametrize("wait", [0.0, 120.0])
def test_two_runs_at_once_on_s3_pay_once(
    emulator: Emulator, moto_server: Any, s3_bucket: str, wait: float
) -> None:
    emulator.set_default(Scenario(polls_to_complete=2, video_size=512))

    def started() -> bool:
        return bool(moto_server.keys(s3_bucket, "videos/manifest.jsonl.lease/"))

    # moto checks If-None-Match without a lock (S3 itself is atomic), so the second run starts once the
    # first holds the lease: still both at once, as a manual run started during a scheduled one.
    outcomes = _run_both(f"s3://{s3_bucket}/videos/", started, together=False, wait_for_manifest=wait)

    text = moto_server.read(s3_bucket, "videos/manifest.jsonl").decode()
    _check_paid_once(emulator, {e["key"]: e for e in map(json.loads, text.splitlines())})
    uri = f"s3://{s3_bucket}/videos/manifest.jsonl"
    if wait:
        assert outcomes == {"scheduled__1": uri, "manual__1": uri}
    else:
        assert outcomes["scheduled__1"] == uri
        assert "run 'scheduled__1'" in str(outcomes["manual__1"])
    assert sum(k.endswith(".mp4") for k in moto_server.keys(s3_bucket, "videos/")) == len(REQUESTS)
