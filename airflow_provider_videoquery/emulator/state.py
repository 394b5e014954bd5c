"""In-memory, thread-safe state of one emulator: tasks, faults, request log."""

from __future__ import annotations

import random
import re
import secrets
import string
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from .limits import CreateCounts, KeyLedger, Limits, Refusal, key_fingerprint
from .scenarios import DEFAULT_SCENARIO, Family, Fault, Kind, Scenario, classify_status, family_for_model

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class Task:
    id: str
    family: Family
    scenario: Scenario
    model: str
    body: dict[str, Any]
    video_name: str
    created_at: float = field(default_factory=time.time)
    #: Status queries answered with a state (the "poll" count that drives progress).
    polls: int = 0
    #: Status queries received, including those answered "task_not_exist" (unknown_for_polls).
    queries: int = 0
    #: Terminal successful answers given so far (for success_without_url_polls).
    successes: int = 0
    #: The kind of the last state served.
    last_kind: Kind | None = None
    #: The images its create brought (emulator.images.ReceivedImage), as the emulator took them.
    images: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class TaskState:
    """What one status query sees."""

    raw_status: str | None  # None = use the family's own word for `kind`
    kind: Kind
    progress: float  # 0..1
    show_video: bool


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    route: str
    task_id: str | None
    status: int
    time: float
    fault: str | None = None


@dataclass
class _FaultSlot:
    fault: Fault
    seen: int = 0
    hits: int = 0


def new_task_id(family: Family, model: str) -> str:
    """An id in the style the family's gateway returns."""
    if family == "vidu":
        return str(800_000_000_000_000_000 + secrets.randbelow(100_000_000_000_000_000))
    if family == "openai":
        return f"video_{secrets.token_hex(16)}"
    if family == "newapi":
        alphabet = string.ascii_letters + string.digits
        return "task_" + "".join(secrets.choice(alphabet) for _ in range(32))
    if family == "sora":
        alphabet = string.digits + string.ascii_lowercase
        tail = "".join(secrets.choice(alphabet) for _ in range(26))
        return f"{model}:task_{tail}"
    if family == "grok":
        return f"{model}:{uuid.uuid4()}"
    alphabet = string.ascii_letters + string.digits
    tail = "".join(secrets.choice(alphabet) for _ in range(10))
    return f"{model}:{int(time.time())}-{tail}"


