"""Waiting at scale: N concurrent waits in one event loop against the emulator in another process.

Three sides, each in a fresh process so RSS deltas are honest:

* ``trigger``: N ``VideoTaskTrigger``s, each ``run()`` consumed as its own task, created the way the
  triggerer creates them (one ``create_task`` then ``sleep(0)`` per trigger);
* ``aiohttp``: a bare polling loop on one ``aiohttp.ClientSession`` (the floor for Python);
* ``httpx``: a bare polling loop on one default ``httpx.AsyncClient`` (what a provider gets for free).

Measured per run: wall time, process CPU per poll (polls counted by the emulator), RSS per waiting task
(the RSS while every task has polled at least once and none has finished, minus the RSS before they
were created, over N) and the worst overshoot of a 10 ms ticker (event-loop lag).

Worker: ``python -m benchmarks.waits --side trigger --n 1000 --interval 2 --url URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import (
    API_KEY,
    admin,
    connection_json,
    emit,
    load_average,
    package_first,
    raise_fd_limit,
    rss_bytes,
    run_worker,
    worker_env,
)

SIDES = ("aiohttp", "trigger", "httpx")
#: Run on request (``--sides``): the trigger with ``gc.freeze()`` once all waits have started.
EXTRA_SIDES = ("trigger+freeze",)
POLLS_TO_COMPLETE = 4
#: Poll requests per second the interval is scaled to, so the emulator (one core) keeps up.
TARGET_POLL_RATE = 500.0
MIN_INTERVAL = 0.5
#: Upper bound of polls per wait (a wait that never ends must not loop forever).
MAX_POLLS = 50
_TICK = 0.01
_SAMPLE_EVERY = 0.25
_TERMINAL = frozenset({"completed", "succeeded", "success", "failed", "failure", "error"})
_WARMUP_ID = "veo3.1-fast:bench-warmup"


def interval_for(n: int) -> float:
    """Seconds between polls for N waits: ``N / TARGET_POLL_RATE``, at least ``MIN_INTERVAL``."""
    return max(MIN_INTERVAL, n / TARGET_POLL_RATE)


def task_ids(n: int) -> list[str]:
    return [f"veo3.1-fast:bench-{i:05d}" for i in range(n)]


def _query_url(base: str, task_id: str) -> str:
    return f"{base}/v1/video/query?id={task_id}"


def _jittered(interval: float) -> float:
    return interval + random.uniform(0, 0.1 * interval)


@dataclass
class _Probe:
    """What the ticker and the sampler see while the waits run."""

    n: int
    base_polls: int
    done: int = 0
    worst_lag: float = 0.0
    worst_lag_at: float = 0.0
    #: The worst overshoot once the collector's pauses inside that sleep are taken out: the loop's own
    #: blocking (the provider's code, aiohttp, asyncio), which no GC setting changes.
    worst_lag_ex_gc: float = 0.0
    waiting_rss: int = 0
    first_round_at: float | None = None
    stop: bool = False


async def _ticker(probe: _Probe, origin: float, gc_watch: _GcWatch) -> None:
    while not probe.stop:
        started, collecting = time.perf_counter(), gc_watch.total
        await asyncio.sleep(_TICK)
        lag = time.perf_counter() - started - _TICK
        if lag > probe.worst_lag:
            probe.worst_lag, probe.worst_lag_at = lag, started - origin
        probe.worst_lag_ex_gc = max(probe.worst_lag_ex_gc, lag - (gc_watch.total - collecting))


class _GcWatch:
    """The collector's pauses while the waits run (a full collection walks every live object)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.total = 0.0
        self.full = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.total += pause
        self.worst = max(self.worst, pause)
        self.full += info["generation"] == 2


async def _sampler(probe: _Probe, url: str, started: float) -> None:
    """Every 250 ms: the emulator's poll count; while all have polled and none finished, the RSS."""
    while not probe.stop:
        await asyncio.sleep(_SAMPLE_EVERY)
        polls = await asyncio.to_thread(_polls, url)
        if polls - probe.base_polls >= probe.n and probe.done == 0:
            probe.first_round_at = probe.first_round_at or time.perf_counter() - started
            probe.waiting_rss = max(probe.waiting_rss, rss_bytes())


def _polls(url: str) -> int:
    stats = admin(url, "/_emulator/stats", timeout=30)
    return int(stats["by_route"].get("query", 0))


# -- the three sides: each returns (make one waiter, close) -----------------------------------------

Waiter = Callable[[str], Awaitable[None]]


