"""A batch's manifest: one JSON line per request, the durable record of what was paid for and stored.

Pure: no Airflow, no HTTP. It reads and validates requests (a list or JSONL lines), merges them with a
manifest left by an earlier run (ids recorded there are reused, never paid for again), and writes the
manifest whole through an fsspec filesystem so that a reader sees the old or the new file, never half.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from airflow_provider_videoquery._fs import is_local, write_synced

#: A key names the file ``<key>.mp4``: letters, digits, ``.``, ``_``, ``-``; no leading dot.
_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,149}")


class BatchInputError(ValueError):
    """The requests (or the manifest they meet) cannot be used; nothing has been paid for."""


class Status(StrEnum):
    """Where one request of a batch is."""

    #: Not created yet (or the gateway surely did not take the create).
    PENDING = "pending"
    #: A create the gateway may have received but answered with no id: never re-sent automatically.
    UNCERTAIN = "uncertain"
    #: Created (it has an id) and not finished or not stored yet.
    RUNNING = "running"
    #: Stored and verified at ``uri``.
    SUCCEEDED = "succeeded"
    #: The gateway failed the task, or refused the create.
    FAILED = "failed"
    #: Not finished within the timeout; a rerun polls it again.
    TIMEOUT = "timeout"
    #: Finished but not stored (or unknown to the gateway); a rerun polls and stores it again.
    ERROR = "error"


#: Outcomes that count against ``max_failed``.
NOT_SUCCEEDED = frozenset({Status.UNCERTAIN, Status.FAILED, Status.TIMEOUT, Status.ERROR})


@dataclass(slots=True)
class Entry:
    """One request and what became of it. ``request`` is the create body (``model``, ``prompt``, …)."""

    key: str
    request: dict[str, Any]
    video_task_id: str | None = None
    status: Status = Status.PENDING
    uri: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    error: str | None = None
    #: Epoch seconds the current wait for the task began (its deadline counts from here).
    waiting_since: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The object at this key's path is this batch's own video but no longer verifies: the next store
    #: replaces it (written beside it, then moved over it); it is never deleted first.
    replace: bool = False
    #: The key was derived from the request's content (the request has no ``key``); not recorded.
    derived: bool = field(default=False, compare=False, repr=False)

    @property
    def model(self) -> str:
        return str(self.request.get("model", ""))

    def created(self, video_task_id: str, now: float) -> None:
        """The gateway returned an id: the task is live from ``now``."""
        self.video_task_id = video_task_id
        self.wait_again(now)

    def wait_again(self, now: float) -> None:
        """Poll (and store) a task that has an id, from a fresh deadline counted from ``now``."""
        self._outcome(Status.RUNNING)
        self.waiting_since = now

    def still_running(self) -> None:
        """Back to waiting on the same deadline: the gateway reported the task finished, then running."""
        self._outcome(Status.RUNNING)

    def stored(self, uri: str, size: int, sha256: str) -> None:
        self._outcome(Status.SUCCEEDED)
        self.uri, self.bytes, self.sha256, self.replace = uri, size, sha256, False

    def ended(self, status: Status, error: str) -> None:
        """Finished without a stored video (``failed``, ``timeout``, ``error``, ``uncertain``)."""
        self._outcome(status)
        self.error = error

    def _outcome(self, status: Status) -> None:
        self.status = status
        self.uri = self.sha256 = self.error = None
        self.bytes = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "model": self.model,
            "video_task_id": self.video_task_id,
            "status": self.status.value,
            "uri": self.uri,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "error": self.error,
            "waiting_since": self.waiting_since,
            "request": self.request,
            **({"replace": True} if self.replace else {}),
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> Entry:
        data = dict(data)
        try:
            key, request = data.pop("key"), data.pop("request")
            status = Status(data.pop("status", Status.PENDING))
        except (KeyError, ValueError) as err:
            raise BatchInputError(f"{where}: not a manifest entry ({err}).") from None
        if not isinstance(key, str) or not isinstance(request, dict):
            raise BatchInputError(f"{where}: a manifest entry needs a string key and a request object.")
        data.pop("model", None)
        known = {name: data.pop(name, None) for name in ("video_task_id", "uri", "sha256", "error")}
        size, since = data.pop("bytes", None), data.pop("waiting_since", None)
        return cls(
            key,
            request,
            status=status,
            bytes=int(size) if size is not None else None,
            waiting_since=float(since) if since is not None else None,
            replace=bool(data.pop("replace", False)),
            extra=data,
            **known,
        )


# -- requests ---------------------------------------------------------------------------------------


def parse_jsonl(lines: Iterable[str | bytes], source: str) -> list[tuple[str, Any]]:
    """The JSON objects of a JSONL text with where each came from (``source line N``); blank lines skip."""
    return list(iter_jsonl(lines, source))


def iter_jsonl(lines: Iterable[str | bytes], source: str) -> Iterator[tuple[str, Any]]:
    """:func:`parse_jsonl` one object at a time (a 100,000-line manifest is never held twice)."""
    for number, raw in enumerate(lines, start=1):
        line = raw.decode() if isinstance(raw, bytes) else raw
        if not line.strip():
            continue
        where = f"{source} line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise BatchInputError(f"{where} is not valid JSON ({err.msg} at column {err.colno}).") from None
        yield where, item


def parse_requests(items: Iterable[tuple[str, Any]]) -> list[Entry]:
    """Validate requests (``where`` names each one in errors) and give each a key; all errors at once.

    A request without a ``key`` gets one from its content (:func:`derived_key`), so adding, removing or
    reordering other requests never changes it. Keys that differ only in case are refused: they would
    name one file on a case-insensitive store.
    """
    entries: list[Entry] = []
    problems: list[str] = []
    seen: dict[str, tuple[str, str]] = {}
    occurrences: Counter[str] = Counter()
    for where, item in items:
        try:
            entry = _request(where, item, occurrences)
        except BatchInputError as err:
            problems.append(str(err))
            continue
        other = seen.get(entry.key.casefold())
        if other is not None:
            key, other_where = other
            if key == entry.key:
                problems.append(f"{where}: key {entry.key!r} is already used by {other_where}.")
            else:
                problems.append(
                    f"{where}: key {entry.key!r} differs only in case from {key!r} ({other_where}); on a "
                    "case-insensitive store (macOS, Windows, some mounts) both are one file. Rename one."
                )
            continue
        seen[entry.key.casefold()] = (entry.key, where)
        entries.append(entry)
    if problems:
        raise BatchInputError(listed(problems, "request(s) cannot be used"))
    if not entries:
        raise BatchInputError("The batch has no requests.")
    return entries


def listed(problems: list[str], what: str, limit: int = 20) -> str:
    """``N <what>:`` and the first ``limit`` problems, one a line."""
    shown = "\n  ".join(problems[:limit])
    more = f"\n  … and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} {what}:\n  {shown}{more}"


def _request(where: str, item: Any, occurrences: Counter[str]) -> Entry:
    if not isinstance(item, Mapping):
        raise BatchInputError(f"{where}: a request must be a JSON object, got {type(item).__name__}.")
    body = _json_form({str(name): value for name, value in item.items() if name != "key"}, where)
    for name in ("model", "prompt"):
        if not isinstance(body.get(name), str) or not body[name].strip():
            raise BatchInputError(f"{where}: {name!r} is missing or empty.")
    key = item.get("key")
    derived = key is None
    if derived:
        digest = content_digest(body)
        occurrences[digest] += 1
        key = derived_key(body, occurrences[digest])
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise BatchInputError(
            f"{where}: key {key!r} must be 1-150 letters, digits, '.', '_' or '-', not starting with "
            "'.' (it names the file <key>.mp4)."
        )
    return Entry(key, body, derived=derived)


def _json_form(body: dict[str, Any], where: str) -> dict[str, Any]:
    """The request as JSON gives it back (tuples become lists), as the manifest records it: a request
    and its recorded copy then compare equal."""
    try:
        normal: dict[str, Any] = json.loads(json.dumps(body, ensure_ascii=False))
    except (TypeError, ValueError) as err:
        raise BatchInputError(f"{where}: the request is not JSON ({err}).") from None
    return normal


def content_digest(body: Mapping[str, Any]) -> str:
    """A digest of a request's content (key order does not matter)."""
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def derived_key(body: Mapping[str, Any], occurrence: int = 1) -> str:
    """The key of a request without one: a digest of its content, and for the n-th of several identical
    requests ``-n`` (n >= 2). Independent of the request's position."""
    digest = content_digest(body)[:12]
    return digest if occurrence <= 1 else f"{digest}-{occurrence}"


