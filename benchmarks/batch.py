"""Batches: N waits by one ``VideoBatchTrigger`` beside N ``VideoTaskTrigger``s and the bare aiohttp floor,
and 1,000 videos end to end through ``VideoBatchOperator`` with its downloads against ``curl``.

* waits: the harness of :mod:`benchmarks.waits` (same emulator, interval, ticker, GC watch, RSS sample);
  the ``batch`` side is one trigger polling every task within one budget (a rate equal to what the other
  sides ask for, 64 polls in flight) and firing once all finished;
* end to end: ``dag.test()`` of ``example_dags/example_videoquery_batch.py`` in a fresh process against
  the emulator in another (each video done on its 2nd poll), wall time and peak RSS of that process; the
  time the operator spent storing, and ``curl --parallel`` fetching the same URLs into files with as many
  transfers at once.

Workers: ``python -m benchmarks.batch --side batch --n 10000 --interval 20 --url URL`` and
``python -m benchmarks.batch --side e2e --n 1000 --url URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import waits
from benchmarks._common import (
    REPO,
    admin,
    connection_json,
    emit,
    load_average,
    package_first,
    peak_rss_bytes,
    raise_fd_limit,
    rss_bytes,
    run_worker,
    scratch_dir,
    worker_env,
)

#: Polls in flight for the batch trigger (the shared client's connection limit).
IN_FLIGHT = 64
E2E_VIDEO_BYTES = 1024 * 1024
E2E_PARALLEL = 4


# -- waits ------------------------------------------------------------------------------------------


async def measure_batch(n: int, interval: float, url: str, budget: float) -> dict[str, Any]:
    """N waits by one VideoBatchTrigger, measured like :func:`benchmarks.waits.measure`."""
    from airflow_provider_videoquery.triggers.batch import VideoBatchTrigger

    release = waits.hold_shared_client()

    async def batch_of(ids: list[str]) -> dict[str, Any]:
        now = time.time()
        trigger = VideoBatchTrigger(
            tasks={task_id: [now, now + 3600] for task_id in ids},
            fire_after=len(ids),
            fire_hold=3600,
            poll_interval=interval,
            max_in_flight=IN_FLIGHT,
            max_polls_per_second=1.2 * max(len(ids) / interval, 1.0),
            progress_interval=3600,
        )
        event = await anext(trigger.run())
        payload: dict[str, Any] = event.payload
        return payload

    await batch_of([waits._WARMUP_ID])  # imports, the client: before the baseline
    base_polls = await asyncio.to_thread(waits._polls, url)
    gc.collect()
    probe = waits._Probe(n=n, base_polls=base_polls)
    baseline_rss = rss_bytes()
    cpu0, started = time.process_time(), time.perf_counter()
    gc_watch = waits._GcWatch()
    gc.callbacks.append(gc_watch)
    watchers = [
        asyncio.create_task(waits._ticker(probe, started, gc_watch)),
        asyncio.create_task(waits._sampler(probe, url, started)),
    ]
    capped, failures = False, []
    try:
        async with asyncio.timeout(budget):
            event = await batch_of(waits.task_ids(n))
        outcomes = event.get("finished", {})
        failures = [o["message"] for o in outcomes.values() if o["status"] != "success"][:3]
        probe.done = len(outcomes)
    except TimeoutError:
        capped = True
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    gc.callbacks.remove(gc_watch)
    probe.stop = True
    await asyncio.gather(*watchers, return_exceptions=True)
    await release()
    polls = await asyncio.to_thread(waits._polls, url) - base_polls
    return waits.result(
        "batch",
        n,
        interval,
        wall,
        polls,
        cpu,
        baseline_rss,
        probe,
        gc_watch,
        completed=0 if capped else probe.done - len(failures),
        capped=capped,
        failures=failures,
    )


def run_waits(
    url: str,
    sizes: list[int],
    sides: list[str],
    budget: float,
    log: Callable[[str], None],
    *,
    interval: float | None = None,
    rounds: int = 1,
    before: Path | None = None,
) -> list[dict[str, Any]]:
    """Every (N, side) in each of ``rounds`` paired rounds: ``batch`` (and ``batch@before``) here, the
    others through :func:`benchmarks.waits.run`; the arguments are that function's."""
    results: list[dict[str, Any]] = []
    variants = waits.Variants(before, module="benchmarks.batch")
    for n in sizes:
        every = interval or waits.interval_for(n)
        for round_ in range(rounds):
            for side in sides if round_ % 2 == 0 else sides[::-1]:
                if side.split("@")[0] != "batch":
                    results += waits.run(url, [n], [side], 0, budget, log, interval=every, before=before)
                    results[-1]["round"] = round_
                    continue
                if side.endswith("@before") and not _has_batch_trigger(before):
                    results.append({"side": side, "n": n, "round": round_, "skipped": "no batch trigger"})
                    continue
                waits.load_tasks(url, n)
                log(f"batch waits: {side} N={n} interval={every:.1f}s round {round_ + 1}/{rounds} …")
                args = ["--side", "batch", "--n", str(n), "--interval", str(every), "--url", url]
                results.append(variants.run(side, [*args, "--budget", str(budget)], url, budget))
                results[-1].update(n=n, round=round_)
    return results


