"""Image-to-video batches end to end under ``dag.test()`` (what ``airflow dags test`` runs): 20
requests whose images are in moto's S3, on each route. A missing image, a PDF named .png (and, on the
OpenAI route, an image of the wrong pixel size) refuse the whole batch before any create; without them
every video is created with its image in the route's form — a presigned URL the emulator fetched, a
data: URI, a multipart upload — and stored. No signature and no image payload in any log, XCom,
rendered field or the manifest, which keeps the URIs as given."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_provider_videoquery.emulator import Emulator, Scenario
from tests.airflow_helpers import RunResult, assert_key_nowhere, load_dag, run_dag, use_dags_folder
from tests.conftest import connection_json
from tests.images import PDF, png
from tests.s3 import MotoS3

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

DAG_SOURCE = """
from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_provider_videoquery.operators.batch import VideoBatchOperator

with DAG(
    dag_id="videoquery_images_test",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    render_template_as_native_obj=True,
    params={"requests": Param([], type="array"), "destination": Param("", type="string")},
) as dag:
    VideoBatchOperator(
        task_id="batch",
        requests="{{ params.requests }}",
        destination="{{ params.destination }}",
        inputs_conn_id="aws_default",
        max_active=20,
        creates_per_second=0,
        poll_interval=0.05,
        max_polls_per_second=1000,
        max_polls_in_flight=8,
        timeout=60,
    )
"""

#: route → (model, image field, extra fields, the emulator's create route, the form the image arrives in)
ROUTES: dict[str, tuple[str, str, dict[str, Any], str, str]] = {
    "unified": ("veo3.1-fast", "images", {"aspect_ratio": "16:9"}, "create", "url"),
    "vidu-native": ("viduq1", "images", {}, "vidu_create", "data"),
    "openai": ("sora-2", "input_reference", {"size": "1280x720", "seconds": 8}, "openai_create", "upload"),
}


@pytest.fixture(scope="module")
def dags_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images-dags")
    (folder / "videoquery_images_test.py").write_text(DAG_SOURCE)
    return folder


@pytest.fixture
def dag(dags_folder: Path, monkeypatch: pytest.MonkeyPatch, airflow_db: str) -> Any:
    use_dags_folder(monkeypatch, dags_folder)
    return load_dag(dags_folder / "videoquery_images_test.py")


def _request(route: str, key: str, uri: str) -> dict[str, Any]:
    model, field, extra, _, _ = ROUTES[route]
    return {
        "key": key,
        "model": model,
        "prompt": f"bring {key} to life",
        field: [uri] if field == "images" else uri,
        **extra,
    }


def _everything(result: RunResult, manifest: Path, airflow_home: str) -> str:
    """All a user or an operator could read: task output, XComs, rendered fields, manifest, log files."""
    logs = Path(airflow_home) / "logs"
    files = [p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file()] if logs.exists() else []
    texts = [result.output, repr(result.xcoms), json.dumps(result.rendered, default=str), *files]
    if manifest.exists():
        texts.append(manifest.read_text())
    return "\n".join(texts)


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_batch_of_twenty_images_in_s3(
    route: str,
    dag: Any,
    emulator: Emulator,
    moto_server: MotoS3,
    s3_bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    airflow_db: str,
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, timeout=5, route=route)
    )
    emulator.set_default(Scenario(polls_to_complete=1, video_size=2048))
    s3 = moto_server.client()
    frames = {f"frames/f{n:02d}.png": png(1280, 720, seed=n) for n in range(17)}
    for key, data in frames.items():
        s3.put_object(Bucket=s3_bucket, Key=key, Body=data)
    s3.put_object(Bucket=s3_bucket, Key="frames/report.png", Body=PDF)
    s3.put_object(Bucket=s3_bucket, Key="frames/square.png", Body=png(1024, 1024))
    good = [_request(route, key[7:10], f"s3://{s3_bucket}/{key}") for key in frames]
    if route != "openai":  # a square image is fine there: one more good request
        frames["frames/square.png"] = png(1024, 1024)
        good.append(_request(route, "square", f"s3://{s3_bucket}/frames/square.png"))
    bad = [
        _request(route, "missing", f"s3://{s3_bucket}/frames/missing.png"),
        _request(route, "report", f"s3://{s3_bucket}/frames/report.png"),
    ]
    if route == "openai":
        bad.append(_request(route, "square", f"s3://{s3_bucket}/frames/square.png"))
    assert len(good) + len(bad) == 20
    destination = tmp_path / "videos"
    manifest = destination / "manifest.jsonl"
    _, field, _, create_route, form = ROUTES[route]

    refused = run_dag(dag, capsys, requests=good[:5] + bad + good[5:], destination=str(destination))

    assert refused.states["batch"] == "failed", refused.output[-3000:]
    assert emulator.count(route=create_route) == 0  # nothing was sent, nothing paid for
    assert not manifest.exists()
    where = f"{field}[0]" if field == "images" else field
    assert f"{len(bad)} of 20 request(s) refused before anything was created" in refused.output
    assert f"Request 'missing': {where} s3://{s3_bucket}/frames/missing.png does not exist" in refused.output
    assert (
        f"Request 'report': {where} s3://{s3_bucket}/frames/report.png is not an image: its bytes are a PDF "
        "document (its name ends in .png)" in refused.output
    )
    if route == "openai":
        assert (
            f"Request 'square': input_reference s3://{s3_bucket}/frames/square.png is 1024x1024 pixels; the "
            "openai route needs it to be exactly the request's size 1280x720" in refused.output
        )

    created = run_dag(dag, capsys, requests=good, destination=str(destination))

    assert created.states["batch"] == "success", created.output[-3000:]
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [e["status"] for e in entries] == ["succeeded"] * len(good)
    assert [e["request"][field] for e in entries] == [r[field] for r in good]  # the URIs as given
    assert len(list(destination.glob("*.mp4"))) == len(good)
    tasks = [emulator.task(e["video_task_id"]) for e in entries]
    images = [image for task in tasks if task is not None for image in task.images]
    assert {(i.form, i.kind, i.fetched) for i in images} == {(form, "png", True)}
    assert sorted(i.sha256 for i in images) == sorted(hashlib.sha256(d).hexdigest() for d in frames.values())
    assert emulator.count(route=create_route) == len(good)

    seen = _everything(created, manifest, airflow_db) + _everything(refused, manifest, airflow_db)
    assert_key_nowhere(seen)
    if form == "url":
        sent = [task.body["images"][0] for task in tasks if task is not None]
        signatures = [parse_qs(urlsplit(url).query)["Signature"][0] for url in sent]
        assert len(signatures) == len(good)
        assert not [s for s in signatures if s in seen]
        assert "Signature=" not in seen
    payloads = [base64.b64encode(data).decode()[64:128] for data in frames.values()]
    assert not [p for p in payloads if p in seen]