#: The keys 0.1.0 derived: the request's position and a digest of its content (``00042-3f9a0c1b2d``).
_POSITIONAL_KEY = re.compile(r"(\d{5,})-([0-9a-f]{10})")


def _positional_digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _is_positional(entry: Entry) -> bool:
    """Whether ``entry``'s key is one 0.1.0 derived from its position and this very request."""
    match = _POSITIONAL_KEY.fullmatch(entry.key)
    return match is not None and match.group(2) == _positional_digest(entry.request)


# -- merging with a recorded manifest ---------------------------------------------------------------


Pairs = list[tuple[Entry, Entry | None]]


def pair(requests: list[Entry], recorded: list[Entry]) -> tuple[Pairs, list[Entry]]:
    """Each request with the recorded entry it continues (or None), and the recorded entries no request
    continues (in their order).

    A request continues the entry of its key. A request without an explicit key whose key is not
    recorded also continues an entry written by 0.1.0 under a positional key (``00042-3f9a0c1b2d``) for
    the same request, the n-th identical request the n-th such entry: such an entry keeps its key (and
    its file), so nothing recorded there is paid for again.
    """
    by_key = {entry.key: entry for entry in recorded}
    pairs: Pairs = [(request, by_key.pop(request.key, None)) for request in requests]
    positional: dict[str, list[Entry]] = {}
    for entry in by_key.values():
        if _is_positional(entry):
            positional.setdefault(content_digest(entry.request), []).append(entry)
    if positional:
        for index, (request, old) in enumerate(pairs):
            if old is None and request.derived:
                candidates = positional.get(content_digest(request.request))
                if candidates:
                    pairs[index] = (request, by_key.pop(candidates.pop(0).key))
    return pairs, list(by_key.values())


