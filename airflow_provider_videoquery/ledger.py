"""A batch's ledger: the manifest (a snapshot, replaced whole) and a journal of the changes since.

Each event of a batch (a create's id, a stored video, a final outcome) is made durable with work that
does not grow with the batch: one appended line, fsync'd, on a local disk; one small object on an
object store (which cannot append). Now and then the journal is folded into the manifest (compaction):
the manifest is replaced whole, as a reader must never see half of it, and then the journal is dropped.

Every change carries a sequence number, and every entry the number of the last change applied to it,
so replaying a journal onto a manifest that already holds some of it changes nothing: a worker killed
in the middle of a compaction (the manifest replaced, the journal not yet dropped, or half dropped)
leaves a ledger that reads the same. :func:`read` (snapshot + journal) is the one way to read a
batch's state: the batch operator on every (re)start and resume, and anything else that looks at it.

Pure: no Airflow, no HTTP; storage through an fsspec filesystem, like :mod:`.manifest`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from airflow_provider_videoquery import manifest
from airflow_provider_videoquery._fs import is_local
from airflow_provider_videoquery.manifest import BatchInputError, Entry

#: The journal sits beside the manifest: ``manifest.jsonl.journal`` (a file on local disks, a folder of
#: small objects on object stores).
JOURNAL_SUFFIX = ".journal"
#: The entry field holding the sequence number of the last change applied to it.
SEQ = "ledger_seq"
#: What a change records of an entry: everything but the request, which only the manifest holds.
_SNAPSHOT_ONLY = frozenset({"request", "model"})
#: On an object store each journal object is one GET for the next reader: fold them past this many.
_MAX_JOURNAL_OBJECTS = 500


def journal_path(manifest_path: str) -> str:
    return manifest_path + JOURNAL_SUFFIX


def change_of(entry: Entry) -> dict[str, Any]:
    """What the journal records of ``entry``: its whole state and sequence number, without the request
    (a flag that ``to_json`` leaves out when unset is written either way, so a change can clear it)."""
    state = {name: value for name, value in entry.to_json().items() if name not in _SNAPSHOT_ONLY}
    state["replace"] = entry.replace
    return state


def apply_change(entry: Entry, change: dict[str, Any], where: str) -> Entry:
    """``entry`` with ``change`` applied, unless the entry already holds that change or a later one."""
    if int(change.get(SEQ) or 0) <= seq_of(entry):
        return entry
    return Entry.from_json({**entry.to_json(), **change, "request": entry.request}, where)


def seq_of(entry: Entry) -> int:
    return int(entry.extra.get(SEQ) or 0)


def read(fs: Any, path: str, source: str) -> list[Entry]:
    """The batch's entries in manifest order: the manifest with every journaled change applied."""
    entries, _ = _read(fs, path, source)
    return entries


def _read(fs: Any, path: str, source: str) -> tuple[list[Entry], int]:
    """The entries, and how many journal records (local) or objects (object store) were applied."""
    entries = manifest.read(fs, path, source)
    by_key = {entry.key: index for index, entry in enumerate(entries)}
    applied = 0
    for where, change in _journal(fs, journal_path(path), source):
        key = change.get("key")
        index = by_key.get(key) if isinstance(key, str) else None
        if index is None:
            raise BatchInputError(
                f"{where}: a change for key {key!r}, which the manifest {source} does not hold; was the "
                "manifest replaced by hand? Restore it, or remove the journal to start from the manifest "
                "alone (ids recorded only in the journal are then lost)."
            )
        entries[index] = apply_change(entries[index], change, where)
        applied += 1
    return entries, applied


