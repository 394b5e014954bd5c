"""Naming objects: where a download goes, and how it is shown (never with a connection id).

The destination rules, in one place (the operators and :func:`.checks.check_destination` share them):

* a destination ending in ``/`` is a folder: the file is named after the task;
* a destination naming a folder that already exists is that folder too (``file:///data/videos``);
* anything else is the file itself, warned about when its name has no video suffix;
* a plain absolute path (``/data/videos/``) is a local file URI (``file:///data/videos/``); a relative
  one is refused (a worker's working directory is nobody's choice).
"""

from __future__ import annotations

import hashlib
import logging
import re
from contextlib import suppress

from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.exceptions import VideoDownloadError

log = logging.getLogger(__name__)

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
#: Suffixes that name a video file; a file destination without one is stored as asked, with a warning.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv"})


def object_uri(path: ObjectStoragePath) -> str:
    """``scheme://bucket/key`` with no connection id, on every Airflow 3 (3.1's ``as_uri()`` embeds it)."""
    if path.protocol == "file":
        return path.as_uri()
    if not path.protocol:  # a plain local path
        return f"file://{path.path}"
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


def destination_uri(destination: str) -> str:
    """``destination`` as a URI: stripped, a plain absolute path made ``file://``; empty or relative fails."""
    if not destination or not destination.strip():
        raise VideoDownloadError(
            "The download destination is empty: give a file URI or a folder ending in '/'."
        )
    destination = destination.strip()
    if destination.startswith("/"):
        return f"file://{destination}"
    if "://" not in destination:
        raise VideoDownloadError(
            f"The download destination {destination!r} is a relative path: give an absolute path "
            "('/data/videos/') or a URI ('file:///data/videos/', 's3://bucket/videos/')."
        )
    return destination


def destination_folder(destination: str, conn_id: str | None = None) -> ObjectStoragePath:
    """The folder a download into ``destination`` writes in (see the rules in this module's docstring)."""
    uri = destination_uri(destination)
    path = ObjectStoragePath(uri, conn_id=conn_id)
    if uri.endswith("/") or _is_folder(path):
        return path
    return path.parent


def resolve_destination(
    destination: str, video_task_id: str, conn_id: str | None = None, suffix: str = ".mp4"
) -> ObjectStoragePath:
    """The target object: ``destination`` itself, or, when it is a folder, a file named after the task."""
    uri = destination_uri(destination)
    path = ObjectStoragePath(uri, conn_id=conn_id)
    if uri.endswith("/") or _is_folder(path):
        return path / safe_file_name(video_task_id, suffix)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        log.warning(
            "The destination %s has no video suffix (%s): the video is stored as a file named %r, as "
            "asked. End the destination with '/' to store it inside a folder of that name instead.",
            object_uri(path),
            ", ".join(sorted(VIDEO_SUFFIXES)),
            path.name,
        )
    return path


def _is_folder(path: ObjectStoragePath) -> bool:
    """Whether ``path`` is an existing folder; False when the store cannot tell (it is checked later)."""
    with suppress(Exception):
        return bool(path.is_dir())
    return False
