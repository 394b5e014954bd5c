"""The provider in a real Airflow deployment: the waits defer to a real triggerer process.

``dag.test()`` runs triggers inline in the test process, where the sync connection lookups still
work; here an API server, a scheduler (LocalExecutor), a DAG processor and a triggerer run as separate
processes on their own SQLite DB, against the emulator in another process. The DAG:

- ``create`` → ``download``: the download sees the new task unfinished, defers, the triggerer polls
  it to the end, and the worker resumes in ``execute_complete`` and stores the MP4;
- ``wait`` → ``store_watched``: a sensor defers on a task created elsewhere (pre-created in the
  emulator), then a download stores that (bigger, multi-chunk) video.

The connection is stored in the metadata DB and the triggerer runs with
``AIRFLOW_DISABLE_GREENBACK_PORTAL=true``: a sync connection lookup inside a trigger's ``run()`` then
fails ("The conn_id ... isn't defined") instead of being quietly bridged, so only a trigger that
uses the async lookups passes.

Slow (about 40-50 s on 2 cores): run with ``VIDEOQUERY_E2E=1 .venv/bin/python -m pytest tests/e2e``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import pytest

from tests.e2e.airflow_cluster import AirflowCluster, Emulator, tail

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("VIDEOQUERY_E2E") != "1", reason="a real Airflow deployment: set VIDEOQUERY_E2E=1"
    ),
    pytest.mark.timeout(600),
]

DAG_ID = "videoquery_real_triggerer_e2e"
RUN_ID = "e2e_run_1"
#: The status query that reports a task finished: the worker's look is the 1st, the trigger's the rest.
POLLS = 4
WATCHED_TASK = "veo3.1-fast:e2e-watched-0001"
WATCHED_SIZE = 2 * 1024 * 1024 + 7  # several 64 KiB chunks, not a round number
SIGNATURE = "E2E-SIGNATURE-5f1c"
#: Bounds on each phase (the machine is small and shared: generous, but never unbounded).
PARSE_TIMEOUT = 180.0
RUN_TIMEOUT = 240.0

DAG_SOURCE = f'''
"""End-to-end DAG of tests/e2e/test_real_triggerer.py (written into the cluster's DAG folder)."""
from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_provider_videoquery.operators.videoquery import VideoCreateOperator, VideoDownloadOperator
from airflow_provider_videoquery.sensors.videoquery import VideoTaskSensor

with DAG(
    dag_id="{DAG_ID}",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={{
        "model": Param("sora-2", type="string"),
        "prompt": Param("A paper boat drifting down a rainy street", type="string"),
        "destination": Param("", type="string"),
        "watched_task_id": Param("", type="string"),
    }},
) as dag:
    create = VideoCreateOperator(
        task_id="create", model="{{{{ params.model }}}}", prompt="{{{{ params.prompt }}}}"
    )
    download = VideoDownloadOperator(
        task_id="download",
        video_task_id="{{{{ ti.xcom_pull(task_ids='create') }}}}",
        destination="{{{{ params.destination }}}}",
        deferrable=True,
        poll_interval=2,
        timeout=300,
    )
    create >> download

    wait = VideoTaskSensor(
        task_id="wait",
        video_task_id="{{{{ params.watched_task_id }}}}",
        poke_interval=2,
        timeout=300,
        deferrable=True,
    )
    store_watched = VideoDownloadOperator(
        task_id="store_watched",
        video_task_id="{{{{ params.watched_task_id }}}}",
        destination="{{{{ params.destination }}}}",
        deferrable=True,
        poll_interval=2,
        timeout=300,
    )
    wait >> store_watched
'''


def test_deferred_waits_run_in_a_real_triggerer(tmp_path: Path) -> None:
    api_key = f"sk-e2e-{secrets.token_hex(12)}"
    destination = tmp_path / "videos"
    began = time.monotonic()
    with Emulator.run(tmp_path / "emulator.log", "--api-key", api_key, "--polls", str(POLLS)) as emu:
        # A signed URL, as sora's: the signature must reach no log (the triggerer logs every event).
        signed = f"{emu.url}/videos/{WATCHED_TASK.replace(':', '_')}.mp4?se=2026-12-06&sig={SIGNATURE}"
        watched = emu.admin(
            "/_emulator/tasks",
            {"id": WATCHED_TASK, "scenario": {"video_size": WATCHED_SIZE, "video_url": signed}},
        )
        # In the metadata DB, not an AIRFLOW_CONN_* variable: a trigger resolves environment
        # connections inside its own process, so only a stored one goes through the triggerer's
        # supervisor channel, and without greenback's portal a sync lookup there fails at once.
        cluster = AirflowCluster.create(tmp_path / "airflow", {"AIRFLOW_DISABLE_GREENBACK_PORTAL": "true"})
        connection = {
            "conn_type": "videoquery",
            "host": emu.url,
            "password": api_key,
            "extra": json.dumps({"timeout": 10}),
        }
        (cluster.home / "dags" / f"{DAG_ID}.py").write_text(DAG_SOURCE)
        passed = False
        try:
            with cluster.running():
                cluster.add_connection("videoquery_default", connection)
                cluster.wait_for(
                    lambda: cluster.dag_parsed(DAG_ID) or _no_import_errors(cluster),
                    PARSE_TIMEOUT,
                    f"the DAG processor to parse {DAG_ID}",
                )
                cluster.trigger(
                    DAG_ID,
                    RUN_ID,
                    {"destination": f"file://{destination}/", "watched_task_id": WATCHED_TASK},
                )
                triggered = time.monotonic()
                state = cluster.wait_for_run(DAG_ID, RUN_ID, RUN_TIMEOUT)
                print(f"\nrun {state} {time.monotonic() - triggered:.0f}s after the trigger")
            print(f"whole test so far: {time.monotonic() - began:.0f}s")
            _check(cluster, emu, state, destination, watched["video_url"], api_key)
            passed = True
        finally:
            if not passed:
                print(cluster.diagnostics())
                print(f"==== emulator.log ====\n{tail(emu.log)}")


def _no_import_errors(cluster: AirflowCluster) -> bool:
    errors = cluster.import_errors()
    if errors:
        raise AssertionError(f"the DAG file does not import: {errors}")
    return False


def _check(
    cluster: AirflowCluster, emu: Emulator, state: str, destination: Path, watched_url: str, api_key: str
) -> None:
    # The run and every task instance succeeded.
    assert state == "success", cluster.task_states(DAG_ID, RUN_ID)
    assert cluster.task_states(DAG_ID, RUN_ID) == dict.fromkeys(
        ("create", "download", "wait", "store_watched"), "success"
    )
    created = cluster.xcom(DAG_ID, RUN_ID, "create")
    assert created.startswith("sora-2:")

    # Both waits deferred: the worker paused the task, the triggerer ran the trigger and logged its
    # polls into the task's trigger log, and the worker resumed it in a later process.
    deferred = {
        row[0]
        for row in cluster.query(
            "SELECT task_id FROM log WHERE dag_id = ? AND run_id = ? AND event = 'deferred'", DAG_ID, RUN_ID
        )
    }
    assert deferred == {"download", "wait"}
    for task_id, video_task_id in (("download", created), ("wait", WATCHED_TASK)):
        assert "Pausing task as DEFERRED" in cluster.task_logs(DAG_ID, RUN_ID, task_id)
        trigger_log = cluster.trigger_logs(DAG_ID, RUN_ID, task_id)
        assert f"/{task_id}/-1/1 (ID " in trigger_log  # "trigger <dag>/<run>/<task>/-1/1 (ID n) starting"
        assert f"video task '{video_task_id}': running" in trigger_log
        # A final status is told once, by the event's own line.
        assert f"Video task '{video_task_id}' succeeded." in trigger_log
        assert "Trigger fired event" in trigger_log
    # The trigger polled the gateway itself (the worker looked once before deferring).
    queries = [r for r in emu.requests() if r["route"] == "query" and r["task_id"] == created]
    assert len(queries) >= POLLS
    assert {r["status"] for r in queries} == {200}

    # Both files are stored, complete, and byte-identical to what the emulator serves.
    sensed = cluster.xcom(DAG_ID, RUN_ID, "wait")
    assert sensed["id"] == WATCHED_TASK
    assert sensed["status"] == "succeeded"
    assert sensed["video_url"] == watched_url
    video = cluster.xcom(DAG_ID, RUN_ID, "download", key="video")
    for task_id, video_task_id, url in (
        ("download", created, video["video_url"]),
        ("store_watched", WATCHED_TASK, watched_url),
    ):
        path = destination / (video_task_id.replace(":", "_") + ".mp4")
        assert cluster.xcom(DAG_ID, RUN_ID, task_id) == f"file://{path}"
        data = path.read_bytes()
        assert data[4:8] == b"ftyp"
        assert data == emu.get_bytes(url)
    assert video["bytes"] == len((destination / (created.replace(":", "_") + ".mp4")).read_bytes())
    assert (destination / (WATCHED_TASK.replace(":", "_") + ".mp4")).stat().st_size == WATCHED_SIZE
    assert not [p.name for p in destination.iterdir() if ".part" in p.name]

    # The provider logged no warning or error anywhere (a sync lookup failing in the triggerer would).
    logs = {path: path.read_text(errors="replace") for path in cluster.log_files()}
    complaints = [
        line
        for text in logs.values()
        for line in text.splitlines()
        if "airflow_provider_videoquery" in line and any(lvl in line for lvl in _BAD_LEVELS)
    ]
    assert not complaints, "\n".join(complaints)

    # The API key is in no log, nor in the metadata DB (trigger kwargs, XCom, rendered fields).
    assert any(emu.url in text for text in logs.values())  # the scan sees what the provider logs
    leaked = [str(path.relative_to(cluster.home)) for path, text in logs.items() if api_key in text]
    assert not leaked, f"the API key is in {leaked}"
    # Nor the signed URL's query string, though the URL itself is logged ("Stored … from <URL>").
    assert SIGNATURE in watched_url
    assert any(watched_url.split("?")[0] in text for text in logs.values())
    signed = [str(path.relative_to(cluster.home)) for path, text in logs.items() if SIGNATURE in text]
    assert not signed, f"a signed URL's query string is in {signed}"
    for db_file in cluster.home.glob("airflow.db*"):
        assert api_key.encode() not in db_file.read_bytes(), f"the API key is in {db_file.name}"


_BAD_LEVELS = (
    '"level":"warning"',
    '"level":"error"',
    '"level":"critical"',
    "[warning",
    "[error",
    "[critical",
)
