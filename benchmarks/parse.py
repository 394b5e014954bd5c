"""Parsing: normalized tasks per second for each seed shape through ``models.parse_task``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from benchmarks._common import REPO

SEEDS = REPO / "tests" / "fixtures" / "seeds"


def seed_files() -> list[Path]:
    return sorted(SEEDS.glob("*.json"))


def measure(path: Path, count: int) -> dict[str, Any]:
    """Parse the seed ``count`` times (after 10 warm-up parses); best of three batches."""
    from airflow_provider_videoquery.models import parse_task

    payload = json.loads(path.read_text())
    task_id = str(payload.get("id") or payload.get("task_id") or path.stem)
    for _ in range(10):
        task = parse_task(payload, task_id)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(count):
            parse_task(payload, task_id)
        best = min(best, time.perf_counter() - started)
    return {
        "seed": path.stem,
        "status": task.status.value,
        "parses": count,
        "per_s": count / best if best > 0 else None,
        "us_per_parse": 1e6 * best / count,
    }


def run(count: int) -> list[dict[str, Any]]:
    return [measure(path, count) for path in seed_files()]
