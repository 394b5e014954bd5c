"""What the operators record for the gallery, in XCom: one home for the keys and the shapes.

Written on the worker (``VideoCreateOperator``, ``VideoDownloadOperator``, ``VideoBatchOperator``), read
on the api-server by :mod:`.model`. Plain JSON only: a connection id, never a secret.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

#: ``VideoDownloadOperator``: the stored video (uri, bytes, sha256, …, prompt, model).
VIDEO_KEY = "video"
#: ``VideoCreateOperator``: what was asked for (video task id, model, prompt, when).
REQUEST_KEY = "video_request"
#: ``VideoBatchOperator``: where its ledger is (manifest URI, destination folder, storage connection).
LEDGER_KEY = "ledger"


def now_iso() -> str:
    """The current time as the records carry it: ISO 8601, UTC."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def video_request(video_task_id: str, model: str, prompt: str) -> dict[str, Any]:
    """A create's record: the id the gateway returned and what it was asked."""
    return {"video_task_id": video_task_id, "model": model, "prompt": prompt, "created_at": now_iso()}


def ledger_pointer(manifest: str, destination: str, conn_id: str | None) -> dict[str, Any]:
    """A batch's record: its manifest, the folder its videos go to, and the connection of both."""
    return {"manifest": manifest, "destination": destination.rstrip("/") + "/", "conn_id": conn_id}


def matching_request(candidates: list[Any], video_task_id: str) -> dict[str, Any] | None:
    """The create record among ``candidates`` (XCom values) that names ``video_task_id``."""
    for value in candidates:
        if isinstance(value, dict) and value.get("video_task_id") == video_task_id:
            return value
    return None
