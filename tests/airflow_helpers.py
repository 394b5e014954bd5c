"""Small helpers the Airflow-facing tests share: loading and running a DAG file, reading XCom, a stand-in
context, a trigger's first event, and checks that the API key leaked nowhere and nothing was left behind."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import API_KEY, REPO

if TYPE_CHECKING:
    from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger


def load_dag(path: Path | str) -> Any:
    """The ``dag`` a DAG file defines; a bare name means ``example_dags/<name>.py``."""
    path = Path(path)
    if not path.suffix:
        path = REPO / "example_dags" / f"{path}.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def read_xcom(dag_run: Any, task_id: str, key: str = "return_value") -> Any:
    """One XCom value of a finished ``dag.test()`` run, read back from the metadata DB."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
            )
        ).one()
        return XComModel.deserialize_value(row)


class FakeTI:
    """Collects what an operator pushes to XCom when it is executed directly."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def make_context(**extra: Any) -> dict[str, Any]:
    """A minimal task context for calling ``execute`` directly."""
    return {"ti": FakeTI(), **extra}


def use_dags_folder(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Point the dags-folder bundle at ``folder`` (settings.DAGS_FOLDER is read once, at import)."""
    from airflow import settings

    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(folder))
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(folder))


@dataclass
class RunResult:
    run: Any
    states: dict[str, str | None]
    seconds: float
    output: str
    xcoms: dict[tuple[str, str], Any]
    rendered: dict[str, Any]


def run_dag(dag: Any, capsys: pytest.CaptureFixture[str], **conf: Any) -> RunResult:
    """``dag.test()`` with ``conf``; collects task states, the task log output, XComs, rendered fields."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    capsys.readouterr()
    started = time.monotonic()
    dag_run = dag.test(run_conf=conf)
    seconds = time.monotonic() - started
    captured = capsys.readouterr()
    with create_session() as session:
        states = {ti.task_id: ti.state for ti in dag_run.get_task_instances(session=session)}
        rows = session.scalars(
            select(XComModel).where(XComModel.dag_id == dag.dag_id, XComModel.run_id == dag_run.run_id)
        ).all()
        xcoms = {(row.task_id, row.key): XComModel.deserialize_value(row) for row in rows}
        fields = session.scalars(
            select(RenderedTaskInstanceFields).where(
                RenderedTaskInstanceFields.dag_id == dag.dag_id,
                RenderedTaskInstanceFields.run_id == dag_run.run_id,
            )
        ).all()
        rendered = {row.task_id: row.rendered_fields for row in fields}
    return RunResult(dag_run, states, seconds, captured.out + captured.err, xcoms, rendered)


async def first_event(trigger: VideoTaskTrigger) -> dict[str, Any]:
    """The payload of the trigger's first event."""
    event = await anext(trigger.run())
    payload: dict[str, Any] = event.payload
    return payload


def assert_key_nowhere(*places: Any) -> None:
    """The API key in none of ``places`` (strings, or anything JSON-able, searched as JSON)."""
    for place in places:
        text = place if isinstance(place, str) else repr(place)
        assert API_KEY not in text, f"the API key leaked into: {text[:300]}…"


def listing(folder: Path) -> list[str]:
    """The names in ``folder``, sorted; none if it does not exist."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
