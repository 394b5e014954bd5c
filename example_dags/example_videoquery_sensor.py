"""Wait for a video task created elsewhere (another DAG, a script, the gateway's UI), deferrably.

Trigger with ``{"video_task_id": "<id the create call returned>"}``; the sensor pushes the finished
task as a JSON dict (``video_url``, ``progress``, …) for downstream tasks. Triggered without an id, the
sensor fails at once saying so.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_provider_videoquery.sensors.videoquery import VideoTaskSensor

with DAG(
    dag_id="example_videoquery_sensor",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={
        "video_task_id": Param("", type="string", description="The id the create call returned (required).")
    },
    tags=["example", "videoquery"],
) as dag:
    wait_for_video = VideoTaskSensor(
        task_id="wait_for_video",
        video_task_id="{{ params.video_task_id }}",
        videoquery_conn_id="videoquery_default",
        poke_interval=15,
        timeout=60 * 60,
        deferrable=True,
    )
