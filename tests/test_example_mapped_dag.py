"""dag.test() of the mapped example: one create and one download per prompt, and a report tying each
prompt to its stored file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Emulator, Scenario
from tests.airflow_helpers import load_dag, read_xcom

PROMPTS = ["A paper boat in the rain", "A fox in the snow", "Clouds over a ridge", "A lighthouse at night"]


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_example_mapped_dag(airflow_db: str, emulator: Emulator, tmp_path: Path) -> None:
    from airflow.utils.state import DagRunState, TaskInstanceState

    # The download's own look sees each task queued; the trigger's first poll sees it done.
    emulator.set_default(Scenario(polls_to_complete=2, video_size=64 * 1024 + 7))
    dag = load_dag("example_videoquery_mapped")
    assert len(dag.params["prompts"]) == 3

    dag_run = dag.test(
        run_conf={"prompts": PROMPTS, "model": "sora-2", "destination": f"file://{tmp_path}/out/"}
    )

    assert dag_run.state == DagRunState.SUCCESS
    tis = dag_run.get_task_instances()
    assert {(ti.task_id, ti.state) for ti in tis} == {
        (t, TaskInstanceState.SUCCESS) for t in ("prompts", "create", "download", "report")
    }
    assert sorted(ti.map_index for ti in tis if ti.task_id == "download") == [0, 1, 2, 3]
    assert emulator.creates().accepted == len(PROMPTS)  # one paid create per prompt

    rows: list[dict[str, Any]] = read_xcom(dag_run, "report")
    assert [row["prompt"] for row in rows] == PROMPTS
    for row in rows:
        task = emulator.task(row["video_task_id"])
        assert task is not None
        assert task.body["prompt"] == row["prompt"]  # the prompt created exactly this task...
        stored = Path(row["uri"].removeprefix("file://"))  # ...whose video is stored here
        assert stored.parent == tmp_path / "out"
        assert stored.read_bytes() == emulator.expected_video(row["video_task_id"])
    assert len(list((tmp_path / "out").iterdir())) == len(PROMPTS)
    # Each download's video XCom carries the prompt and model its own create was asked (the gallery's).
    videos = _videos_by_map_index(dag_run)
    assert sorted(videos) == [0, 1, 2, 3]
    for index, video in videos.items():
        assert (video["prompt"], video["model"]) == (PROMPTS[index], "sora-2")
        assert video["created_at"] <= video["stored_at"]


def _videos_by_map_index(dag_run: Any) -> dict[int, dict[str, Any]]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == "download",
                XComModel.key == "video",
            )
        ).all()
        return {row.map_index: XComModel.deserialize_value(row) for row in rows}
