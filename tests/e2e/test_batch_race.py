"""Airflow's "state mismatch" race against a real scheduler (LocalExecutor), and the batch that avoids it.

Airflow 3.3.2 fails a deferred task whose trigger fires a few seconds after the deferral: the scheduler
drains the stale "success" of the try's defer-exit only once the resumed attempt is already queued or
running, logs ``state mismatch`` and fails it (apache/airflow#72716, #71580; docs/deployment.md). Two
batches run side by side in one real deployment (API server, scheduler, DAG processor, triggerer; SQLite):

- ``quick_deferrals`` behaves as 0.1.0 did: it defers after every wave (``_STAY_ON_WORKER = 0``) and its
  trigger fires as soon as a task finished (``_SAFE_HOLD = 0``); 30 prompts, two live at a time, each
  done at its first poll: a deferral every few seconds. It has retries: every try the race fails goes
  on from the manifest, and the run completes without paying for any video twice. Each deferral meets
  the race with a few percent chance (1-2 in 30 here), so it runs again, up to 3 times, until it did
  (if it never does on a machine, the test says so in a warning: the race is Airflow's, its odds are
  the machine's).
- ``defaults`` is the batch as shipped: waves whose next step is seconds away are waited out on the
  worker; the one long wait (four slow videos) defers to a trigger that holds 60 s. No retries: a race
  would fail it.

Slow (about 3-5 minutes on 2 cores): run with ``VIDEOQUERY_E2E=1 .venv/bin/python -m pytest tests/e2e``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.airflow_cluster import AirflowCluster, Emulator, tail

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("VIDEOQUERY_E2E") != "1", reason="a real Airflow deployment: set VIDEOQUERY_E2E=1"
    ),
    pytest.mark.timeout(900),
]

QUICK, DEFAULTS = "videoquery_race_quick_deferrals", "videoquery_race_defaults"
QUICK_COUNT, QUICK_RUNS, SLOW_COUNT, DEFAULTS_COUNT = 30, 3, 4, 12
PARSE_TIMEOUT, RUN_TIMEOUT = 180.0, 600.0


def _source(dag_id: str, max_active: int, retries: int, old_timing: bool) -> str:
    timing = (
        "from airflow_provider_videoquery.operators import batch as _batch\n"
        "_batch._STAY_ON_WORKER = 0.0  # defer after every wave, as 0.1.0 did\n"
        "_batch._SAFE_HOLD = 0.0  # and fire as soon as a task finished\n"
        if old_timing
        else ""
    )
    return f'''
"""tests/e2e/test_batch_race.py: {dag_id}."""
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_provider_videoquery.operators.batch import VideoBatchOperator
{timing}
with DAG(
    dag_id="{dag_id}",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={{"requests": Param("", type="string"), "destination": Param("", type="string")}},
) as dag:
    VideoBatchOperator(
        task_id="batch",
        requests="{{{{ params.requests }}}}",
        destination="{{{{ params.destination }}}}",
        max_active={max_active},
        creates_per_second=0,
        poll_interval=1,
        timeout=300,
        retries={retries},
        retry_delay=timedelta(seconds=1),
    )
'''


def _requests(path: Path, label: str, count: int, slow: int = 0) -> str:
    lines = []
    for n in range(count):
        request: dict[str, Any] = {
            "key": f"{label}-{n:02d}",
            "model": "veo3.1-fast",
            "prompt": f"{label} {n}",
        }
        if n >= count - slow:  # the last ones take longer than the worker waits
            request["emulator"] = {"seconds_to_complete": 45}
        lines.append(json.dumps(request))
    path.write_text("\n".join(lines) + "\n")
    return path.as_uri()


def test_a_batch_that_defers_for_seconds_is_failed_by_the_scheduler_and_ours_is_not(tmp_path: Path) -> None:
    api_key = f"sk-e2e-{secrets.token_hex(12)}"
    with Emulator.run(
        tmp_path / "emulator.log", "--api-key", api_key, "--polls", "1", "--video-size", "4096"
    ) as emu:
        cluster = AirflowCluster.create(tmp_path / "airflow", parallelism=4)
        (cluster.home / "dags" / f"{QUICK}.py").write_text(_source(QUICK, 2, retries=6, old_timing=True))
        (cluster.home / "dags" / f"{DEFAULTS}.py").write_text(
            _source(DEFAULTS, 4, retries=0, old_timing=False)
        )
        connection = {"conn_type": "videoquery", "host": emu.url, "password": api_key}
        passed = False
        try:
            with cluster.running():
                cluster.add_connection("videoquery_default", connection)
                for dag_id in (QUICK, DEFAULTS):
                    cluster.wait_for(
                        lambda d=dag_id: cluster.dag_parsed(d), PARSE_TIMEOUT, f"{dag_id} parsed"
                    )
                _run_both(cluster, emu, tmp_path)
            passed = True
        finally:
            if not passed:
                print(cluster.diagnostics())
                print(f"==== emulator.log ====\n{tail(emu.log)}")


def _run_both(cluster: AirflowCluster, emu: Emulator, tmp_path: Path) -> None:
    """The shipped batch once, beside runs of the quick one until the race showed (each deferral meets
    it with a few percent chance: at most ``QUICK_RUNS`` runs)."""
    defaults_out = tmp_path / "defaults"
    requests = _requests(tmp_path / "defaults.jsonl", "defaults", DEFAULTS_COUNT, SLOW_COUNT)
    cluster.trigger(DEFAULTS, "race", {"requests": requests, "destination": str(defaults_out)})
    mismatches, runs = 0, 0
    while not mismatches and runs < QUICK_RUNS:
        runs += 1
        run_id, quick_out = f"race{runs}", tmp_path / f"quick{runs}"
        requests = _requests(tmp_path / f"quick{runs}.jsonl", f"quick{runs}", QUICK_COUNT)
        began = time.monotonic()
        cluster.trigger(QUICK, run_id, {"requests": requests, "destination": str(quick_out)})
        state = cluster.wait_for_run(QUICK, run_id, RUN_TIMEOUT)
        found, tries = _events(cluster, QUICK, run_id, "state mismatch"), _try_number(cluster, QUICK, run_id)
        deferrals = _events(cluster, QUICK, run_id, "deferred")
        print(
            f"\n{QUICK} {run_id}: {state} after {time.monotonic() - began:.0f}s, {deferrals} deferrals, "
            f"{found} state mismatch(es), {tries} tries"
        )
        # 0.1.0's timing: the scheduler failed tries of a healthy batch; the retries went on from the
        # manifest and paid for nothing twice.
        assert state == "success", cluster.task_states(QUICK, run_id)
        assert tries == found + 1
        _check_stored(quick_out, QUICK_COUNT)
        mismatches += found
    if not mismatches:  # Airflow's race, not ours: how often it shows depends on the machine's timing
        warnings.warn(
            f"the scheduler's race did not show in {runs} runs of {QUICK_COUNT} deferrals on this machine; "
            "the shipped batch below is checked all the same",
            stacklevel=1,
        )

    # The batch as shipped: one try, no mismatch, and its one long wait went through the triggerer.
    state = cluster.wait_for_run(DEFAULTS, "race", RUN_TIMEOUT)
    print(
        f"{DEFAULTS}: {state}, {_events(cluster, DEFAULTS, 'race', 'deferred')} deferral(s), "
        f"{_events(cluster, DEFAULTS, 'race', 'state mismatch')} state mismatch(es)"
    )
    assert state == "success", cluster.task_states(DEFAULTS, "race")
    assert _events(cluster, DEFAULTS, "race", "state mismatch") == 0
    assert _try_number(cluster, DEFAULTS, "race") == 1
    assert _events(cluster, DEFAULTS, "race", "deferred") >= 1
    _check_stored(defaults_out, DEFAULTS_COUNT)

    creates = [r for r in emu.requests() if r["route"] == "create"]
    assert len(creates) == runs * QUICK_COUNT + DEFAULTS_COUNT  # nothing paid twice, in any run


def _events(cluster: AirflowCluster, dag_id: str, run_id: str, event: str) -> int:
    rows = cluster.query(
        "SELECT COUNT(*) FROM log WHERE dag_id = ? AND run_id = ? AND event = ?", dag_id, run_id, event
    )
    return int(rows[0][0]) if rows else 0


def _try_number(cluster: AirflowCluster, dag_id: str, run_id: str) -> int:
    rows = cluster.query(
        "SELECT try_number FROM task_instance WHERE dag_id = ? AND run_id = ?", dag_id, run_id
    )
    return int(rows[0][0])


def _check_stored(folder: Path, count: int) -> None:
    lines = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == count
    assert {line["status"] for line in lines} == {"succeeded"}
    assert len({line["video_task_id"] for line in lines}) == count
    assert len(list(folder.glob("*.mp4"))) == count
    [held] = (folder / "manifest.jsonl.lease").iterdir()  # the lease's last generation …
    assert json.loads(held.read_text())["released"] is True  # … released when the task ended
