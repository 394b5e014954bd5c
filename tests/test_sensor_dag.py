"""The sensor under ``dag.test()`` against the emulator: a real timeout with and without ``soft_fail``, and
a run of the example DAG that names no task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Emulator, Scenario
from tests.airflow_helpers import load_dag, run_dag, use_dags_folder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TASK = "sora-2:task_01k6neverfinishes0000000000"

DAG_SOURCE = '''
"""A sensor that gives up after one second."""
from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_provider_videoquery.sensors.videoquery import VideoTaskSensor

with DAG(
    dag_id="videoquery_sensor_timeout",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={"video_task_id": Param("", type="string"), "soft_fail": Param(False, type="boolean")},
    render_template_as_native_obj=True,
) as dag:
    VideoTaskSensor(
        task_id="wait",
        video_task_id="{{ params.video_task_id }}",
        poke_interval=0.2,
        timeout=1,
        soft_fail=SOFT_FAIL,
    )
'''


def timeout_dag(folder: Path, soft_fail: bool) -> Any:
    folder.mkdir()
    (folder / "videoquery_sensor_timeout.py").write_text(DAG_SOURCE.replace("SOFT_FAIL", str(soft_fail)))
    return load_dag(folder / "videoquery_sensor_timeout.py")


@pytest.mark.parametrize(("soft_fail", "state"), [(True, "skipped"), (False, "failed")])
def test_a_real_timeout_ends_with_the_triggers_message(
    soft_fail: bool,
    state: str,
    airflow_db: str,
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator.add_task(TASK, Scenario(polls_to_complete=10**6))
    use_dags_folder(monkeypatch, tmp_path / "dags")
    dag = timeout_dag(tmp_path / "dags", soft_fail)

    result = run_dag(dag, capsys, video_task_id=TASK)

    assert result.states == {"wait": state}
    logs = result.output + caplog.text
    # The trigger's own timeout event decided it, and its message says what the task was doing.
    assert f"Video task {TASK!r} did not finish within 1s" in logs
    assert "its last status was video task" in logs
    if soft_fail:
        skip = next(line for line in logs.splitlines() if "Skipping task" in line)
        assert "soft_fail" in skip
        assert "did not finish within 1s" in skip
    assert emulator.polls(TASK) >= 2  # the worker's poke, then the trigger's polls


def test_the_example_dag_without_a_task_id_fails_at_once(
    airflow_db: str,
    emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    result = run_dag(load_dag("example_videoquery_sensor"), capsys)  # the param's default: ""

    assert result.states == {"wait_for_video": "failed"}
    assert "video_task_id is ''" in result.output + caplog.text
    assert emulator.requests == []  # failed before the first poll: no 60 s "not known yet" grace
