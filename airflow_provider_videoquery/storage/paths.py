"""Naming objects: where a download goes, and how it is shown (never with a connection id)."""

from __future__ import annotations

import hashlib
import re

from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.exceptions import VideoDownloadError

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def object_uri(path: ObjectStoragePath) -> str:
    """``scheme://bucket/key`` with no connection id, on every Airflow 3 (3.1's ``as_uri()`` embeds it)."""
    if path.protocol == "file":
        return path.as_uri()
    return f"{path.protocol}://{path.path}"


def safe_file_name(video_task_id: str, suffix: str = ".mp4") -> str:
    """A file name from a task id: only ``[A-Za-z0-9._-]``, no leading dot, no ``..``, no scheme.

    Ids of the usual shape (``sora-2:task_01k…``) only trade ``:`` for ``_``; any other change loses
    information, so the name then ends with a short hash of the id and two ids never share a file.
    """
    # Cut before stripping, so a cut that ends on "." cannot leave ".." in front of the suffix.
    name = _UNSAFE_NAME.sub("_", video_task_id).replace("..", "_")[:150].strip("._-")
    if name != video_task_id.replace(":", "_"):
        digest = hashlib.sha256(video_task_id.encode()).hexdigest()[:10]
        name = f"{name[:139].rstrip('._-')}-{digest}".lstrip("-")
    return f"{name or 'video'}{suffix}"


def resolve_destination(
    destination: str, video_task_id: str, conn_id: str | None = None, suffix: str = ".mp4"
) -> ObjectStoragePath:
    """The target object: ``destination`` itself, or, when it ends with ``/``, a file named after the task."""
    if not destination or not destination.strip():
        raise VideoDownloadError(
            "The download destination is empty: give a file URI or a folder ending in '/'."
        )
    destination = destination.strip()
    if destination.endswith("/"):
        return ObjectStoragePath(destination, conn_id=conn_id) / safe_file_name(video_task_id, suffix)
    return ObjectStoragePath(destination, conn_id=conn_id)
