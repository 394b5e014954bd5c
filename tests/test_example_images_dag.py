"""``airflow dags test`` of the images example, in its own process as a user runs it: every image of a
folder in moto's S3 becomes one video, created with a presigned URL the emulator fetched; a file that
is not an image by its name is not listed, and the manifest keeps the image URIs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Emulator, Scenario
from tests.airflow_helpers import assert_key_nowhere
from tests.conftest import REPO
from tests.images import png
from tests.s3 import MotoS3


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_example_images_dag_animates_a_folder(
    airflow_db: str, emulator: Emulator, moto_server: MotoS3, s3_bucket: str, tmp_path: Path
) -> None:
    emulator.set_default(Scenario(polls_to_complete=1, video_size=2048))
    s3 = moto_server.client()
    images = {"frames/harbour.png": png(640, 360), "frames/market day.png": png(360, 640, seed=3)}
    for key, data in images.items():
        s3.put_object(Bucket=s3_bucket, Key=key, Body=data)
    s3.put_object(Bucket=s3_bucket, Key="frames/notes.txt", Body=b"not an image")
    destination = tmp_path / "videos"
    conf = {"images": f"s3://{s3_bucket}/frames/", "destination": f"file://{destination}/", "model": "sora-2"}
    argv = [
        str(Path(sys.executable).with_name("airflow")),
        "dags",
        "test",
        "example_videoquery_images",
        "-c",
        json.dumps(conf),
    ]
    env: dict[str, Any] = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "example_dags")}

    done = subprocess.run(
        argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=200, stdin=subprocess.DEVNULL
    )

    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    manifest = (destination / "manifest.jsonl").read_text()
    entries = [json.loads(line) for line in manifest.splitlines()]
    assert [e["status"] for e in entries] == ["succeeded", "succeeded"]
    assert entries[0]["key"] == "harbour"
    assert entries[1]["key"].startswith("market_day-")  # a key names a file: the space is replaced
    assert [e["request"]["images"] for e in entries] == [[f"s3://{s3_bucket}/{key}"] for key in images]
    assert sorted(p.name for p in destination.glob("*.mp4")) == sorted(f"{e['key']}.mp4" for e in entries)
    fetched = [i for e in entries for i in emulator.task(e["video_task_id"]).images]  # type: ignore[union-attr]
    assert [(i.form, i.fetched, i.pixels) for i in fetched] == [
        ("url", True, "640x360"),
        ("url", True, "360x640"),
    ]
    assert "Signature=" not in output + manifest
    assert_key_nowhere(output, manifest)