def shard_of(key: str, shards: int) -> int:
    """The shard (0 … ``shards`` - 1) that ``key`` belongs to: a digest of the key alone, so a request
    stays in its shard whatever the list's order or length (a derived key is its content's digest)."""
    digest = hashlib.sha256(key.casefold().encode()).digest()
    return int.from_bytes(digest[:8], "big") % max(1, shards)


def sharded_name(name: str, shard: int, shards: int) -> str:
    """The manifest file name of one shard: ``manifest.jsonl`` → ``manifest-002-of-004.jsonl``."""
    if shards <= 1:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, "jsonl"
    return f"{stem}-{shard:03d}-of-{shards:03d}.{suffix}"


def adopted(requests: list[Entry], siblings: Iterable[list[Entry]]) -> list[Entry]:
    """Entries other ledgers of the same destination recorded for these requests (the first one that
    holds an id, or else any, per key): what a batch split anew into shards carries over, so that a
    request that moved to another shard is not paid for again."""
    found: dict[str, Entry] = {}
    for entries in siblings:
        for request, old in pair(requests, entries)[0]:
            if old is None:
                continue
            kept = found.get(request.key)
            if kept is None or (kept.video_task_id is None and old.video_task_id is not None):
                found[request.key] = old
    return list(found.values())


def merge(
    requests: list[Entry], recorded: list[Entry], now: float, retry_uncertain: bool = False
) -> tuple[list[Entry], list[Entry]]:
    """The entries a (re)run works on (one per request, in request order) and the manifest's other
    entries (kept untouched at the end).

    A recorded id is always reused: a task still running, timed out or not stored is polled again from
    a fresh deadline; a gateway failure stays final. Requests that never got an id are created again,
    except uncertain creates (unless ``retry_uncertain``). A key whose recorded request differs and was
    already paid for is refused, and so is a key that differs only in case from another recorded one.
    """
    pairs, others = pair(requests, recorded)
    folded = {entry.key.casefold(): entry.key for entry in others}
    merged: list[Entry] = []
    problems: list[str] = []
    for request, old in pairs:
        clash = folded.get(request.key.casefold())
        if clash is not None:
            problems.append(
                f"Key {request.key!r} differs only in case from {clash!r}, which the manifest already "
                "records; on a case-insensitive store both are one file. Rename it."
            )
        elif old is None:
            merged.append(request)
        elif old.request != request.request:
            if old.video_task_id is not None:
                problems.append(
                    f"Key {request.key!r} was already created from another request (video task "
                    f"{old.video_task_id!r}, model {old.model!r}); reusing it would store the wrong "
                    "video. Give the new request another key, or remove its line from the manifest."
                )
            merged.append(request)
        else:
            merged.append(_carried_over(old, now, retry_uncertain))
    if problems:
        raise BatchInputError(listed(problems, "request(s) clash with the manifest"))
    return merged, others


