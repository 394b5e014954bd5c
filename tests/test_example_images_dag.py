"""The images example: every image of a folder in moto's S3 becomes one video, created with a
presigned URL the emulator fetched; a file that is not an image by its name is not listed, and the
manifest keeps the image URIs. Under ``dag.test()`` by default; with ``airflow dags test`` in its own
process, as a user runs it, in ``make test-slow``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Emulator, Scenario
from tests.airflow_helpers import assert_key_nowhere, load_dag, run_dag
from tests.conftest import REPO
from tests.images import png
from tests.s3 import MotoS3

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

IMAGES = {"frames/harbour.png": png(640, 360), "frames/market day.png": png(360, 640, seed=3)}


@pytest.fixture
def conf(emulator: Emulator, moto_server: MotoS3, s3_bucket: str, tmp_path: Path) -> dict[str, str]:
    """A folder of two images and a text file in S3; the DAG run's conf."""
    emulator.set_default(Scenario(polls_to_complete=1, video_size=2048))
    s3 = moto_server.client()
    for key, data in IMAGES.items():
        s3.put_object(Bucket=s3_bucket, Key=key, Body=data)
    s3.put_object(Bucket=s3_bucket, Key="frames/notes.txt", Body=b"not an image")
    return {
        "images": f"s3://{s3_bucket}/frames/",
        "destination": f"file://{tmp_path}/videos/",
        "model": "sora-2",
    }


def _check_the_videos(conf: dict[str, str], emulator: Emulator, output: str) -> None:
    destination = Path(conf["destination"].removeprefix("file://"))
    manifest = (destination / "manifest.jsonl").read_text()
    entries = [json.loads(line) for line in manifest.splitlines()]
    assert [e["status"] for e in entries] == ["succeeded", "succeeded"]
    assert entries[0]["key"] == "harbour"
    assert entries[1]["key"].startswith("market_day-")  # a key names a file: the space is replaced
    assert [e["request"]["images"] for e in entries] == [[conf["images"] + k[7:]] for k in IMAGES]
    assert sorted(p.name for p in destination.glob("*.mp4")) == sorted(f"{e['key']}.mp4" for e in entries)
    fetched = [i for e in entries for i in emulator.task(e["video_task_id"]).images]  # type: ignore[union-attr]
    assert [(i.form, i.fetched, i.pixels) for i in fetched] == [
        ("url", True, "640x360"),
        ("url", True, "360x640"),
    ]
    assert "Signature=" not in output + manifest
    assert_key_nowhere(output, manifest)


def test_example_images_dag_animates_a_folder(
    airflow_db: str, conf: dict[str, str], emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_dag(load_dag("example_videoquery_images"), capsys, **conf)
    assert result.states == {"requests": "success", "batch": "success"}, result.output[-3000:]
    _check_the_videos(conf, emulator, result.output)


@pytest.mark.slow
def test_example_images_dag_with_airflow_dags_test(
    airflow_db: str, conf: dict[str, str], emulator: Emulator, tmp_path: Path
) -> None:
    airflow = str(Path(sys.executable).with_name("airflow"))
    argv = [airflow, "dags", "test", "example_videoquery_images", "-c", json.dumps(conf)]
    env: dict[str, Any] = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "example_dags")}
    done = subprocess.run(
        argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=200, stdin=subprocess.DEVNULL
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    _check_the_videos(conf, emulator, output)
