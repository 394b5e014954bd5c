"""A tiny run of every benchmark, so the harness cannot rot. Completion and sane numbers only: no timings."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from benchmarks import batch, download, ledger, parse, task_download, waits
from benchmarks.__main__ import render
from benchmarks._common import REPO, admin, emulator, moto_s3, package_first

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
def test_waits_paired_rounds_with_another_package() -> None:
    """``--rounds``/``--before``/``--interval``: every side once per round, ``trigger@before`` importing the
    package of the given folder (here this very checkout: the mechanism, not another version)."""
    with emulator(polls=waits.POLLS_TO_COMPLETE) as emu:
        results = waits.run(
            emu.url,
            [10],
            ["aiohttp", "trigger@before"],
            httpx_max=0,
            budget=30,
            log=lambda _: None,
            interval=0.5,
            rounds=2,
            before=REPO,
        )
    # Odd rounds run in reverse order: no side always goes first.
    assert [(r["side"], r["round"]) for r in results] == [
        ("aiohttp", 0),
        ("trigger@before", 0),
        ("trigger@before", 1),
        ("aiohttp", 1),
    ]
    for r in results:
        assert "error" not in r, r
        assert r["completed"] == 10, r
        assert r["interval"] == 0.5, r
        assert r["load"] >= 0, r
    table = render({"machine": {"cpus": 1, "cpu": "x", "python": "3"}, "waits": results})
    assert "Paired rounds" in table
    assert "trigger@before" in table.split("Paired rounds")[1]


def test_package_first_takes_only_the_package(tmp_path: Path) -> None:
    env, cwd = package_first({"PYTHONPATH": "elsewhere"}, REPO)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(cwd), "elsewhere"]
    assert sorted(p.name for p in cwd.iterdir()) == ["airflow_provider_videoquery"]
    assert (cwd / "airflow_provider_videoquery").resolve() == REPO / "airflow_provider_videoquery"
    with pytest.raises(ValueError, match="no airflow_provider_videoquery"):
        package_first({"PYTHONPATH": ""}, tmp_path)


@pytest.mark.timeout(90)
def test_batch_waits_beside_the_triggers_and_the_floor() -> None:
    with emulator(polls=waits.POLLS_TO_COMPLETE) as emu:
        sides = ["aiohttp", "trigger", "batch", "batch@before"]
        results = batch.run_waits(emu.url, [20], sides, budget=30, log=lambda _: None, before=REPO)
    assert [r["side"] for r in results] == sides
    for r in results:
        assert "error" not in r, r
        assert r["completed"] == 20, r
        assert not r["failures"], r
        assert r["polls"] == 20 * waits.POLLS_TO_COMPLETE, r  # one trigger, the same polls as twenty
        assert _positive(r["cpu_ms_per_poll"]), r
    machine = {"cpus": 1, "cpu": "x", "python": "3"}
    assert "batch@before" in render({"machine": machine, "batch": results})


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


def test_batch_videos_spec() -> None:
    assert batch.videos_spec("1000") == [(1000, 1)]
    assert batch.videos_spec("1000x1, 200x16") == [(1000, 1), (200, 16)]
    assert batch.videos_spec("0") == []


@pytest.mark.timeout(60)
def test_curl_with_fsync_is_the_durable_reference() -> None:
    """``curl+fsync``: the same fetch, every file and the folder then fsynced (what the provider does)."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    ids = [f"veo3.1-fast:curl-{n}" for n in range(3)]
    with emulator() as emu:
        tasks = [{"id": i, "scenario": {"video_size": MiB}} for i in ids]
        admin(emu.url, "/_emulator/tasks", {"tasks": tasks})
        plain = batch.curl_parallel(emu.url, ids, 2)
        durable = batch.curl_parallel(emu.url, ids, 2, fsync=True)
    assert (plain["side"], durable["side"]) == ("curl", "curl+fsync")
    assert plain["bytes"] == durable["bytes"] == 3 * MiB


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_batch_end_to_end_with_the_before_side() -> None:
    """The end-to-end side beside ``operator@before`` and both curls (two dag.test() runs: make bench and
    make test-slow only)."""
    with emulator() as emu:
        results = batch.run_e2e(emu.url, 4, lambda _: None, video_bytes=MiB, before=REPO)
    assert [r["side"] for r in results] == ["operator", "operator@before", "curl", "curl+fsync"]
    for r in results[:2]:
        assert "error" not in r, r
        assert r["videos"] == 4, r
        assert _positive(r["vs_curl"]), r
        assert _positive(r["vs_curl_fsync"]), r
    assert "x curl+fsync" in render({"machine": {"cpus": 1, "cpu": "x", "python": "3"}, "batch": results})


@pytest.mark.timeout(90)
def test_the_command_line_with_polls_rounds_and_an_interval(tmp_path: Path) -> None:
    """``--polls`` (polls per wait), ``--rounds`` and ``--interval`` through ``python -m benchmarks``."""
    from benchmarks.__main__ import main

    out = tmp_path / "results.json"
    argv = ["--only", "waits", "--sizes", "10", "--sides", "aiohttp,trigger", "--polls", "2"]
    assert main([*argv, "--rounds", "2", "--interval", "0.5", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["polls_per_wait"] == 2
    assert [(r["side"], r["round"], r["polls"]) for r in results["waits"]] == [
        ("aiohttp", 0, 20),
        ("trigger", 0, 20),
        ("trigger", 1, 20),
        ("aiohttp", 1, 20),
    ]
    with pytest.raises(SystemExit):
        main(["--only", "waits", "--polls", "0"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_batch_scale_runs_one_task_per_size() -> None:
    """The scaling side: one dag.test() per N, cost per video and its ratio to the smallest N."""
    with emulator() as emu:
        results = batch.run_scale(emu.url, [5, 10], lambda _: None)
    assert [(r["side"], r["n"]) for r in results] == [("scale", 5), ("scale", 10)]
    for r in results:
        assert "error" not in r, r
        assert r["videos"] == r["n"], r
        assert _positive(r["ms_per_video"]), r
    assert results[0]["vs_smallest"] == 1.0
    assert "x smallest N" in render({"machine": {"cpus": 1, "cpu": "x", "python": "3"}, "batch": results})