def _carried_over(entry: Entry, now: float, retry_uncertain: bool) -> Entry:
    if entry.video_task_id is not None:
        if entry.status in (Status.RUNNING, Status.TIMEOUT, Status.ERROR):
            entry.wait_again(now)
        return entry
    if entry.status is Status.UNCERTAIN and not retry_uncertain:
        return entry
    return Entry(entry.key, entry.request)


# -- reading and writing ----------------------------------------------------------------------------


def loads(text: str | Iterable[str | bytes], source: str) -> list[Entry]:
    """The entries of a manifest's text (or its lines); ``source`` names it in errors."""
    lines = text.splitlines() if isinstance(text, str) else text
    return [Entry.from_json(item, where) for where, item in iter_jsonl(lines, source)]


def dumps(entries: Iterable[Entry]) -> bytes:
    return "".join(json.dumps(entry.to_json(), ensure_ascii=False) + "\n" for entry in entries).encode()


def read(fs: Any, path: str, source: str) -> list[Entry]:
    """The manifest at ``path`` on an fsspec filesystem; none when it does not exist yet."""
    try:
        with fs.open(path, "rb") as handle:  # line by line: the file is never held whole beside its entries
            return loads(handle, source)
    except FileNotFoundError:
        return []


def write(fs: Any, path: str, entries: Iterable[Entry]) -> None:
    """Replace the manifest whole: a local file through a rename, an object store in one put.

    An object store never shows a partly written object, and a local rename is atomic, so a reader
    sees the previous manifest or this one.
    """
    data = dumps(entries)
    if is_local(fs):
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        temporary = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            write_synced(temporary, data)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        return
    fs.pipe_file(path, data)


def shared_ids(entries: Iterable[Entry]) -> dict[str, list[str]]:
    """Video task ids recorded for more than one key, with those keys (in order)."""
    keys: dict[str, list[str]] = {}
    for entry in entries:
        if entry.video_task_id is not None:
            keys.setdefault(entry.video_task_id, []).append(entry.key)
    return {task_id: names for task_id, names in keys.items() if len(names) > 1}


def counts(entries: Iterable[Entry]) -> dict[str, int]:
    """How many entries are in each status, and the total."""
    tally = Counter(entry.status.value for entry in entries)
    return {"total": sum(tally.values()), **{status.value: tally.get(status.value, 0) for status in Status}}