def _has_batch_trigger(before: Path | None) -> bool:
    return before is not None and (before / "airflow_provider_videoquery/triggers/batch.py").is_file()


# -- 1,000 videos end to end ------------------------------------------------------------------------


def measure_e2e(n: int, url: str, max_active: int | None = None) -> dict[str, Any]:
    """``dag.test()`` of the batch example over ``n`` prompts; the store phases timed inside the operator
    (``max_active``: the example's own unless given)."""
    from airflow_provider_videoquery.operators.batch import VideoBatchOperator

    stored = {"seconds": 0.0, "videos": 0}
    original = VideoBatchOperator._store

    def timed(self: VideoBatchOperator, to_store: list[Any], *args: Any) -> None:
        started = time.perf_counter()
        original(self, to_store, *args)
        stored["seconds"] += time.perf_counter() - started
        stored["videos"] += len(to_store)

    VideoBatchOperator._store = timed  # type: ignore[method-assign]
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    spec = importlib.util.spec_from_file_location(
        "example", REPO / "example_dags" / "example_videoquery_batch.py"
    )
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    dag = example.dag
    batch = dag.get_task("batch")
    batch.poll_interval = 0.5  # the emulator finishes a video on its 2nd poll
    batch.max_polls_per_second = 200
    batch.creates_per_second = 0
    batch.max_parallel_downloads = E2E_PARALLEL
    if max_active is not None:
        batch.max_active = max_active
    folder = scratch_dir()
    try:
        started = time.perf_counter()
        run = dag.test(run_conf={"count": n, "folder": str(folder)})
        wall = time.perf_counter() - started
        videos = sorted((folder / "videos").glob("*.mp4"))
        total = sum(path.stat().st_size for path in videos)
        ids = [json.loads(line)["video_task_id"] for line in (folder / "videos" / "manifest.jsonl").open()]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "side": "operator",
        "n": n,
        "state": str(run.state),
        "videos": len(videos),
        "wall_s": wall,
        "peak_rss_mb": peak_rss_bytes() / 1024 / 1024,
        "store_s": stored["seconds"],
        "store_mb_per_s": total / 1e6 / stored["seconds"] if stored["seconds"] else None,
        "bytes": total,
        "ids": ids,
    }


def curl_parallel(url: str, ids: list[str], parallel: int, fsync: bool = False) -> dict[str, Any]:
    """``curl --parallel`` of the same videos into files, ``parallel`` transfers at once; ``fsync``: then
    every file and the folder made durable, as the provider does before it reports a video stored (the
    like-for-like reference: curl alone leaves them in the page cache)."""
    folder = scratch_dir()
    config = folder / "urls.txt"
    with config.open("w") as out:
        for number, task_id in enumerate(ids):
            name = task_id.replace(":", "_")
            out.write(f'url = "{url}/videos/{name}.mp4"\noutput = "{folder}/{number:05d}.mp4"\n')
    try:
        started = time.perf_counter()
        subprocess.run(
            [
                "curl",
                "-sS",
                "--no-progress-meter",
                "--fail",
                "--parallel",
                "--parallel-max",
                str(parallel),
                "-K",
                str(config),
            ],
            check=True,
            timeout=1200,
        )
        videos = sorted(folder.glob("*.mp4"))
        if fsync:
            for path in [*videos, folder]:
                descriptor = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
        wall = time.perf_counter() - started
        total = sum(p.stat().st_size for p in videos)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    side = "curl+fsync" if fsync else "curl"
    return {"side": side, "n": len(ids), "wall_s": wall, "bytes": total, "mb_per_s": total / 1e6 / wall}


