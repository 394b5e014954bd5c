"""Which videos a DAG run (or one task instance) has, as cards; pure: no Airflow, no I/O.

A card comes from a ``VideoDownloadOperator`` task instance (its ``video`` XCom, or its state while it
has none) or from one line of a ``VideoBatchOperator``'s ledger. The same cards answer which stored
objects may be served: only a URI that a card names, inside the folder its task wrote to.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow_provider_videoquery import manifest
from airflow_provider_videoquery.ui import xcom

#: The operators whose task instances the gallery shows (``task_instance.operator``).
DOWNLOAD_OPERATOR = "VideoDownloadOperator"
BATCH_OPERATOR = "VideoBatchOperator"
VIDEO_OPERATORS = frozenset({DOWNLOAD_OPERATOR, BATCH_OPERATOR})
#: The XCom keys the gallery reads.
XCOM_KEYS = (xcom.VIDEO_KEY, xcom.LEDGER_KEY)

#: Object stores only: the api-server never fetches a web URL (or a data: URI) on a browser's behalf.
_REFUSED_SCHEMES = frozenset({"http", "https", "ftp", "data", "javascript"})
#: Task instance states in which a download has no video and never will (without a rerun).
_FAILED_STATES = frozenset({"failed", "upstream_failed"})
_NO_CARD_STATES = frozenset({"skipped", "removed", "success"})


class Status(StrEnum):
    """A card's group: what the counts, the filter and the card's colour show."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    WAITING = "waiting"
    NOT_CREATED = "not_created"


class Kind(StrEnum):
    """What of a card is served: the video or its stored thumbnail."""

    VIDEO = "video"
    THUMBNAIL = "thumbnail"


#: A ledger's own status → the card's group (the card keeps the ledger's word as ``state``).
_LEDGER_STATUS = {
    manifest.Status.PENDING: Status.NOT_CREATED,
    manifest.Status.RUNNING: Status.WAITING,
    manifest.Status.SUCCEEDED: Status.SUCCEEDED,
    manifest.Status.FAILED: Status.FAILED,
    manifest.Status.UNCERTAIN: Status.FAILED,
    manifest.Status.TIMEOUT: Status.FAILED,
    manifest.Status.ERROR: Status.FAILED,
}


@dataclass(frozen=True)
class Ledger:
    """Where a batch keeps its ledger (the ``ledger`` XCom of ``VideoBatchOperator``)."""

    manifest: str
    destination: str
    conn_id: str | None = None

    @classmethod
    def from_xcom(cls, value: Any) -> Ledger | None:
        if not isinstance(value, Mapping):
            return None
        uri, folder = value.get("manifest"), value.get("destination")
        if not isinstance(uri, str) or not isinstance(folder, str):
            return None
        conn_id = value.get("conn_id")
        return cls(uri, folder, conn_id if isinstance(conn_id, str) else None)


@dataclass(frozen=True)
class TaskRecord:
    """One task instance of the run as the gallery needs it: its state and the XComs it read."""

    task_id: str
    map_index: int
    state: str | None
    operator: str | None
    xcoms: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"


@dataclass(frozen=True)
class Card:
    """One video: what was asked, what became of it, where it is stored."""

    task_id: str
    map_index: int
    key: str
    source: str  # "download" or "batch"
    status: Status
    state: str
    prompt: str | None = None
    model: str | None = None
    error: str | None = None
    uri: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    content_type: str | None = None
    thumbnail: str | None = None
    video_task_id: str | None = None
    created_at: str | None = None
    stored_at: str | None = None
    #: The storage connection of ``uri`` (not shown: the api-server opens the object with it).
    conn_id: str | None = None
    #: The folder this card's objects must be in to be served.
    folder: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "map_index": self.map_index,
            "key": self.key,
            "source": self.source,
            "status": self.status.value,
            "state": self.state,
            "prompt": self.prompt,
            "model": self.model,
            "error": self.error,
            "uri": self.uri,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "thumbnail": self.thumbnail,
            "video_task_id": self.video_task_id,
            "created_at": self.created_at,
            "stored_at": self.stored_at,
        }


@dataclass
class Gallery:
    """The cards of a run or task instance, and what could not be read (a ledger that is gone, …)."""

    cards: list[Card]
    problems: list[str] = field(default_factory=list)


#: Reads a batch's entries; the routes pass the one reader of ledgers (``manifest.read``).
LedgerReader = Callable[[Ledger], Sequence[manifest.Entry]]


def is_video_task(record: TaskRecord) -> bool:
    return record.operator in VIDEO_OPERATORS or any(key in record.xcoms for key in XCOM_KEYS)


def gallery(records: Iterable[TaskRecord], read_ledger: LedgerReader) -> Gallery:
    """The cards of ``records`` in task, map index and ledger order."""
    result = Gallery(cards=[])
    for record in sorted(records, key=lambda r: (r.task_id, r.map_index)):
        if not is_video_task(record):
            continue
        ledger = Ledger.from_xcom(record.xcoms.get(xcom.LEDGER_KEY))
        if ledger is not None:
            try:
                entries = read_ledger(ledger)
            except Exception as err:  # a missing store, a manifest being replaced, no credentials
                result.problems.append(
                    f"{record.label}: cannot read the manifest {ledger.manifest} ({type(err).__name__}: "
                    f"{err})."
                )
                continue
            result.cards.extend(batch_card(record, ledger, entry) for entry in entries)
        elif record.operator == BATCH_OPERATOR:
            continue  # not started yet: it records its ledger first thing
        else:
            card = download_card(record)
            if card is not None:
                result.cards.append(card)
    return result


