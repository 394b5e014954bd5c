"""``python -m benchmarks`` (``make bench``): run every benchmark and print one table per benchmark.

Waiting at scale and downloads compare the provider with baselines in the same run against the same
servers (the emulator and moto run in their own processes); ratios are what to compare across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import batch, download, ledger, parse, task_download, waits
from benchmarks._common import Server, emulator, moto_s3, raise_fd_limit

MiB = download.MiB


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument(
        "--only",
        default="waits,batch,ledger,download,task,parse",
        help="comma list of waits, batch, ledger, download, task, parse",
    )
    p.add_argument("--sizes", type=_ints, default=[100, 1000, 10000], help="concurrent waits per run")
    p.add_argument(
        "--sides", default=",".join(waits.SIDES), help="comma list of aiohttp, trigger, httpx, trigger+freeze"
    )
    p.add_argument(
        "--polls",
        type=int,
        default=waits.POLLS_TO_COMPLETE,
        help="polls each wait takes to finish (waits and batch; more: per-wait costs weigh less)",
    )
    p.add_argument("--httpx-max", type=int, default=1000, help="largest N the bare httpx loop runs at")
    p.add_argument("--budget", type=float, default=300.0, help="seconds before one waits run is cut")
    p.add_argument(
        "--interval", type=float, default=None, help="seconds between polls (default: N / 500, at least 0.5)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="paired rounds of the waits and batch sides: every side once per round, against that "
        "round's floor",
    )
    p.add_argument("--file-size", type=int, default=1024 * MiB, help="bytes downloaded to file://")
    p.add_argument("--s3-size", type=int, default=256 * MiB, help="bytes downloaded to S3 (0 = skip)")
    p.add_argument("--repeat", type=int, default=2, help="download rounds (best throughput is kept)")
    p.add_argument("--task-size", type=int, default=1024 * MiB, help="bytes stored by airflow dags test")
    p.add_argument(
        "--before",
        type=Path,
        default=None,
        help="a folder with another airflow_provider_videoquery (git archive): its task and provider "
        "sides run too, in the same rounds, and the waits sides named trigger@before and batch@before",
    )
    p.add_argument("--batch-sizes", type=_ints, default=[10000], help="waits by one VideoBatchTrigger")
    p.add_argument(
        "--batch-sides",
        default="aiohttp,trigger,batch",
        help="comma list of aiohttp, trigger, batch (and trigger@before, batch@before)",
    )
    p.add_argument(
        "--batch-videos",
        type=batch.videos_spec,
        default=[(1000, 1)],
        help="videos end to end: 1000 (of 1 MiB) or 1000x1,200x16 (count x MiB each); 0 = skip",
    )
    p.add_argument(
        "--scale-sizes",
        type=_ints,
        default=[1000, 10000],
        help="batch sizes of the scaling runs (one task, unpaced, tiny videos; empty = skip)",
    )
    p.add_argument(
        "--ledger-sizes", type=_ints, default=[1000, 10000, 100000], help="batch sizes of the ledger runs"
    )
    p.add_argument("--ledger-creates", type=int, default=1000, help="creates recorded per ledger run")
    p.add_argument("--parses", type=int, default=20000, help="parses per seed and batch")
    p.add_argument("--json", default=None, help="also write every raw result to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.polls <= waits.MAX_POLLS:
        parser.error(f"--polls must be between 1 and {waits.MAX_POLLS}")
    only = {x.strip() for x in args.only.split(",")}
    raise_fd_limit()
    results: dict[str, Any] = {"machine": machine(), "polls_per_wait": args.polls}
    started = time.perf_counter()
    if "parse" in only:
        _log("parse …")
        results["parse"] = parse.run(args.parses)
    with contextlib.ExitStack() as stack:
        paired = {"interval": args.interval, "rounds": args.rounds, "before": args.before}
        if "waits" in only:
            emu = stack.enter_context(emulator(polls=args.polls))
            sides = _list(args.sides)
            results["waits"] = waits.run(
                emu.url, args.sizes, sides, args.httpx_max, args.budget, _log, **paired
            )
            stack.close()
        if "batch" in only:
            emu = stack.enter_context(emulator(polls=args.polls))
            results["batch"] = batch.run_waits(
                emu.url, args.batch_sizes, _list(args.batch_sides), args.budget, _log, **paired
            )
            for count, mib in args.batch_videos:
                results["batch"] += batch.run_e2e(
                    emu.url, count, _log, video_bytes=mib * MiB, rounds=args.rounds, before=args.before
                )
            if args.scale_sizes:
                results["batch"] += batch.run_scale(emu.url, args.scale_sizes, _log)
            stack.close()
        if "ledger" in only:
            s3_ledger = stack.enter_context(moto_s3())
            results["ledger"] = ledger.run(args.ledger_sizes, s3_ledger.url, _log, args.ledger_creates)
            stack.close()
        if "download" in only:
            emu = stack.enter_context(emulator())
            s3: Server | None = stack.enter_context(moto_s3()) if args.s3_size else None
            results["download"] = download.run(
                emu.url, args.file_size, args.s3_size or None, s3.url if s3 else None, args.repeat, _log
            )
        if "task" in only:
            stack.close()
            emu = stack.enter_context(emulator())
            results["task"] = task_download.run(
                emu.url, args.task_size, args.repeat, _log, before=args.before
            )
    results["total_s"] = time.perf_counter() - started
    print(render(results))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


def machine() -> dict[str, Any]:
    import os

    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "date": time.strftime("%Y-%m-%d"),
    }


# -- tables -------------------------------------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> Iterator[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    yield "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    yield "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    for row in rows:
        yield "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"


def _waits_table(waits_results: list[dict[str, Any]]) -> list[str]:
    """One row per (N, round, side); x floor = CPU per poll over bare aiohttp's at the same N and round."""
    floor = {
        (r["n"], r.get("round", 0)): r.get("cpu_ms_per_poll")
        for r in waits_results
        if r.get("side") == "aiohttp"
    }
    rounds = any(r.get("round") for r in waits_results)
    rows = []
    for r in waits_results:
        note = r.get("skipped") or r.get("error") or ("CAPPED at budget" if r.get("capped") else "")
        if r.get("failures"):
            note = (note + " failures: " + "; ".join(r["failures"])).strip()
        note = note[-160:]
        cpu, base = r.get("cpu_ms_per_poll"), floor.get((r["n"], r.get("round", 0)))
        rows.append(
            [
                str(r["n"]),
                *([str(r.get("round", 0) + 1)] if rounds else []),
                r["side"],
                _fmt(r.get("interval"), ".1f"),
                _fmt(r.get("load"), ".1f"),
                _fmt(r.get("wall_s"), ".1f"),
                _fmt(r.get("polls"), "d"),
                _fmt(cpu, ".2f"),
                _fmt(cpu / base if cpu and base else None, ".1f"),
                _fmt(r.get("rss_kb_per_wait"), ".1f"),
                _fmt(r.get("worst_lag_ms"), ".0f"),
                _fmt(r.get("gc_worst_ms"), ".0f"),
                _fmt(r.get("worst_lag_ex_gc_ms"), ".0f"),
                note,
            ]
        )
    header = ["N", *(["round"] if rounds else []), "side", "interval s", "load", "wall s", "polls"]
    header += ["CPU ms/poll", "x floor", "KB/wait", "worst lag ms", "worst GC ms", "lag ex-GC ms", "note"]
    lines = list(_table(header, rows))
    if rounds:
        lines += ["", "Paired rounds: x floor in each round (CPU per poll / that round's aiohttp), median"]
        lines += _paired_table(waits_results, floor)
    return lines


