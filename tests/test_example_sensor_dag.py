"""dag.test() of the example DAG: the sensor pokes, defers, the trigger runs inline, the task resumes."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Scenario
from tests.airflow_helpers import load_dag, read_xcom
from tests.conftest import connection_json

TASK_ID = "sora-2:task_01k6exampledagtest00000000"


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_example_dag_defers_and_resumes(
    airflow_db: str, emulator: Any, trigger_runs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.utils.state import DagRunState, TaskInstanceState

    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, timeout=5))
    # Poll 1 (the sensor's own poke on the worker) sees it queued; poll 2 (the trigger's) sees it done;
    # poll 3 (the worker, resumed) reads it once more for fresh URLs.
    emulator.add_task(TASK_ID, Scenario(polls_to_complete=2))
    dag = load_dag("example_videoquery_sensor")
    assert dag.get_task("wait_for_video").deferrable is True

    dag_run = dag.test(run_conf={"video_task_id": TASK_ID})

    assert dag_run.state == DagRunState.SUCCESS
    assert trigger_runs == [TASK_ID]
    assert emulator.polls(TASK_ID) == 3
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["wait_for_video"] == TaskInstanceState.SUCCESS
    value = read_xcom(dag_run, "wait_for_video")
    assert value["id"] == TASK_ID
    assert value["status"] == "succeeded"
    assert value["video_url"].startswith(emulator.url)
    assert "raw" not in value  # the gateway's whole answer (signed URLs) stays out of XCom
