"""Animate the images in a folder: one video per image, the images read from object storage.

``requests`` lists ``params.images`` (e.g. ``s3://my-bucket/frames/``, ``gs://…``, ``file:///data/frames/``)
and makes one request per image file: ``{"key": <file name>, "model", "prompt", <field>: <its URI>}``.
``batch`` then reads every image before the first create — it must exist, be a PNG/JPEG/WebP by its
bytes, fit the route's limits (and, on the OpenAI route, have the request's pixel size) — and refuses
the whole batch, naming each problem, if one does not. Each create then carries its image the way the
connection's route takes it: a presigned URL on the unified route (veo, sora-2, grok), a ``data:`` URI
or URL on vidu-native, a multipart upload on the OpenAI route. Videos land in ``params.destination``
as ``<file name>.mp4``; the manifest there keeps the image URIs, never a signed URL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, ObjectStoragePath, Param, task

from airflow_provider_videoquery.operators.batch import VideoBatchOperator
from airflow_provider_videoquery.storage import object_uri, safe_file_name

#: The storage connection the images (and the listing) are read with.
INPUTS_CONN_ID = "aws_default"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")

with DAG(
    dag_id="example_videoquery_images",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={
        "images": Param("s3://my-bucket/frames/", type="string", description="The folder of images."),
        "destination": Param(
            "file:///tmp/videoquery-images/", type="string", description="Where the videos go."
        ),
        "model": Param("veo3.1-fast", type="string", description="e.g. veo3.1-fast, sora-2, viduq1"),
        "prompt": Param("Slowly bring this picture to life, gentle camera move", type="string"),
        "field": Param(
            "images",
            enum=["images", "input_reference"],
            description="images (unified, vidu-native, new-api) or input_reference (OpenAI route)",
        ),
    },
    tags=["example", "videoquery"],
) as dag:

    @task
    def requests(folder: str, model: str, prompt: str, field: str) -> list[dict[str, Any]]:
        """One request per image file of ``folder``, keyed by its name (so it names the video too)."""
        root = ObjectStoragePath(folder, conn_id=INPUTS_CONN_ID)
        files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        made = []
        for path in files:
            uri = object_uri(path)
            image = [uri] if field == "images" else uri
            key = safe_file_name(path.stem, suffix="")  # a key names the video: letters, digits, . _ -
            made.append({"key": key, "model": model, "prompt": prompt, field: image})
        print(f"{len(made)} image(s) in {folder}")
        return made

    batch = VideoBatchOperator(
        task_id="batch",
        requests=requests(
            "{{ params.images }}", "{{ params.model }}", "{{ params.prompt }}", "{{ params.field }}"
        ),
        destination="{{ params.destination }}",
        inputs_conn_id=INPUTS_CONN_ID,
        videoquery_conn_id="videoquery_default",
        max_active=10,
        creates_per_second=2,
        poll_interval=10,
    )