def hold_shared_client() -> Callable[[], Awaitable[None]]:
    """Take the hook module's shared async client, as a busy triggerer always has it open (so it is in
    the baseline); returns how to give it back. Also for an older package (``--before``), whose clients
    were keyed by the TLS setting alone."""
    from airflow_provider_videoquery.hooks.videoquery import _shared_clients

    try:
        from airflow_provider_videoquery.hooks._http import ClientKey
    except ImportError:
        _shared_clients.acquire(verify_ssl=True)  # type: ignore[call-arg]
        return lambda: _shared_clients.release(verify_ssl=True)  # type: ignore[call-arg]
    lease = _shared_clients.acquire(ClientKey(verify_ssl=True, proxy=None))
    return lambda: _shared_clients.release(lease)


async def _trigger_side(url: str, interval: float) -> tuple[Waiter, Callable[[], Awaitable[None]]]:
    from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger

    release = hold_shared_client()
    now = time.time()

    async def wait(task_id: str) -> None:
        trigger = VideoTaskTrigger(
            video_task_id=task_id, deadline=now + 3600, poll_interval=interval, started_at=now
        )
        async for event in trigger.run():
            if event.payload["status"] != "success":
                raise RuntimeError(event.payload["message"])

    async def close() -> None:
        await release()

    return wait, close


async def _aiohttp_side(url: str, interval: float) -> tuple[Waiter, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"})

    async def wait(task_id: str) -> None:
        for _ in range(MAX_POLLS):
            async with session.get(_query_url(url, task_id)) as response:
                body = await response.json()
            if str(body.get("status", "")).lower() in _TERMINAL:
                return
            await asyncio.sleep(_jittered(interval))

    return wait, session.close


async def _httpx_side(url: str, interval: float) -> tuple[Waiter, Callable[[], Awaitable[None]]]:
    import httpx

    # The default pool (100 connections); a long timeout so queueing in the pool is measured, not failed.
    client = httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=600)

    async def wait(task_id: str) -> None:
        for _ in range(MAX_POLLS):
            response = await client.get(_query_url(url, task_id))
            if str(response.json().get("status", "")).lower() in _TERMINAL:
                return
            await asyncio.sleep(_jittered(interval))

    return wait, client.aclose


_SIDE_FACTORIES = {"trigger": _trigger_side, "aiohttp": _aiohttp_side, "httpx": _httpx_side}


async def measure(side: str, n: int, interval: float, url: str, budget: float) -> dict[str, Any]:
    """Run N waits of ``side`` in this loop; the emulator must already know ``task_ids(n)``.

    ``trigger+freeze`` is the trigger side with ``gc.freeze()`` once every wait has started: what a
    triggerer deployment can do so full collections stop walking every long-lived trigger.
    """
    freeze = side.endswith("+freeze")
    wait, close = await _SIDE_FACTORIES[side.removesuffix("+freeze")](url, interval)
    await wait(_WARMUP_ID)  # lazy imports, the client, the thread pool: all before the baseline
    base_polls = await asyncio.to_thread(_polls, url)
    gc.collect()
    probe = _Probe(n=n, base_polls=base_polls)
    baseline_rss = rss_bytes()
    cpu0, started = time.process_time(), time.perf_counter()
    gc_watch = _GcWatch()
    gc.callbacks.append(gc_watch)
    watchers = [
        asyncio.create_task(_ticker(probe, started, gc_watch)),
        asyncio.create_task(_sampler(probe, url, started)),
    ]
    failures: list[str] = []

    async def one(task_id: str) -> None:
        try:
            await wait(task_id)
        except Exception as err:
            failures.append(f"{type(err).__name__}: {err}")
        finally:
            probe.done += 1

    tasks = []
    for task_id in task_ids(n):
        tasks.append(asyncio.create_task(one(task_id)))
        await asyncio.sleep(0)
    if freeze:
        await asyncio.sleep(0.1)  # let every wait start its first poll
        gc.freeze()
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, budget - (time.perf_counter() - started)))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    gc.callbacks.remove(gc_watch)
    probe.stop = True
    await asyncio.gather(*watchers, return_exceptions=True)
    await close()
    polls = await asyncio.to_thread(_polls, url) - base_polls
    return result(
        side,
        n,
        interval,
        wall,
        polls,
        cpu,
        baseline_rss,
        probe,
        gc_watch,
        completed=n - len(pending) - len(failures),
        capped=bool(pending),
        failures=failures[:3],
    )