def download_card(record: TaskRecord) -> Card | None:
    """A download's card: its stored video, or why there is none (yet)."""
    video = record.xcoms.get(xcom.VIDEO_KEY)
    if isinstance(video, Mapping) and isinstance(video.get("uri"), str):
        uri = str(video["uri"])
        return Card(
            task_id=record.task_id,
            map_index=record.map_index,
            key=_stem(uri),
            source="download",
            status=Status.SUCCEEDED,
            state=Status.SUCCEEDED.value,
            prompt=_text(video.get("prompt")),
            model=_text(video.get("model")),
            uri=uri,
            bytes=_int(video.get("bytes")),
            sha256=_text(video.get("sha256")),
            content_type=_text(video.get("content_type")),
            thumbnail=_text(video.get("thumbnail")),
            video_task_id=_text(video.get("video_task_id")),
            created_at=_when(video.get("created_at")),
            stored_at=_when(video.get("stored_at")),
            conn_id=_text(video.get("conn_id")),
            folder=_parent(uri),
        )
    state = record.state or "none"
    if state in _NO_CARD_STATES:
        return None
    failed = state in _FAILED_STATES
    return Card(
        task_id=record.task_id,
        map_index=record.map_index,
        key=record.label,
        source="download",
        status=Status.FAILED if failed else Status.WAITING,
        state=state,
        error=(
            f"Task {record.label} is {state} without a stored video; its log says why." if failed else None
        ),
    )


def batch_card(record: TaskRecord, ledger: Ledger, entry: manifest.Entry) -> Card:
    """One ledger line as a card."""
    return Card(
        task_id=record.task_id,
        map_index=record.map_index,
        key=entry.key,
        source="batch",
        status=_LEDGER_STATUS.get(entry.status, Status.FAILED),
        state=entry.status.value,
        prompt=_text(entry.request.get("prompt")),
        model=entry.model or None,
        error=entry.error,
        uri=entry.uri,
        bytes=entry.bytes,
        sha256=entry.sha256,
        content_type="video/mp4" if entry.uri else None,
        video_task_id=entry.video_task_id,
        created_at=_when(entry.extra.get("created_at")),
        stored_at=_when(entry.extra.get("stored_at")),
        conn_id=ledger.conn_id,
        folder=ledger.destination,
    )


# -- counting and paging ----------------------------------------------------------------------------


def counts(cards: Iterable[Card]) -> dict[str, int]:
    """How many cards are in each group, and the total."""
    tally = dict.fromkeys((status.value for status in Status), 0)
    for card in cards:
        tally[card.status.value] += 1
    return {"total": sum(tally.values()), **tally}


@dataclass(frozen=True)
class Page:
    """One page of cards (after the status filter) and the counts over all of them."""

    counts: dict[str, int]
    total: int
    offset: int
    limit: int
    items: list[Card]


def page(cards: Sequence[Card], status: Status | None, offset: int, limit: int) -> Page:
    """Cards ``offset`` to ``offset + limit`` of those in ``status`` (all when None)."""
    chosen = [card for card in cards if card.status is status] if status is not None else list(cards)
    offset, limit = max(0, offset), max(1, limit)
    return Page(counts(cards), len(chosen), offset, limit, chosen[offset : offset + limit])


def find(cards: Iterable[Card], key: str) -> Card | None:
    return next((card for card in cards if card.key == key), None)


# -- what may be served -----------------------------------------------------------------------------


def servable(card: Card, kind: Kind) -> str | None:
    """The URI to serve for ``kind`` of ``card``, or None when there is none or it may not be served.

    Only an object store's URI (never a web URL), with no ``..``/``.`` segment (encoded or not), no
    query or fragment, and inside the card's folder: a batch's destination, or for a download's
    thumbnail the folder of its video. A line changed by hand cannot make the api-server read
    anything else.
    """
    uri = card.uri if kind is Kind.VIDEO else card.thumbnail
    if not uri or not _clean(uri):
        return None
    if card.folder is not None and not _inside(uri, card.folder):
        return None
    return uri


def _clean(uri: str) -> bool:
    parts = urlsplit(uri)
    if not parts.scheme or parts.scheme.lower() in _REFUSED_SCHEMES or parts.query or parts.fragment:
        return False
    path = unquote(parts.path)
    if "\\" in path or "\x00" in path:
        return False
    return not any(segment in (".", "..") for segment in path.split("/"))


def _inside(uri: str, folder: str) -> bool:
    target, root = urlsplit(uri), urlsplit(folder)
    if (target.scheme.lower(), target.netloc) != (root.scheme.lower(), root.netloc):
        return False
    prefix, path = unquote(root.path).rstrip("/") + "/", unquote(target.path)
    return path.startswith(prefix) and len(path) > len(prefix)


def _parent(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}{posixpath.dirname(parts.path)}/"


def _stem(uri: str) -> str:
    name = posixpath.basename(urlsplit(uri).path)
    return name.rsplit(".", 1)[0] if "." in name else name


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _when(value: Any) -> str | None:
    """A record's time (ISO text or epoch seconds) as ISO 8601 UTC."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC).isoformat(timespec="seconds")
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC).isoformat(timespec="seconds")
    return None
