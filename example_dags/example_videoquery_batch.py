"""A batch of 1,000 videos in one task: write the prompts as JSONL, create/wait/store them all, report.

``prompts`` writes ``params.count`` requests to a JSONL file (a real DAG would get it from elsewhere);
``batch`` keeps at most ``max_active`` tasks live at the gateway, waits for all of them in one trigger,
stores ``<destination>/<key>.mp4`` and writes ``<destination>/manifest.jsonl``; a rerun over the same
destination pays only for requests that never got an id. ``report`` reads the summary.
Use ``.expand`` over ``VideoCreateOperator``/``VideoDownloadOperator`` for a few hundred videos at most
(docs/batch.md).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_videoquery.operators.batch import VideoBatchOperator

MODELS = ("veo3.1-fast", "sora-2", "grok-video-3")
#: A landscape video in each family's own words (docs/create.md): the batch checks these before paying.
LANDSCAPE = {
    "veo3.1-fast": {"aspect_ratio": "16:9"},
    "sora-2": {"orientation": "landscape"},
    "grok-video-3": {"aspect_ratio": "3:2"},
}
SUBJECTS = ("a paper boat", "a red fox", "a lighthouse", "a street market", "a hot-air balloon")
PLACES = ("in the rain", "at dawn", "in a snowstorm", "under neon lights")

with DAG(
    dag_id="example_videoquery_batch",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={
        "count": Param(1000, type="integer", minimum=1, description="How many prompts to generate."),
        "folder": Param(
            "/tmp/videoquery-batch",
            type="string",
            description="A local folder for the prompts file; the videos and manifest go to videos/.",
        ),
    },
    tags=["example", "videoquery"],
) as dag:

    @task
    def prompts(count: int, folder: str) -> str:
        """Write ``count`` requests, one JSON object per line, each with a readable key."""
        path = Path(folder) / "prompts.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            for number in range(int(count)):
                subject = SUBJECTS[number % len(SUBJECTS)]
                place = PLACES[number // len(SUBJECTS) % len(PLACES)]
                model = MODELS[number % len(MODELS)]
                request = {
                    "key": f"clip-{number:05d}",
                    "model": model,
                    "prompt": f"{subject} {place}, cinematic, take {number}",
                    **LANDSCAPE[model],
                }
                out.write(json.dumps(request) + "\n")
        return path.as_uri()

    batch = VideoBatchOperator(
        task_id="batch",
        requests=prompts("{{ params.count }}", "{{ params.folder }}"),
        destination="{{ params.folder }}/videos",
        videoquery_conn_id="videoquery_default",
        max_active=50,
        creates_per_second=5,
        max_failed=0,
        poll_interval=10,
        max_polls_per_second=10,
    )

    @task
    def report(manifest_uri: str, summary: dict[str, Any]) -> dict[str, Any]:
        """Print where the manifest is and what it says."""
        print(f"Manifest {manifest_uri}: {summary}")
        return summary

    report(batch.output, batch.output["summary"])
