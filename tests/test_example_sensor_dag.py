"""dag.test() of the example DAG: the sensor pokes, defers, the trigger runs inline, the task resumes."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Scenario
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from tests.conftest import REPO, connection_json

TASK_ID = "sora-2:task_01k6exampledagtest00000000"


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_example_dag_defers_and_resumes(
    airflow_db: str, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, timeout=5))
    # Poll 1 (the sensor's own poke on the worker) sees it queued; poll 2 (the trigger's) sees it done.
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=2))
    trigger_runs: list[str] = []
    original_run = VideoTaskTrigger.run

    def spy_run(self: VideoTaskTrigger) -> Any:
        trigger_runs.append(self.video_task_id)
        return original_run(self)

    monkeypatch.setattr(VideoTaskTrigger, "run", spy_run)
    dag = _load_example_dag()
    assert dag.get_task("wait_for_video").deferrable is True

    dag_run = dag.test(run_conf={"video_task_id": TASK_ID})

    assert dag_run.state == DagRunState.SUCCESS
    assert trigger_runs == [TASK_ID]
    assert emulator.polls(TASK_ID) == 2
    with create_session() as session:
        ti = dag_run.get_task_instance("wait_for_video", session=session)
        assert ti is not None
        assert ti.state == TaskInstanceState.SUCCESS
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == "wait_for_video",
                XComModel.key == "return_value",
            )
        ).one()
        value = XComModel.deserialize_value(row)
    assert value["id"] == TASK_ID
    assert value["status"] == "succeeded"
    assert value["video_url"].startswith(emulator.url)
    assert value["raw"]["status"]


def _load_example_dag() -> Any:
    path = REPO / "example_dags" / "example_videoquery_sensor.py"
    spec = importlib.util.spec_from_file_location("example_videoquery_sensor", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag
