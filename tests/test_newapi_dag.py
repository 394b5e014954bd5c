"""dag.test() of the download example on new-api's own route, with the video reported inline: create,
defer, the trigger's event without the base64, the worker's own query, the exact bytes stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Scenario
from tests.airflow_helpers import load_dag, read_xcom
from tests.conftest import connection_json


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_example_dag_on_the_new_api_route_with_an_inline_video(
    airflow_db: str, emulator: Any, trigger_runs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.utils.state import DagRunState

    monkeypatch.setenv(
        "AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, timeout=5, route="new-api")
    )
    emulator.set_default(Scenario(polls_to_complete=2, video_size=1024 * 1024 + 5, inline_video=True))
    dag = load_dag("example_videoquery_download")

    dag_run = dag.test(run_conf={"destination": f"file://{tmp_path}/demo/"})

    assert dag_run.state == DagRunState.SUCCESS
    video_task_id = read_xcom(dag_run, "create")
    assert video_task_id.startswith("task_")
    assert trigger_runs == [video_task_id]
    assert emulator.count(route="newapi_create") == 1
    assert emulator.count(route="video") == 0
    stored = tmp_path / "demo" / f"{video_task_id}.mp4"
    assert stored.read_bytes() == emulator.expected_video(video_task_id)
    video = read_xcom(dag_run, "download", key="video")
    assert video["video_url"] == f"data:video/mp4;base64,…({1024 * 1024 + 5} bytes)"
    assert len(json.dumps(video)) < 2000