class EmulatorState:
    """Everything an emulator knows. All methods are thread-safe (one lock, no awaits inside)."""

    def __init__(
        self,
        api_key: str | None = "test-key",
        default: Scenario = DEFAULT_SCENARIO,
        seed: int = 0,
        max_records: int = 200_000,
    ) -> None:
        self.api_key = api_key
        self.default = default
        self._seed = seed
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._by_video: dict[str, str] = {}
        self._faults: list[_FaultSlot] = []
        self._rng = random.Random(seed)
        self._records: deque[RequestRecord] = deque(maxlen=max_records)
        self._counts: Counter[tuple[str, str | None, int]] = Counter()
        #: Per-key limits of the create routes (kept by `reset`, like ``default``).
        self.limits = Limits()
        self._ledger = KeyLedger()

    # ---- tasks -------------------------------------------------------------------------------
    def add_task(
        self,
        task_id: str,
        scenario: Scenario | None = None,
        *,
        model: str | None = None,
        family: Family | None = None,
        body: dict[str, Any] | None = None,
    ) -> Task:
        scenario = scenario or self.default
        model = model or (task_id.split(":", 1)[0] if ":" in task_id else "veo3.1-fast")
        fam: Family = scenario.family or family or family_for_model(model)
        base = _UNSAFE.sub("_", task_id)[:120] or "video"
        with self._lock:
            old = self._tasks.pop(task_id, None)
            if old is not None:
                self._by_video.pop(old.video_name, None)
            name, n = base, 1
            while name in self._by_video:
                n += 1
                name = f"{base}-{n}"
            task = Task(task_id, fam, scenario, model, dict(body or {}), name)
            self._tasks[task_id] = task
            self._by_video[name] = task_id
            return task

    def get_task(self, task_id: str) -> Task | None:
        with self._lock:
            return self._tasks.get(task_id)

    def task_for_video(self, name: str) -> Task | None:
        with self._lock:
            tid = self._by_video.get(name)
            return None if tid is None else self._tasks.get(tid)

    def task_count(self) -> int:
        with self._lock:
            return len(self._tasks)

    def advance(self, task_id: str) -> tuple[Task, TaskState] | None:
        """One status query: None if the task is unknown (or still unknown by its scenario)."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return None
            task.queries += 1
            if task.queries <= task.scenario.unknown_for_polls:
                return None
            task.polls += 1
            st = self._state_at(task, task.polls, time.time())
            if st.kind == "success":
                task.successes += 1
                if task.successes <= task.scenario.success_without_url_polls:
                    st = TaskState(st.raw_status, st.kind, st.progress, False)
            task.last_kind = st.kind
            return task, st

    def peek(self, task_id: str) -> tuple[Task, TaskState] | None:
        """The task's current state without counting a poll."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return None
            return task, self._state_at(task, task.polls, time.time())

    @staticmethod
    def _state_at(task: Task, polls: int, now: float) -> TaskState:
        sc = task.scenario
        if sc.statuses:
            raw = sc.statuses[min(max(polls, 1), len(sc.statuses)) - 1]
            kind = classify_status(raw)
            done = kind in ("success", "failed")
            progress = 1.0 if done else min(0.99, polls / (len(sc.statuses) + 1))
            return TaskState(raw, kind, progress, kind == "success")
        if sc.seconds_to_complete is not None:
            frac = (now - task.created_at) / sc.seconds_to_complete if sc.seconds_to_complete > 0 else 1.0
        else:
            need = max(sc.polls_to_complete, 1)
            frac = polls / need
        if frac >= 1.0 and polls >= 1:
            end: Kind = "success" if sc.outcome == "success" else "failed"
            return TaskState(None, end, 1.0, end == "success")
        waiting: Kind = "queued" if polls <= 1 else "running"
        return TaskState(None, waiting, max(0.0, min(frac, 0.99)), False)

    # ---- per-key create limits ---------------------------------------------------------------
    def _is_live(self, task_id: str) -> bool:
        task = self._tasks.get(task_id)
        return task is not None and self._state_at(task, task.polls, time.time()).kind not in (
            "success",
            "failed",
        )

    def admit_create(self, api_key: str | None) -> tuple[Refusal, dict[str, str]] | None:
        """None if this key may create now, else why not and the ``Retry-After`` header to send."""
        with self._lock:
            limits = self.limits
            refused = self._ledger.admit(key_fingerprint(api_key), limits, time.time(), self._is_live)
            return None if refused is None else (refused[0], limits.header(refused[1]))

    def note_create(self, api_key: str | None, task_id: str) -> None:
        """A create route made ``task_id`` for this key: count it, and as live until it finishes."""
        with self._lock:
            self._ledger.created(key_fingerprint(api_key), task_id, self.limits, time.time())

    def create_counts(self, api_key: str | None = None, *, every_key: bool = False) -> CreateCounts:
        """Creates accepted/refused and live tasks of one key (None/"" = no key), or of every key."""
        with self._lock:
            fingerprint = None if every_key else key_fingerprint(api_key)
            return self._ledger.counts(fingerprint, self._is_live)

    # ---- faults ------------------------------------------------------------------------------
    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(_FaultSlot(fault))

    def pick_fault(self, route: str, task_id: str | None, hopped: bool = False) -> Fault | None:
        with self._lock:
            for slot in self._faults:
                f = slot.fault
                if not f.matches(route, task_id):
                    continue
                if hopped and f.kind == "redirect":
                    continue
                if f.times is not None and slot.hits >= f.times:
                    continue
                slot.seen += 1
                if slot.seen <= f.skip:
                    continue
                if f.rate is not None and self._rng.random() >= f.rate:
                    continue
                slot.hits += 1
                return f
            return None

    # ---- log ---------------------------------------------------------------------------------
    def record(self, rec: RequestRecord) -> None:
        with self._lock:
            self._records.append(rec)
            self._counts[(rec.route, rec.task_id, rec.status)] += 1

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def count(self, route: str | None = None, task_id: str | None = None, status: int | None = None) -> int:
        with self._lock:
            return sum(
                n
                for (r, t, s), n in self._counts.items()
                if (route is None or r == route)
                and (task_id is None or t == task_id)
                and (status is None or s == status)
            )

    def stats(self, task_id: str | None = None) -> dict[str, Any]:
        with self._lock:
            by_route: Counter[str] = Counter()
            by_status: Counter[str] = Counter()
            for (r, t, s), n in self._counts.items():
                if task_id is not None and t != task_id:
                    continue
                by_route[r] += n
                by_status[str(s)] += n
            out: dict[str, Any] = {
                "total": sum(by_route.values()),
                "by_route": dict(by_route),
                "by_status": dict(by_status),
                "tasks": len(self._tasks),
                "creates": {
                    fp: self._ledger.counts(fp, self._is_live).to_dict() for fp in self._ledger.fingerprints()
                },
                "faults": [
                    {"kind": s.fault.kind, "route": s.fault.route, "task_id": s.fault.task_id, "hits": s.hits}
                    for s in self._faults
                ],
            }
            if task_id is not None:
                task = self._tasks.get(task_id)
                out["task"] = (
                    None
                    if task is None
                    else {"id": task.id, "family": task.family, "polls": task.polls, "queries": task.queries}
                )
            return out

    def reset(self) -> None:
        with self._lock:
            self._tasks.clear()
            self._by_video.clear()
            self._faults.clear()
            self._records.clear()
            self._counts.clear()
            self._ledger.clear()
            self._rng = random.Random(self._seed)
