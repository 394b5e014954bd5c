"""dag.test() of the download example: create on the worker, defer, the trigger runs inline, the
download resumes and stores the MP4; the URI lands in XCom."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Scenario
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from tests.conftest import REPO


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_example_download_dag(
    airflow_db: str, emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.utils.state import DagRunState, TaskInstanceState

    # Query 1 (the download's own look on the worker) sees it queued; query 2 (the trigger's) done.
    emulator.set_default(Scenario(polls_to_complete=2, video_size=3 * 1024 * 1024 + 5))
    trigger_runs: list[str] = []
    original_run = VideoTaskTrigger.run

    def spy_run(self: VideoTaskTrigger) -> Any:
        trigger_runs.append(self.video_task_id)
        return original_run(self)

    monkeypatch.setattr(VideoTaskTrigger, "run", spy_run)
    dag = _load_example_dag()
    assert dag.params["destination"] == "file:///tmp/videoquery-demo/"

    dag_run = dag.test(run_conf={"destination": f"file://{tmp_path}/demo/", "model": "sora-2"})

    assert dag_run.state == DagRunState.SUCCESS
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == dict.fromkeys(("create", "download", "report"), TaskInstanceState.SUCCESS)
    video_task_id = _xcom(dag, dag_run, "create")
    assert emulator.task(video_task_id) is not None
    assert video_task_id.startswith("sora-2:")
    assert trigger_runs == [video_task_id]

    uri = _xcom(dag, dag_run, "download")
    name = video_task_id.replace(":", "_") + ".mp4"
    assert uri == f"file://{tmp_path}/demo/{name}"
    stored = tmp_path / "demo" / name
    data = stored.read_bytes()
    assert data[4:8] == b"ftyp"
    assert data == emulator.expected_video(video_task_id)
    assert sorted(p.name for p in stored.parent.iterdir()) == [name]
    video = _xcom(dag, dag_run, "download", key="video")
    assert video["uri"] == uri
    assert video["bytes"] == len(data)
    assert _xcom(dag, dag_run, "report") == uri


def _xcom(dag: Any, dag_run: Any, task_id: str, key: str = "return_value") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
            )
        ).one()
        return XComModel.deserialize_value(row)


def _load_example_dag() -> Any:
    path = REPO / "example_dags" / "example_videoquery_download.py"
    spec = importlib.util.spec_from_file_location("example_videoquery_download", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag
