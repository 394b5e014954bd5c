"""The normalized video task, and the one parser that turns every API family's answer into it.

Gateways pass their upstream's JSON through, so the same question ("is it done, where is the file, why
did it fail") has a different answer shape per model family. Everything that knows those shapes lives
here; the hook, trigger and operators only ever see a :class:`VideoTask`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


class TaskStatus(StrEnum):
    """Where a video task is, whatever the family called it."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


_RAW_STATUS: dict[str, TaskStatus] = {
    **dict.fromkeys(
        ("pending", "queued", "submitted", "not_start", "created", "queueing"),
        TaskStatus.QUEUED,
    ),
    **dict.fromkeys(
        (
            "processing",
            "in_progress",
            "running",
            "generating",
            "image_downloading",
            "video_generating",
            "video_generation_completed",
            "video_upsampling",
            "unknown",
        ),
        TaskStatus.RUNNING,
    ),
    **dict.fromkeys(
        ("completed", "success", "succeeded", "video_upsampling_completed", "done", "finish", "finished"),
        TaskStatus.SUCCEEDED,
    ),
    **dict.fromkeys(
        (
            "failed",
            "failure",
            "error",
            "video_generation_failed",
            "video_upsampling_failed",
            "cancelled",
            "canceled",
            "aborted",
        ),
        TaskStatus.FAILED,
    ),
}

# Paths tried in order; the first non-empty string wins.
_VIDEO_URL_PATHS: tuple[tuple[str | int, ...], ...] = (
    ("video_url",),
    ("result_url",),  # new-api's TaskDto
    ("url",),  # new-api's Gemini/Vertex channels
    ("detail", "upsample_video_url"),
    ("detail", "video_url"),
    ("detail", "url"),
    ("detail", "draft_info", "downloadable_url"),
    ("creations", 0, "url"),
)
_THUMBNAIL_PATHS: tuple[tuple[str | int, ...], ...] = (
    ("thumbnail_url",),
    ("detail", "thumbnail_url"),
    ("creations", 0, "cover_url"),
)
# Older new-api versions put the video URL into fail_reason on success: read only then, and only a URL.
_SUCCESS_URL_FALLBACK_PATHS: tuple[tuple[str | int, ...], ...] = (("fail_reason",),)
_URL_PREFIXES = ("http://", "https://", "data:")
_ERROR_PATHS: tuple[tuple[str | int, ...], ...] = (
    ("detail", "pending_info", "failure_reason"),
    ("detail", "video_generation_error"),
    ("detail", "error_message"),
    ("error",),
    ("fail_reason",),
    ("err_code",),
    ("message",),
)
_PROGRESS_FRACTION_PATHS: tuple[tuple[str | int, ...], ...] = (("detail", "pending_info", "progress_pct"),)
_PROGRESS_PERCENT_PATHS: tuple[tuple[str | int, ...], ...] = (("progress",), ("detail", "progress"))
_ENHANCED_PROMPT_PATHS: tuple[tuple[str | int, ...], ...] = (
    ("enhanced_prompt",),
    ("detail", "enhanced_prompt"),
)
_TIMESTAMP_PATHS: tuple[tuple[str | int, ...], ...] = (
    ("status_update_time",),
    ("detail", "status_update_time"),
    ("completed_at",),
    ("updated_at",),
    ("created_at",),
)

#: (divisor to seconds, exclusive upper bound): today is ~1.7e9 s, 1.7e12 ms, 1.7e15 µs, 1.7e18 ns.
_EPOCH_UNITS: tuple[tuple[float, float], ...] = ((1.0, 1e11), (1e3, 1e14), (1e6, 1e17), (1e9, 1e20))
#: A status time outside this window is a placeholder or garbage, not a time: it becomes None.
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)
#: Longer http(s) URLs are not carried in events (they are rarely that long unless they embed data).
_EVENT_URL_MAX = 2048
_warned_statuses: set[str] = set()