def _paired_table(results: list[dict[str, Any]], floor: dict[tuple[int, int], float | None]) -> list[str]:
    """Per (N, side): the ratio to the floor in every round, their median and the medians behind it."""
    by_side: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in results:
        if r.get("side") != "aiohttp" and r.get("cpu_ms_per_poll"):
            by_side.setdefault((r["n"], r["side"]), []).append(r)
    rows = []
    for (n, side), runs in by_side.items():
        ratios = [r["cpu_ms_per_poll"] / base for r in runs if (base := floor.get((n, r.get("round", 0))))]
        rows.append(
            [
                str(n),
                side,
                " / ".join(f"{x:.2f}" for x in ratios),
                _fmt(statistics.median(ratios) if ratios else None, ".2f"),
                _fmt(statistics.median(r["cpu_ms_per_poll"] for r in runs), ".3f"),
                _fmt(statistics.median(b for r in runs if (b := floor.get((n, r.get("round", 0))))), ".3f"),
                _fmt(_median_of(runs, "rss_kb_per_wait"), ".1f"),
            ]
        )
    header = ["N", "side", "x floor by round", "median", "CPU ms/poll", "floor ms/poll", "KB/wait"]
    return list(_table(header, rows))


def _median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def render(results: dict[str, Any]) -> str:
    lines = [
        f"machine: {results['machine']['cpus']} x {results['machine']['cpu']}, "
        f"Python {results['machine']['python']}"
    ]
    if "waits" in results:
        polls = results.get("polls_per_wait", waits.POLLS_TO_COMPLETE)
        title = f"Waiting at scale ({polls} polls per wait; x floor = CPU per poll / bare aiohttp's, same N)"
        lines += ["", title]
        lines += _waits_table(results["waits"])
    if "batch" in results:
        lines += ["", "Batches: waits by one VideoBatchTrigger beside VideoTaskTriggers and the floor"]
        waited = [
            r for r in results["batch"] if r.get("side", "").split("@")[0] in ("aiohttp", "trigger", "batch")
        ]
        lines += _waits_table(waited)
        ends = [r for r in results["batch"] if r.get("side", "").startswith(("operator", "curl"))]
        if ends:
            title = "Batches: videos end to end through VideoBatchOperator (dag.test()), stored vs curl"
            lines += ["", title]
            rows = [
                [
                    _fmt(r.get("mib"), "g"),
                    str(r.get("round", 0) + 1),
                    r["side"],
                    _fmt(r.get("load"), ".1f"),
                    _fmt(r.get("n"), "d"),
                    _fmt(r.get("wall_s"), ".1f"),
                    _fmt(r.get("peak_rss_mb"), ".0f"),
                    _fmt(r.get("store_s"), ".1f"),
                    _fmt(r.get("store_mb_per_s") or r.get("mb_per_s"), ".0f"),
                    _fmt(r.get("vs_curl"), ".2f"),
                    _fmt(r.get("vs_curl_fsync"), ".2f"),
                    (r.get("error") or r.get("state") or "")[-160:],
                ]
                for r in ends
            ]
            header = ["MiB/video", "round", "side", "load", "videos", "wall s", "peak RSS MiB", "store s"]
            header += ["MB/s stored", "x curl", "x curl+fsync", "note"]
            lines += _table(header, rows)
        scale = [r for r in results["batch"] if r.get("side") == "scale"]
        if scale:
            lines += [
                "",
                "Batches of N in one task (dag.test(), unpaced emulator, 4 KiB videos, max_active 1,000)",
            ]
            rows = [
                [
                    _fmt(r.get("n"), ",d"),
                    _fmt(r.get("load"), ".1f"),
                    _fmt(r.get("wall_s"), ".1f"),
                    _fmt(r.get("ms_per_video"), ".1f"),
                    _fmt(r.get("vs_smallest"), ".2f"),
                    _fmt(r.get("peak_rss_mb"), ".0f"),
                    (r.get("error") or r.get("state") or "")[-160:],
                ]
                for r in scale
            ]
            header = ["videos", "load", "wall s", "ms/video", "x smallest N", "peak RSS MiB", "note"]
            lines += _table(header, rows)
    if "ledger" in results:
        lines += [
            "",
            "Batch bookkeeping per create: the ledger (journal + folds) vs a whole-manifest rewrite",
        ]
        rows = [
            [
                r.get("store", "?"),
                r["side"],
                _fmt(r.get("n"), ",d"),
                _fmt(r.get("manifest_mb"), ".1f"),
                _fmt(r.get("ms_per_create"), ".3f"),
                _fmt(r.get("cpu_ms_per_create"), ".3f"),
                _fmt(r.get("ms_per_create_amortized"), ".3f"),
                _fmt(r.get("puts_per_create"), ".2f"),
                _fmt(r.get("bytes_per_create"), ",.0f"),
                _fmt(r.get("read_s"), ".2f"),
                _fmt(r.get("fold_s"), ".2f"),
                r.get("error", "")[-160:],
            ]
            for r in results["ledger"]
        ]
        header = ["store", "side", "N", "manifest MB", "ms/create", "CPU ms/create", "with folds ms"]
        lines += _table([*header, "PUTs/create", "bytes/create", "read s", "fold s", "note"], rows)
    if "download" in results:
        lines += ["", "Download (best of the rounds; peak RSS above the process's RSS after imports)"]
        rows = [
            [
                r.get("target", "?"),
                r["side"],
                _fmt(r["bytes"] / MiB if r.get("bytes") else None, ".0f"),
                _fmt(r.get("wall_s"), ".2f"),
                _fmt(r.get("mb_per_s"), ".0f"),
                _fmt(r.get("vs_curl"), ".2f"),
                _fmt(r.get("peak_rss_above_baseline_mb"), ".1f"),
                r.get("error", "")[-160:],
            ]
            for r in results["download"]
        ]
        header = ["target", "side", "MiB", "wall s", "MB/s", "x curl", "peak RSS MiB", "note"]
        lines += _table(header, rows)
    if "task" in results:
        lines += [
            "",
            "Through a real task (best of the rounds; wall = store_url, in the task for task sides)",
        ]
        rows = [
            [
                r["side"],
                _fmt(r["bytes"] / MiB if r.get("bytes") else None, ".0f"),
                _fmt(r.get("wall_s"), ".2f"),
                _fmt(r.get("mb_per_s"), ".0f"),
                _fmt(r.get("vs_curl"), ".2f"),
                _fmt(r.get("vs_curl_sha256"), ".2f"),
                _fmt(r.get("vs_provider"), ".2f"),
                _fmt(r.get("cpu_s"), ".2f"),
                _fmt(r.get("fsync_s"), ".2f"),
                _fmt(r.get("command_s"), ".1f"),
                r.get("error", "")[-160:],
            ]
            for r in results["task"]
        ]
        header = ["side", "MiB", "wall s", "MB/s", "x curl", "x curl+sha256", "x provider", "CPU s"]
        lines += _table([*header, "fsync s", "command s", "note"], rows)
    if "parse" in results:
        lines += ["", "Parsing (models.parse_task, best of 3 batches)"]
        rows = [
            [r["seed"], r["status"], _fmt(r["per_s"], ",.0f"), _fmt(r["us_per_parse"], ".1f")]
            for r in results["parse"]
        ]
        lines += _table(["seed", "status", "tasks/s", "µs/task"], rows)
    lines += ["", f"total {results.get('total_s', 0):.0f}s"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