def _journal(fs: Any, path: str, source: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each journaled change with where it was read, oldest first."""
    where = f"{source}{JOURNAL_SUFFIX}"
    if is_local(fs):
        if not os.path.exists(path):
            return
        with open(path, "rb") as handle:
            data = handle.read()
        yield from _changes(data, where, torn_tail=True)
        return
    fs.invalidate_cache(path)
    names = sorted(fs.find(path)) if fs.exists(path) else []
    contents = fs.cat(names) if names else {}
    for name in names:
        yield from _changes(contents[name], f"{where}/{name.rsplit('/', 1)[-1]}", torn_tail=False)


def _changes(data: bytes, where: str, torn_tail: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """The changes in ``data``; a last line cut short by a crash (no newline) is dropped when local."""
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: empty, or a write the crash cut short
    if tail.strip() and not torn_tail:
        lines.append(tail)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            change = json.loads(line)
        except ValueError:
            raise BatchInputError(
                f"{where} line {number} is not valid JSON: the journal is damaged."
            ) from None
        if not isinstance(change, dict):
            raise BatchInputError(f"{where} line {number} is not a change record.")
        yield f"{where} line {number}", change


class Ledger:
    """The ledger of one batch, held by the one task that works on it (the manifest's lease).

    :meth:`load` reads it; :meth:`record` makes changed entries durable before it returns (one append +
    fsync locally, one PUT on an object store); :meth:`compact` folds everything into the manifest.
    ``guard`` runs before every write and raises when this task may no longer write (its lease is gone).
    """

    def __init__(self, fs: Any, path: str, source: str, guard: Callable[[], None] | None = None) -> None:
        self.fs, self.path, self.source = fs, path, source
        self.guard = guard
        self.local = is_local(fs)
        self.seq = 0
        #: Journal records (local) or objects (object store) since the manifest was last written.
        self.journaled = 0
        self._handle: int | None = None

    def load(self) -> list[Entry]:
        """The entries (manifest + journal); later records continue after the highest sequence seen."""
        entries, self.journaled = _read(self.fs, self.path, self.source)
        self.seq = max((seq_of(entry) for entry in entries), default=0)
        return entries

    def record(self, entries: Sequence[Entry]) -> None:
        """Make ``entries``' current state durable: their changes go to the journal, in one write."""
        if not entries:
            return
        if self.guard is not None:
            self.guard()
        lines = []
        for entry in entries:
            self.seq += 1
            entry.extra[SEQ] = self.seq
            lines.append(json.dumps(change_of(entry), ensure_ascii=False) + "\n")
        data = "".join(lines).encode()
        if self.local:
            self._append(data)
            self.journaled += len(entries)
        else:
            first = self.seq - len(entries) + 1
            self.fs.pipe_file(f"{journal_path(self.path)}/{first:012d}.jsonl", data)
            self.journaled += 1

    def wants_compaction(self, total: int) -> bool:
        """Whether the journal has grown enough, next to a manifest of ``total`` entries, to be folded:
        a reader replays at most about a quarter of the manifest again (and at most a few hundred
        objects on an object store), so a fold costs O(1) per change, amortized."""
        if self.local:
            return self.journaled > max(256, total // 4)
        return self.journaled > min(_MAX_JOURNAL_OBJECTS, max(64, total // 4))

    def compact(self, entries: Iterable[Entry]) -> None:
        """Write the manifest whole with every entry's state, then drop the journal it now holds."""
        if self.guard is not None:
            self.guard()
        manifest.write(self.fs, self.path, entries)
        journal = journal_path(self.path)
        if self.local:
            self._close()
            if os.path.exists(journal):
                os.remove(journal)
        else:
            self.fs.invalidate_cache(journal)
            names = sorted(self.fs.find(journal)) if self.fs.exists(journal) else []
            if names:
                self.fs.rm(names)
        self.journaled = 0

    def close(self) -> None:
        self._close()

    def _append(self, data: bytes) -> None:
        if self._handle is None:
            self._handle = _open_journal(journal_path(self.path))
        written = os.write(self._handle, data)
        if written != len(data):  # a full disk: the record is not durable, so the caller must not go on
            raise OSError(f"the journal {self.source}{JOURNAL_SUFFIX} took {written} of {len(data)} bytes")
        os.fdatasync(self._handle)

    def _close(self) -> None:
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_journal(path: str) -> int:
    """The local journal opened for appending, made durable as a name, and cut back to its last whole
    line: a record a crash cut short is dropped by readers, and must not run into the next one."""
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    existed = os.path.exists(path)
    handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(handle).st_size
        if size:
            whole = _whole_lines(handle, size)
            if whole < size:
                os.ftruncate(handle, whole)
        if not existed:
            directory = os.open(parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    except BaseException:
        os.close(handle)
        raise
    return handle


def _whole_lines(handle: int, size: int, block: int = 64 * 1024) -> int:
    """The length of the file's part that ends in a newline (0 when no line is whole)."""
    end = size
    while end > 0:
        start = max(0, end - block)
        chunk = os.pread(handle, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


__all__ = ["JOURNAL_SUFFIX", "Ledger", "apply_change", "change_of", "journal_path", "read"]