class VideoTask(BaseModel):
    """A video generation task as one vocabulary, whatever family answered."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="The id that was polled (with its family prefix).")
    status: TaskStatus
    raw_status: str | None = Field(description="The status string exactly as the gateway sent it.")
    progress: float | None = Field(default=None, description="0-100, when the family reports it.")
    video_url: str | None = None
    thumbnail_url: str | None = None
    enhanced_prompt: str | None = None
    error: str | None = Field(default=None, description="Why it failed; set only when status is failed.")
    updated_at: datetime | None = Field(default=None, description="Last status change, timezone-aware UTC.")
    raw: dict[str, Any] = Field(
        default_factory=dict,
        repr=False,
        exclude=True,
        description="The gateway's answer as it came, for inspection in process only: never serialized "
        "(sora's holds about ten signed URLs, and events and XCom are stored and logged).",
    )

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    def for_event(self) -> VideoTask:
        """This task as a trigger event may carry it. The triggerer logs every event, so a signed URL
        (query string, credentials) is left out and an inline video is shown short; the worker re-reads
        the task for them."""
        return self.model_copy(
            update={"video_url": _event_url(self.video_url), "thumbnail_url": _event_url(self.thumbnail_url)}
        )

    def for_xcom(self) -> dict[str, Any]:
        """This task as XCom holds it: plain JSON without the raw answer, an inline video shown short."""
        short = {"video_url": display_url(self.video_url), "thumbnail_url": display_url(self.thumbnail_url)}
        return self.model_copy(update=short).model_dump(mode="json")

    def summary(self) -> str:
        """One line for logs: id, status, progress."""
        progress = f" {self.progress:.0f}%" if self.progress is not None else ""
        return f"video task {self.id!r}: {self.status.value} ({self.raw_status}){progress}"

    def __repr_args__(self) -> Any:
        # An inline video is megabytes of base64: a repr shows its header and size only.
        for name, value in super().__repr_args__():
            yield name, display_url(value) if name in ("video_url", "thumbnail_url") else value


#: Inline ``data:`` values longer than this are shown as header and size in logs, events and XCom.
INLINE_SHOWN_MAX = 256
_ELIDED_MARK = ",…("


def is_inline(url: str | None) -> bool:
    """Whether ``url`` carries the file itself (a ``data:`` URI) instead of pointing at it."""
    return url is not None and url[:5].lower() == "data:"


def display_url(url: str | None) -> str | None:
    """``url`` fit for logs, XCom and events: a long ``data:`` URI becomes ``data:<type>,…(N bytes)``."""
    if url is None or not is_inline(url) or len(url) <= INLINE_SHOWN_MAX:
        return url
    # No slice of the data itself: an inline video is megabytes, and this runs for every log line.
    comma = url.find(",")
    header, chars = (url, 0) if comma < 0 else (url[:comma], len(url) - comma - 1)
    if ";base64" in header.lower():
        padding = 2 if url.endswith("==") else 1 if url.endswith("=") else 0
        size = chars // 4 * 3 - padding + max(chars % 4 - 1, 0)
    else:
        size = chars
    return f"{header}{_ELIDED_MARK}{size} bytes)"


def shown_url(url: str) -> str:
    """``url`` for a log line or an error message: no credentials — neither userinfo (``user:token@``)
    nor the query string and fragment (signed URLs carry their signature there) — and an inline video
    shown short. XCom keeps what a downstream task needs; messages show this."""
    if is_inline(url):
        return display_url(url) or ""
    scheme, sep, rest = url.partition("://")
    if sep:
        end = rest.find("/") if "/" in rest else len(rest)
        authority, path = rest[:end], rest[end:]
        # the last "@" before the path ends the userinfo, even one holding a raw "?" or "#"
        url = f"{scheme}://{authority.rpartition('@')[2]}{path}"
    return url.split("?", 1)[0].split("#", 1)[0]


def is_elided(url: str | None) -> bool:
    """Whether ``url`` is :func:`display_url`'s short form of an inline video (not the video itself)."""
    return is_inline(url) and url is not None and _ELIDED_MARK in url and url.endswith(" bytes)")


def elide_inline(value: Any) -> Any:
    """``value`` (JSON-like) with every long ``data:`` string replaced by its :func:`display_url`."""
    if isinstance(value, str):
        return display_url(value)
    if isinstance(value, Mapping):
        return {key: elide_inline(item) for key, item in value.items()}
    if isinstance(value, list):
        return [elide_inline(item) for item in value]
    return value


def _event_url(url: str | None) -> str | None:
    """``url`` as an event may carry it: an inline video short, a plain http(s) URL whole, else None."""
    if url is None or is_inline(url):
        return display_url(url)
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: the download refuses it with a clear message
        return None
    plain = parts.scheme in ("http", "https") and not (parts.query or parts.fragment or "@" in parts.netloc)
    return url if plain and len(url) <= _EVENT_URL_MAX else None


