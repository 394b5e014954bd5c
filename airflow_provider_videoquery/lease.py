"""An exclusive, expiring lease on a file (a batch's manifest): one task instance works on it at a time.

Pure: no Airflow, no HTTP; any fsspec filesystem. The lease lives beside the file it guards, in the
folder ``<path>.lease/``, as numbered generations (``000000000001.json``, …), each a small JSON record
of its holder (the task instance's identity and try), a random token and an expiry. The only atomic
step is *create a file that does not exist yet*: a hard link on a local disk, a conditional PUT
(``If-None-Match: *``) on S3. Taking the lease is creating the next generation, so of two runs that
try at once exactly one wins; the holder renews it by rewriting its own generation, and it is
taken over only by creating the next one, which happens only when it has expired, was released, or is
held by an earlier try of the same task instance (Airflow starts a retry only once the previous try
has ended; an orphaned process of that try finds its lease gone at its next check and stops).

A holder checks its lease (:meth:`Lease.check`) before each step that must not happen twice: the
newest generation must still be its own, with its token. Generation numbers only grow, so they also
order the holders over time (a fencing token for whatever the lease guards).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from airflow_provider_videoquery._fs import is_local, protocol, write_synced

__all__ = [
    "Holder",
    "Lease",
    "LeaseError",
    "LeaseHeldError",
    "LeaseLostError",
    "Owner",
    "acquire",
    "atomic_create_supported",
    "current",
    "lease_folder",
]

#: Stores whose "create if absent" is atomic through ``pipe_file(mode="create")`` (S3: If-None-Match).
_ATOMIC_CREATE = frozenset({"s3", "s3a", "memory"})
_SUFFIX = ".json"


@dataclass(frozen=True)
class Owner:
    """Who holds a lease: a task instance and its try."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    try_number: int = 1

    def same_task_instance(self, other: Owner) -> bool:
        return (self.dag_id, self.run_id, self.task_id, self.map_index) == (
            other.dag_id,
            other.run_id,
            other.task_id,
            other.map_index,
        )

    def describe(self) -> str:
        index = f", map index {self.map_index}" if self.map_index >= 0 else ""
        return (
            f"DAG {self.dag_id!r}, run {self.run_id!r}, task {self.task_id!r}{index} (try {self.try_number})"
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Owner:
        return cls(
            str(data["dag_id"]),
            str(data["run_id"]),
            str(data["task_id"]),
            int(data.get("map_index", -1)),
            int(data.get("try_number", 1)),
        )


@dataclass(frozen=True)
class Holder:
    """What one generation of a lease says."""

    owner: Owner
    token: str
    generation: int
    expires_at: float
    released: bool = False
    host: str = ""
    pid: int = 0

    def describe(self) -> str:
        until = datetime.fromtimestamp(self.expires_at, tz=UTC).isoformat(timespec="seconds")
        where = f" on {self.host} (pid {self.pid})" if self.host else ""
        return f"{self.owner.describe()}{where}, until {until}"

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, generation: int) -> Holder:
        record = json.loads(data)
        return cls(
            owner=Owner.from_json(record["owner"]),
            token=str(record["token"]),
            generation=generation,
            expires_at=float(record["expires_at"]),
            released=bool(record.get("released", False)),
            host=str(record.get("host", "")),
            pid=int(record.get("pid", 0)),
        )