def result(
    side: str,
    n: int,
    interval: float,
    wall: float,
    polls: int,
    cpu: float,
    baseline_rss: int,
    probe: Any,
    gc_watch: Any,
    *,
    completed: int,
    capped: bool,
    failures: list[str],
) -> dict[str, Any]:
    """One (N, side) row of the waits table: what the probe and the GC watch saw, per poll and per wait."""
    return {
        "side": side,
        "n": n,
        "interval": interval,
        "wall_s": wall,
        "polls": polls,
        "cpu_s": cpu,
        "cpu_ms_per_poll": 1000 * cpu / polls if polls else None,
        "rss_kb_per_wait": (probe.waiting_rss - baseline_rss) / 1024 / n if probe.waiting_rss else None,
        "worst_lag_ms": 1000 * probe.worst_lag,
        "worst_lag_at_s": probe.worst_lag_at,
        "worst_lag_ex_gc_ms": 1000 * probe.worst_lag_ex_gc,
        "gc_worst_ms": 1000 * gc_watch.worst,
        "gc_total_s": gc_watch.total,
        "gc_full": gc_watch.full,
        "first_round_s": probe.first_round_at,
        "completed": completed,
        "capped": capped,
        "failures": failures,
    }


# -- the orchestrator ---------------------------------------------------------------------------------


def run(
    url: str,
    sizes: list[int],
    sides: list[str],
    httpx_max: int,
    budget: float,
    log: Callable[[str], None],
    *,
    interval: float | None = None,
    rounds: int = 1,
    before: Path | None = None,
) -> list[dict[str, Any]]:
    """Every (N, side) pair in each of ``rounds`` paired rounds, each in a fresh worker process against
    the one emulator at ``url``; every row carries its ``round`` and the load average when it started.

    ``interval``: seconds between polls (default :func:`interval_for`). A side named ``trigger@before``
    runs the trigger side with the package in ``before`` (:func:`~benchmarks._common.package_first`).
    Odd rounds run the sides in reverse order, so no side always runs first after a quiet pause."""
    variants = Variants(before)
    results: list[dict[str, Any]] = []
    for n in sizes:
        every = interval or interval_for(n)
        for round_ in range(rounds):
            for side in sides if round_ % 2 == 0 else sides[::-1]:
                if side.split("@")[0] == "httpx" and n > httpx_max:
                    results.append({"side": side, "n": n, "skipped": f"not run above N={httpx_max}"})
                    continue
                load_tasks(url, n)
                log(f"waits: {side} N={n} interval={every:.1f}s round {round_ + 1}/{rounds} …")
                args = ["--side", side.split("@")[0], "--n", str(n), "--interval", str(every), "--url", url]
                results.append(variants.run(side, [*args, "--budget", str(budget)], url, budget))
                results[-1].update(n=n, round=round_)
    return results


def load_tasks(url: str, n: int) -> None:
    """A fresh emulator holding ``task_ids(n)`` and the warm-up task."""
    admin(url, "/_emulator/reset", {})
    tasks: list[dict[str, Any]] = [{"id": task_id} for task_id in task_ids(n)]
    tasks.append({"id": _WARMUP_ID, "scenario": {"polls_to_complete": 1}})
    admin(url, "/_emulator/tasks", {"tasks": tasks})


class Variants:
    """Runs a side's worker with this package, or (``side@before``) with the one in ``before``."""

    def __init__(self, before: Path | None, module: str = "benchmarks.waits") -> None:
        self.module = module
        self.env = worker_env()
        self.before = before
        self._before: tuple[dict[str, str], Path] | None = None

    def run(self, side: str, args: list[str], url: str, budget: float) -> dict[str, Any]:
        env, cwd = dict(self.env), None
        if side.endswith("@before"):
            if self.before is None:
                return {"side": side, "skipped": "no --before folder given"}
            self._before = self._before or package_first(self.env, self.before)
            env, cwd = dict(self._before[0]), self._before[1]
        env["AIRFLOW_CONN_VIDEOQUERY_DEFAULT"] = connection_json(url, timeout=120)
        load = load_average()
        result = run_worker(self.module, args, env, budget + 120, cwd=cwd)
        result["side"] = side
        result["load"] = load
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.waits", description=__doc__)
    parser.add_argument("--side", choices=SIDES + EXTRA_SIDES, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--interval", type=float, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--budget", type=float, default=600.0, help="seconds before the waits are cut")
    args = parser.parse_args(argv)
    raise_fd_limit()
    emit(asyncio.run(measure(args.side, args.n, args.interval, args.url, args.budget)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