def run_e2e(
    url: str,
    n: int,
    log: Callable[[str], None],
    *,
    video_bytes: int = E2E_VIDEO_BYTES,
    rounds: int = 1,
    before: Path | None = None,
) -> list[dict[str, Any]]:
    """``n`` videos of ``video_bytes`` end to end through the batch operator (and ``operator@before``, the
    package in ``before``), then ``curl`` and ``curl+fsync`` of the same videos, in each of ``rounds``
    rounds; every operator row gets its store phase's ratio to both curls of its round."""
    admin(url, "/_emulator/reset", {})
    admin(url, "/_emulator/default", {"polls_to_complete": 2, "video_size": video_bytes})
    env = worker_env(AIRFLOW_CONN_VIDEOQUERY_DEFAULT=connection_json(url, timeout=120))
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "example_dags")
    sides: dict[str, tuple[dict[str, str], Path | None]] = {"operator": (env, None)}
    if before is not None:
        sides["operator@before"] = package_first(env, before)
    mib = video_bytes / 1024 / 1024
    results: list[dict[str, Any]] = []
    for round_ in range(rounds):
        order = list(sides) if round_ % 2 == 0 else list(sides)[::-1]
        ids: list[str] = []
        for side in order:
            side_env, cwd = sides[side]
            log(f"batch end to end: {n} videos of {mib:g} MiB through {side} (round {round_ + 1}) …")
            load = load_average()
            args = ["--side", "e2e", "--n", str(n), "--url", url]
            result = run_worker("benchmarks.batch", args, side_env, 3600, cwd=cwd)
            ids = result.pop("ids", None) or ids
            results.append({**result, "side": side, "round": round_, "load": load, "mib": mib})
        for fsync in (False, True) if ids else ():
            log(f"batch end to end: curl --parallel-max {E2E_PARALLEL}{' + fsync' if fsync else ''} …")
            load = load_average()
            results.append({**curl_parallel(url, ids, E2E_PARALLEL, fsync), "round": round_, "load": load})
            results[-1]["mib"] = mib
    _store_ratios(results)
    return results


#: The scaling runs: tiny videos, an unpaced gateway that answers at once, many live tasks.
SCALE_VIDEO_BYTES = 4096
SCALE_MAX_ACTIVE = 1000


def run_scale(url: str, sizes: list[int], log: Callable[[str], None]) -> list[dict[str, Any]]:
    """One task over N requests for each N (``dag.test()`` in a worker of its own, unpaced, tiny videos,
    ``max_active`` 1,000): whether the cost per video stays flat as the batch grows."""
    admin(url, "/_emulator/reset", {})
    admin(url, "/_emulator/default", {"polls_to_complete": 2, "video_size": SCALE_VIDEO_BYTES})
    env = worker_env(AIRFLOW_CONN_VIDEOQUERY_DEFAULT=connection_json(url, timeout=120))
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "example_dags")
    results: list[dict[str, Any]] = []
    for n in sizes:
        log(f"batch scale: {n} videos of {SCALE_VIDEO_BYTES} B, max_active {SCALE_MAX_ACTIVE} …")
        load = load_average()
        args = ["--side", "e2e", "--n", str(n), "--url", url, "--max-active", str(SCALE_MAX_ACTIVE)]
        result = run_worker("benchmarks.batch", args, env, 7200)
        result.pop("ids", None)
        wall = result.get("wall_s")
        per_video = wall / n * 1000 if wall else None
        results.append({**result, "side": "scale", "load": load, "ms_per_video": per_video})
    smallest = results[0].get("ms_per_video") if results else None
    for r in results:
        if smallest and r.get("ms_per_video"):
            r["vs_smallest"] = r["ms_per_video"] / smallest
    return results


def _store_ratios(results: list[dict[str, Any]]) -> None:
    """``vs_curl``/``vs_curl_fsync``: an operator's store MB/s over the curls' of its round and size."""
    for r in results:
        same = [c for c in results if c.get("round") == r.get("round") and c.get("mib") == r.get("mib")]
        rates = {c["side"]: c.get("mb_per_s") for c in same if c["side"].startswith("curl")}
        stored = r.get("store_mb_per_s")
        for reference, key in (("curl", "vs_curl"), ("curl+fsync", "vs_curl_fsync")):
            if stored and rates.get(reference):
                r[key] = stored / rates[reference]


def videos_spec(text: str) -> list[tuple[int, int]]:
    """``--batch-videos``: ``1000`` (videos of 1 MiB) or ``1000x1,200x16`` (count x MiB each); 0 skips."""
    spec = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        count, _, mib = part.partition("x")
        if int(count):
            spec.append((int(count), int(mib or 1)))
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__)
    parser.add_argument("--side", choices=("batch", "e2e"), required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--interval", type=float, default=20.0)
    parser.add_argument("--url", required=True)
    parser.add_argument("--budget", type=float, default=600.0)
    parser.add_argument("--max-active", type=int, default=None)
    args = parser.parse_args(argv)
    raise_fd_limit()
    if args.side == "batch":
        emit(asyncio.run(measure_batch(args.n, args.interval, args.url, args.budget)))
    else:
        os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        emit(measure_e2e(args.n, args.url, args.max_active))
    return 0


if __name__ == "__main__":
    sys.exit(main())
