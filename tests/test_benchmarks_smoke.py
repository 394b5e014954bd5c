"""A tiny run of every benchmark, so the harness cannot rot. Completion and sane numbers only: no timings."""

from __future__ import annotations

import math
import shutil
from typing import Any

import pytest

from benchmarks import batch, download, ledger, parse, task_download, waits
from benchmarks.__main__ import render
from benchmarks._common import emulator, moto_s3

MiB = 1024 * 1024


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.mark.timeout(60)
def test_waits_all_sides_complete() -> None:
    with emulator(polls=waits.POLLS_TO_COMPLETE) as emu:
        results = waits.run(emu.url, [20], list(waits.SIDES), httpx_max=20, budget=30, log=lambda _: None)
    assert [r["side"] for r in results] == list(waits.SIDES)
    for r in results:
        assert "error" not in r, r
        assert r["completed"] == 20, r
        assert not r["capped"], r
        assert not r["failures"], r
        assert r["polls"] == 20 * waits.POLLS_TO_COMPLETE, r
        assert _positive(r["cpu_ms_per_poll"]), r
        assert _positive(r["wall_s"]), r
        assert r["worst_lag_ms"] >= 0, r
        assert 0 <= r["worst_lag_ex_gc_ms"] <= r["worst_lag_ms"], r  # GC pauses only ever take lag away
    assert "trigger" in render({"machine": {"cpus": 1, "cpu": "x", "python": "3"}, "waits": results})


@pytest.mark.timeout(90)
def test_batch_waits_beside_the_triggers_and_the_floor() -> None:
    with emulator(polls=waits.POLLS_TO_COMPLETE) as emu:
        results = batch.run_waits(
            emu.url, [20], ["aiohttp", "trigger", "batch"], budget=30, log=lambda _: None
        )
    assert [r["side"] for r in results] == ["aiohttp", "trigger", "batch"]
    for r in results:
        assert "error" not in r, r
        assert r["completed"] == 20, r
        assert not r["failures"], r
        assert r["polls"] == 20 * waits.POLLS_TO_COMPLETE, r  # one trigger, the same polls as twenty
        assert _positive(r["cpu_ms_per_poll"]), r
    machine = {"cpus": 1, "cpu": "x", "python": "3"}
    assert "batch" in render({"machine": machine, "batch": results})


@pytest.mark.timeout(90)
def test_download_file_and_s3() -> None:
    pytest.importorskip("airflow.providers.amazon", reason="S3 needs the [s3] extra")
    with emulator() as emu, moto_s3() as s3:
        results = download.run(emu.url, 4 * MiB, 4 * MiB, s3.url, repeat=1, log=lambda _: None)
    sides = {(r["target"], r["side"]) for r in results}
    assert sides - {("file", "curl+sha256")} == {
        ("file", "curl"),
        ("file", "provider"),
        ("file", "httpx-raw"),
        ("s3", "curl"),
        ("s3", "provider"),
        ("s3", "boto3"),
    }
    assert (("file", "curl+sha256") in sides) == (shutil.which("openssl") is not None)
    for r in results:
        assert "error" not in r, r
        assert r["bytes"] == 4 * MiB, r
        assert _positive(r["mb_per_s"]), r
        if not r["side"].startswith("curl"):
            assert r["peak_rss_above_baseline_mb"] >= 0, r


@pytest.mark.timeout(60)
def test_task_download_harness_without_airflow() -> None:
    """The sides that need no ``airflow dags test`` (that one takes ~30 s: ``make bench`` runs it)."""
    with emulator() as emu:
        results = task_download.run(emu.url, 4 * MiB, 1, log=lambda _: None, sides=("curl", "provider"))
    assert [r["side"] for r in results] == ["curl", "provider"]
    for r in results:
        assert "error" not in r, r
        assert r["bytes"] == 4 * MiB, r
        assert _positive(r["mb_per_s"]), r
    assert results[1]["cpu_s"] >= 0, results[1]
    assert results[1]["fsync_s"] > 0, results[1]
    assert "provider" in render({"machine": {"cpus": 1, "cpu": "x", "python": "3"}, "task": results})


def test_parse_every_seed() -> None:
    results = parse.run(100)
    assert len(results) == len(parse.seed_files()) > 0
    for r in results:
        assert _positive(r["per_s"]), r
        assert r["status"] in ("queued", "running", "succeeded", "failed"), r


@pytest.mark.timeout(90)
def test_ledger_bookkeeping_local_and_s3() -> None:
    pytest.importorskip("airflow.providers.amazon", reason="S3 needs the [s3] extra")
    with moto_s3() as s3:
        results = ledger.run([50], s3.url, log=lambda _: None, creates=20, rewrites=2)
    assert [(r["store"], r["side"]) for r in results] == [
        ("local", "ledger"),
        ("local", "rewrite (0.1.0)"),
        ("s3", "ledger"),
        ("s3", "rewrite (0.1.0)"),
    ]
    for r in results:
        assert "error" not in r, r
        assert _positive(r["ms_per_create"]), r
    by_side = {(r["store"], r["side"]): r for r in results}
    assert by_side[("s3", "ledger")]["puts_per_create"] == 1.0  # one journal object per create
    assert (
        by_side[("local", "ledger")]["bytes_per_create"]
        < by_side[("local", "rewrite (0.1.0)")]["bytes_per_create"]
    )
    assert "ledger" in render({"machine": {"cpus": 1, "cpu": "x", "python": "3"}, "ledger": results})
