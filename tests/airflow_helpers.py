"""Small helpers the Airflow-facing tests share: loading a DAG file, reading XCom, a stand-in context."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from tests.conftest import REPO


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
