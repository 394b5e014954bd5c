"""The gallery's inputs, read on the api-server: a run's task instances and XComs from Airflow's DB, and
batches' ledgers from object storage (through ``ledger.read``: the manifest with its journal, the one
reader of ledgers)."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from airflow_provider_videoquery import ledger as ledger_file
from airflow_provider_videoquery import manifest
from airflow_provider_videoquery.ui.model import XCOM_KEYS, Ledger, TaskRecord

#: A ledger read is kept this long: a player's many range requests and a page of cards read it once.
LEDGER_TTL = 5.0
_LEDGERS_KEPT = 16
_ledgers: dict[Ledger, tuple[float, list[manifest.Entry]]] = {}
_lock = threading.Lock()


def run_exists(session: Session, dag_id: str, run_id: str) -> bool:
    from airflow.models.dagrun import DagRun

    found = session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    return found is not None


def task_records(
    session: Session, dag_id: str, run_id: str, task_id: str | None = None, map_index: int | None = None
) -> list[TaskRecord]:
    """The run's task instances (or one of them) with the XComs the gallery reads."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel

    tis = select(
        TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state, TaskInstance.operator
    ).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
    xcoms = select(XComModel).where(
        XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key.in_(XCOM_KEYS)
    )
    if task_id is not None:
        tis = tis.where(TaskInstance.task_id == task_id)
        xcoms = xcoms.where(XComModel.task_id == task_id)
    if map_index is not None:
        tis = tis.where(TaskInstance.map_index == map_index)
        xcoms = xcoms.where(XComModel.map_index == map_index)
    values: dict[tuple[str, int], dict[str, Any]] = {}
    for row in session.scalars(xcoms):
        values.setdefault((row.task_id, row.map_index), {})[row.key] = XComModel.deserialize_value(row)
    return [
        TaskRecord(
            task_id=tid,
            map_index=index,
            state=str(state.value if hasattr(state, "value") else state) if state is not None else None,
            operator=operator,
            xcoms=values.get((tid, index), {}),
        )
        for tid, index, state, operator in session.execute(tis)
    ]


def storage_path(uri: str, conn_id: str | None) -> Any:
    """The stored object at ``uri`` (a URI the model allowed), opened with its connection."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(uri, conn_id=conn_id)


def read_ledger(ledger: Ledger) -> list[manifest.Entry]:
    """A batch's entries, read through ``ledger.read`` and kept for :data:`LEDGER_TTL` seconds."""
    now = time.monotonic()
    with _lock:
        kept = _ledgers.get(ledger)
    if kept is not None and now - kept[0] < LEDGER_TTL:
        return kept[1]
    path = storage_path(ledger.manifest, ledger.conn_id)
    entries = ledger_file.read(path.fs, path.path, ledger.manifest)
    with _lock:
        _ledgers[ledger] = (now, entries)
        while len(_ledgers) > _LEDGERS_KEPT:
            _ledgers.pop(next(iter(_ledgers)))
    return entries
