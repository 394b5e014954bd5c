"""Running a VideoBatchOperator without a DAG run: its deferrals are served by running the trigger inline,
as ``dag.test()`` does, but in any thread (two batches at once over one manifest)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.airflow_helpers import FakeTI


class BatchTI(FakeTI):
    """A task instance's identity (what the manifest lease records) and its XComs."""

    def __init__(self, run_id: str = "manual__1", try_number: int = 1, task_id: str = "batch") -> None:
        super().__init__()
        self.dag_id, self.run_id, self.task_id = "videoquery_batch_test", run_id, task_id
        self.map_index, self.try_number = -1, try_number


def batch_context(run_id: str = "manual__1", try_number: int = 1) -> dict[str, Any]:
    return {"ti": BatchTI(run_id, try_number)}


def drive(operator: Any, context: dict[str, Any] | None = None, max_deferrals: int = 100) -> Any:
    """``execute``, then each deferral's trigger inline and the method it names, until the task ends."""
    from airflow.providers.common.compat.sdk import TaskDeferred

    context = context if context is not None else batch_context()
    call: Any = lambda: operator.execute(context)  # noqa: E731
    for _ in range(max_deferrals):
        try:
            return call()
        except TaskDeferred as deferred:
            event = asyncio.run(_first_event(deferred.trigger))
            method = getattr(operator, deferred.method_name)
            call = lambda method=method, event=event: method(context, event)  # noqa: E731
    raise AssertionError(f"the batch deferred more than {max_deferrals} times")


async def _first_event(trigger: Any) -> dict[str, Any]:
    payload: dict[str, Any] = (await anext(trigger.run())).payload
    return payload


def manifest_lines(folder: Path, name: str = "manifest.jsonl") -> dict[str, dict[str, Any]]:
    """Each key's line as the batch sees it: the manifest with its journal applied (the ledger)."""
    import fsspec

    from airflow_provider_videoquery import ledger

    path = str(folder / name)
    return {entry.key: entry.to_json() for entry in ledger.read(fsspec.filesystem("file"), path, path)}
