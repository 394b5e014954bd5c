"""See the videos: six through one ``VideoBatchOperator``, one through create → download, then open the
run's "Videos" tab in the Airflow UI (docs/gallery.md).

``batch`` stores six clips of different models into ``<folder>/batch/`` (``max_failed=1``: one may fail);
``create`` and ``download`` (mapped over one prompt, so map index 0) store one more, with its thumbnail,
into ``<folder>/single/``. The gallery shows seven cards: prompt, model, status, size, a player, and
the gateway's reason for a failed one. ``make demo-ui`` runs it on a local Airflow against the bundled
emulator; its ``emulator_failure`` param asks the emulator to fail one request (for a real gateway
leave it off: the field would be sent to it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_videoquery.operators.batch import VideoBatchOperator
from airflow_provider_videoquery.operators.videoquery import VideoCreateOperator, VideoDownloadOperator

#: The batch: one request per model family, with a readable key (the file is ``<key>.mp4``).
BATCH = [
    {"key": "paper-boat", "model": "veo3.1-fast", "prompt": "A paper boat drifting down a rainy street"},
    {"key": "red-fox", "model": "sora-2", "prompt": "A red fox crossing a snowy field at dawn"},
    {"key": "lighthouse", "model": "grok-video-3", "prompt": "A lighthouse in a storm, waves breaking"},
    {"key": "night-market", "model": "vidu-q1", "prompt": "A night market under neon lights, slow pan"},
    {"key": "balloon", "model": "veo3.1-fast", "prompt": "A hot-air balloon over a valley at sunrise"},
    {"key": "ridge-clouds", "model": "sora-2", "prompt": "Timelapse of clouds rolling over a ridge"},
]
#: Which request the emulator fails when asked (``emulator_failure``), and what it answers.
FAILING_KEY = "lighthouse"
FAILURE = {"outcome": "failed", "failure_reason": "The prompt was flagged by the content policy (emulated)"}
SINGLE_PROMPT = "A kite over a beach, seen from below"


def gallery_dag(dag_id: str, poll_interval: float = 10.0) -> DAG:
    """The DAG; tests build it with a shorter ``poll_interval`` for the emulator."""
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2025, 1, 1),
        catchup=False,
        params={
            "folder": Param(
                "/tmp/videoquery-gallery",
                type="string",
                description="A local folder (or any URI) for the videos: batch/ and single/.",
            ),
            "emulator_failure": Param(
                False, type="boolean", description="Ask the bundled emulator to fail one batch request."
            ),
        },
        tags=["example", "videoquery"],
    ) as dag:

        @task
        def requests(**context: Any) -> list[dict[str, Any]]:
            """The batch's requests, one of them marked to fail when the emulator is asked to."""
            chosen = [dict(request) for request in BATCH]
            if context["params"]["emulator_failure"]:
                for request in chosen:
                    if request["key"] == FAILING_KEY:
                        request["emulator"] = FAILURE
            return chosen

        @task
        def prompts() -> list[str]:
            return [SINGLE_PROMPT]

        VideoBatchOperator(
            task_id="batch",
            requests=requests(),
            destination="{{ params.folder }}/batch",
            videoquery_conn_id="videoquery_default",
            max_failed=1,
            poll_interval=poll_interval,
        )
        create = VideoCreateOperator.partial(
            task_id="create", model="sora-2", videoquery_conn_id="videoquery_default"
        ).expand(prompt=prompts())
        VideoDownloadOperator.partial(
            task_id="download",
            destination="{{ params.folder }}/single/",
            videoquery_conn_id="videoquery_default",
            include_thumbnail=True,
            poll_interval=poll_interval,
        ).expand(video_task_id=create.output)
    return dag


dag = gallery_dag("example_videoquery_gallery")
