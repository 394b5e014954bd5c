"""What the download and batch operators add for the gallery, on the worker: the prompt and model of a
downloaded video (from the upstream ``VideoCreateOperator``'s record) and OpenLineage facets.

Nothing here may fail a task: the video is stored by the time it runs; a lookup that fails is logged.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_videoquery.ui import xcom

log = logging.getLogger(__name__)


def upstream_request(context: Any, operator: Any, video_task_id: str, creator: type) -> dict[str, Any]:
    """The record of the direct upstream ``creator`` task (``VideoCreateOperator``) that returned
    ``video_task_id``, at this task's map index; empty when there is none.

    That is what the user asked for (the model name and prompt as sent): a gateway's own answer names
    its upstream's internal model (``sy_ore``, ``grok-3``) and may carry a rewritten prompt. A video
    task created elsewhere (an id typed in, another DAG) has no record: its prompt and model stay null.
    """
    ti = context.get("ti")
    pull = getattr(ti, "xcom_pull", None)
    if pull is None or not operator.has_dag():  # executed on its own (tests): no upstream tasks
        return {}
    creates = sorted(task.task_id for task in operator.upstream_list if _is_a(task, creator))
    if not creates:
        return {}
    own = getattr(ti, "map_index", -1)
    try:
        values = pull(
            task_ids=creates, key=xcom.REQUEST_KEY, map_indexes=[own if isinstance(own, int) else -1]
        )
        return xcom.matching_request(list(values or []), video_task_id) or {}
    except Exception as err:
        log.warning("No create record of %r (the gallery shows no prompt): %s", video_task_id, err)
    return {}


def _is_a(task: Any, cls: type) -> bool:
    """Whether ``task`` (an operator, or a mapped one) is a ``cls``."""
    kind = getattr(task, "operator_class", None) or type(task)
    return isinstance(kind, type) and issubclass(kind, cls)


def video_details(
    context: Any, operator: Any, video_task_id: str, conn_id: str | None, creator: type
) -> dict[str, Any]:
    """The download's ``video`` XCom additions: prompt, model, when created and stored, storage conn id."""
    request = upstream_request(context, operator, video_task_id, creator)
    return {
        "prompt": request.get("prompt"),
        "model": request.get("model"),
        "created_at": request.get("created_at"),
        "stored_at": xcom.now_iso(),
        "conn_id": conn_id,
    }


# -- OpenLineage ------------------------------------------------------------------------------------


def lineage(inputs: list[tuple[str, str]], outputs: list[str]) -> Any:
    """``OperatorLineage`` of ``inputs`` (namespace, name) and ``outputs`` (object URIs); None without the
    OpenLineage provider (imported only here, only when it asks)."""
    try:
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    return OperatorLineage(
        inputs=[Dataset(namespace=namespace, name=name) for namespace, name in inputs],
        outputs=[Dataset(namespace=namespace, name=name) for namespace, name in map(dataset_name, outputs)],
    )


def dataset_name(uri: str) -> tuple[str, str]:
    """OpenLineage's naming of an object: ``file`` + path, ``s3://bucket`` + key, ``scheme://host`` + path."""
    parts = urlsplit(uri)
    if parts.scheme in ("file", ""):
        return "file", parts.path
    return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")
