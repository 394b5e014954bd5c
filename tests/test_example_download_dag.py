"""dag.test() of the download example: create on the worker, defer, the trigger runs inline, the
download resumes and stores the MP4; the URI lands in XCom."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Scenario
from tests.airflow_helpers import load_dag, read_xcom


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_example_download_dag(
    airflow_db: str, emulator: Any, trigger_runs: list[str], tmp_path: Path
) -> None:
    from airflow.utils.state import DagRunState, TaskInstanceState

    # Query 1 (the download's own look on the worker) sees it queued; query 2 (the trigger's) done.
    emulator.set_default(Scenario(polls_to_complete=2, video_size=3 * 1024 * 1024 + 5))
    dag = load_dag("example_videoquery_download")
    assert dag.params["destination"] == "file:///tmp/videoquery-demo/"

    dag_run = dag.test(run_conf={"destination": f"file://{tmp_path}/demo/", "model": "sora-2"})

    assert dag_run.state == DagRunState.SUCCESS
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == dict.fromkeys(("create", "download", "report"), TaskInstanceState.SUCCESS)
    video_task_id = read_xcom(dag_run, "create")
    assert emulator.task(video_task_id) is not None
    assert video_task_id.startswith("sora-2:")
    assert trigger_runs == [video_task_id]

    uri = read_xcom(dag_run, "download")
    name = video_task_id.replace(":", "_") + ".mp4"
    assert uri == f"file://{tmp_path}/demo/{name}"
    stored = tmp_path / "demo" / name
    data = stored.read_bytes()
    assert data[4:8] == b"ftyp"
    assert data == emulator.expected_video(video_task_id)
    assert sorted(p.name for p in stored.parent.iterdir()) == [name]
    video = read_xcom(dag_run, "download", key="video")
    assert video["uri"] == uri
    assert video["bytes"] == len(data)
    assert read_xcom(dag_run, "report") == uri