def parse_task(
    payload: Mapping[str, Any] | None,
    video_task_id: str,
    content_url: str | None = None,
    statuses: Mapping[str, TaskStatus] | None = None,
) -> VideoTask:
    """Normalize one query answer of any family (unified, vidu-native, OpenAI-style, new-api).

    ``payload`` is the task already taken out of its route's envelope; None means the route said it
    has no task data yet (new-api's ``"data": null``), which is not terminal. ``content_url`` is where
    the gateway serves the file itself when the answer names no URL (the OpenAI-style
    ``/v1/videos/{id}/content``); it is used only once the task has succeeded. ``statuses`` are the
    route's own status words (lower case), read before the shared table.
    """
    if payload is None:
        return VideoTask(id=video_task_id, status=TaskStatus.QUEUED, raw_status=None)
    raw_status = _first_text(payload, (("status",), ("state",)))
    status = _classify(raw_status, video_task_id, statuses or {})
    video_url = _first_text(payload, _VIDEO_URL_PATHS)
    if status is TaskStatus.SUCCEEDED and video_url is None:
        video_url = _first_url(payload, _SUCCESS_URL_FALLBACK_PATHS) or content_url
    if status is TaskStatus.SUCCEEDED and video_url is None:
        # A success without a file is not usable yet: keep waiting for the URL to appear.
        status = TaskStatus.RUNNING
    return VideoTask(
        id=video_task_id,
        status=status,
        raw_status=raw_status,
        progress=_progress(payload),
        video_url=video_url,
        thumbnail_url=_first_text(payload, _THUMBNAIL_PATHS),
        enhanced_prompt=_first_text(payload, _ENHANCED_PROMPT_PATHS),
        error=_error_text(payload) if status is TaskStatus.FAILED else None,
        updated_at=_timestamp(payload),
        raw=dict(payload),
    )


def _classify(raw_status: str | None, video_task_id: str, own: Mapping[str, TaskStatus]) -> TaskStatus:
    key = (raw_status or "").strip().lower()
    status = own.get(key) or _RAW_STATUS.get(key)
    if status is not None:
        return status
    if key not in _warned_statuses:
        _warned_statuses.add(key)
        log.warning(
            "Video task %r reported an unknown status %r; treating it as still running.",
            video_task_id,
            raw_status,
        )
    return TaskStatus.RUNNING


def _dig(payload: Any, path: tuple[str | int, ...]) -> Any:
    node = payload
    for key in path:
        if isinstance(key, int):
            if not isinstance(node, list) or len(node) <= key:
                return None
        elif not isinstance(node, Mapping):
            return None
        node = node[key] if isinstance(key, int) else node.get(key)
    return node


def _first_text(payload: Mapping[str, Any], paths: tuple[tuple[str | int, ...], ...]) -> str | None:
    for path in paths:
        value = _dig(payload, path)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _first_url(payload: Mapping[str, Any], paths: tuple[tuple[str | int, ...], ...]) -> str | None:
    text = _first_text(payload, paths)
    return text.strip() if text is not None and text.strip().lower().startswith(_URL_PREFIXES) else None


def _error_text(payload: Mapping[str, Any]) -> str:
    for path in _ERROR_PATHS:
        value = _dig(payload, path)
        if isinstance(value, Mapping):
            message = value.get("message") or value.get("code")
            if message:
                return str(message)
        elif isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value)
    return "the gateway gave no reason"


def _number(value: Any) -> float | None:
    """A finite number from a number or its text (``"50%"``); None otherwise: NaN and infinity (which
    Python's json reads, and ``float("inf")`` parses) are no numbers, and NaN is no JSON for events."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            number = float(value.strip().rstrip("%").strip())
        else:
            return None
    except (ValueError, OverflowError):  # "n/a"; an integer of 400 digits
        return None
    return number if math.isfinite(number) else None


def _progress(payload: Mapping[str, Any]) -> float | None:
    for path in _PROGRESS_FRACTION_PATHS:
        fraction = _number(_dig(payload, path))
        if fraction is not None:
            return _clamp(fraction * 100 if fraction <= 1 else fraction)
    for path in _PROGRESS_PERCENT_PATHS:
        raw = _dig(payload, path)
        percent = _number(raw)
        if percent is not None:
            return _clamp(percent)
    return None


def _clamp(value: float) -> float:
    return round(min(max(value, 0.0), 100.0), 2)


def _timestamp(payload: Mapping[str, Any]) -> datetime | None:
    """The first plausible status time: epoch numbers in any unit, or ISO text; None if none makes sense."""
    for path in _TIMESTAMP_PATHS:
        raw = _dig(payload, path)
        value = _number(raw)
        parsed = _from_epoch(value) if value is not None else _from_iso(raw)
        if parsed is not None and _EARLIEST <= parsed < _LATEST:
            return parsed
    return None


def _from_epoch(value: float) -> datetime | None:
    """Seconds, ms, µs or ns since the epoch, told apart by magnitude (grok sends s, veo/sora ms)."""
    if not math.isfinite(value) or value <= 0:
        return None
    for divisor, below in _EPOCH_UNITS:
        if value < below:
            return datetime.fromtimestamp(value / divisor, tz=UTC)
    return None


def _from_iso(raw: Any) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        parsed = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None
