"""A gateway's per-key limits on creates: how many unfinished tasks one API key may have and how fast it
may create them. Beyond either, a create is refused with 429 and ``Retry-After`` (nothing is created).

`Limits` is plain data (round-trips through JSON for the CLI and the admin route); `KeyLedger` keeps the
per-key bookkeeping and the counts a test reads (`CreateCounts`). Keys are kept only as fingerprints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Refusal = Literal["live_cap", "rate_limit"]


def key_fingerprint(api_key: str | None) -> str:
    """How counts name a key: a short hash, so stats and logs never carry the key itself."""
    if not api_key:
        return "anonymous"
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Limits:
    """Per-API-key limits on the create routes (every field None/0 = unlimited, answered at once).

    ``max_live_tasks``: unfinished (not yet succeeded or failed) tasks one key may have; a task counts
    as finished once a status query would report it terminal. ``create_rate``/``create_burst``: a
    token bucket per key (creates per second, bucket size; burst None = ``max(1, create_rate)``).
    ``retry_after``: the ``Retry-After`` value sent with a refusal; None = computed (whole seconds,
    at least 1, like real gateways), a number = sent as given (fractions allowed for fast tests).
    ``omit_retry_after``: refuse without the header (some gateways do).
    """

    max_live_tasks: int | None = None
    create_rate: float | None = None
    create_burst: int | None = None
    retry_after: float | None = None
    omit_retry_after: bool = False

    def __post_init__(self) -> None:
        if self.max_live_tasks is not None and self.max_live_tasks < 1:
            raise ValueError("max_live_tasks must be >= 1 (None = unlimited)")
        if self.create_rate is not None and self.create_rate <= 0:
            raise ValueError("create_rate must be > 0 creates per second (None = unlimited)")
        if self.create_burst is not None and self.create_burst < 1:
            raise ValueError("create_burst must be >= 1")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must be >= 0")

    @property
    def burst(self) -> float:
        if self.create_burst is not None:
            return float(self.create_burst)
        return max(1.0, self.create_rate or 1.0)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Limits | None = None) -> Limits:
        """Build from JSON; fields not given come from ``base`` (or the defaults)."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown Limits field(s): {sorted(unknown)}")
        return dataclasses.replace(base or cls(), **data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def header(self, computed: float) -> dict[str, str]:
        """The ``Retry-After`` header for a refusal whose honest wait is ``computed`` seconds."""
        if self.omit_retry_after:
            return {}
        if self.retry_after is not None:
            value = self.retry_after
            return {"Retry-After": str(int(value)) if value == int(value) else str(value)}
        return {"Retry-After": str(max(1, math.ceil(computed)))}


@dataclass(frozen=True)
class CreateCounts:
    """What the create routes did for one key (or all keys): tasks created and creates refused."""

    accepted: int = 0
    over_live_cap: int = 0
    rate_limited: int = 0
    #: Tasks of the key not finished yet (as a status query would see them now).
    live: int = 0

    @property
    def refused(self) -> int:
        return self.over_live_cap + self.rate_limited

    def to_dict(self) -> dict[str, int]:
        return {**dataclasses.asdict(self), "refused": self.refused}


@dataclass
class _KeyBook:
    tokens: float
    stamp: float
    live: set[str] = field(default_factory=set)
    accepted: int = 0
    over_live_cap: int = 0
    rate_limited: int = 0


class KeyLedger:
    """Per-key admission and counts. Not locked itself: `EmulatorState` calls it under its lock."""

    def __init__(self) -> None:
        self._books: dict[str, _KeyBook] = {}

    def _book(self, fingerprint: str, limits: Limits, now: float) -> _KeyBook:
        book = self._books.get(fingerprint)
        if book is None:
            book = self._books[fingerprint] = _KeyBook(tokens=limits.burst, stamp=now)
        return book

    def admit(
        self, fingerprint: str, limits: Limits, now: float, is_live: Callable[[str], bool]
    ) -> tuple[Refusal, float] | None:
        """None if a create may go ahead now (its rate token is taken), else why not and the wait."""
        book = self._book(fingerprint, limits, now)
        if limits.max_live_tasks is not None:
            book.live = {tid for tid in book.live if is_live(tid)}
            if len(book.live) >= limits.max_live_tasks:
                book.over_live_cap += 1
                return "live_cap", 1.0
        if limits.create_rate is not None:
            book.tokens = min(limits.burst, book.tokens + (now - book.stamp) * limits.create_rate)
            book.stamp = now
            if book.tokens < 1.0:
                book.rate_limited += 1
                return "rate_limit", (1.0 - book.tokens) / limits.create_rate
            book.tokens -= 1.0
        return None

    def created(self, fingerprint: str, task_id: str, limits: Limits, now: float) -> None:
        book = self._book(fingerprint, limits, now)
        book.accepted += 1
        book.live.add(task_id)

    def counts(self, fingerprint: str | None, is_live: Callable[[str], bool]) -> CreateCounts:
        """One key's counts (its fingerprint), or the sum over every key (None)."""
        books = list(self._books.values()) if fingerprint is None else [self._books.get(fingerprint)]
        total = CreateCounts()
        for book in books:
            if book is None:
                continue
            book.live = {tid for tid in book.live if is_live(tid)}
            total = CreateCounts(
                total.accepted + book.accepted,
                total.over_live_cap + book.over_live_cap,
                total.rate_limited + book.rate_limited,
                total.live + len(book.live),
            )
        return total

    def fingerprints(self) -> list[str]:
        return sorted(self._books)

    def clear(self) -> None:
        self._books.clear()
