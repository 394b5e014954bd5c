"""dag.test() of the batch example: prompts written as JSONL, one VideoBatchOperator creates, waits for
and stores them all, the report reads the summary. The quick variant runs by default; the full 1,000
prompts run with ``make test-slow`` (CI runs it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Scenario
from tests.airflow_helpers import assert_key_nowhere, load_dag, run_dag


def _run(emulator: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], count: int) -> None:
    from airflow.utils.state import DagRunState

    emulator.set_default(Scenario(polls_to_complete=2, video_size=2048))
    dag = load_dag("example_videoquery_batch")
    assert dag.params["count"] == 1000
    batch = dag.get_task("batch")
    # The example's waits suit a real gateway (10 s between polls of a task); the emulator is instant.
    batch.poll_interval = 0.05
    batch.max_polls_per_second = 1000
    batch.creates_per_second = 0

    result = run_dag(dag, capsys, count=count, folder=str(tmp_path))

    assert result.run.state == DagRunState.SUCCESS, result.output[-3000:]
    videos = tmp_path / "videos"
    text = (videos / "manifest.jsonl").read_text()
    entries = [json.loads(line) for line in text.splitlines()]
    assert [e["key"] for e in entries] == [f"clip-{n:05d}" for n in range(count)]
    assert {e["status"] for e in entries} == {"succeeded"}
    assert len(list(videos.glob("*.mp4"))) == count
    assert emulator.count(route="create") == count
    summary = result.xcoms[("report", "return_value")]
    assert (summary["total"], summary["succeeded"]) == (count, count)
    assert result.xcoms[("batch", "return_value")] == f"file://{videos}/manifest.jsonl"
    assert_key_nowhere(result.output, result.xcoms, text)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_example_batch_dag_quick(
    airflow_db: str, emulator: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(emulator, tmp_path, capsys, count=60)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_example_batch_dag_1000_prompts(
    airflow_db: str, emulator: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(emulator, tmp_path, capsys, count=1000)
