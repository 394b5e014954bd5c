"""Create a video, wait for it without holding a worker slot, store the MP4, report where it is.

``create`` submits the task on the worker (creates are paid for, so never in the triggerer);
``download`` sees it unfinished, defers to the triggerer, resumes when it is done and streams the file
into ``params.destination`` (a folder ending in ``/``: the file is named after the task id). Point it at
object storage with e.g. ``{"destination": "s3://my-bucket/videos/"}`` and ``destination_conn_id``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_videoquery.operators.videoquery import VideoCreateOperator, VideoDownloadOperator

with DAG(
    dag_id="example_videoquery_download",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={
        "model": Param("veo3.1-fast", type="string", description="e.g. veo3.1-fast, sora-2, grok-video-3"),
        "prompt": Param("A paper boat drifting down a rainy street, cinematic", type="string"),
        "destination": Param(
            "file:///tmp/videoquery-demo/",
            type="string",
            description="A folder ending in / (file://, s3://, …) or a full file URI.",
        ),
    },
    tags=["example", "videoquery"],
) as dag:
    create = VideoCreateOperator(
        task_id="create",
        model="{{ params.model }}",
        prompt="{{ params.prompt }}",
        extra_fields={"aspect_ratio": "16:9"},
        videoquery_conn_id="videoquery_default",
    )

    download = VideoDownloadOperator(
        task_id="download",
        video_task_id="{{ ti.xcom_pull(task_ids='create') }}",
        destination="{{ params.destination }}",
        videoquery_conn_id="videoquery_default",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=15,
        timeout=60 * 60,
    )

    @task
    def report(uri: str, video: dict[str, Any]) -> str:
        """Print where the video went; a real DAG would publish, transcode or index it here."""
        print(
            f"Stored {video['bytes']} bytes (sha256 {video['sha256']}) of {video['video_task_id']} at {uri}"
        )
        return uri

    create >> download
    report(download.output, download.output["video"])
