"""1,000 concurrent waits in one event loop against an emulator that spoils 10 % of its answers.

Every ``VideoTaskTrigger`` must end with ``success``, and the emulator must see no more requests than the
retry policy allows. The bound, per task, with ``P = polls_to_complete`` and ``q`` the chance that an
answer is clean:

* a faulted answer (429, 503, a reset mid-body, malformed JSON) is retried or re-polled, and never
  ends the wait early;
* every clean answer advances the task by one poll, so the wait is over at the latest with the P-th
  clean answer: a task costs at most ``N_P`` requests, where ``N_P`` counts the tries until P clean
  answers (negative binomial: mean ``P / q``, variance ``P (1 - q) / q**2``);
* at least ``P`` requests (one per poll the task needs).

The sum over 1,000 tasks is then below ``1000 P / q + 6 sigma`` except with negligible probability; the
emulator's fault draws are seeded, so the run is repeatable anyway. A retry storm (retrying without
backoff or re-polling without sleeping) would blow through that bound.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter

from airflow_provider_videoquery.emulator import Emulator, Fault, Scenario
from airflow_provider_videoquery.hooks.videoquery import _shared_clients
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from tests.airflow_helpers import first_event

N = 1000
POLLS_TO_COMPLETE = 3
FAULT_RATE = 0.10
KINDS = ("429", "503", "reset", "malformed_json")
POLL_INTERVAL = 0.2
MAX_ATTEMPTS = 4
RETRY_DELAY = 0.05


def faults(rate: float = FAULT_RATE) -> list[Fault]:
    """One fault per kind, each hitting ``rate / 4`` of all query answers (faults are tried in order)."""
    share, left, out = rate / len(KINDS), 1.0, []
    for kind in KINDS:
        conditional = share / left  # of the answers that the earlier faults let through
        left -= share
        if kind in ("429", "503"):
            out.append(Fault("http_error", route="query", status=int(kind), rate=conditional))
        else:
            out.append(Fault(kind, route="query", rate=conditional, after_bytes=20))  # type: ignore[arg-type]
    return out


def request_bound(n: int, polls: int, rate: float) -> tuple[float, float]:
    """(mean, upper bound) of the requests n waits may cost (see the module docstring)."""
    q = 1.0 - rate
    mean = n * polls / q
    sigma = math.sqrt(n * polls * (1.0 - q) / q**2)
    return mean, mean + 6.0 * sigma


async def test_1000_waits_with_10_percent_faulty_answers(emulator: Emulator) -> None:
    ids = [f"veo3.1-fast:load-fault-{i:04d}" for i in range(N)]
    for task_id in ids:
        emulator.add_task(task_id, Scenario(polls_to_complete=POLLS_TO_COMPLETE))
    for fault in faults():
        emulator.add_fault(fault)
    now = time.time()
    triggers = [
        VideoTaskTrigger(
            video_task_id=task_id,
            deadline=now + 600,  # far off: a slow machine is not a failed wait
            poll_interval=POLL_INTERVAL,
            started_at=now,
            max_attempts=MAX_ATTEMPTS,
            retry_delay=RETRY_DELAY,
        )
        for task_id in ids
    ]

    started = time.monotonic()
    events = await asyncio.gather(*(first_event(t) for t in triggers))
    elapsed = time.monotonic() - started

    outcomes = Counter(event["status"] for event in events)
    assert outcomes == {"success": N}, [e["message"] for e in events if e["status"] != "success"][:5]
    assert [event["video_task_id"] for event in events] == ids
    assert all(event["task"]["video_url"] for event in events)

    requests = emulator.count(route="query")
    by_fault = Counter(r.fault for r in emulator.requests)
    faulty = sum(n for kind, n in by_fault.items() if kind is not None)
    mean, bound = request_bound(N, POLLS_TO_COMPLETE, FAULT_RATE)
    print(
        f"FIGURE load: {N} waits in {elapsed:.1f}s, {requests} requests "
        f"(mean bound {mean:.0f}, hard bound {bound:.0f}), faulty {faulty} = {faulty / requests:.1%}, "
        f"by kind {dict(by_fault)}"
    )
    assert N * POLLS_TO_COMPLETE <= requests <= bound
    assert 0.07 <= faulty / requests <= 0.13  # the emulator really spoiled about 10 % of its answers
    assert all(by_fault[kind] > 0 for kind in ("http_error", "reset", "malformed_json"))
    assert _shared_clients.users() == 0