class LeaseError(Exception):
    """The lease cannot be had or kept; ``path`` is the file it guards."""

    def __init__(self, message: str, path: str, holder: Holder | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.holder = holder


class LeaseHeldError(LeaseError):
    """Another task instance holds the lease and it has not expired."""


class LeaseLostError(LeaseError):
    """The lease was taken over (it had expired, or a later try of the same task took it)."""


def lease_folder(path: str) -> str:
    """Where the lease on ``path`` lives."""
    return f"{path.rstrip('/')}.lease"


def current(fs: Any, path: str) -> Holder | None:
    """The newest generation of the lease on ``path``, or None when nobody ever took it."""
    folder = lease_folder(path)
    generations = _generations(fs, folder)
    if not generations:
        return None
    return _read(fs, folder, generations[-1])


def acquire(
    fs: Any,
    path: str,
    owner: Owner,
    ttl: float,
    *,
    wait: float = 0.0,
    poll: float = 1.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Lease:
    """Take the lease on ``path`` for ``ttl`` seconds, or adopt it when ``owner`` holds it already (the
    same try, resumed in a new process).

    While another task instance holds it, try again every ``poll`` seconds for up to ``wait`` seconds,
    then raise :class:`LeaseHeldError` naming the holder.
    """
    folder = lease_folder(path)
    give_up = clock() + max(0.0, wait)
    while True:
        generations = _generations(fs, folder)
        holder = _read(fs, folder, generations[-1]) if generations else None
        now = clock()
        if holder is not None and holder.owner == owner and not holder.released:
            lease = Lease(fs, path, owner, holder.generation, uuid.uuid4().hex, now + ttl, clock)
            lease._write()  # a new token: a process of the same try still running is fenced out
            return lease
        if holder is None or _may_take_over(holder, owner, now):
            generation = (generations[-1] if generations else 0) + 1
            lease = Lease(fs, path, owner, generation, uuid.uuid4().hex, now + ttl, clock)
            if lease._create():
                lease._forget_older(generations)
                return lease
            continue  # another run created that generation first: look again
        if now >= give_up:
            raise LeaseHeldError(f"{path} is in use by {holder.describe()}.", path, holder)
        sleep(min(poll, max(0.0, give_up - now)) or poll)


def _may_take_over(holder: Holder, owner: Owner, now: float) -> bool:
    if holder.released or now >= holder.expires_at:
        return True
    return holder.owner.same_task_instance(owner) and holder.owner.try_number < owner.try_number


class Lease:
    """A lease held by this process (see the module docstring)."""

    def __init__(
        self,
        fs: Any,
        path: str,
        owner: Owner,
        generation: int,
        token: str,
        expires_at: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fs, self.path, self.owner = fs, path, owner
        self.generation, self.token, self.expires_at = generation, token, expires_at
        self._clock = clock
        self._folder = lease_folder(path)
        self._lock = threading.Lock()
        self._lost: LeaseLostError | None = None

    def check(self) -> None:
        """Raise :class:`LeaseLostError` unless this process still holds the lease."""
        with self._lock:
            if self._lost is not None:
                raise self._lost
            generations = _generations(self.fs, self._folder)
            newest = _read(self.fs, self._folder, generations[-1]) if generations else None
            if newest is None or newest.generation != self.generation or newest.token != self.token:
                self._lost = LeaseLostError(
                    f"The lease on {self.path} held by {self.owner.describe()} was taken over"
                    + (f" by {newest.describe()}" if newest is not None else " (its files are gone)")
                    + ".",
                    self.path,
                    newest,
                )
                raise self._lost

    def renew(self, ttl: float) -> None:
        """Hold it ``ttl`` seconds from now (checked first)."""
        self.hold_until(self._clock() + ttl)

    def hold_until(self, expires_at: float) -> None:
        """Hold it until ``expires_at`` (epoch seconds), e.g. across a deferral (checked first)."""
        self.check()
        with self._lock:
            self.expires_at = expires_at
            self._write()

    def release(self) -> None:
        """Let the next run take it at once; nothing happens when it was lost meanwhile."""
        with contextlib.suppress(LeaseError, OSError):
            self.check()
            with self._lock:
                self._write(released=True)

    @contextlib.contextmanager
    def kept_alive(self, ttl: float, every: float) -> Iterator[Lease]:
        """Renew the lease for ``ttl`` seconds every ``every`` seconds while the block runs (a worker
        storing one slow video for longer than ``ttl`` keeps it). A loss is raised by the next check."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                try:
                    self.renew(ttl)
                except LeaseLostError:
                    return
                except OSError:
                    continue  # the store hiccupped: the next beat tries again, well within ttl

        thread = threading.Thread(target=beat, name=f"lease:{self.path}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=30)

    # -- files ---------------------------------------------------------------------------------------

    def _file(self) -> str:
        return _name(self._folder, self.generation)

    def _data(self, released: bool = False) -> bytes:
        return Holder(
            self.owner,
            self.token,
            self.generation,
            self.expires_at,
            released,
            socket.gethostname(),
            os.getpid(),
        ).to_bytes()

    def _create(self) -> bool:
        """Create this generation's file if nobody has; False when another run created it first."""
        target, data = self._file(), self._data()
        if is_local(self.fs):
            os.makedirs(self._folder, exist_ok=True)
            temporary = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
            write_synced(temporary, data)
            try:
                os.link(temporary, target)  # atomic, and refuses an existing name
            except FileExistsError:
                return False
            finally:
                os.remove(temporary)
            return True
        try:
            self.fs.pipe_file(target, data, mode="create")
        except FileExistsError:
            return False
        except OSError:
            # Some stores answer a lost race with another error (409, 412 without the condition).
            existing = _read(self.fs, self._folder, self.generation)
            if existing is not None and existing.token != self.token:
                return False
            raise
        return True

    def _write(self, released: bool = False) -> None:
        """Rewrite this generation's file (only its holder writes it)."""
        target, data = self._file(), self._data(released)
        if is_local(self.fs):
            temporary = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
            write_synced(temporary, data)
            os.replace(temporary, target)
            return
        self.fs.pipe_file(target, data)

    def _forget_older(self, generations: list[int]) -> None:
        for generation in generations:
            with contextlib.suppress(OSError):
                self.fs.rm_file(_name(self._folder, generation))


def atomic_create_supported(fs: Any) -> bool:
    """Whether two runs taking the lease at once on ``fs`` are told apart by the store itself."""
    return is_local(fs) or protocol(fs) in _ATOMIC_CREATE


def _name(folder: str, generation: int) -> str:
    return f"{folder}/{generation:012d}{_SUFFIX}"


def _generations(fs: Any, folder: str) -> list[int]:
    """The generation numbers in ``folder``, oldest first (a fresh listing, not a cached one)."""
    with contextlib.suppress(Exception):
        fs.invalidate_cache(folder)
    try:
        names = fs.ls(folder, detail=False)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        base = str(name).rstrip("/").rsplit("/", 1)[-1]
        if base.endswith(_SUFFIX) and base[: -len(_SUFFIX)].isdigit():
            found.append(int(base[: -len(_SUFFIX)]))
    return sorted(found)


def _read(fs: Any, folder: str, generation: int) -> Holder | None:
    """The holder a generation names; None when it is gone. A file that is not a lease record (edited
    by hand) counts as released: the next run may take over."""
    try:
        data: bytes = fs.cat_file(_name(folder, generation))
    except FileNotFoundError:
        return None
    try:
        return Holder.from_bytes(data, generation)
    except (ValueError, KeyError, TypeError):
        return Holder(Owner("?", "?", "?"), "", generation, 0.0, released=True)
