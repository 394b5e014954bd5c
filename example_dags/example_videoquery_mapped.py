"""Many prompts, one video each: create and download mapped with ``.expand``, then a list tying each prompt
to its stored file.

``prompts`` turns the run's ``prompts`` param into a list; ``create`` maps over it (one create per prompt,
each paid for once: see docs/create.md); ``download`` maps over the created ids, waiting in the
triggerer without a worker slot; map index *i* of both is prompt *i*. ``report`` zips the prompts with
the downloads' ``video`` XCom (``{uri, video_task_id, bytes, sha256, …}``). The right tool up to a few
hundred videos (Airflow's ``max_map_length`` is 1,024, and each wait is one trigger); beyond that, the
batch operator.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_videoquery.operators.videoquery import VideoCreateOperator, VideoDownloadOperator

with DAG(
    dag_id="example_videoquery_mapped",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={
        "model": Param("veo3.1-fast", type="string", description="e.g. veo3.1-fast, sora-2, grok-video-3"),
        "prompts": Param(
            [
                "A paper boat drifting down a rainy street, cinematic",
                "A red fox crossing a snowy field at dawn",
                "Timelapse of clouds rolling over a mountain ridge",
            ],
            type="array",
            items={"type": "string"},
            minItems=1,
            description="One video per prompt.",
        ),
        "destination": Param(
            "file:///tmp/videoquery-mapped/",
            type="string",
            description="A folder ending in / (file://, s3://, …): each file is named after its task id.",
        ),
    },
    tags=["example", "videoquery"],
) as dag:

    @task
    def prompts(**context: Any) -> list[str]:
        """The prompts to map over (a param is not a list ``.expand`` can take directly)."""
        return list(context["params"]["prompts"])

    prompt_list = prompts()

    create = VideoCreateOperator.partial(
        task_id="create", model="{{ params.model }}", videoquery_conn_id="videoquery_default"
    ).expand(prompt=prompt_list)

    download = VideoDownloadOperator.partial(
        task_id="download",
        destination="{{ params.destination }}",
        videoquery_conn_id="videoquery_default",
        deferrable=True,
        poll_interval=15,
        timeout=60 * 60,
    ).expand(video_task_id=create.output)

    @task
    def report(prompts: list[str], videos: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Which prompt became which file: map index i of create and download is prompt i."""
        rows = [
            {"prompt": prompt, "video_task_id": video["video_task_id"], "uri": video["uri"]}
            for prompt, video in zip(prompts, videos, strict=True)
        ]
        for row in rows:
            print(f"{row['prompt']!r} -> {row['uri']} ({row['video_task_id']})")
        return rows

    report(prompt_list, download.output["video"])
