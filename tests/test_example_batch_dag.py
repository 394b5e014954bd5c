"""dag.test() of the batch example: prompts as JSONL, one VideoBatchOperator creates, waits, stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Scenario
from tests.airflow_helpers import assert_key_nowhere, load_dag, run_dag


def _fast(dag: Any) -> None:
    batch = dag.get_task("batch")
    batch.poll_interval = 0.05
    batch.max_polls_per_second = 500
    batch.creates_per_second = 0


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_example_batch_dag_quick(
    airflow_db: str, emulator: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow.utils.state import DagRunState

    emulator.set_default(Scenario(polls_to_complete=2, video_size=2048))
    dag = load_dag("example_videoquery_batch")
    _fast(dag)

    result = run_dag(dag, capsys, count=30, folder=str(tmp_path))

    assert result.run.state == DagRunState.SUCCESS, result.output[-3000:]
    videos = tmp_path / "videos"
    lines = [json.loads(line) for line in (videos / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 30
    assert {line["status"] for line in lines} == {"succeeded"}
    assert emulator.count(route="create") == 30
    print(result.seconds, result.xcoms[("batch", "summary")])
    print(result.output)
    assert_key_nowhere(result.output, result.xcoms, (videos / "manifest.jsonl").read_text())
